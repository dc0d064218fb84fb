"""The caller of the operation in progress (the kernel's ``current``).

Key types whose operations look other keys up (an encrypted key's master, say)
ask :func:`current_caller` and search with the caller's credentials and
keyrings, exactly as the kernel's types use ``current_cred()``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.cred import Cred
    from keyring_types.core.record import KeyRecord

__all__ = ["Caller", "CallerSlot", "current_caller", "calling"]


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


class CallerSlot(Protocol):
    """Where a keyspace keeps the caller of its operation in progress (its World)."""

    caller: Caller | None


def current_caller(key: KeyRecord) -> Caller:
    """The caller of the operation in progress on ``key``'s keyspace; ``EINVAL`` outside one.

    A keyspace runs one operation at a time under its lock, so the caller is
    kept on the keyspace itself; the key a type operation was handed leads there
    (through its owner's quota record).
    """
    world = key.user.world
    caller = None if world is None else world.caller
    if caller is None:
        raise error(errno.EINVAL, "no key operation is in progress")
    return caller


@contextmanager
def calling(slot: CallerSlot, caller: Caller) -> Iterator[None]:
    """Run a block as ``caller`` on the keyspace that ``slot`` belongs to (nests)."""
    prev, slot.caller = slot.caller, caller
    try:
        yield
    finally:
        slot.caller = prev
