"""Errors carrying the kernel's errno.

Every error is an :class:`OSError` whose ``errno`` is the value the kernel's
``add_key(2)``/``keyctl(2)`` would return, so callers can write
``except OSError as e: if e.errno == errno.EKEYREVOKED: ...``.  Messages name
what was wrong with the input and never include secret material.
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = [
    "KeyringError",
    "KeyNotFoundError",
    "KeyRevokedError",
    "KeyExpiredError",
    "KeyRejectedError",
    "KeyAccessError",
    "KeyQuotaError",
    "KeyExistsError",
    "InvalidKeyArgument",
    "NotSupportedError",
    "error",
]


class KeyringError(OSError):
    """Base class: an ``OSError`` with the kernel's errno and a readable message."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(err, message)

    def __str__(self) -> str:
        name = _PREFERRED_NAMES.get(self.errno or 0) or _errno.errorcode.get(self.errno or 0, str(self.errno))
        return f"[{name}] {self.strerror}"


#: errno values with several names: print the one the kernel's headers use for keys.
_PREFERRED_NAMES = {_errno.EOPNOTSUPP: "EOPNOTSUPP", _errno.EDEADLK: "EDEADLK"}


class KeyNotFoundError(KeyringError):
    """ENOKEY: no such key, or the key is not reachable."""


class KeyRevokedError(KeyringError):
    """EKEYREVOKED."""


class KeyExpiredError(KeyringError):
    """EKEYEXPIRED."""


class KeyRejectedError(KeyringError):
    """EKEYREJECTED."""


class KeyAccessError(KeyringError, PermissionError):
    """EACCES / EPERM: the caller's credentials do not grant the operation."""


class KeyQuotaError(KeyringError):
    """EDQUOT: the owner's key or byte quota would be exceeded."""


class KeyExistsError(KeyringError, FileExistsError):
    """EEXIST."""


class InvalidKeyArgument(KeyringError):
    """EINVAL (and E2BIG): malformed payload, description or argument."""


class NotSupportedError(KeyringError):
    """EOPNOTSUPP / ENODEV: the key type or backend cannot do this."""


_BY_ERRNO: dict[int, type[KeyringError]] = {
    _errno.ENOKEY: KeyNotFoundError,
    _errno.EKEYREVOKED: KeyRevokedError,
    _errno.EKEYEXPIRED: KeyExpiredError,
    _errno.EKEYREJECTED: KeyRejectedError,
    _errno.EACCES: KeyAccessError,
    _errno.EPERM: KeyAccessError,
    _errno.EDQUOT: KeyQuotaError,
    _errno.EEXIST: KeyExistsError,
    _errno.EINVAL: InvalidKeyArgument,
    _errno.E2BIG: InvalidKeyArgument,
    _errno.EOPNOTSUPP: NotSupportedError,
    _errno.ENODEV: NotSupportedError,
}


def error(err: int, message: str | None = None) -> KeyringError:
    """Build the error class for ``err`` (the kernel's errno) with ``message``."""
    cls = _BY_ERRNO.get(err, KeyringError)
    return cls(err, message if message is not None else os.strerror(err))
