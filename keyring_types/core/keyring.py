"""Keyrings (security/keys/keyring.c): the ``keyring`` key type and the link operations.

The core depends on this type by name (every process, session and user keyring
is one), so it lives here rather than with the other types; it is registered
with them, from :data:`keyring_types.types.BUILTIN_KEY_TYPES`.
"""

from __future__ import annotations

import errno
import struct

from keyring_types.constants import KEYQUOTA_LINK_BYTES
from keyring_types.core.cred import Cred
from keyring_types.core.keytype import KeyType, Preparsed
from keyring_types.core.perm import NEED_SEARCH, permitted
from keyring_types.core.record import KeyRecord
from keyring_types.core.restrict import check_restriction
from keyring_types.core.search import SearchContext, search_keyring_tree
from keyring_types.core.watch import NOTIFY_KEY_LINKED, notify_key
from keyring_types.core.world import World
from keyring_types.errors import error

__all__ = ["KeyringType", "detect_cycle", "find_keyring_by_name", "key_link", "keyring_clear"]

_SERIAL = struct.Struct("=i")


class KeyringType(KeyType):
    """No payload at creation (EINVAL otherwise), no update; read lists the linked serials."""

    name = "keyring"

    def preparse(self, data: bytes) -> Preparsed:
        """EINVAL if any payload is given."""
        if data:
            raise error(errno.EINVAL, f"a keyring takes no payload, got {len(data)} bytes")
        return Preparsed(data=b"", payload=None, quotalen=0)

    def instantiate(self, key: KeyRecord, prep: Preparsed) -> None:
        key.links = {}
        key.rings = {}

    def read(self, key: KeyRecord) -> bytes:
        """The linked keys' serials as native-endian 32-bit integers, as KEYCTL_READ gives."""
        links = key.links or {}
        return b"".join(_SERIAL.pack(k.serial) for k in links.values())

    def describe(self, key: KeyRecord) -> str:
        n = len(key.links or ())
        return f"{key.description}: {n}" if n else f"{key.description}: empty"

    def destroy(self, key: KeyRecord) -> None:
        key.links = None if key.links is None else {}
        key.rings = None if key.rings is None else {}


def key_link(world: World, cred: Cred, ring: KeyRecord, key: KeyRecord) -> None:
    """``key_link``: reserve the link's bytes, refuse cycles, install; ENOTDIR, EDEADLK, ELOOP, EDQUOT."""
    if not ring.is_keyring:
        raise error(errno.ENOTDIR, f"key {ring.serial} is not a keyring")
    assert ring.links is not None
    existing = ring.links.get(key.index_key)
    # Linking a key again where it already is changes nothing, but the kernel still
    # runs the checks: a keyring whose tree is too deep gets ELOOP even there.
    if existing is key and ring.restriction is None and not key.is_keyring:
        if ring.watchers:  # __key_link still runs, and notifies
            notify_key(ring, NOTIFY_KEY_LINKED, key.serial)
        return
    if existing is None:
        ring.payload_reserve(ring.datalen + KEYQUOTA_LINK_BYTES)
    try:
        if ring.restriction is not None:
            check_restriction(world, ring, key.ktype, key.payload)
        if key.is_keyring:
            detect_cycle(world, cred, ring, key)
    except BaseException:
        if existing is None:
            ring.payload_reserve(ring.datalen - KEYQUOTA_LINK_BYTES)
        raise
    displaced = world.add_link(ring, key)
    if ring.watchers:
        notify_key(ring, NOTIFY_KEY_LINKED, key.serial)
    if displaced is not None:
        world.maybe_destroy(displaced)


def detect_cycle(world: World, cred: Cred, ring: KeyRecord, key: KeyRecord) -> None:
    """EDEADLK if ``ring`` is reachable from ``key``; ELOOP if the tree would be too deep."""
    ctx = SearchContext(
        ring.index_key,
        cred,
        world.now(),
        match=lambda k: k is ring,
        state_check=False,
        check_perm=False,
        detect_too_deep=True,
    )
    if search_keyring_tree(key, ctx) is not None:
        raise error(errno.EDEADLK, f"linking keyring {key.serial} into {ring.serial} would make a cycle")
    if ctx.err == errno.ELOOP:
        raise error(errno.ELOOP, f"linking keyring {key.serial} into {ring.serial} nests keyrings too deeply")


def keyring_clear(world: World, ring: KeyRecord) -> None:
    """Unlink every key from ``ring`` and give its link bytes back (``keyring_clear``)."""
    assert ring.links is not None
    children = list(ring.links.values())
    for child in children:
        world.drop_link(ring, child, refund=False)
    ring.payload_reserve(0)
    for child in children:
        world.maybe_destroy(child)


def find_keyring_by_name(world: World, cred: Cred, name: str) -> KeyRecord | None:
    """``find_keyring_by_name``: the oldest live, unexpired keyring called ``name`` that ``cred`` may search.

    User keyrings count (joining ``_uid.N`` as uid N joins the user keyring, as
    on current kernels); another uid's are not searchable, so not found.
    """
    now = world.now()
    for rec in world.keys.values():
        if rec.description != name or not rec.is_keyring:
            continue
        if rec.revoked or rec.invalidated or rec.dead or rec.expired_at(now):
            continue
        if permitted(rec, cred, False, NEED_SEARCH):
            return rec
    return None
