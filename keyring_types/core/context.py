"""The caller of the operation in progress (the kernel's ``current``).

Key types whose operations look other keys up (an encrypted key's master, say)
ask :func:`current_caller` and search with the caller's credentials and
keyrings, exactly as the kernel's types use ``current_cred()``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.cred import Cred
    from keyring_types.core.record import KeyRecord

__all__ = ["Caller", "CALLER", "current_caller", "calling"]


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


#: The current caller; the core sets and resets it directly on its hot path.
CALLER: ContextVar[Caller | None] = ContextVar("keyring_types_caller", default=None)
_current = CALLER


def current_caller() -> Caller:
    """The caller of the key operation in progress; ``EINVAL`` outside one."""
    caller = _current.get()
    if caller is None:
        raise error(errno.EINVAL, "no key operation is in progress")
    return caller


@contextmanager
def calling(caller: Caller) -> Iterator[None]:
    """Run a block as ``caller`` (nests)."""
    token = _current.set(caller)
    try:
        yield
    finally:
        _current.reset(token)
