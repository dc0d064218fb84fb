"""The state directory and the secret files in it, checked before they are trusted.

Every backend that keeps something on disk uses this module: the host key, the
emulated CAAM and TEE device keys, and later the store, the RPMB emulator and
the derived-key host seed.  The directory is ``$KEYRING_TYPES_HOME`` if set, else
``$XDG_STATE_HOME/keyring_types``, else ``~/.local/state/keyring_types``.

What is checked (``EACCES`` naming the path when a check fails):

* every directory on the way (symbolic links resolved first, then each real
  component opened with ``O_NOFOLLOW`` relative to its parent, so a component
  swapped for a link afterwards is refused, not followed) is owned by root or by
  the effective uid and is not writable by group or others, unless it has the
  sticky bit (``/tmp``);
* the directory that holds state (the state directory and its subdirectories)
  is owned by the effective uid and is not writable by group or others; it is
  created mode 0700;
* a secret file is opened with ``O_NOFOLLOW|O_NONBLOCK`` relative to its checked
  directory, so a symbolic link is refused and a planted FIFO cannot block; it
  must be a regular file owned by the effective uid with no permission bit for
  group or others (0400 and 0600 pass, 0440 or 0604 do not).

Secret files are created atomically with mode 0400: the content is written to
an unnamed ``O_TMPFILE`` inode and linked into place, which fails rather than
replaces when another process won the race, and leaves nothing behind if the
writer is killed.  Where ``O_TMPFILE`` is not available, a named
``.<name>.<pid>.<random>.tmp`` file (mode 0400, ``flock``-ed while in use) is used
instead; those a killed writer left behind are removed the next time a secret
file in that directory is loaded or created.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from keyring_types.errors import error
from keyring_types.osrng import fill_random
from keyring_types.secret import SecretBuffer

__all__ = [
    "ENV_HOME",
    "check_private_file",
    "create_secret_file",
    "load_or_create_secret",
    "load_secret_file",
    "private_dir",
    "state_dir",
]

ENV_HOME = "KEYRING_TYPES_HOME"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Temporary files of the named fallback: ``.<final name>.<pid>.<12 hex>.tmp``.
_TMP_NAME = re.compile(r"^\..+\.[0-9]+\.[0-9a-f]{12}\.tmp$")


def _resolve_state_dir() -> Path:
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "keyring_types"


def state_dir(create: bool = True) -> Path:
    """The state directory, checked (and created 0700) when ``create``.

    ``EACCES`` when it or a directory above it fails the checks of the module
    docstring; other ``OSError`` from the OS.  ``create=False`` only resolves the
    name (no file-system access).
    """
    path = _resolve_state_dir()
    if create:
        os.close(_open_dir(path, create=True))
    return path


def private_dir(path: Path, create: bool = True) -> Path:
    """``path`` as a checked state directory (created 0700 with its parents when ``create``).

    ``EACCES`` when a check fails; ``ENOENT`` when it is missing and not ``create``.
    """
    os.close(_open_dir(path, create=create))
    return path


def _refuse(path: object, why: str) -> OSError:
    return error(errno.EACCES, f"refusing {path}: {why}")


def _check_ancestor(st: os.stat_result, path: str) -> None:
    # Nobody but root and us may rename or replace what lies below this directory.
    if st.st_uid not in (0, os.geteuid()):
        raise _refuse(path, f"directory owned by uid {st.st_uid}, not by uid {os.geteuid()} or root")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise _refuse(path, f"directory writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})")


def _check_private_dir(st: os.stat_result, path: str) -> None:
    if st.st_uid != os.geteuid():
        raise _refuse(path, f"state directory owned by uid {st.st_uid}, not by uid {os.geteuid()}")
    if st.st_mode & 0o022:
        raise _refuse(path, f"state directory writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})")


def check_private_file(st: os.stat_result, path: object) -> None:
    """``EACCES`` unless ``st`` is a regular file owned by the euid with no group/other bits."""
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, "not a regular file")
    if st.st_uid != os.geteuid():
        raise _refuse(path, f"owned by uid {st.st_uid}, not by uid {os.geteuid()}")
    if st.st_mode & 0o077:
        raise _refuse(path, f"group or others have access (mode {stat.S_IMODE(st.st_mode):04o}); it must be 0400 or 0600")


def _open_dir(path: Path, create: bool) -> int:
    """An ``O_DIRECTORY`` fd on ``path`` after checking it and every directory above it."""
    real = os.path.realpath(path)
    parts = Path(real).parts
    fd = os.open("/", _DIR_FLAGS)
    try:
        _check_ancestor(os.fstat(fd), "/")
        current = "/"
        for i, name in enumerate(parts[1:]):
            last = i == len(parts) - 2
            current = os.path.join(current, name)
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass  # another process made it first; checked below like any other
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _refuse(current, "not a directory (or replaced by a symbolic link)") from None
                raise
            os.close(fd)
            fd = nfd
            st = os.fstat(fd)
            if last:
                _check_private_dir(st, current)
            else:
                _check_ancestor(st, current)
        if len(parts) == 1:
            _check_private_dir(os.fstat(fd), "/")
        return fd
    except BaseException:
        os.close(fd)
        raise


def _remove_stale_temps(dfd: int) -> None:
    """Remove fallback temporary files that no live writer holds (a ``kill -9`` leaves them)."""
    for name in os.listdir(dfd):
        if not _TMP_NAME.match(name):
            continue
        try:
            tfd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            continue
        except OSError:
            # A link or something unopenable under a temporary file's name: not ours to read.
            _unlink_quietly(dfd, name)
            continue
        try:
            try:
                fcntl.flock(tfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a writer is still at work on it
            _unlink_quietly(dfd, name)
        finally:
            os.close(tfd)


def _unlink_quietly(dfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass


def _write_all(fd: int, data: SecretBuffer) -> None:
    mv = data.view()
    try:
        done = 0
        while done < len(mv):
            done += os.write(fd, mv[done:])
    finally:
        mv.release()
    os.fsync(fd)


def _create_unnamed(dfd: int, name: str, data: SecretBuffer) -> bool | None:
    """Create via ``O_TMPFILE``; ``None`` when the file system cannot."""
    try:
        fd = os.open(".", os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o400, dir_fd=dfd)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None
        raise
    try:
        _write_all(fd, data)
        try:
            # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N gives the unnamed inode its name.
            os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dfd, follow_symlinks=True)
        except FileExistsError:
            return False
        except FileNotFoundError:
            return None  # no /proc: use the named fallback
        return True
    finally:
        os.close(fd)


def _create_named(dfd: int, name: str, data: SecretBuffer) -> bool:
    while True:
        import secrets  # here, not at the top: ktctl's start-up does not pay for it (benchmarks/cli.py)

        tmp = f".{name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400, dir_fd=dfd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink == 0:
                continue  # a cleaner took it for stale between open and lock: start again
            try:
                _write_all(fd, data)
                try:
                    os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                except FileExistsError:
                    return False
                return True
            finally:
                _unlink_quietly(dfd, tmp)
        finally:
            os.close(fd)


def create_secret_file(path: Path, data: SecretBuffer) -> bool:
    """Create ``path`` (mode 0400) holding ``data``, atomically, in a checked directory.

    Returns ``False`` if the file already existed (it is left untouched).
    ``EACCES`` when the directory fails the checks (see the module docstring).
    """
    dfd = _open_dir(path.parent, create=True)
    try:
        _remove_stale_temps(dfd)
        made = _create_unnamed(dfd, path.name, data)
        if made is None:
            made = _create_named(dfd, path.name, data)
        if made:
            os.fsync(dfd)
        return made
    finally:
        os.close(dfd)


def _read_at(dfd: int, name: str, path: Path, size: int, what: str) -> SecretBuffer:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
    except FileNotFoundError:
        raise error(errno.ENOKEY, f"no {what}: {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path, "a symbolic link") from None
        raise error(errno.EACCES, f"cannot open {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        check_private_file(st, path)
        if st.st_size != size:
            raise error(errno.EINVAL, f"{path} holds {st.st_size} bytes, expected {size}")
        buf = SecretBuffer(size)
        mv = buf.writable()
        try:
            done = 0
            while done < size:
                n = os.readv(fd, [mv[done:]])
                if n <= 0:
                    raise error(errno.EIO, f"{path}: short read ({done} of {size} bytes)")
                done += n
        except BaseException:
            mv.release()
            buf.wipe()
            raise
        mv.release()
        return buf
    finally:
        os.close(fd)


def load_secret_file(path: Path, size: int, what: str = "secret file") -> SecretBuffer:
    """Read a secret file of exactly ``size`` bytes into secret memory.  Never creates it.

    ``ENOKEY`` when it (or its directory) does not exist, the message naming the
    path; ``EACCES`` when the file or a directory fails the checks of the module
    docstring; ``EINVAL`` on a wrong size; ``EIO`` on a short read.
    """
    try:
        dfd = _open_dir(path.parent, create=False)
    except FileNotFoundError:
        raise error(errno.ENOKEY, f"no {what}: {path} does not exist") from None
    try:
        _remove_stale_temps(dfd)
        return _read_at(dfd, path.name, path, size, what)
    finally:
        os.close(dfd)


def load_or_create_secret(
    path: Path, size: int, what: str = "secret file", make: Callable[[], bytes] | None = None
) -> SecretBuffer:
    """The secret in ``path``, creating it with ``size`` random bytes (or ``make()``'s) if absent.

    Only an operation that makes new key material (a seal) may call this; a
    load/unseal uses :func:`load_secret_file`, so a deleted key file is reported
    instead of silently replaced.  Errors as :func:`load_secret_file` and
    :func:`create_secret_file`.
    """
    try:
        return load_secret_file(path, size, what)
    except OSError as exc:
        if exc.errno != errno.ENOKEY:
            raise
    if make is None:
        fresh = SecretBuffer(size)
        fill_random(fresh)
    else:
        fresh = SecretBuffer.from_bytes(make())
    try:
        create_secret_file(path, fresh)
    finally:
        fresh.wipe()
    # Read back whatever won a creation race, so every process uses the same key.
    return load_secret_file(path, size, what)
