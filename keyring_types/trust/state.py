"""The state directory and secret files in it (host key, emulated device keys).

The directory is ``$KEYRING_TYPES_HOME`` if set, else ``$XDG_STATE_HOME/keyring_types``,
else ``~/.local/state/keyring_types``.  Secret files are created mode 0400 and
atomically: a complete file appears under its final name or nothing does, and two
processes racing to create the same key agree on one of them.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from keyring_types.errors import error
from keyring_types.secret import SecretBuffer

__all__ = ["state_dir", "fill_random", "create_secret_file", "load_secret_file", "load_or_create_secret"]


def state_dir(create: bool = True) -> Path:
    """The state directory (created 0700 when ``create``); ``EACCES``/``EIO`` from the OS."""
    home = os.environ.get("KEYRING_TYPES_HOME")
    if home:
        path = Path(home)
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        base = Path(xdg) if xdg else Path.home() / ".local" / "state"
        path = base / "keyring_types"
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def fill_random(buf: SecretBuffer) -> None:
    """Fill ``buf`` from the OS CSPRNG, writing straight into secret memory.

    Reading ``/dev/urandom`` into the buffer avoids a ``bytes`` copy of the key on
    the Python heap (``os.urandom`` would leave one).  ``EIO`` on a short read.
    """
    mv = buf.writable()
    try:
        with open("/dev/urandom", "rb", buffering=0) as f:
            done = 0
            while done < len(mv):
                n = f.readinto(mv[done:])
                if not n:
                    raise error(errno.EIO, f"the OS RNG returned {done} of {len(mv)} bytes")
                done += n
    finally:
        mv.release()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_secret_file(path: Path, data: SecretBuffer) -> bool:
    """Create ``path`` (mode 0400) holding ``data``, atomically.

    Returns ``False`` if the file already existed (it is left untouched).  The
    content is written to a private temporary file first and hard-linked into
    place, which fails rather than replaces when another process won the race.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
    try:
        try:
            mv = data.view()
            try:
                done = 0
                while done < len(mv):
                    done += os.write(fd, mv[done:])
            finally:
                mv.release()
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        os.unlink(tmp)


def load_secret_file(path: Path, size: int) -> SecretBuffer:
    """Read a secret file of exactly ``size`` bytes into secret memory.

    ``ENOENT`` if missing; ``EACCES`` if group/other can reach it or another user
    owns it (a key file others can read protects nothing); ``EINVAL`` on a wrong size.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(errno.EINVAL, f"{path} is not a regular file")
        if st.st_mode & 0o077 or st.st_uid != os.geteuid():
            raise error(
                errno.EACCES,
                f"{path} must be owned by uid {os.geteuid()} and not accessible to group/others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}, owner {st.st_uid})",
            )
        if st.st_size != size:
            raise error(errno.EINVAL, f"{path} holds {st.st_size} bytes, expected {size}")
        buf = SecretBuffer(size)
        mv = buf.writable()
        try:
            done = 0
            while done < size:
                n = os.readv(fd, [mv[done:]])
                if n <= 0:
                    buf.wipe()
                    raise error(errno.EIO, f"{path}: short read ({done} of {size} bytes)")
                done += n
        finally:
            mv.release()
        return buf
    finally:
        os.close(fd)


def load_or_create_secret(path: Path, size: int) -> SecretBuffer:
    """The secret in ``path``, creating it with ``size`` random bytes if absent.

    Errors as :func:`load_secret_file`.
    """
    try:
        return load_secret_file(path, size)
    except FileNotFoundError:
        pass
    fresh = SecretBuffer(size)
    try:
        fill_random(fresh)
        create_secret_file(path, fresh)
    finally:
        fresh.wipe()
    # Read back whatever won a creation race, so every process uses the same key.
    return load_secret_file(path, size)
