"""What happens to one key (security/keys/key.c): its default permissions, update,
revocation, expiry and change of owner.

Allocation and linking live in :mod:`keyring_types.core.world`; ``add_key``'s
``key_create_or_update`` is written out inside ``Keyctl.sys_add_key`` because it
is on the measured hot path.  The functions here run with the world lock held
and the caller's permission already checked.
"""

from __future__ import annotations

import errno

from keyring_types.constants import (
    KEY_POS_LINK,
    KEY_POS_READ,
    KEY_POS_SEARCH,
    KEY_POS_SETATTR,
    KEY_POS_VIEW,
    KEY_POS_WRITE,
    KEY_USR_VIEW,
)
from keyring_types.core.keyring import keyring_clear
from keyring_types.core.keytype import KeyType
from keyring_types.core.record import KeyRecord
from keyring_types.core.watch import NOTIFY_KEY_REVOKED, NOTIFY_KEY_UPDATED, notify_key
from keyring_types.core.world import World
from keyring_types.errors import error

__all__ = ["default_perm", "key_change_owner", "key_revoke", "key_set_timeout", "key_update"]


def default_perm(ktype: KeyType) -> int:
    """The mask add_key gives a new key (key_create_or_update), cached on the type object."""
    ktype._add_key_perm = _compute_default_perm(ktype)  # type: ignore[misc]
    return ktype._add_key_perm


def _compute_default_perm(ktype: KeyType) -> int:
    perm = KEY_POS_VIEW | KEY_POS_SEARCH | KEY_POS_LINK | KEY_POS_SETATTR | KEY_USR_VIEW
    if ktype._has_read:
        perm |= KEY_POS_READ
    if ktype.name == "keyring" or ktype._has_update:
        perm |= KEY_POS_WRITE
    return perm


def key_update(rec: KeyRecord, payload: bytes) -> None:
    """``key_update``: preparse ``payload`` and hand it to the type; EOPNOTSUPP, EINVAL, EDQUOT."""
    ktype = rec.ktype
    if not ktype._has_update:
        raise error(errno.EOPNOTSUPP, f"'{ktype.name}' keys cannot be updated (key {rec.serial})")
    prep = ktype.preparse(payload)
    try:
        ktype.update(rec, prep)
    finally:
        ktype.free_preparse(prep)
    if rec.watchers:
        notify_key(rec, NOTIFY_KEY_UPDATED)


def key_revoke(world: World, rec: KeyRecord) -> None:
    """``key_revoke``: mark revoked, let the type drop its payload, schedule the GC (idempotent)."""
    if rec.revoked:
        return
    rec.revoked = True
    if rec.watchers:
        notify_key(rec, NOTIFY_KEY_REVOKED)
    rec.ktype.revoke(rec)  # runs inside the caller's operation
    if rec.is_keyring:
        # keyring_revoke empties the keyring as well.
        keyring_clear(world, rec)
    now = world.now()
    if rec.revoked_at == 0 or rec.revoked_at > now:
        rec.revoked_at = now
        world.schedule_gc(now + world.gc_delay, rec)
    # The kernel brings the expiry forward to the revocation: /proc/keys shows "expd".
    if rec.expiry == 0 or rec.expiry > now:
        rec.expiry = now


def key_set_timeout(world: World, rec: KeyRecord, timeout: int) -> None:
    """``key_set_timeout``: expire ``timeout`` seconds from now; 0 (or less) clears the expiry."""
    if timeout > 0:
        rec.expiry = world.now() + timeout
        world.schedule_gc(rec.expiry + world.gc_delay, rec)
    else:
        rec.expiry = 0


def key_change_owner(world: World, rec: KeyRecord, uid: int) -> None:
    """Move ``rec`` and its quota charge to ``uid`` (``keyctl_chown_key``'s transfer); EDQUOT."""
    new_owner = world.key_user(uid)
    if rec.in_quota:
        new_owner.charge_new_key(rec.quotalen)
        rec.user.release_key(rec.quotalen)
    rec.user.nkeys -= 1
    new_owner.nkeys += 1
    if rec.instantiated:
        rec.user.nikeys -= 1
        new_owner.nikeys += 1
    rec.user = new_owner
    rec.uid = uid
