"""Per-user key quotas (``struct key_user`` and the ``/proc/sys/kernel/keys`` limits)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import attrs

from keyring_types.constants import (
    KEY_QUOTA_MAXBYTES,
    KEY_QUOTA_MAXKEYS,
    KEY_QUOTA_ROOT_MAXBYTES,
    KEY_QUOTA_ROOT_MAXKEYS,
)
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.context import CallerSlot

__all__ = ["QuotaLimits", "KeyUser"]


@attrs.frozen
class QuotaLimits:
    """maxkeys/maxbytes for ordinary users and for root, as the kernel's sysctls."""

    maxkeys: int = KEY_QUOTA_MAXKEYS
    maxbytes: int = KEY_QUOTA_MAXBYTES
    root_maxkeys: int = KEY_QUOTA_ROOT_MAXKEYS
    root_maxbytes: int = KEY_QUOTA_ROOT_MAXBYTES

    def for_uid(self, uid: int) -> tuple[int, int]:
        if uid == 0:
            return self.root_maxkeys, self.root_maxbytes
        return self.maxkeys, self.maxbytes


@attrs.define(eq=False)
class KeyUser:
    """What one uid is charged for: key count and bytes (``/proc/key-users``)."""

    uid: int
    limits: QuotaLimits
    #: The keyspace (World) this uid's keys live in; type operations find the
    #: caller of the operation in progress through it (``context.current_caller``).
    world: CallerSlot | None = attrs.field(default=None, repr=False)
    #: This uid's limits, resolved once (root's differ).
    maxkeys: int = attrs.field(init=False)
    maxbytes: int = attrs.field(init=False)
    nkeys: int = 0
    nikeys: int = 0
    qnkeys: int = 0
    qnbytes: int = 0

    def __attrs_post_init__(self) -> None:
        self.maxkeys, self.maxbytes = self.limits.for_uid(self.uid)

    def charge_new_key(self, quotalen: int) -> None:
        """Account a new key of ``quotalen`` bytes; ``EDQUOT`` past either limit."""
        maxkeys, maxbytes = self.maxkeys, self.maxbytes
        if self.qnkeys + 1 > maxkeys:
            raise error(
                errno.EDQUOT,
                f"uid {self.uid} already owns {self.qnkeys} keys (maxkeys {maxkeys})",
            )
        if self.qnbytes + quotalen > maxbytes:
            raise error(
                errno.EDQUOT,
                f"uid {self.uid} would own {self.qnbytes + quotalen} key bytes (maxbytes {maxbytes})",
            )
        self.qnkeys += 1
        self.qnbytes += quotalen

    def release_key(self, quotalen: int) -> None:
        self.qnkeys -= 1
        self.qnbytes -= quotalen

    def reserve_bytes(self, delta: int) -> None:
        """Grow (or shrink, delta < 0) the byte charge; ``EDQUOT`` if growth would exceed it."""
        if delta > 0:
            maxbytes = self.maxbytes
            if self.qnbytes + delta > maxbytes:
                raise error(
                    errno.EDQUOT,
                    f"uid {self.uid} would own {self.qnbytes + delta} key bytes (maxbytes {maxbytes})",
                )
        self.qnbytes += delta
