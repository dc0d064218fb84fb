"""The ``.request_key_auth`` key type: the authority to build one key (security/keys/request_key_auth.c).

``request_key`` with callout info makes one of these next to the key under
construction.  Its handler finds it as ``@a`` in its session keyring, assumes
it (``assume_authority``) and then may instantiate, negate or reject the key it
names; reading it gives the callout info.  Its description is the target key's
serial in hex, as the kernel writes it.
"""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING, cast

from keyring_types.constants import KEY_POS_LINK, KEY_POS_READ, KEY_POS_SEARCH, KEY_POS_VIEW, KEY_USR_VIEW
from keyring_types.core.keytype import KeyType
from keyring_types.core.record import KeyRecord
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.process_keys import ProcessKeys
    from keyring_types.core.world import World

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

    # -- in a store (keyring_types.store), where another process's handler may hold it --
    def store_encode(self, key: KeyRecord) -> bytes:
        """The authority as a store keeps it: serials and ids for the records, then the callout info.

        The requester is kept as what another process can rebuild of it: its
        uid, gid and session keyring (a process's own thread and process
        keyrings are not stored, so a handler elsewhere cannot search them).
        """
        rka: RequestKeyAuth = key.payload
        requester = rka.requester
        session = requester._proc.session
        return _STORED.pack(
            rka.target.serial,
            0 if rka.dest is None else rka.dest.serial,
            rka.pid,
            requester.cred.uid,
            requester.cred.gid,
            0 if session is None else session.serial,
        ) + rka.callout

    def store_decode(self, key: KeyRecord, data: bytes) -> RequestKeyAuth | None:
        """The authority read back in a process of the store; None (spent) if its key under construction is gone.

        ``EBADMSG`` for data :meth:`store_encode` did not write.
        """
        from keyring_types.core.keyspace import Keyspace
        from keyring_types.core.process_keys import ProcessKeyrings

        if len(data) < _STORED.size:
            raise error(errno.EBADMSG, f"the stored authority of key {key.serial} is truncated")
        target_serial, dest_serial, pid, uid, gid, session_serial = _STORED.unpack_from(data)
        world = cast("World", key.user.world)
        keys = world.keys
        target = keys.get(target_serial)
        if target is None or target.dead:
            return None
        dest = keys.get(dest_serial) if dest_serial else None
        proc = ProcessKeyrings(world)
        session = keys.get(session_serial) if session_serial else None
        if session is not None and session.is_keyring and not session.dead:
            proc.set_session(session)
        requester = Keyspace(uid=uid, gid=gid, groups=(), _world=world, _proc=proc)
        return RequestKeyAuth(target, dest, bytes(data[_STORED.size :]), requester, pid)


#: A stored authority's fixed part: target, destination, pid, requester uid, gid and session.
_STORED = struct.Struct(">iiqqqi")

#: The one instance; not in the type registry, as the kernel's is unreachable by name from user space.
AUTH_TYPE = RequestKeyAuthType()
