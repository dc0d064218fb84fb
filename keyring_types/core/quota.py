"""Per-user key quotas (``struct key_user`` and the ``/proc/sys/kernel/keys`` limits)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from keyring_types.constants import (
    KEY_QUOTA_MAXBYTES,
    KEY_QUOTA_MAXKEYS,
    KEY_QUOTA_ROOT_MAXBYTES,
    KEY_QUOTA_ROOT_MAXKEYS,
)
from keyring_types.core.immutable import FrozenValue
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.context import CallerSlot

__all__ = ["QuotaLimits", "KeyUser"]


class QuotaLimits(FrozenValue):
    """maxkeys/maxbytes for ordinary users and for root, as the kernel's sysctls.

    Immutable, compared and hashed by value.  This class and :class:`KeyUser`
    are not attrs, as every keyspace makes them (:mod:`keyring_types.core.immutable`
    says why).
    """

    __slots__ = ("maxbytes", "maxkeys", "root_maxbytes", "root_maxkeys")
    _fields = ("maxkeys", "maxbytes", "root_maxkeys", "root_maxbytes")

    maxkeys: int
    maxbytes: int
    root_maxkeys: int
    root_maxbytes: int

    def __init__(
        self,
        maxkeys: int = KEY_QUOTA_MAXKEYS,
        maxbytes: int = KEY_QUOTA_MAXBYTES,
        root_maxkeys: int = KEY_QUOTA_ROOT_MAXKEYS,
        root_maxbytes: int = KEY_QUOTA_ROOT_MAXBYTES,
    ) -> None:
        setter = object.__setattr__
        setter(self, "maxkeys", maxkeys)
        setter(self, "maxbytes", maxbytes)
        setter(self, "root_maxkeys", root_maxkeys)
        setter(self, "root_maxbytes", root_maxbytes)

    def for_uid(self, uid: int) -> tuple[int, int]:
        if uid == 0:
            return self.root_maxkeys, self.root_maxbytes
        return self.maxkeys, self.maxbytes


class KeyUser:
    """What one uid is charged for: key count and bytes (``/proc/key-users``)."""

    __slots__ = ("limits", "maxbytes", "maxkeys", "nikeys", "nkeys", "qnbytes", "qnkeys", "uid", "world")

    def __init__(
        self,
        uid: int,
        limits: QuotaLimits,
        world: CallerSlot | None = None,
        nkeys: int = 0,
        nikeys: int = 0,
        qnkeys: int = 0,
        qnbytes: int = 0,
    ) -> None:
        self.uid = uid
        self.limits = limits
        #: The keyspace (World) this uid's keys live in; type operations find the
        #: caller of the operation in progress through it (``context.current_caller``).
        self.world = world
        #: This uid's limits, resolved once (root's differ).
        self.maxkeys, self.maxbytes = limits.for_uid(uid)
        self.nkeys = nkeys
        self.nikeys = nikeys
        self.qnkeys = qnkeys
        self.qnbytes = qnbytes

    def __repr__(self) -> str:
        return (
            f"KeyUser(uid={self.uid}, limits={self.limits!r}, maxkeys={self.maxkeys}, maxbytes={self.maxbytes}, "
            f"nkeys={self.nkeys}, nikeys={self.nikeys}, qnkeys={self.qnkeys}, qnbytes={self.qnbytes})"
        )

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
