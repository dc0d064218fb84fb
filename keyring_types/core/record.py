"""The state of one key inside a Keyspace (the kernel's ``struct key``)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.keytype import KeyType
    from keyring_types.core.quota import KeyUser

__all__ = ["KeyRecord", "IndexKey", "UNDER_CONSTRUCTION"]

#: ``KeyRecord.upcall`` of a key a request-key handler is still building.
UNDER_CONSTRUCTION = -1

#: A keyring holds at most one key per (type name, description).
IndexKey = tuple[str, str]


class KeyRecord:
    """One key: identity, ownership, permissions, state flags, payload and links.

    Key types read ``description``/``serial`` and own ``payload``; everything
    else is the core's.  Compared by identity.  A plain slotted class rather
    than attrs: every command opens records, and importing attrs is about a
    fifth of a one-shot ``ktctl`` command's start-up (docs/performance.md,
    "ktctl start-up").
    """

    __slots__ = (
        "datalen",
        "dead",
        "description",
        "expiry",
        "gc_at",
        "gid",
        "in_quota",
        "index_key",
        "instantiated",
        "invalidated",
        "ktype",
        "links",
        "parents",
        "payload",
        "perm",
        "pins",
        "quotalen",
        "restriction",
        "revoked",
        "revoked_at",
        "rings",
        "serial",
        "uid",
        "uid_keyring",
        "upcall",
        "usage",
        "user",
        "watchers",
    )

    serial: int
    ktype: KeyType
    description: str
    uid: int
    #: None is the kernel's INVALID_GID (the per-user keyrings).
    gid: int | None
    perm: int
    user: KeyUser
    payload: Any
    datalen: int
    quotalen: int
    in_quota: bool
    instantiated: bool
    revoked: bool
    dead: bool
    invalidated: bool
    #: Absolute expiry time in clock seconds; 0 means none.
    expiry: int
    revoked_at: int
    #: A user or user-session keyring (the kernel's KEY_FLAG_UID_KEYRING).
    uid_keyring: bool
    #: When this key's one live GC heap entry is due (0: none); other entries are stale.
    gc_at: int
    #: Contents when this is a keyring: index key -> record.
    links: dict[IndexKey, KeyRecord] | None
    #: The keyring-type subset of ``links``, so searches descend without scanning every key.
    rings: dict[IndexKey, KeyRecord] | None
    #: Serials of the keyrings that hold a link to this key (as dict keys; the values
    #: are None).  Serials rather than records: a dict of ints is not tracked by
    #: Python's cyclic GC, which otherwise traverses one more container per key.
    parents: dict[int, None]
    #: References other than links (credentials holding a special keyring).
    pins: int
    #: (type name, description): the slot a keyring holds this key in; set at allocation.
    index_key: IndexKey
    #: Construction by upcall (core.request_key): 0 for an ordinary key,
    #: UNDER_CONSTRUCTION while a request-key handler builds it (``U`` in /proc/keys),
    #: or the errno a negative key answers with (``N``; ``instantiated`` is then True).
    upcall: int
    #: A keyring's restriction (``core.restrict.KeyRestriction``), asked before any new link.
    restriction: Any
    #: The one consumer this key's plaintext goes to (core/usage.py); None: unbound.
    usage: str | None
    #: Watches on this key (core.watch.Watch, KEYCTL_WATCH_KEY); None while there are none.
    watchers: list[Any] | None

    def __init__(
        self,
        serial: int,
        ktype: KeyType,
        description: str,
        uid: int,
        gid: int | None,
        perm: int,
        user: KeyUser,
        payload: Any = None,
        datalen: int = 0,
        quotalen: int = 0,
        in_quota: bool = True,
        instantiated: bool = False,
        revoked: bool = False,
        dead: bool = False,
        invalidated: bool = False,
        expiry: int = 0,
        revoked_at: int = 0,
        uid_keyring: bool = False,
        gc_at: int = 0,
        links: dict[IndexKey, KeyRecord] | None = None,
        rings: dict[IndexKey, KeyRecord] | None = None,
        parents: dict[int, None] | None = None,
        pins: int = 0,
        index_key: IndexKey = ("", ""),
        upcall: int = 0,
        restriction: Any = None,
        usage: str | None = None,
        watchers: list[Any] | None = None,
    ) -> None:
        self.serial = serial
        self.ktype = ktype
        self.description = description
        self.uid = uid
        self.gid = gid
        self.perm = perm
        self.user = user
        self.payload = payload
        self.datalen = datalen
        self.quotalen = quotalen
        self.in_quota = in_quota
        self.instantiated = instantiated
        self.revoked = revoked
        self.dead = dead
        self.invalidated = invalidated
        self.expiry = expiry
        self.revoked_at = revoked_at
        self.uid_keyring = uid_keyring
        self.gc_at = gc_at
        self.links = links
        self.rings = rings
        self.parents = {} if parents is None else parents
        self.pins = pins
        self.index_key = index_key
        self.upcall = upcall
        self.restriction = restriction
        self.usage = usage
        self.watchers = watchers

    @property
    def is_keyring(self) -> bool:
        return self.links is not None

    def __repr__(self) -> str:
        return f"<KeyRecord {self.serial} {self.ktype.name}:{self.description!r}>"

    def payload_reserve(self, datalen: int) -> None:
        """Set the payload size charged to the owner (``key_payload_reserve``); ``EDQUOT``."""
        delta = datalen - self.datalen
        if delta and self.in_quota:
            user = self.user
            if delta > 0 and user.qnbytes + delta > user.maxbytes:
                user.reserve_bytes(delta)  # raises EDQUOT with the message
            user.qnbytes += delta
            self.quotalen += delta
        self.datalen = datalen

    def expired_at(self, now: int) -> bool:
        return self.expiry != 0 and now >= self.expiry

    def validate(self, now: int) -> None:
        """``key_validate``: ENOKEY if invalidated, EKEYREVOKED if revoked or dead, EKEYEXPIRED."""
        if self.invalidated:
            raise error(errno.ENOKEY, f"key {self.serial} has been invalidated")
        if self.revoked or self.dead:
            raise error(errno.EKEYREVOKED, f"key {self.serial} has been revoked")
        if self.expired_at(now):
            raise error(errno.EKEYEXPIRED, f"key {self.serial} has expired")
