"""The permission model: possessor/user/group/other x view/read/write/search/link/setattr.

Mirrors ``key_task_permission``: the owner uses the USR byte; a caller sharing
the key's (valid) group uses the GRP byte when any GRP bit is set; everyone
else the OTH byte; possession ORs in the POS byte.  Root gets no bypass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from keyring_types.constants import KEY_GRP_ALL

if TYPE_CHECKING:
    from keyring_types.core.cred import Cred
    from keyring_types.core.record import KeyRecord

__all__ = ["NEED_VIEW", "NEED_READ", "NEED_WRITE", "NEED_SEARCH", "NEED_LINK", "NEED_SETATTR", "permitted", "NEED_NAMES"]

NEED_VIEW: Final = 0x01
NEED_READ: Final = 0x02
NEED_WRITE: Final = 0x04
NEED_SEARCH: Final = 0x08
NEED_LINK: Final = 0x10
NEED_SETATTR: Final = 0x20

NEED_NAMES: Final = {
    NEED_VIEW: "VIEW",
    NEED_READ: "READ",
    NEED_WRITE: "WRITE",
    NEED_SEARCH: "SEARCH",
    NEED_LINK: "LINK",
    NEED_SETATTR: "SETATTR",
}


def caller_class(key: KeyRecord, cred: Cred) -> str:
    """Which permission byte applies to ``cred``: 'user', 'group' or 'other'."""
    if key.uid == cred.uid:
        return "user"
    if key.gid is not None and key.perm & KEY_GRP_ALL and cred.in_group(key.gid):
        return "group"
    return "other"


def permitted(key: KeyRecord, cred: Cred, possessed: bool, need: int) -> bool:
    """Whether ``cred`` (possessing the key or not) holds every bit of ``need``."""
    perm = key.perm
    # caller_class() inlined: this runs several times per operation.
    if key.uid == cred.uid:
        kperm = perm >> 16
    elif key.gid is not None and perm & KEY_GRP_ALL and cred.in_group(key.gid):
        kperm = perm >> 8
    else:
        kperm = perm
    if possessed:
        kperm |= perm >> 24
    return (kperm & need & 0x3F) == need
