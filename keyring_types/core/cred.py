"""Credentials a caller acts with (the parts of ``struct cred`` keys look at)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Cred", "signed_id"]


def signed_id(value: int) -> int:
    """A uid/gid as the kernel prints it with ``%d`` (``(uid_t)-2`` shows as -2)."""
    return value - (1 << 32) if value >= 1 << 31 else value


class Cred:
    """fsuid, fsgid and supplementary groups; uid 0 holds CAP_SYS_ADMIN.

    Immutable, compared and hashed by value.  A plain slotted class rather than
    attrs: every ``ktctl`` command builds one, and importing attrs is about a
    fifth of a one-shot command's start-up (docs/performance.md, "ktctl start-up").
    """

    __slots__ = ("gid", "groups", "uid")

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

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Cred is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Cred is immutable: cannot delete {name}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not Cred:
            return NotImplemented
        return (self.uid, self.gid, self.groups) == (other.uid, other.gid, other.groups)

    def __hash__(self) -> int:
        return hash((Cred, self.uid, self.gid, self.groups))

    def __repr__(self) -> str:
        return f"Cred(uid={self.uid}, gid={self.gid}, groups={self.groups!r})"

    def __reduce__(self) -> tuple[type[Cred], tuple[int, int, frozenset[int]]]:
        return (Cred, (self.uid, self.gid, self.groups))

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
