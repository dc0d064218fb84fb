"""The caller of the operation in progress (the kernel's ``current``).

Key types whose operations look other keys up (an encrypted key's master, say)
ask :func:`current_caller` and search with the caller's credentials and
keyrings, exactly as the kernel's types use ``current_cred()``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Protocol

from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.cred import Cred
    from keyring_types.core.record import KeyRecord

__all__ = ["Caller", "current_caller", "calling", "enter_caller", "leave_caller"]


class Caller(Protocol):
    """What a key type may ask of the caller on whose behalf it runs."""

    @property
    def cred(self) -> Cred: ...

    def lookup_key(self, type_name: str, description: str) -> KeyRecord:
        """In-kernel ``request_key()`` without an upcall: search the caller's keyrings.

        Raises ``ENOKEY`` (none, or only expired ones), ``EKEYREVOKED``,
        ``EACCES`` as the kernel would.
        """
        ...


_current: ContextVar[Caller | None] = ContextVar("keyring_types_caller", default=None)


def current_caller() -> Caller:
    """The caller of the key operation in progress; ``EINVAL`` outside one."""
    caller = _current.get()
    if caller is None:
        raise error(errno.EINVAL, "no key operation is in progress")
    return caller


def enter_caller(caller: Caller) -> Token[Caller | None]:
    """Make ``caller`` current until :func:`leave_caller` (the cheap form of ``calling``)."""
    return _current.set(caller)


def leave_caller(token: Token[Caller | None]) -> None:
    _current.reset(token)


@contextmanager
def calling(caller: Caller) -> Iterator[None]:
    """Run a block as ``caller`` (nests)."""
    token = _current.set(caller)
    try:
        yield
    finally:
        _current.reset(token)
