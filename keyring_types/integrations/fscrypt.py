"""Handing keys to fscrypt (ext4, f2fs, ubifs, ceph encryption): v2 policies.

Offline, :func:`identifier` and :func:`descriptor` compute what the kernel
derives from a raw master key (fs/crypto/keyring.c, hkdf.c):

* v2 identifier: HKDF-SHA512 with no salt (HashLen zero bytes), info
  ``"fscrypt\\0"`` + context byte 1, first 16 bytes;
* v1 descriptor: the first 8 bytes of SHA-512(SHA-512(key)).

On a filesystem, the ``FS_IOC_*`` ioctls of ``<linux/fscrypt.h>``:
:func:`add_key` (from a key's plaintext, copied only between secret-memory
buffers on its way to the kernel, or by ``key_id`` of a kernel
``fscrypt-provisioning`` key), :func:`set_policy`, :func:`get_policy`,
:func:`key_status` and :func:`remove_key`.  Errors are the kernel's errno:
``ENOTTY`` where the filesystem has no fscrypt ioctls at all, ``EOPNOTSUPP``
where it has them but encryption is off (ext4 without ``-O encrypt``),
``EKEYREJECTED`` for a ``key_id`` that is not a v2 ``fscrypt-provisioning``
key, ``ENOKEY`` for a key that is not there, ``EACCES``, ``EINVAL``.

The ioctl numbers are the asm-generic encoding (x86, arm, arm64, riscv, s390).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyring_types.bindings._secmem import ffi as _secmem_ffi
from keyring_types.core.handle import Key
from keyring_types.errors import KeyringError, error
from keyring_types.integrations.kernel_keyspace import KernelKeyspace
from keyring_types.secret import SecretBuffer
from keyring_types.types.fscrypt_provisioning import (
    FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER,
    FSCRYPT_MAX_RAW_KEY_SIZE,
    FSCRYPT_MIN_KEY_SIZE,
    HEADER,
)

__all__ = [
    "KeyStatus",
    "Policy",
    "RemovalStatus",
    "add_key",
    "add_raw_key",
    "descriptor",
    "get_policy",
    "identifier",
    "key_status",
    "provisioning_payload",
    "remove_key",
    "set_policy",
]

IDENTIFIER_SIZE: Final = 16
DESCRIPTOR_SIZE: Final = 8
_HKDF_INFO_KEY_IDENTIFIER: Final = b"fscrypt\0" + bytes([1])  # HKDF_CONTEXT_KEY_IDENTIFIER(_FOR_RAW_KEY)

#: Mode names (as fscryptctl spells them) and their FSCRYPT_MODE_* numbers.
MODES: Final[dict[str, int]] = {
    "AES-256-XTS": 1,
    "AES-256-CTS": 4,
    "AES-128-CBC": 5,
    "AES-128-CTS": 6,
    "Adiantum": 9,
    "AES-256-HCTR2": 10,
}
_MODE_NAMES: Final = {v: k for k, v in MODES.items()}
#: Filename padding and its FSCRYPT_POLICY_FLAGS_PAD_* code (the low two flag bits).
_PADDING: Final = {4: 0, 8: 1, 16: 2, 32: 3}
_PAD_MASK: Final = 0x03

# struct sizes from <linux/fscrypt.h>
_KEY_SPEC: Final = struct.Struct("=II32s")  # type, __reserved, u (32 bytes)
_ADD_KEY_ARG_SIZE: Final = _KEY_SPEC.size + 4 + 4 + 4 + 28  # + raw_size, key_id, flags, __reserved[7]
_REMOVE_KEY_ARG: Final = struct.Struct("=II32sI20x")  # key_spec, removal_status_flags, __reserved[5]
_STATUS_ARG: Final = struct.Struct("=II32s24xIII52x")  # key_spec, __reserved[6], status, flags, user_count, ...
_POLICY_V2: Final = struct.Struct("=BBBB4x16s")
_POLICY_V1: Final = struct.Struct("=BBBB8s")
_GET_POLICY_EX_SIZE: Final = 8 + _POLICY_V2.size  # u64 policy_size + the largest policy


def _ioc(direction: int, nr: int, size: int) -> int:
    """asm-generic _IOC(dir, 'f', nr, size)."""
    return (direction << 30) | (size << 16) | (ord("f") << 8) | nr


_IOC_WRITE, _IOC_READ = 1, 2
FS_IOC_SET_ENCRYPTION_POLICY: Final = _ioc(_IOC_READ, 19, _POLICY_V1.size)  # _IOR, as the header says
FS_IOC_GET_ENCRYPTION_POLICY_EX: Final = _ioc(_IOC_READ | _IOC_WRITE, 22, 9)
FS_IOC_ADD_ENCRYPTION_KEY: Final = _ioc(_IOC_READ | _IOC_WRITE, 23, _ADD_KEY_ARG_SIZE)
FS_IOC_REMOVE_ENCRYPTION_KEY: Final = _ioc(_IOC_READ | _IOC_WRITE, 24, _REMOVE_KEY_ARG.size)
FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS: Final = _ioc(_IOC_READ | _IOC_WRITE, 25, _REMOVE_KEY_ARG.size)
FS_IOC_GET_ENCRYPTION_KEY_STATUS: Final = _ioc(_IOC_READ | _IOC_WRITE, 26, _STATUS_ARG.size)

_STATUS_NAMES: Final = {1: "absent", 2: "present", 3: "incompletely removed"}

#: What an errno means for these ioctls, appended to the message.
_HINTS: Final = {
    errno.ENOTTY: "the filesystem has no fscrypt support",
    errno.EOPNOTSUPP: "encryption is not enabled on this filesystem (ext4: mkfs/tune2fs -O encrypt)",
    errno.EKEYREJECTED: "key_id does not name an fscrypt-provisioning key for v2 (identifier) policies",
    errno.ENOKEY: "the key is not present (or not added by this user)",
    errno.EACCES: "permission denied",
    errno.EEXIST: "the directory already has a different policy",
    errno.ENOTEMPTY: "the directory is not empty",
    errno.ENOTDIR: "not a directory",
    errno.ENODATA: "the file is not encrypted",
    errno.EINVAL: "the kernel refused the arguments",
}


# -- offline --------------------------------------------------------------------


def _raw_size_ok(raw: bytes | bytearray | memoryview) -> int:
    n = memoryview(raw).nbytes
    if not FSCRYPT_MIN_KEY_SIZE <= n <= FSCRYPT_MAX_RAW_KEY_SIZE:
        raise error(
            errno.EINVAL,
            f"an fscrypt master key must be {FSCRYPT_MIN_KEY_SIZE}..{FSCRYPT_MAX_RAW_KEY_SIZE} bytes, got {n}",
        )
    return n


def identifier(raw: bytes | bytearray | memoryview) -> bytes:
    """The v2 key identifier (16 bytes) the kernel derives from raw key ``raw``;
    ``EINVAL`` unless 16..64 bytes (the sizes FS_IOC_ADD_ENCRYPTION_KEY takes)."""
    _raw_size_ok(raw)
    hkdf = HKDF(algorithm=hashes.SHA512(), length=IDENTIFIER_SIZE, salt=None, info=_HKDF_INFO_KEY_IDENTIFIER)
    return hkdf.derive(raw)


def descriptor(raw: bytes | bytearray | memoryview) -> bytes:
    """The v1 key descriptor (8 bytes): SHA-512(SHA-512(raw))[:8]; ``EINVAL``
    unless 16..64 bytes."""
    _raw_size_ok(raw)
    return hashlib.sha512(hashlib.sha512(raw).digest()).digest()[:DESCRIPTOR_SIZE]


def provisioning_payload(raw: bytes | bytearray | memoryview) -> SecretBuffer:
    """The payload of a v2 ``fscrypt-provisioning`` key for ``raw``, built in
    secret memory (the caller wipes it); ``EINVAL`` unless 16..64 bytes."""
    n = _raw_size_ok(raw)
    buf = SecretBuffer(HEADER.size + n)
    out = buf.writable()
    HEADER.pack_into(out, 0, FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER, 0)
    out[HEADER.size :] = raw
    out.release()
    return buf


# -- ioctls ---------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_ioctl = _libc.ioctl
_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_ioctl.restype = ctypes.c_int


@contextmanager
def _opened(path: str | os.PathLike[str], what: str) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise error(e.errno or errno.EIO, f"cannot open {what} {os.fspath(path)!r}: {e.strerror}") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _fail(err: int, op: str, path: str | os.PathLike[str]) -> KeyringError:
    hint = _HINTS.get(err, os.strerror(err))
    return error(err, f"{op} on {os.fspath(path)!r}: {hint}")


def _call(fd: int, request: int, address: int, op: str, path: str | os.PathLike[str]) -> None:
    """ioctl(fd, request, address) on memory the caller owns; raises the kernel's errno."""
    if _ioctl(fd, request, address) < 0:
        raise _fail(ctypes.get_errno(), op, path)


def _call_on(fd: int, request: int, arg: bytearray, op: str, path: str | os.PathLike[str]) -> None:
    """ioctl on a non-secret struct held in ``arg`` (read back in place)."""
    holder = (ctypes.c_char * len(arg)).from_buffer(arg)
    _call(fd, request, ctypes.addressof(holder), op, path)


def _check_identifier(ident: bytes | bytearray | memoryview) -> bytes:
    try:
        value = bytes(ident)
    except TypeError:
        raise error(errno.EINVAL, f"a key identifier must be bytes, not {type(ident).__name__}") from None
    if len(value) != IDENTIFIER_SIZE:
        raise error(errno.EINVAL, f"a key identifier is {IDENTIFIER_SIZE} bytes, got {len(value)}")
    return value


def _add_from_secret(fd: int, raw: memoryview, mountpoint: str | os.PathLike[str]) -> bytes:
    """FS_IOC_ADD_ENCRYPTION_KEY with the raw key: the argument struct is built in
    secret memory and handed to the kernel by address, so the key is never in a
    Python ``bytes`` or on the interpreter's stack."""
    n = _raw_size_ok(raw)
    arg = SecretBuffer(_ADD_KEY_ARG_SIZE + n)  # zeroed: every __reserved field is 0
    try:
        out = arg.writable()
        try:
            struct.pack_into("=I", out, 0, FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER)
            struct.pack_into("=I", out, _KEY_SPEC.size, n)  # raw_size; key_id and flags stay 0
            out[_ADD_KEY_ARG_SIZE:] = raw
        finally:
            out.release()
        address = int(_secmem_ffi.cast("uintptr_t", arg.address))
        _call(fd, FS_IOC_ADD_ENCRYPTION_KEY, address, "FS_IOC_ADD_ENCRYPTION_KEY", mountpoint)
        view = arg.view()
        try:
            return bytes(view[8 : 8 + IDENTIFIER_SIZE])  # the identifier the kernel wrote back
        finally:
            view.release()
    finally:
        arg.wipe()


def _add_by_key_id(fd: int, key_id: int, mountpoint: str | os.PathLike[str]) -> bytes:
    arg = bytearray(_ADD_KEY_ARG_SIZE)
    struct.pack_into("=I", arg, 0, FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER)
    struct.pack_into("=I", arg, _KEY_SPEC.size + 4, key_id & 0xFFFFFFFF)  # key_id; raw_size 0
    _call_on(fd, FS_IOC_ADD_ENCRYPTION_KEY, arg, "FS_IOC_ADD_ENCRYPTION_KEY", mountpoint)
    return bytes(arg[8 : 8 + IDENTIFIER_SIZE])


def _remove_claim(fd: int, ident: bytes) -> None:
    arg = bytearray(_REMOVE_KEY_ARG.size)
    _REMOVE_KEY_ARG.pack_into(arg, 0, FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER, 0, ident, 0)
    _ioctl(fd, FS_IOC_REMOVE_ENCRYPTION_KEY, ctypes.addressof((ctypes.c_char * len(arg)).from_buffer(arg)))


def add_key(mountpoint: str | os.PathLike[str], key: Key | int) -> bytes:
    """Add a v2 master key to the filesystem holding ``mountpoint``; returns its
    16-byte identifier (as the kernel computed it).

    ``key`` is either

    * a key handle whose plaintext the caller may use (``key.secret()``: an
      in-process key of any type with a secret, an in-process
      ``fscrypt-provisioning`` key, a kernel ``user`` key), 16..64 bytes; or
    * a ``fscrypt-provisioning`` key of a :class:`KernelKeyspace`, or the serial
      of any kernel key, handed over by ``key_id``: the kernel reads it itself
      (``EKEYREJECTED`` unless it is a v2 ``fscrypt-provisioning`` key).

    For the plaintext route the identifier the kernel returns is checked against
    the one computed here; on a mismatch the key is removed again (``EBADMSG``).
    Raises ``EINVAL`` (size), ``EKEYREJECTED`` (wrong type or v1 payload, as the
    kernel), ``ENOTTY``/``EOPNOTSUPP`` (no encryption on the filesystem),
    ``EACCES``, ``EDQUOT``, and ``secret()``'s errors.
    """
    if isinstance(key, Key) and isinstance(key.keyspace, KernelKeyspace) and key.type == "fscrypt-provisioning":
        key = key.serial
    if isinstance(key, int) and not isinstance(key, bool):
        with _opened(mountpoint, "mountpoint") as fd:
            return _add_by_key_id(fd, key, mountpoint)
    if not isinstance(key, Key):
        raise error(errno.EINVAL, f"add_key takes a key handle or a kernel key serial, not {type(key).__name__}")
    provisioning = key.type == "fscrypt-provisioning"
    with key.secret(consumer="fscrypt") as mv, _opened(mountpoint, "mountpoint") as fd:
        raw = mv
        if provisioning:
            spec_type, flags = HEADER.unpack_from(mv)
            if spec_type != FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER or flags != 0:
                raise error(
                    errno.EKEYREJECTED,
                    f"key {key.serial} is an fscrypt-provisioning key for type {spec_type} flags {flags:#x}, "
                    "not for v2 (identifier) policies",
                )
            raw = mv[HEADER.size :]
        try:
            return _add_checked(fd, raw, mountpoint)
        finally:
            if raw is not mv:
                raw.release()


def _add_checked(fd: int, raw: memoryview, mountpoint: str | os.PathLike[str]) -> bytes:
    expected = identifier(raw)
    got = _add_from_secret(fd, raw, mountpoint)
    if got != expected:
        _remove_claim(fd, got)
        raise error(errno.EBADMSG, "the kernel's key identifier differs from the one derived here")
    return got


def add_raw_key(mountpoint: str | os.PathLike[str], raw: bytes | bytearray | memoryview) -> bytes:
    """Add the raw master key ``raw`` (16..64 bytes; best held in secret memory,
    e.g. a :class:`SecretBuffer` view) to the filesystem holding ``mountpoint``,
    as fscryptctl's ``add_key`` does; returns its 16-byte identifier.

    The identifier the kernel returns is checked against the one computed here
    (``EBADMSG`` on a mismatch, after removing the key again).  Raises
    ``EINVAL`` (size) and the kernel's errno as :func:`add_key`.
    """
    view = memoryview(raw)
    _raw_size_ok(view)
    with _opened(mountpoint, "mountpoint") as fd:
        return _add_checked(fd, view, mountpoint)


def set_policy(
    directory: str | os.PathLike[str],
    identifier: bytes,
    contents: str = "AES-256-XTS",
    filenames: str = "AES-256-CTS",
    padding: int = 32,
) -> None:
    """Set a v2 encryption policy on an empty ``directory``.

    ``EINVAL`` for an unknown mode name, a padding other than 4/8/16/32 or an
    identifier not 16 bytes (before any call), and the kernel's: ``ENOKEY``
    (the key was not added by this user, and no CAP_FOWNER), ``EEXIST`` (another
    policy), ``ENOTEMPTY``, ``ENOTDIR``, ``EACCES``, ``EINVAL`` (a mode pair the
    kernel does not allow), ``ENOTTY``/``EOPNOTSUPP``.
    """
    ident = _check_identifier(identifier)
    modes = []
    for which, name in (("contents", contents), ("filenames", filenames)):
        if name not in MODES:
            raise error(errno.EINVAL, f"unknown {which} encryption mode {name!r} (known: {', '.join(MODES)})")
        modes.append(MODES[name])
    if padding not in _PADDING or isinstance(padding, bool):
        raise error(errno.EINVAL, f"filename padding must be 4, 8, 16 or 32, got {padding!r}")
    arg = bytearray(_POLICY_V2.pack(2, modes[0], modes[1], _PADDING[padding], ident))
    with _opened(directory, "directory") as fd:
        _call_on(fd, FS_IOC_SET_ENCRYPTION_POLICY, arg, "FS_IOC_SET_ENCRYPTION_POLICY", directory)


@attrs.frozen
class Policy:
    """An encryption policy as FS_IOC_GET_ENCRYPTION_POLICY_EX reports it."""

    version: int  # 1 or 2 (v1 is stored as 0 by the kernel; shown here as 1)
    contents: str
    filenames: str
    padding: int
    flags: int  # all policy flags, padding bits included
    key: bytes  # the 16-byte identifier (v2) or 8-byte descriptor (v1)

    @property
    def identifier(self) -> bytes | None:
        return self.key if self.version == 2 else None


def _mode_name(n: int) -> str:
    return _MODE_NAMES.get(n, f"mode {n}")


def get_policy(directory: str | os.PathLike[str]) -> Policy:
    """The encryption policy of a file or directory.

    Raises the kernel's ``ENODATA`` (not encrypted), ``ENOTTY``/``EOPNOTSUPP``
    (no encryption support), ``EINVAL`` (a policy version it does not know).
    """
    arg = bytearray(_GET_POLICY_EX_SIZE)
    struct.pack_into("=Q", arg, 0, _POLICY_V2.size)
    with _opened(directory, "file") as fd:
        _call_on(fd, FS_IOC_GET_ENCRYPTION_POLICY_EX, arg, "FS_IOC_GET_ENCRYPTION_POLICY_EX", directory)
    version = arg[8]
    if version == 2:
        _v, contents, filenames, flags, key = _POLICY_V2.unpack_from(arg, 8)
    else:
        _v, contents, filenames, flags, key = _POLICY_V1.unpack_from(arg, 8)
    padding = 4 << (flags & _PAD_MASK)
    return Policy(2 if version == 2 else 1, _mode_name(contents), _mode_name(filenames), padding, flags, key)


@attrs.frozen
class KeyStatus:
    """FS_IOC_GET_ENCRYPTION_KEY_STATUS: ``status`` is "absent", "present" or
    "incompletely removed"."""

    status: str
    added_by_self: bool
    user_count: int


def key_status(mountpoint: str | os.PathLike[str], identifier: bytes) -> KeyStatus:
    """Whether the v2 key ``identifier`` is present on the filesystem of
    ``mountpoint``; ``EINVAL`` (identifier size), ``ENOTTY``/``EOPNOTSUPP``."""
    ident = _check_identifier(identifier)
    arg = bytearray(_STATUS_ARG.size)
    _STATUS_ARG.pack_into(arg, 0, FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER, 0, ident, 0, 0, 0)
    with _opened(mountpoint, "mountpoint") as fd:
        _call_on(fd, FS_IOC_GET_ENCRYPTION_KEY_STATUS, arg, "FS_IOC_GET_ENCRYPTION_KEY_STATUS", mountpoint)
    *_, status, flags, users = _STATUS_ARG.unpack_from(arg)
    return KeyStatus(_STATUS_NAMES.get(status, f"status {status}"), bool(flags & 1), users)


@attrs.frozen
class RemovalStatus:
    """What FS_IOC_REMOVE_ENCRYPTION_KEY reported besides success: files still
    open (the key is "incompletely removed") or other users' claims remaining."""

    files_busy: bool
    other_users: bool


def remove_key(mountpoint: str | os.PathLike[str], identifier: bytes, all_users: bool = False) -> RemovalStatus:
    """Remove this user's claim to the v2 key ``identifier`` (the key itself goes
    once no user claims it), or every user's with ``all_users`` (root only).

    Raises the kernel's ``ENOKEY`` (not present, or not added by this user),
    ``EACCES`` (``all_users`` without CAP_SYS_ADMIN), ``ENOTTY``/``EOPNOTSUPP``,
    and ``EINVAL`` for an identifier not 16 bytes.
    """
    ident = _check_identifier(identifier)
    arg = bytearray(_REMOVE_KEY_ARG.size)
    _REMOVE_KEY_ARG.pack_into(arg, 0, FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER, 0, ident, 0)
    request = FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS if all_users else FS_IOC_REMOVE_ENCRYPTION_KEY
    name = "FS_IOC_REMOVE_ENCRYPTION_KEY" + ("_ALL_USERS" if all_users else "")
    with _opened(mountpoint, "mountpoint") as fd:
        _call_on(fd, request, arg, name, mountpoint)
    flags = _REMOVE_KEY_ARG.unpack_from(arg)[3]
    return RemovalStatus(bool(flags & 1), bool(flags & 2))
