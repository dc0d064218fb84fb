"""Typed wrappers over the real ``add_key(2)``, ``request_key(2)`` and ``keyctl(2)``.

One function per system call (per ``KEYCTL_*`` operation), calling the C helpers
of ``keyring_types.bindings._keyctl`` (cffi, API mode).  A failing call raises
``error(errno, message)`` with the kernel's errno and a message naming the
operation and its ids/type/description; nothing here second-guesses the kernel.

Every argument must fit the C type the kernel reads it as (``key_serial_t``,
``uid_t``, ``unsigned``, ``key_perm_t``, C strings): the kernel would silently
truncate a wider register (``chown(2**40)`` is ``chown(0)`` to it), so anything
else is refused here with ``EINVAL`` (:mod:`keyring_types.core.syscall_args`)
before the call is made.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import Any

from keyring_types.bindings._keyctl import ffi, lib
from keyring_types.core.syscall_args import c_int_flag, c_string, key_id, owner_id, u32
from keyring_types.errors import KeyringError, error
from keyring_types.secret import SecretBuffer

__all__ = [
    "KEYCTL_CAPABILITIES",
    "KEYCTL_WATCH_KEY",
    "KEYCTL_CHOWN",
    "KEYCTL_CLEAR",
    "KEYCTL_DH_COMPUTE",
    "KEYCTL_GET_PERSISTENT",
    "KEYCTL_GET_SECURITY",
    "KEYCTL_MOVE",
    "KEYCTL_MOVE_EXCL",
    "KEYCTL_SESSION_TO_PARENT",
    "KEYCTL_DESCRIBE",
    "KEYCTL_GET_KEYRING_ID",
    "KEYCTL_INVALIDATE",
    "KEYCTL_JOIN_SESSION_KEYRING",
    "KEYCTL_LINK",
    "KEYCTL_READ",
    "KEYCTL_REVOKE",
    "KEYCTL_SEARCH",
    "KEYCTL_SETPERM",
    "KEYCTL_SET_TIMEOUT",
    "KEYCTL_UNLINK",
    "KEYCTL_UPDATE",
    "add_key",
    "keyctl_capabilities",
    "keyctl_chown",
    "keyctl_clear",
    "keyctl_describe",
    "keyctl_dh_compute",
    "keyctl_get_persistent",
    "keyctl_get_security",
    "keyctl_get_keyring_id",
    "keyctl_invalidate",
    "keyctl_join_session_keyring",
    "keyctl_link",
    "keyctl_move",
    "keyctl_read",
    "keyctl_read_into",
    "keyctl_read_secret",
    "keyctl_read_size",
    "keyctl_revoke",
    "keyctl_search",
    "keyctl_session_to_parent",
    "keyctl_set_timeout",
    "keyctl_setperm",
    "keyctl_unlink",
    "keyctl_update",
    "request_key",
    # construction by upcall: the handler's side
    "KEYCTL_ASSUME_AUTHORITY",
    "KEYCTL_INSTANTIATE",
    "KEYCTL_INSTANTIATE_IOV",
    "KEYCTL_NEGATE",
    "KEYCTL_REJECT",
    "KEYCTL_SET_REQKEY_KEYRING",
    "keyctl_assume_authority",
    "keyctl_instantiate",
    "keyctl_instantiate_iov",
    "keyctl_negate",
    "keyctl_reject",
    "keyctl_set_reqkey_keyring",
]

# include/uapi/linux/keyctl.h
KEYCTL_GET_KEYRING_ID = 0
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_UPDATE = 2
KEYCTL_REVOKE = 3
KEYCTL_CHOWN = 4
KEYCTL_SETPERM = 5
KEYCTL_DESCRIBE = 6
KEYCTL_CLEAR = 7
KEYCTL_LINK = 8
KEYCTL_UNLINK = 9
KEYCTL_SEARCH = 10
KEYCTL_READ = 11
KEYCTL_SET_TIMEOUT = 15
KEYCTL_INVALIDATE = 21

# First guess for a read buffer: one syscall suffices for small payloads and short
# keyrings; anything longer is sized by the length the kernel reports.  A multiple
# of 4, because the kernel refuses keyring reads into other lengths (EINVAL).
_READ_GUESS = 512


def _cstr(text: str | None, what: str) -> Any:
    """A NUL-terminated C string, or NULL for ``None`` (the kernel says what NULL means).

    ``EINVAL`` for a non-str, an embedded NUL or text with no UTF-8 form.
    """
    if type(text) is str and text.isprintable():  # no NUL, no lone surrogate
        return text.encode()
    checked = c_string(text, what, None)
    return ffi.NULL if checked is None else checked.encode()


def _buffer(payload: bytes | memoryview | None, what: str) -> Any:
    """A pointer to a payload's bytes (NULL for ``None``); ``EINVAL`` if not bytes-like."""
    if payload is None:
        return ffi.NULL
    try:
        return ffi.from_buffer(payload)
    except (TypeError, ValueError, BufferError):  # not a buffer, or a released one
        raise error(errno.EINVAL, f"{what} must be bytes-like, not {type(payload).__name__}") from None


def _id_error(*ids: object) -> KeyringError:
    """The ``EINVAL`` for whichever of ``ids`` (Python ints) is not a key_serial_t.

    For the helpers whose C signature types the id as int32_t: cffi's own
    conversion refuses an int out of range (OverflowError), and this names which.
    Anything but an int is converted with key_id first (cffi would take a
    Decimal's or a float-like's __int__ and truncate it).
    """
    for value in ids:
        try:
            key_id(value)
        except KeyringError as exc:
            return exc
    return error(errno.EINVAL, "a key id does not fit key_serial_t")


def _fail(rc: int, what: str) -> KeyringError:
    err = -rc
    return error(err, f"{what}: {os.strerror(err)}")


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise _fail(rc, what)
    return rc


# The messages below are formatted only on failure: these calls are the kernel
# side of the measured lifecycle, and the ids in them are known to fit by then.


def add_key(type_name: str, description: str | None, payload: bytes | memoryview | None, ringid: int) -> int:
    """``add_key(2)``: the new (or updated) key's serial.

    The kernel raises ``EINVAL`` (bad name/description/payload, ring 0), ``EPERM``
    ('.' type or keyring name), ``ENODEV`` (unknown type), ``ENOKEY``/``ENOTDIR``
    (destination), ``EACCES``, ``EDQUOT``.
    """
    ctype, cdesc = _cstr(type_name, "key type"), _cstr(description, "description")
    data = _buffer(payload, "payload")
    plen = len(data) if payload is not None else 0  # bytes, whatever the buffer's item size
    if type(ringid) is not int:
        ringid = key_id(ringid, "keyring id")
    try:
        rc = lib.kt_add_key(ctype, cdesc, data, plen, ringid)
    except OverflowError:
        raise _id_error(ringid) from None
    if rc < 0:
        raise _fail(rc, f"add_key(type {type_name!r}, description {description!r}, {plen} bytes, keyring {ringid})")
    return rc  # type: ignore[no-any-return]


def request_key(type_name: str, description: str, callout: bytes | None, destringid: int) -> int:
    """``request_key(2)``: search the caller's keyrings (upcall only with ``callout``).

    ``ENOKEY`` (none, or only expired), ``EKEYREVOKED``, ``EACCES``, ``EPERM`` ('.' type),
    ``EINVAL``.
    """
    ctype, cdesc = _cstr(type_name, "key type"), _cstr(description, "description")
    if callout is not None and (type(callout) is not bytes or b"\0" in callout):
        raise error(errno.EINVAL, "callout info must be bytes without a NUL byte")
    dest = key_id(destringid, "destination id")
    rc = lib.kt_request_key(ctype, cdesc, ffi.NULL if callout is None else callout, dest)
    return _check(rc, f"request_key(type {type_name!r}, description {description!r}, destination {dest})")


def keyctl_get_keyring_id(keyid: int, create: bool) -> int:
    """``KEYCTL_GET_KEYRING_ID``: resolve a special id; ``ENOKEY`` (absent, ``create`` false), ``EINVAL``."""
    keyid, flag = key_id(keyid), c_int_flag(create, "create flag")
    rc = lib.kt_keyctl_int(KEYCTL_GET_KEYRING_ID, keyid, 1 if flag else 0, 0, 0)
    return _check(rc, f"keyctl_get_keyring_id(key {keyid}, create={flag})")


def keyctl_join_session_keyring(name: str | None) -> int:
    """``KEYCTL_JOIN_SESSION_KEYRING``: join/create a named session keyring (``None``: anonymous).

    ``EPERM`` for a name starting with '.', ``EINVAL``, ``EDQUOT``, ``EACCES``.
    """
    rc = lib.kt_keyctl_join(_cstr(name, "session keyring name"))
    shown = "anonymous" if name is None else repr(name)
    return _check(rc, f"keyctl_join_session_keyring({shown})")


def keyctl_update(keyid: int, payload: bytes | memoryview | None) -> None:
    """``KEYCTL_UPDATE``: ``EINVAL`` (0 or > one page), ``EOPNOTSUPP``, ``EACCES``,
    ``EKEYREVOKED``, ``EKEYEXPIRED``, ``ENOKEY``, ``EDQUOT``."""
    data = _buffer(payload, "payload")
    plen = len(data) if payload is not None else 0
    if type(keyid) is not int:
        keyid = key_id(keyid)
    try:
        rc = lib.kt_keyctl_update(keyid, data, plen)
    except OverflowError:
        raise _id_error(keyid) from None
    if rc < 0:
        raise _fail(rc, f"keyctl_update(key {keyid}, {plen} bytes)")


def _keyctl_id(op: int, keyid: int, name: str) -> None:
    if type(keyid) is not int:
        keyid = key_id(keyid)
    try:
        rc = lib.kt_keyctl_id(op, keyid)
    except OverflowError:
        raise _id_error(keyid) from None
    if rc < 0:
        raise _fail(rc, f"{name}(key {keyid})")


def keyctl_revoke(keyid: int) -> None:
    """``KEYCTL_REVOKE``: ``EACCES``, ``EKEYREVOKED``, ``ENOKEY``."""
    _keyctl_id(KEYCTL_REVOKE, keyid, "keyctl_revoke")


def keyctl_chown(keyid: int, uid: int, gid: int) -> None:
    """``KEYCTL_CHOWN`` (-1 or 2**32-1 keeps a field): ``EACCES``, ``EDQUOT``, ``EKEYREVOKED``,
    ``ENOKEY``; ``EINVAL`` for an id outside ``uid_t``/``gid_t``."""
    keyid, uid, gid = key_id(keyid), owner_id(uid, "uid"), owner_id(gid, "gid")
    rc = lib.kt_keyctl_int(KEYCTL_CHOWN, keyid, uid, gid, 0)
    _check(rc, f"keyctl_chown(key {keyid}, uid {uid}, gid {gid})")


def keyctl_setperm(keyid: int, perm: int) -> None:
    """``KEYCTL_SETPERM``: ``EINVAL`` (bits outside 0x3f3f3f3f), ``EACCES``, ``EKEYREVOKED``, ``ENOKEY``."""
    keyid, mask = key_id(keyid), u32(perm, "permission mask")
    rc = lib.kt_keyctl_int(KEYCTL_SETPERM, keyid, mask, 0, 0)
    _check(rc, f"keyctl_setperm(key {keyid}, perm {mask:#010x})")


def _read_loop(op: int, keyid: int, name: str) -> bytes:
    # The kernel returns the full length whatever the buffer size and copies only
    # when the buffer is large enough (keyctl.c keyctl_read_key/keyctl_describe_key),
    # so retry with the reported length until the data fits (it can grow meanwhile).
    if type(keyid) is not int:
        keyid = key_id(keyid)
    size = _READ_GUESS
    while True:
        buf = ffi.new("char[]", size)
        try:
            rc = lib.kt_keyctl_buf(op, keyid, buf, size)
        except OverflowError:
            raise _id_error(keyid) from None
        if rc < 0:
            raise _fail(rc, f"{name}(key {keyid})")
        if rc <= size:
            data: bytes = ffi.unpack(buf, rc)
            return data
        size = rc


def keyctl_describe(keyid: int) -> str:
    """``KEYCTL_DESCRIBE``: ``type;uid;gid;perm;description`` (trailing NUL removed).

    ``EACCES`` without VIEW, ``EKEYREVOKED``, ``EKEYEXPIRED``, ``ENOKEY``.
    """
    raw = _read_loop(KEYCTL_DESCRIBE, keyid, "keyctl_describe")
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return raw.decode("utf-8", "surrogateescape")


def keyctl_clear(ringid: int) -> None:
    """``KEYCTL_CLEAR``: ``ENOTDIR`` (not a keyring), ``EACCES``, ``EKEYREVOKED``, ``ENOKEY``."""
    _keyctl_id(KEYCTL_CLEAR, ringid, "keyctl_clear")


def _keyctl_id2(op: int, keyid: int, ringid: int, name: str) -> None:
    if type(keyid) is not int or type(ringid) is not int:
        keyid, ringid = key_id(keyid), key_id(ringid, "keyring id")
    try:
        rc = lib.kt_keyctl_id2(op, keyid, ringid)
    except OverflowError:
        raise _id_error(keyid, ringid) from None
    if rc < 0:
        raise _fail(rc, f"{name}(key {keyid}, keyring {ringid})")


def keyctl_link(keyid: int, ringid: int) -> None:
    """``KEYCTL_LINK``: ``EDEADLK`` (cycle), ``ENOTDIR``, ``EACCES``, ``EDQUOT``, ``ENOKEY``, ``EKEYREVOKED``."""
    _keyctl_id2(KEYCTL_LINK, keyid, ringid, "keyctl_link")


def keyctl_unlink(keyid: int, ringid: int) -> None:
    """``KEYCTL_UNLINK``: ``ENOENT`` (not linked there), ``ENOTDIR``, ``EACCES``, ``ENOKEY``."""
    _keyctl_id2(KEYCTL_UNLINK, keyid, ringid, "keyctl_unlink")


def keyctl_search(ringid: int, type_name: str, description: str, destringid: int) -> int:
    """``KEYCTL_SEARCH``: ``ENOKEY`` (no match), ``EKEYREVOKED``/``EKEYEXPIRED``/``EACCES``
    (only unusable matches), ``ENOTDIR``, ``EINVAL``, ``EPERM``."""
    ctype, cdesc = _cstr(type_name, "key type"), _cstr(description, "description")
    if type(ringid) is not int or type(destringid) is not int:
        ringid, destringid = key_id(ringid, "keyring id"), key_id(destringid, "destination id")
    try:
        rc = lib.kt_keyctl_search(ringid, ctype, cdesc, destringid)
    except OverflowError:
        raise _id_error(ringid, destringid) from None
    if rc < 0:
        raise _fail(
            rc,
            f"keyctl_search(keyring {ringid}, type {type_name!r}, description {description!r}, "
            f"destination {destringid})",
        )
    return rc  # type: ignore[no-any-return]


def keyctl_read(keyid: int) -> bytes:
    """``KEYCTL_READ``: the payload (a keyring: its serials, 4 native-endian bytes each).

    ``EACCES`` (no READ, not possessed), ``EOPNOTSUPP`` (no read op, e.g. logon),
    ``EKEYREVOKED``, ``EKEYEXPIRED``, ``ENOKEY``.
    """
    return _read_loop(KEYCTL_READ, keyid, "keyctl_read")


def keyctl_read_size(keyid: int) -> int:
    """``KEYCTL_READ`` with no buffer: the payload length.  Same errno as :func:`keyctl_read`."""
    keyid = key_id(keyid)
    return _check(lib.kt_keyctl_buf(KEYCTL_READ, keyid, ffi.NULL, 0), f"keyctl_read(key {keyid})")


def keyctl_read_into(keyid: int, target: memoryview) -> int:
    """``KEYCTL_READ`` into ``target``: the full length (data copied only if it fits)."""
    keyid = key_id(keyid)
    ptr = ffi.from_buffer(target, require_writable=True)
    return _check(lib.kt_keyctl_buf(KEYCTL_READ, keyid, ptr, len(target)), f"keyctl_read(key {keyid})")


def keyctl_read_secret(keyid: int) -> SecretBuffer:
    """``KEYCTL_READ`` straight into a new :class:`SecretBuffer` (the caller wipes it).

    The payload never passes through a Python ``bytes``: size query, allocate,
    read into the buffer, and start over if the key grew in between.  Same errno
    as :func:`keyctl_read`.
    """
    size = keyctl_read_size(keyid)
    while True:
        buf = SecretBuffer(size)
        try:
            view = buf.writable()
            try:
                got = keyctl_read_into(keyid, view)
            finally:
                view.release()
        except BaseException:
            buf.wipe()
            raise
        if got == size:
            return buf
        if got > size:  # grew between the two calls: nothing was copied
            buf.wipe()
            size = got
            continue
        # Shrank: the first ``got`` bytes are the payload; move them (native to native).
        exact = SecretBuffer(got)
        dst = exact.writable()
        src = buf.view()
        try:
            dst[:] = src[:got]
        finally:
            dst.release()
            src.release()
            buf.wipe()
        return exact


def keyctl_set_timeout(keyid: int, timeout: int) -> None:
    """``KEYCTL_SET_TIMEOUT`` (0 clears): ``EACCES``, ``EKEYREVOKED``, ``ENOKEY``;
    ``EINVAL`` outside ``unsigned int`` (0..2**32-1)."""
    keyid, timeout = key_id(keyid), u32(timeout, "timeout")
    rc = lib.kt_keyctl_int(KEYCTL_SET_TIMEOUT, keyid, timeout, 0, 0)
    _check(rc, f"keyctl_set_timeout(key {keyid}, {timeout} s)")


def keyctl_invalidate(keyid: int) -> None:
    """``KEYCTL_INVALIDATE``: ``EACCES`` (no SEARCH), ``ENOKEY``."""
    _keyctl_id(KEYCTL_INVALIDATE, keyid, "keyctl_invalidate")


# -- construction by upcall: the calls a request-key handler makes --------------
KEYCTL_INSTANTIATE = 12
KEYCTL_NEGATE = 13
KEYCTL_SET_REQKEY_KEYRING = 14
KEYCTL_ASSUME_AUTHORITY = 16
KEYCTL_REJECT = 19
KEYCTL_INSTANTIATE_IOV = 20

# keyctl(2) takes every argument as an unsigned long; a pointer goes as its address
# (kt_keyctl_int), the buffer it points into kept alive by the caller for the call.
_IOVEC = struct.Struct("@PN")  # struct iovec: void *iov_base; size_t iov_len


def _address(buf: Any) -> int:
    return int(ffi.cast("uintptr_t", buf))


def keyctl_instantiate(keyid: int, payload: bytes | None, ringid: int) -> None:
    """``KEYCTL_INSTANTIATE``: ``EPERM`` (no authority over ``keyid``), ``EINVAL``, ``EBUSY``,
    ``EACCES``/``ENOKEY`` (``ringid``), ``EDQUOT``."""
    keyid, ringid = key_id(keyid), key_id(ringid, "keyring id")
    data = _buffer(payload, "payload")
    plen = len(data) if payload else 0
    rc = lib.kt_keyctl_int(KEYCTL_INSTANTIATE, keyid, _address(data) if plen else 0, plen, ringid)
    _check(rc, f"keyctl_instantiate(key {keyid}, {plen} bytes, keyring {ringid})")


def keyctl_instantiate_iov(keyid: int, parts: list[bytes], ringid: int) -> None:
    """``KEYCTL_INSTANTIATE_IOV``: as :func:`keyctl_instantiate`, ``EINVAL`` over 1024 pieces."""
    keyid, ringid = key_id(keyid), key_id(ringid, "keyring id")
    buffers = [_buffer(p, "payload piece") for p in parts]
    iov = bytearray(_IOVEC.size * max(1, len(parts)))
    for i, (part, buf) in enumerate(zip(parts, buffers, strict=True)):
        _IOVEC.pack_into(iov, i * _IOVEC.size, _address(buf) if part else 0, len(part))
    iov_buf = ffi.from_buffer(iov)
    rc = lib.kt_keyctl_int(KEYCTL_INSTANTIATE_IOV, keyid, _address(iov_buf) if parts else 0, len(parts), ringid)
    _check(rc, f"keyctl_instantiate_iov(key {keyid}, {len(parts)} pieces, keyring {ringid})")


def keyctl_negate(keyid: int, timeout: int, ringid: int) -> None:
    """``KEYCTL_NEGATE``: ``EPERM`` (no authority), ``EBUSY``, ``EACCES``/``ENOKEY`` (``ringid``)."""
    keyid, timeout, ringid = key_id(keyid), u32(timeout, "timeout"), key_id(ringid, "keyring id")
    rc = lib.kt_keyctl_int(KEYCTL_NEGATE, keyid, timeout, ringid, 0)
    _check(rc, f"keyctl_negate(key {keyid}, {timeout} s, keyring {ringid})")


def keyctl_reject(keyid: int, timeout: int, err: int, ringid: int) -> None:
    """``KEYCTL_REJECT``: ``EINVAL`` (bad error number), ``EPERM``, ``EBUSY``, ``EACCES``/``ENOKEY``."""
    keyid, timeout, ringid = key_id(keyid), u32(timeout, "timeout"), key_id(ringid, "keyring id")
    err = u32(err, "error number")
    rc = lib.kt_keyctl_int(KEYCTL_REJECT, keyid, timeout, err, ringid)
    _check(rc, f"keyctl_reject(key {keyid}, {timeout} s, error {err}, keyring {ringid})")


def keyctl_assume_authority(keyid: int) -> int:
    """``KEYCTL_ASSUME_AUTHORITY``: the authorisation key's serial (0 when giving up with 0).

    ``EINVAL`` (special id), ``ENOKEY`` (no authorisation key reachable), ``EKEYREVOKED``.
    """
    keyid = key_id(keyid)
    return _check(lib.kt_keyctl_int(KEYCTL_ASSUME_AUTHORITY, keyid, 0, 0, 0), f"keyctl_assume_authority(key {keyid})")


def keyctl_set_reqkey_keyring(which: int) -> int:
    """``KEYCTL_SET_REQKEY_KEYRING``: the previous setting; ``EINVAL`` for unknown values."""
    which = key_id(which, "request-key default keyring")
    return _check(lib.kt_keyctl_int(KEYCTL_SET_REQKEY_KEYRING, which, 0, 0, 0), f"keyctl_set_reqkey_keyring({which})")


# -- the operations past the basic set (keyctl_ops): persistent keyrings, move,
# session_to_parent, security labels, capabilities, Diffie-Hellman ----------------

KEYCTL_GET_SECURITY = 17
KEYCTL_SESSION_TO_PARENT = 18
KEYCTL_GET_PERSISTENT = 22
KEYCTL_DH_COMPUTE = 23
KEYCTL_MOVE = 30
KEYCTL_CAPABILITIES = 31
KEYCTL_WATCH_KEY = 32
KEYCTL_MOVE_EXCL = 0x00000001



def keyctl_get_persistent(uid: int, destringid: int) -> int:
    """``KEYCTL_GET_PERSISTENT``: link ``_persistent.<uid>`` (-1: the caller's) into the keyring.

    ``EPERM`` (another uid without CAP_SETUID), ``ENOTDIR``, ``EACCES``, ``ENOKEY``,
    ``EDQUOT``, ``EOPNOTSUPP`` (no CONFIG_PERSISTENT_KEYRINGS); ``EINVAL`` for a uid
    outside ``uid_t``.
    """
    uid, dest = owner_id(uid, "uid"), key_id(destringid, "destination id")
    rc = lib.kt_keyctl_int(KEYCTL_GET_PERSISTENT, uid & 0xFFFFFFFF, dest, 0, 0)
    return _check(rc, f"keyctl_get_persistent(uid {uid}, keyring {dest})")


def keyctl_move(keyid: int, from_ringid: int, to_ringid: int, flags: int) -> None:
    """``KEYCTL_MOVE``: ``EEXIST`` (``KEYCTL_MOVE_EXCL`` and a same-named key in the target),
    ``ENOENT`` (not linked in the source), ``EDEADLK``/``ELOOP``, ``ENOTDIR``, ``EACCES``,
    ``EDQUOT``, ``EINVAL`` (unknown flag bits)."""
    keyid, src, dst = key_id(keyid), key_id(from_ringid, "keyring id"), key_id(to_ringid, "keyring id")
    mask = u32(flags, "move flags")
    rc = lib.kt_keyctl_int(KEYCTL_MOVE, keyid, src, dst, mask)
    _check(rc, f"keyctl_move(key {keyid}, from keyring {src}, to keyring {dst}, flags {mask:#x})")


def keyctl_session_to_parent() -> None:
    """``KEYCTL_SESSION_TO_PARENT``: give the parent process this session keyring.

    ``EPERM`` (parent init, multithreaded, or of other credentials), ``EACCES``
    (no LINK on the session keyring), ``ENOKEY``.
    """
    _check(lib.kt_keyctl_int(KEYCTL_SESSION_TO_PARENT, 0, 0, 0, 0), "keyctl_session_to_parent()")


def keyctl_get_security(keyid: int) -> str:
    """``KEYCTL_GET_SECURITY``: the key's LSM label ("" without an LSM), NUL removed.

    ``ENOKEY`` also when VIEW is denied (the kernel then looks for an
    instantiation authorisation and reports that search's failure), ``EKEYREVOKED``.
    """
    raw = _read_loop(KEYCTL_GET_SECURITY, keyid, "keyctl_get_security")
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return raw.decode("utf-8", "surrogateescape")


def keyctl_watch_key(keyid: int, fd: int, watch_id: int) -> None:
    """``KEYCTL_WATCH_KEY``: ``EOPNOTSUPP`` without CONFIG_KEY_NOTIFICATIONS; else ``EINVAL``
    (watch id outside -1..255, not a notification pipe), ``EACCES``, ``ENOKEY``, ``ENOENT``,
    ``EBUSY``, ``EBADSLT``."""
    keyid = key_id(keyid)
    rc = lib.kt_keyctl_int(KEYCTL_WATCH_KEY, keyid, fd, watch_id, 0)
    _check(rc, f"keyctl_watch_key(key {keyid}, fd {fd}, watch id {watch_id})")


def keyctl_capabilities() -> bytes:
    """``KEYCTL_CAPABILITIES``: the kernel's capability bytes, as many as it has."""
    size = _check(lib.kt_keyctl_int(KEYCTL_CAPABILITIES, 0, 0, 0, 0), "keyctl_capabilities()")
    buf = ffi.new("unsigned char[]", max(size, 1))
    got = _check(lib.kt_keyctl_int(KEYCTL_CAPABILITIES, _address(buf), size, 0, 0), "keyctl_capabilities()")
    data: bytes = ffi.unpack(buf, min(got, size))
    return data


def keyctl_dh_compute(
    private: int, prime: int, base: int, kdf: tuple[str, int, bytes] | None = None
) -> bytes:
    """``KEYCTL_DH_COMPUTE``: ``base ** private mod prime`` (user keys), or ``length`` bytes
    of the SP800-56A KDF over it with ``kdf = (hash name, length, otherinfo)``.

    ``EOPNOTSUPP`` where the kernel lacks CONFIG_KEY_DH_OPERATIONS; otherwise
    ``ENOKEY`` (a key is missing or unreadable), ``EOPNOTSUPP`` (not a user key),
    ``EINVAL`` (prime under 1536 bits, private key or base longer than the prime),
    ``EMSGSIZE`` (KDF output over 1024 bytes or otherinfo over 64), ``ENOENT`` (unknown hash).
    """
    params = ffi.new("int32_t[3]", [key_id(private), key_id(prime), key_id(base)])
    what = f"keyctl_dh_compute(private {private}, prime {prime}, base {base})"
    if kdf is None:
        size = _check(lib.kt_keyctl_int(KEYCTL_DH_COMPUTE, _address(params), 0, 0, 0), what)
        out = ffi.new("char[]", max(size, 1))
        got = _check(lib.kt_keyctl_int(KEYCTL_DH_COMPUTE, _address(params), _address(out), size, 0), what)
        data: bytes = ffi.unpack(out, got)
        return data
    hashname, length, otherinfo = kdf
    c_hash = ffi.new("char[]", _cstr(hashname, "KDF hash name"))
    c_oi = ffi.new("char[]", bytes(otherinfo) or b"\0")
    # struct keyctl_kdf_params: char *hashname; char *otherinfo; __u32 otherinfolen; __u32 __spare[8].
    layout = struct.pack("@PPI8I", _address(c_hash), _address(c_oi) if otherinfo else 0, len(otherinfo), *([0] * 8))
    kdf_params = ffi.new("char[]", layout)
    # The kernel refuses an output over 1024 bytes (EMSGSIZE) before it writes any.
    out = ffi.new("char[]", max(min(length, 1024), 1))
    got = _check(
        lib.kt_keyctl_int(KEYCTL_DH_COMPUTE, _address(params), _address(out), length, _address(kdf_params)),
        what + f" with KDF {hashname}",
    )
    result: bytes = ffi.unpack(out, got)
    return result
