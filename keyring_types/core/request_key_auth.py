"""The ``.request_key_auth`` key type: the authority to build one key (security/keys/request_key_auth.c).

``request_key`` with callout info makes one of these next to the key under
construction.  Its handler finds it as ``@a`` in its session keyring, assumes
it (``assume_authority``) and then may instantiate, negate or reject the key it
names; reading it gives the callout info.  Its description is the target key's
serial in hex, as the kernel writes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keyring_types.constants import KEY_POS_LINK, KEY_POS_READ, KEY_POS_SEARCH, KEY_POS_VIEW, KEY_USR_VIEW
from keyring_types.core.keytype import KeyType
from keyring_types.core.record import KeyRecord

if TYPE_CHECKING:
    from keyring_types.core.process_keys import ProcessKeys

__all__ = ["AUTH_KEY_PERM", "AUTH_TYPE", "RequestKeyAuth", "RequestKeyAuthType"]

#: The authorisation key's mask (request_key_auth_new): its possessor may view, read,
#: search and link it; nobody may change it.
AUTH_KEY_PERM = KEY_POS_VIEW | KEY_POS_READ | KEY_POS_SEARCH | KEY_POS_LINK | KEY_USR_VIEW


class RequestKeyAuth:
    """What an authorisation key carries (``struct request_key_auth``).

    A plain slotted class rather than attrs: the request-key path is loaded by
    every command, and importing attrs is about a fifth of a one-shot ``ktctl``
    command's start-up (docs/performance.md, "ktctl start-up").
    """

    __slots__ = ("callout", "dest", "pid", "requester", "target")

    def __init__(self, target: KeyRecord, dest: KeyRecord | None, callout: bytes, requester: ProcessKeys, pid: int) -> None:
        self.target = target
        #: Where the requester wanted the key (``@reqkey``'s keyring); None for none.
        self.dest = dest
        self.callout = callout
        #: The requester's view: its credentials and keyrings, which the handler searches too.
        self.requester = requester
        self.pid = pid

    def __repr__(self) -> str:
        return f"<RequestKeyAuth for key {self.target.serial}, {len(self.callout)} bytes of callout info>"


class RequestKeyAuthType(KeyType):
    """``.request_key_auth``: made only by the core; user space cannot add or search for one."""

    name = ".request_key_auth"

    def read(self, key: KeyRecord) -> bytes:
        """The callout info the requester passed."""
        rka: RequestKeyAuth = key.payload
        return rka.callout

    def describe(self, key: KeyRecord) -> str:
        rka: RequestKeyAuth | None = key.payload
        if rka is None:
            return f"key:{key.description}"
        return f"key:{key.description} pid:{rka.pid} ci:{len(rka.callout)}"

    def revoke(self, key: KeyRecord) -> None:
        # The kernel frees the record (and its hold on the requester's credentials) here.
        key.payload = None

    def destroy(self, key: KeyRecord) -> None:
        key.payload = None


#: The one instance; not in the type registry, as the kernel's is unreachable by name from user space.
AUTH_TYPE = RequestKeyAuthType()
