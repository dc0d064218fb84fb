"""The caller of the operation in progress (the kernel's ``current``).

Key types whose operations look other keys up (an encrypted key's master, say)
ask :func:`current_caller` and search with the caller's credentials and
keyrings, exactly as the kernel's types use ``current_cred()``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
import threading
from typing import TYPE_CHECKING, Protocol

from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.cred import Cred
    from keyring_types.core.record import KeyRecord

__all__ = ["Caller", "SLOT", "current_caller", "calling"]


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


class _Slot(threading.local):
    """Per-thread slot for the current caller.

    A key operation runs start to finish on one thread without yielding, so a
    thread-local is enough, and it costs far less than a ContextVar on the hot path.
    """

    caller: Caller | None = None


#: The current caller; the core reads and writes ``SLOT.caller`` directly.
SLOT = _Slot()


def current_caller() -> Caller:
    """The caller of the key operation in progress; ``EINVAL`` outside one."""
    caller = SLOT.caller
    if caller is None:
        raise error(errno.EINVAL, "no key operation is in progress")
    return caller


@contextmanager
def calling(caller: Caller) -> Iterator[None]:
    """Run a block as ``caller`` (nests)."""
    prev, SLOT.caller = SLOT.caller, caller
    try:
        yield
    finally:
        SLOT.caller = prev
