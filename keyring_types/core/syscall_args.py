"""Arguments as the kernel's key system calls receive them.

``add_key(2)``, ``request_key(2)`` and ``keyctl(2)`` take C types: a
``key_serial_t`` (int32), ``uid_t``/``gid_t`` (u32, where ``(uid_t)-1`` means
"leave unchanged" for chown), an ``unsigned`` timeout, a ``key_perm_t`` (u32),
an ``int`` flag, NUL-terminated strings and a (pointer, length) payload.  A C
caller cannot pass anything else, and the kernel silently truncates a wider
register to these types (``chown(2**40)`` would become ``chown(0)``).  Every
public entry point, on both backends, converts its arguments here first, so a
value that does not fit its C type, or is not that kind of value at all, fails
the same way everywhere: ``EINVAL`` (``EFAULT`` where the kernel would be handed
a NULL pointer it must read), before any state changes.

Messages name the argument and what is wrong with it, never a payload.
"""

from __future__ import annotations

import errno
import operator

from keyring_types.errors import error

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "NGROUPS_MAX",
    "U32_MAX",
    "c_int_flag",
    "c_string",
    "check_creds",
    "cred_id",
    "key_id",
    "owner_id",
    "payload_bytes",
    "u32",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
U32_MAX = (1 << 32) - 1


def _integer(value: object, what: str) -> int:
    """``value`` as a Python int: ints and ``__index__`` objects, never bool, float or str."""
    if type(value) is int:
        return value
    if isinstance(value, bool):
        raise error(errno.EINVAL, f"{what} must be an integer, not a bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise error(errno.EINVAL, f"{what} must be an integer, not {type(value).__name__}") from None


def key_id(value: object, what: str = "key id") -> int:
    """A ``key_serial_t``: an int in int32 range, else ``EINVAL``."""
    n = _integer(value, what)
    if not INT32_MIN <= n <= INT32_MAX:
        raise error(errno.EINVAL, f"{what} does not fit a key_serial_t (a 32-bit signed integer)")
    return n


def owner_id(value: object, what: str) -> int:
    """A chown ``uid_t``/``gid_t``: -1 (unchanged) or 0..2**32-1, else ``EINVAL``.

    ``2**32 - 1`` is ``(uid_t)-1`` itself, so it means "unchanged" too and comes
    back as -1.
    """
    n = _integer(value, what)
    if n == U32_MAX:
        return -1
    if not -1 <= n < U32_MAX:
        raise error(errno.EINVAL, f"{what} must be -1 (unchanged) or fit a 32-bit uid_t/gid_t")
    return n


def cred_id(value: object, what: str) -> int:
    """A uid/gid to act as: 0..2**32-2 (``-1`` would mean "unchanged" to setresuid), else ``EINVAL``."""
    n = _integer(value, what)
    if not 0 <= n < U32_MAX:
        raise error(errno.EINVAL, f"{what} must be a user or group id in 0..{U32_MAX - 1}")
    return n


def u32(value: object, what: str) -> int:
    """An ``unsigned int`` / ``key_perm_t``: 0..2**32-1, else ``EINVAL``."""
    n = _integer(value, what)
    if not 0 <= n <= U32_MAX:
        raise error(errno.EINVAL, f"{what} must fit a 32-bit unsigned integer")
    return n


def c_int_flag(value: object, what: str) -> bool:
    """A C ``int`` used as a flag (non-zero: true): bool or an int in int32 range, else ``EINVAL``."""
    if type(value) is bool:
        return value
    n = _integer(value, what)
    if not INT32_MIN <= n <= INT32_MAX:
        raise error(errno.EINVAL, f"{what} does not fit a C int")
    return n != 0


def c_string(value: object, what: str, null_errno: int | None = errno.EFAULT) -> str | None:
    """A NUL-terminated C string, as ``str``.

    ``None`` is the NULL pointer: allowed when ``null_errno`` is None, otherwise
    that errno (``EFAULT``: the kernel cannot read through NULL).  Anything but a
    ``str``, a string holding NUL (C would see only the part before it) or one
    that is not valid Unicode (a lone surrogate has no UTF-8 bytes) is ``EINVAL``.
    """
    if type(value) is str and value.isprintable():
        return value  # the common case: printable text has no NUL and no lone surrogate
    if value is None:
        if null_errno is None:
            return None
        raise error(null_errno, f"{what} is required (None is a NULL pointer)")
    if not isinstance(value, str):
        raise error(errno.EINVAL, f"{what} must be str, not {type(value).__name__}")
    if "\0" in value:
        raise error(errno.EINVAL, f"{what} contains a NUL character, which ends a C string")
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise error(errno.EINVAL, f"{what} is not valid text: no UTF-8 form for the character at {exc.start}") from None
    return str.__str__(value)  # a plain str, whatever subclass came in


def payload_bytes(payload: object, what: str = "payload") -> bytes | None:
    """A payload as bytes: ``None``, a bytes-like object, or ``str`` (UTF-8); else ``EINVAL``.

    An int is refused, not turned into that many zero bytes as ``bytes(n)`` would.
    """
    if payload is None or type(payload) is bytes:
        return payload
    if isinstance(payload, str):
        try:
            return payload.encode()
        except UnicodeEncodeError as exc:
            raise error(errno.EINVAL, f"{what} text has no UTF-8 form at character {exc.start}") from None
    try:
        view = memoryview(payload)  # type: ignore[arg-type]
        with view:
            return view.tobytes()
    except (TypeError, ValueError, BufferError):  # not a buffer, or a released one
        raise error(errno.EINVAL, f"{what} must be bytes-like or str, not {type(payload).__name__}") from None


#: setgroups(2) refuses more supplementary groups than this (NGROUPS_MAX).
NGROUPS_MAX = 65536


def check_creds(uid: object, gid: object, groups: object) -> tuple[int, int, tuple[int, ...]]:
    """``as_user`` credentials: (uid, gid, groups) as setresuid/setresgid/setgroups take them.

    ``EINVAL`` for an id outside 0..2**32-2, ``groups`` that is not an iterable of
    such ids (a str or bytes is not), or more than ``NGROUPS_MAX`` groups.
    """
    checked_uid = cred_id(uid, "uid")
    checked_gid = cred_id(gid, "gid")
    if isinstance(groups, (str, bytes, bytearray, memoryview)):
        raise error(errno.EINVAL, f"groups must be a sequence of group ids, not {type(groups).__name__}")
    try:
        items = iter(groups)  # type: ignore[call-overload]
    except TypeError:
        raise error(errno.EINVAL, f"groups must be a sequence of group ids, not {type(groups).__name__}") from None
    checked: list[int] = []
    for g in items:
        checked.append(cred_id(g, "group id"))
        if len(checked) > NGROUPS_MAX:
            raise error(errno.EINVAL, f"more than {NGROUPS_MAX} supplementary groups")
    return checked_uid, checked_gid, tuple(checked)
