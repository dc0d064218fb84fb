"""Credentials a caller acts with (the parts of ``struct cred`` keys look at)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from keyring_types.core.immutable import FrozenValue

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Cred", "signed_id"]


def signed_id(value: int) -> int:
    """A uid/gid as the kernel prints it with ``%d`` (``(uid_t)-2`` shows as -2)."""
    return value - (1 << 32) if value >= 1 << 31 else value


class Cred(FrozenValue):
    """fsuid, fsgid and supplementary groups; uid 0 holds CAP_SYS_ADMIN.

    Immutable, compared and hashed by value; not attrs, as every command makes
    one (:mod:`keyring_types.core.immutable` says why).
    """

    __slots__ = ("gid", "groups", "uid")
    _fields = ("uid", "gid", "groups")

    uid: int
    gid: int
    groups: frozenset[int]

    def __init__(self, uid: int, gid: int, groups: Iterable[int] = ()) -> None:
        if uid < 0 or gid < 0:
            raise ValueError(f"uid and gid must be >= 0, not {uid}/{gid}")
        setter = object.__setattr__
        setter(self, "uid", uid)
        setter(self, "gid", gid)
        setter(self, "groups", frozenset(int(g) for g in groups))

    @property
    def sysadmin(self) -> bool:
        """Whether the caller holds CAP_SYS_ADMIN (modelled as uid 0)."""
        return self.uid == 0

    def in_group(self, gid: int) -> bool:
        """``in_group_p``: the fsgid or a supplementary group."""
        return gid == self.gid or gid in self.groups

    @classmethod
    def current(cls) -> Cred:
        """The credentials of this process."""
        return cls(os.geteuid(), os.getegid(), os.getgroups())
