"""Handing keys to LUKS2 through cryptsetup.

:func:`format` writes a LUKS2 header whose *volume key* is a key of this
library, and whose keyslot 0 opens with a passphrase.  Neither the key nor the
passphrase touches a file or a command line: each is written from secret memory
into its own pipe, and cryptsetup reads the pipes as ``/dev/fd/<n>``
(``--volume-key-file``, ``--key-file``).

:func:`add_keyring_token` adds a ``luks2-keyring`` token: it tells cryptsetup
to take a keyslot's passphrase from the ``user`` key of a given description in
the kernel keyring of the process that opens the device (cryptsetup searches
the caller's keyrings; a ``logon`` key cannot be read back and does not work).
:func:`load_passphrase` puts that ``user`` key there.

cryptsetup's exit codes (cryptsetup(8), "RETURN CODES") become errno values:
1 wrong parameters ``EINVAL``, 2 no permission or bad passphrase ``EACCES``,
3 out of memory ``ENOMEM``, 4 wrong device ``ENOENT`` (path missing) or
``ENODEV``, 5 device busy ``EBUSY``; anything else ``EIO``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import subprocess
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Final

from keyring_types.core.handle import Key
from keyring_types.errors import error
from keyring_types.integrations import kernel_syscalls
from keyring_types.integrations.kernel_keyspace import KernelKeyspace

__all__ = ["PBKDFS", "add_keyring_token", "format", "load_passphrase"]

#: The key derivation functions ``cryptsetup --pbkdf`` accepts for LUKS2 keyslots.
PBKDFS: Final = ("argon2id", "argon2i", "pbkdf2")

#: LUKS2 has keyslots and tokens numbered 0..31 (lib/luks2/luks2.h).
_LUKS2_SLOTS: Final = 32

_EXIT_ERRNO: Final = {1: errno.EINVAL, 2: errno.EACCES, 3: errno.ENOMEM, 4: errno.ENODEV, 5: errno.EBUSY}

# Where Debian puts cryptsetup, for a PATH without the sbin directories.
_SBIN: Final = "/usr/sbin:/sbin"


def _cryptsetup() -> str:
    found = shutil.which("cryptsetup") or shutil.which("cryptsetup", path=_SBIN)
    if found is None:
        raise error(errno.ENOENT, "cryptsetup is not installed (Debian package cryptsetup-bin)")
    return found


def _check_path(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    if not isinstance(text, str) or not text or "\0" in text:
        raise error(errno.EINVAL, "a LUKS2 device path is a non-empty string")
    return text


def _stderr_text(stderr: bytes, secrets: Sequence[memoryview]) -> str:
    """cryptsetup's own message, unless a secret could be in it.

    The secrets only ever reach cryptsetup through pipes and its messages name
    devices, slots and tokens, not key material; still, a message holding any
    secret's bytes verbatim is dropped rather than trusted.
    """
    for s in secrets:
        if len(s) and stderr.find(s) != -1:
            return ""
    text = stderr.decode("utf-8", "replace").strip().replace("\n", "; ")
    return f": {text[:300]}" if text else ""


def _run(step: str, path: str, args: list[str], feeds: Sequence[memoryview] = ()) -> str:
    """Run cryptsetup with each of ``feeds`` readable at ``/dev/fd/<n>``, the
    ``{0}``, ``{1}``... in ``args`` being replaced by those paths; its stdout."""
    exe = _cryptsetup()
    with ExitStack() as stack:
        fds: list[int] = []
        for data in feeds:
            r, w = os.pipe()
            stack.callback(os.close, r)
            try:
                # The whole secret goes into the pipe before cryptsetup starts
                # (no thread, no ordering between the two pipes); grow the pipe
                # when the default capacity is short.
                if len(data) > fcntl.fcntl(w, fcntl.F_GETPIPE_SZ):
                    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, len(data))
                view = memoryview(data)
                done = 0
                while done < len(view):
                    done += os.write(w, view[done:])
            except OSError as exc:
                raise error(exc.errno or errno.EIO, f"{step}: cannot hand the secret to cryptsetup through a pipe") from None
            finally:
                os.close(w)
            fds.append(r)
        argv = [exe, *(a.format(*(f"/dev/fd/{fd}" for fd in fds)) for a in args)]
        env = {"PATH": os.environ.get("PATH", "") + ":" + _SBIN, "LC_ALL": "C"}
        try:
            proc = subprocess.run(argv, pass_fds=fds, stdin=subprocess.DEVNULL, capture_output=True, env=env, check=False)
        except OSError as exc:
            raise error(exc.errno or errno.EIO, f"{step}: cannot run cryptsetup") from None
    if proc.returncode == 0:
        return proc.stdout.decode("utf-8", "replace")
    err = _EXIT_ERRNO.get(proc.returncode, errno.EIO)
    if err == errno.ENODEV and not os.path.exists(path):
        err = errno.ENOENT
    detail = _stderr_text(proc.stderr, feeds)
    raise error(err, f"{step} on {path!r} failed (cryptsetup exit {proc.returncode}){detail}")


def format(  # the name the issue fixes; it shadows the builtin only inside this module
    path: str | os.PathLike[str],
    key: Key | bytes | bytearray | memoryview,
    passphrase: bytes | bytearray | memoryview,
    *,
    cipher: str | None = None,
    pbkdf: str | None = None,
    iterations: int | None = None,
) -> None:
    """Format a LUKS2 header on ``path`` (a file or block device) with ``key``'s
    plaintext as its volume key, and a keyslot 0 opened by ``passphrase``.

    ``key`` is any handle whose plaintext this process may use (``key.secret()``),
    or the raw volume key (best a view of secret memory);
    ``--key-size`` is its length in bits, which the cipher must accept
    (cryptsetup's default ``aes-xts-plain64`` takes 32 or 64 bytes).  ``cipher``
    is a cryptsetup ``--cipher``; ``pbkdf`` one of :data:`PBKDFS` and
    ``iterations`` its ``--pbkdf-force-iterations`` (cheap values are for tests:
    cryptsetup's benchmarked defaults stay unless asked).  Everything on
    ``path`` is overwritten without a question (``--batch-mode``).

    Raises ``EINVAL`` (empty key or passphrase, bad option, a key size the
    cipher refuses), ``secret()``'s errors (``EOPNOTSUPP`` for a key whose
    plaintext user space cannot have, ``EACCES``), ``ENOENT`` (no such path or
    no cryptsetup), ``ENODEV``, ``EBUSY``, ``ENOMEM`` as cryptsetup reports.
    A failed format may leave the start of ``path`` overwritten.
    """
    where = _check_path(path)
    if not isinstance(passphrase, (bytes, bytearray, memoryview)):
        raise error(errno.EINVAL, "a LUKS2 passphrase is bytes")
    if not len(passphrase):
        raise error(errno.EINVAL, "a LUKS2 passphrase cannot be empty")
    args = ["luksFormat", "--type", "luks2", "--batch-mode", "--volume-key-file", "{0}", "--key-file", "{1}"]
    if cipher is not None:
        if not isinstance(cipher, str) or not cipher or any(c.isspace() or c == "\0" for c in cipher):
            raise error(errno.EINVAL, "a cipher is a cryptsetup cipher name such as aes-xts-plain64")
        args += ["--cipher", cipher]
    if pbkdf is not None:
        if pbkdf not in PBKDFS:
            raise error(errno.EINVAL, f"pbkdf is one of {', '.join(PBKDFS)}")
        args += ["--pbkdf", pbkdf]
    if iterations is not None:
        if type(iterations) is not int or iterations <= 0:
            raise error(errno.EINVAL, "iterations is a positive int")
        args += ["--pbkdf-force-iterations", str(iterations)]
    if isinstance(key, Key):
        with key.secret(consumer="luks") as mv:
            _format_with(where, args, mv, memoryview(passphrase))
    elif isinstance(key, (bytes, bytearray, memoryview)):
        _format_with(where, args, memoryview(key), memoryview(passphrase))
    else:
        raise error(errno.EINVAL, "a volume key is a key handle or bytes")


def _format_with(where: str, args: list[str], volume_key: memoryview, passphrase: memoryview) -> None:
    if not volume_key.nbytes:
        raise error(errno.EINVAL, "a volume key cannot be empty")
    args = [*args, "--key-size", str(8 * volume_key.nbytes), "--", where]
    _run("luksFormat", where, args, (volume_key, passphrase))


def add_keyring_token(path: str | os.PathLike[str], description: str, keyslot: int = 0, *, token_id: int | None = None) -> None:
    """Add a ``luks2-keyring`` token to the LUKS2 header on ``path``: keyslot
    ``keyslot`` opens with the passphrase held by the kernel ``user`` key
    ``description`` (see :func:`load_passphrase`).  ``token_id`` picks the
    token number (default: cryptsetup's first free one).

    No secret is involved: the token holds the description only.  Raises
    ``EINVAL`` (empty description or one with a NUL, a slot or token number
    outside 0..31, an inactive keyslot, a path without a LUKS2 header, a taken
    token number), ``ENOENT`` (no such path, no cryptsetup), ``ENODEV``,
    ``EACCES``, ``EBUSY`` as cryptsetup reports.
    """
    where = _check_path(path)
    if not isinstance(description, str) or not description or "\0" in description:
        raise error(errno.EINVAL, "a luks2-keyring token names a non-empty key description")
    if type(keyslot) is not int or not 0 <= keyslot < _LUKS2_SLOTS:
        raise error(errno.EINVAL, f"a LUKS2 keyslot is 0..{_LUKS2_SLOTS - 1}")
    args = ["token", "add", "--key-description", description, "--key-slot", str(keyslot)]
    if token_id is not None:
        if type(token_id) is not int or not 0 <= token_id < _LUKS2_SLOTS:
            raise error(errno.EINVAL, f"a LUKS2 token number is 0..{_LUKS2_SLOTS - 1}")
        args += ["--token-id", str(token_id)]
    _run("token add", where, [*args, "--", where])


def load_passphrase(description: str, passphrase: bytes | bytearray | memoryview | Key, keyring: int | str = "@s") -> Key:
    """Put ``passphrase`` into the kernel keyring as the ``user`` key
    ``description`` that a ``luks2-keyring`` token names, linked into
    ``keyring`` (an ``@x`` alias or a serial, for this process); its handle.

    ``passphrase`` is bytes or a key handle whose plaintext this process may
    use, handed to ``add_key`` from secret memory without a copy.  cryptsetup
    finds the key when it runs with this keyring among its own (``@s`` of the
    same session, or ``@u``).  Raises ``EINVAL`` (empty passphrase or
    description), ``secret()``'s errors, and add_key's (``EDQUOT``,
    ``EACCES``, ``ENOKEY`` for the keyring).
    """
    if not isinstance(description, str) or not description or "\0" in description:
        raise error(errno.EINVAL, "a passphrase key needs a non-empty description")
    kernel = KernelKeyspace()
    ringid = kernel.resolve(keyring)
    if isinstance(passphrase, Key):
        with passphrase.secret(consumer="luks") as mv:
            serial = _add_user(description, mv, ringid)
    elif isinstance(passphrase, (bytes, bytearray, memoryview)):
        serial = _add_user(description, memoryview(passphrase), ringid)
    else:
        raise error(errno.EINVAL, "a passphrase is bytes or a key handle")
    return kernel.handle(serial, "user", description)


def _add_user(description: str, mv: memoryview, ringid: int) -> int:
    if not mv.nbytes:
        raise error(errno.EINVAL, "a LUKS2 passphrase cannot be empty")
    return kernel_syscalls.add_key("user", description, mv, ringid)
