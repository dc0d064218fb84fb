"""Persistent keyrings (security/keys/persistent.c): ``_persistent.<uid>``, one per user.

A world keeps a register keyring (``.persistent_register``, owned by root, held
by the world rather than linked anywhere) in which each user's persistent
keyring is linked.  ``KEYCTL_GET_PERSISTENT`` finds the user's keyring there
(making the register and the keyring on first use, and a new keyring when the
registered one was revoked or invalidated), links it into the caller's keyring
and sets it to expire ``persistent_keyring_expiry`` seconds later: a keyring no
one asks for for that long is collected with everything only it holds.

Both keyrings are outside the quota, and both grant their possessor everything
but SETATTR and their owner VIEW and READ, as the kernel makes them.
"""

from __future__ import annotations

import errno

from keyring_types.constants import KEY_POS_ALL, KEY_POS_SETATTR, KEY_USR_READ, KEY_USR_VIEW, KEYQUOTA_LINK_BYTES
from keyring_types.core.context import calling
from keyring_types.core.cred import Cred
from keyring_types.core.key import key_set_timeout
from keyring_types.core.keyring import key_link
from keyring_types.core.keytype import lookup_key_type
from keyring_types.core.perm import NEED_LINK, permitted
from keyring_types.core.record import KeyRecord
from keyring_types.core.world import NO_CALLER, World
from keyring_types.errors import error

__all__ = ["PERSISTENT_PERM", "get_persistent"]

#: The mask of the register and of every persistent keyring.
PERSISTENT_PERM = (KEY_POS_ALL & ~KEY_POS_SETATTR) | KEY_USR_VIEW | KEY_USR_READ


def _new_unquoted_keyring(world: World, name: str, uid: int, gid: int | None) -> KeyRecord:
    """``keyring_alloc(..., KEY_ALLOC_NOT_IN_QUOTA)``: counted for the owner, charged to no quota."""
    ktype = lookup_key_type("keyring")
    rec = world.alloc(ktype, name, uid, gid, PERSISTENT_PERM, in_quota=False)
    with calling(world, NO_CALLER):
        ktype.instantiate(rec, ktype.preparse(b""))
    rec.instantiated = True
    rec.user.nikeys += 1
    return rec


def _register(world: World) -> KeyRecord:
    reg = world.persistent_register
    if reg is None:
        reg = _new_unquoted_keyring(world, ".persistent_register", 0, 0)
        reg.pins += 1  # the user namespace's reference
        world.persistent_register = reg
    return reg


def _persistent_keyring(world: World, uid: int) -> KeyRecord:
    """The registered ``_persistent.<uid>``, or a new one if none is usable (``find_key_to_update``).

    An expired keyring not yet collected is still the one found: asking for it
    again renews its expiry.
    """
    reg = _register(world)
    assert reg.links is not None
    name = f"_persistent.{uid}"
    found = reg.links.get(("keyring", name))
    if found is not None and not (found.revoked or found.invalidated):
        return found
    ring = _new_unquoted_keyring(world, name, uid, None)
    if found is None:
        reg.payload_reserve(reg.datalen + KEYQUOTA_LINK_BYTES)
    displaced = world.add_link(reg, ring)
    if displaced is not None:
        world.maybe_destroy(displaced)
    return ring


def get_persistent(world: World, cred: Cred, uid: int, dest: KeyRecord) -> int:
    """Link ``uid``'s persistent keyring into ``dest`` and renew its expiry; its serial.

    ``dest`` has been looked up with WRITE.  ``ENOTDIR`` if ``dest`` is not a keyring,
    ``EACCES`` if the caller lacks LINK on the persistent keyring (as its possessor),
    and ``key_link``'s ``EDEADLK``/``ELOOP``/``EDQUOT``.
    """
    if not dest.is_keyring:
        raise error(errno.ENOTDIR, f"destination {dest.serial} is a '{dest.ktype.name}' key, not a keyring")
    ring = _persistent_keyring(world, uid)
    # Found through the register, which the kernel treats as possessed.
    if not permitted(ring, cred, True, NEED_LINK):
        raise error(errno.EACCES, f"persistent keyring {ring.serial} does not grant LINK to its possessor")
    key_link(world, cred, dest, ring)
    key_set_timeout(world, ring, world.persistent_keyring_expiry)
    return ring.serial
