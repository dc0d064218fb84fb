"""Credentials a caller acts with (the parts of ``struct cred`` keys look at)."""

from __future__ import annotations

import os

import attrs

__all__ = ["Cred", "signed_id"]


def signed_id(value: int) -> int:
    """A uid/gid as the kernel prints it with ``%d`` (``(uid_t)-2`` shows as -2)."""
    return value - (1 << 32) if value >= 1 << 31 else value


def _groups(value: object) -> frozenset[int]:
    return frozenset(int(g) for g in value)  # type: ignore[attr-defined]


@attrs.frozen
class Cred:
    """fsuid, fsgid and supplementary groups; uid 0 holds CAP_SYS_ADMIN."""

    uid: int = attrs.field(validator=attrs.validators.ge(0))
    gid: int = attrs.field(validator=attrs.validators.ge(0))
    groups: frozenset[int] = attrs.field(factory=frozenset, converter=_groups)

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
