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
from typing import Any

from keyring_types.bindings._keyctl import ffi, lib
from keyring_types.core.syscall_args import c_int_flag, c_string, key_id, owner_id, u32
from keyring_types.errors import KeyringError, error
from keyring_types.secret import SecretBuffer

__all__ = [
    "KEYCTL_CHOWN",
    "KEYCTL_CLEAR",
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
    "keyctl_chown",
    "keyctl_clear",
    "keyctl_describe",
    "keyctl_get_keyring_id",
    "keyctl_invalidate",
    "keyctl_join_session_keyring",
    "keyctl_link",
    "keyctl_read",
    "keyctl_read_into",
    "keyctl_read_secret",
    "keyctl_read_size",
    "keyctl_revoke",
    "keyctl_search",
    "keyctl_set_timeout",
    "keyctl_setperm",
    "keyctl_unlink",
    "keyctl_update",
    "request_key",
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
    checked = c_string(text, what, None)
    return ffi.NULL if checked is None else checked.encode()


def _buffer(payload: bytes | memoryview | None, what: str) -> tuple[Any, int]:
    """(pointer, length) of a payload; (NULL, 0) for ``None``; ``EINVAL`` if not bytes-like."""
    if payload is None:
        return ffi.NULL, 0
    try:
        ptr = ffi.from_buffer(payload)
    except (TypeError, ValueError, BufferError):  # not a buffer, or a released one
        raise error(errno.EINVAL, f"{what} must be bytes-like, not {type(payload).__name__}") from None
    return ptr, len(ptr)  # bytes, whatever the buffer's item size


def _fail(rc: int, what: str) -> KeyringError:
    err = -rc
    return error(err, f"{what}: {os.strerror(err)}")


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise _fail(rc, what)
    return rc


def add_key(type_name: str, description: str | None, payload: bytes | memoryview | None, ringid: int) -> int:
    """``add_key(2)``: the new (or updated) key's serial.

    The kernel raises ``EINVAL`` (bad name/description/payload, ring 0), ``EPERM``
    ('.' type or keyring name), ``ENODEV`` (unknown type), ``ENOKEY``/``ENOTDIR``
    (destination), ``EACCES``, ``EDQUOT``.
    """
    ctype, cdesc = _cstr(type_name, "key type"), _cstr(description, "description")
    data, plen = _buffer(payload, "payload")
    rc = lib.kt_add_key(ctype, cdesc, data, plen, key_id(ringid, "keyring id"))
    return _check(rc, f"add_key(type {type_name!r}, description {description!r}, {plen} bytes, keyring {ringid})")


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
    return _check(rc, f"request_key(type {type_name!r}, description {description!r}, destination {destringid})")


def keyctl_get_keyring_id(keyid: int, create: bool) -> int:
    """``KEYCTL_GET_KEYRING_ID``: resolve a special id; ``ENOKEY`` (absent, ``create`` false), ``EINVAL``."""
    flag = 1 if c_int_flag(create, "create flag") else 0
    rc = lib.kt_keyctl_int(KEYCTL_GET_KEYRING_ID, key_id(keyid), flag, 0, 0)
    return _check(rc, f"keyctl_get_keyring_id(key {keyid}, create={bool(create)})")


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
    data, plen = _buffer(payload, "payload")
    _check(lib.kt_keyctl_update(key_id(keyid), data, plen), f"keyctl_update(key {keyid}, {plen} bytes)")


def keyctl_revoke(keyid: int) -> None:
    """``KEYCTL_REVOKE``: ``EACCES``, ``EKEYREVOKED``, ``ENOKEY``."""
    _check(lib.kt_keyctl_int(KEYCTL_REVOKE, key_id(keyid), 0, 0, 0), f"keyctl_revoke(key {keyid})")


def keyctl_chown(keyid: int, uid: int, gid: int) -> None:
    """``KEYCTL_CHOWN`` (-1 or 2**32-1 keeps a field): ``EACCES``, ``EDQUOT``, ``EKEYREVOKED``,
    ``ENOKEY``; ``EINVAL`` for an id outside ``uid_t``/``gid_t``."""
    rc = lib.kt_keyctl_int(KEYCTL_CHOWN, key_id(keyid), owner_id(uid, "uid"), owner_id(gid, "gid"), 0)
    _check(rc, f"keyctl_chown(key {keyid}, uid {uid}, gid {gid})")


def keyctl_setperm(keyid: int, perm: int) -> None:
    """``KEYCTL_SETPERM``: ``EINVAL`` (bits outside 0x3f3f3f3f), ``EACCES``, ``EKEYREVOKED``, ``ENOKEY``."""
    mask = u32(perm, "permission mask")
    rc = lib.kt_keyctl_int(KEYCTL_SETPERM, key_id(keyid), mask, 0, 0)
    _check(rc, f"keyctl_setperm(key {keyid}, perm {mask:#010x})")


def _read_loop(op: int, keyid: int, what: str) -> bytes:
    # The kernel returns the full length whatever the buffer size and copies only
    # when the buffer is large enough (keyctl.c keyctl_read_key/keyctl_describe_key),
    # so retry with the reported length until the data fits (it can grow meanwhile).
    keyid = key_id(keyid)
    size = _READ_GUESS
    while True:
        buf = ffi.new("char[]", size)
        rc = _check(lib.kt_keyctl_buf(op, keyid, buf, size), what)
        if rc <= size:
            data: bytes = ffi.unpack(buf, rc)
            return data
        size = rc


def keyctl_describe(keyid: int) -> str:
    """``KEYCTL_DESCRIBE``: ``type;uid;gid;perm;description`` (trailing NUL removed).

    ``EACCES`` without VIEW, ``EKEYREVOKED``, ``EKEYEXPIRED``, ``ENOKEY``.
    """
    raw = _read_loop(KEYCTL_DESCRIBE, keyid, f"keyctl_describe(key {keyid})")
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return raw.decode("utf-8", "surrogateescape")


def keyctl_clear(ringid: int) -> None:
    """``KEYCTL_CLEAR``: ``ENOTDIR`` (not a keyring), ``EACCES``, ``EKEYREVOKED``, ``ENOKEY``."""
    _check(lib.kt_keyctl_int(KEYCTL_CLEAR, key_id(ringid), 0, 0, 0), f"keyctl_clear(keyring {ringid})")


def keyctl_link(keyid: int, ringid: int) -> None:
    """``KEYCTL_LINK``: ``EDEADLK`` (cycle), ``ENOTDIR``, ``EACCES``, ``EDQUOT``, ``ENOKEY``, ``EKEYREVOKED``."""
    rc = lib.kt_keyctl_int(KEYCTL_LINK, key_id(keyid), key_id(ringid, "keyring id"), 0, 0)
    _check(rc, f"keyctl_link(key {keyid}, keyring {ringid})")


def keyctl_unlink(keyid: int, ringid: int) -> None:
    """``KEYCTL_UNLINK``: ``ENOENT`` (not linked there), ``ENOTDIR``, ``EACCES``, ``ENOKEY``."""
    rc = lib.kt_keyctl_int(KEYCTL_UNLINK, key_id(keyid), key_id(ringid, "keyring id"), 0, 0)
    _check(rc, f"keyctl_unlink(key {keyid}, keyring {ringid})")


def keyctl_search(ringid: int, type_name: str, description: str, destringid: int) -> int:
    """``KEYCTL_SEARCH``: ``ENOKEY`` (no match), ``EKEYREVOKED``/``EKEYEXPIRED``/``EACCES``
    (only unusable matches), ``ENOTDIR``, ``EINVAL``, ``EPERM``."""
    ctype, cdesc = _cstr(type_name, "key type"), _cstr(description, "description")
    ring, dest = key_id(ringid, "keyring id"), key_id(destringid, "destination id")
    rc = lib.kt_keyctl_search(ring, ctype, cdesc, dest)
    return _check(
        rc, f"keyctl_search(keyring {ring}, type {type_name!r}, description {description!r}, destination {dest})"
    )


def keyctl_read(keyid: int) -> bytes:
    """``KEYCTL_READ``: the payload (a keyring: its serials, 4 native-endian bytes each).

    ``EACCES`` (no READ, not possessed), ``EOPNOTSUPP`` (no read op, e.g. logon),
    ``EKEYREVOKED``, ``EKEYEXPIRED``, ``ENOKEY``.
    """
    return _read_loop(KEYCTL_READ, keyid, f"keyctl_read(key {keyid})")


def keyctl_read_size(keyid: int) -> int:
    """``KEYCTL_READ`` with no buffer: the payload length.  Same errno as :func:`keyctl_read`."""
    return _check(lib.kt_keyctl_buf(KEYCTL_READ, key_id(keyid), ffi.NULL, 0), f"keyctl_read(key {keyid})")


def keyctl_read_into(keyid: int, target: memoryview) -> int:
    """``KEYCTL_READ`` into ``target``: the full length (data copied only if it fits)."""
    ptr = ffi.from_buffer(target, require_writable=True)
    return _check(lib.kt_keyctl_buf(KEYCTL_READ, key_id(keyid), ptr, len(target)), f"keyctl_read(key {keyid})")


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
    rc = lib.kt_keyctl_int(KEYCTL_SET_TIMEOUT, key_id(keyid), u32(timeout, "timeout"), 0, 0)
    _check(rc, f"keyctl_set_timeout(key {keyid}, {timeout} s)")


def keyctl_invalidate(keyid: int) -> None:
    """``KEYCTL_INVALIDATE``: ``EACCES`` (no SEARCH), ``ENOKEY``."""
    _check(lib.kt_keyctl_int(KEYCTL_INVALIDATE, key_id(keyid), 0, 0, 0), f"keyctl_invalidate(key {keyid})")
