"""What a failed key operation tells the caller: the EACCES message and the hints in it.

The kernel says only ``EACCES`` or ``ENOKEY``; a Keyspace says which key, which
permission and why, and points at the usual cause (a key in ``@u`` that the
session keyring does not reach).  Nothing here runs unless an operation fails.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from keyring_types.core.perm import NEED_NAMES, caller_class
from keyring_types.core.search import SearchContext, search_keyring_tree
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.process_keys import ProcessKeys
    from keyring_types.core.record import KeyRecord

__all__ = ["denied", "search_failure", "unreachable_hint", "user_ring_hint"]

_LINK_USER_RING = "link it with `keyctl link @u @s` or ks.session.link(ks.user_keyring)"


def denied(ks: ProcessKeys, rec: KeyRecord, possessed: bool, need: int) -> OSError:
    """The EACCES for ``ks``'s caller lacking ``need`` on ``rec``, saying who lacks what and why."""
    who = caller_class(rec, ks.cred)
    msg = (
        f"{rec.ktype.name} key {rec.serial} ({rec.description!r}, perm {rec.perm:08x}, owner {rec.uid}): "
        f"uid {ks.cred.uid} lacks {NEED_NAMES.get(need, hex(need))} as '{who}'"
        f"{' and possessor' if possessed else ''}"
    )
    if not possessed:
        msg += "; the key is not possessed (not reachable from the thread, process or session keyring)"
        hint = user_ring_hint(ks, rec)
        if hint:
            msg += "; " + hint
    return error(errno.EACCES, msg)


def user_ring_hint(ks: ProcessKeys, rec: KeyRecord) -> str:
    """Say so when ``rec`` sits in the caller's @u but @u is not reachable from @s ("" otherwise)."""
    rings = ks._world.user_rings.get(ks.cred.uid)
    if rings is None:
        return ""
    uid_ring = rings[0]
    now = ks._world.now()
    ctx = SearchContext(rec.index_key, ks.cred, now, match=lambda k: k is rec, state_check=False, possessed=True)
    if search_keyring_tree(uid_ring, ctx) is None or ks._possessed(uid_ring):
        return ""
    return f"it is in your user keyring (@u), which is not linked into your session keyring (@s): {_LINK_USER_RING}"


def unreachable_hint(ks: ProcessKeys, type_name: str, description: str) -> str:
    """For an ENOKEY: the match that sits in the caller's unreachable @u, if any ("" otherwise)."""
    rings = ks._world.user_rings.get(ks.cred.uid)
    if rings is None:
        return ""
    ctx = SearchContext((type_name, description), ks.cred, ks._world.now(), possessed=True)
    found = search_keyring_tree(rings[0], ctx)
    if found is None or ks._possessed(rings[0]):
        return ""
    return (
        f"; key {found.serial} ({type_name}:{description}) exists in your user keyring (@u), "
        f"which is not linked into your session keyring (@s): {_LINK_USER_RING}"
    )


def search_failure(err: int, type_name: str, description: str) -> str:
    """The message for a search whose only match was unusable (``err``: why)."""
    what = {
        errno.EKEYREVOKED: "was revoked or invalidated",
        errno.EKEYEXPIRED: "has expired",
        errno.EACCES: "is not searchable by the caller",
    }.get(err, "could not be used")
    return f"the only {type_name} key {description!r} found {what}"
