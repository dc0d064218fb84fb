"""The state one Keyspace's views share: keys by serial, per-user quotas and keyrings, GC.

The kernel's global key tables in miniature.  ``keyspace.py`` holds the views
(credentials plus process keyrings) whose system calls act on a world; this
module only allocates, links, unlinks, reaps and destroys.
"""

from __future__ import annotations

import errno
import heapq
import os
import random
import threading
import weakref
from collections.abc import Callable

from keyring_types.constants import (
    KEY_POS_ALL,
    KEY_POS_SETATTR,
    KEY_USR_ALL,
    KEYQUOTA_LINK_BYTES,
    PERSISTENT_KEYRING_EXPIRY,
)
from keyring_types.core.context import Caller, calling
from keyring_types.core.cred import Cred
from keyring_types.core.keytype import KeyType, lookup_key_type, on_unregister
from keyring_types.core.quota import KeyUser, QuotaLimits
from keyring_types.core.record import KeyRecord
from keyring_types.core.restrict import release_restriction
from keyring_types.core.watch import remove_all_watches
from keyring_types.errors import error

__all__ = ["World", "Clock", "NO_CALLER"]

Clock = Callable[[], float]

_UID_PERM = (KEY_POS_ALL & ~KEY_POS_SETATTR) | KEY_USR_ALL  # _uid.N and _uid_ses.N


class World:
    """Everything views of one Keyspace share."""

    def __init__(self, limits: QuotaLimits, clock: Clock, gc_delay: int) -> None:
        self.lock = threading.RLock()
        self.keys: dict[int, KeyRecord] = {}
        self.users: dict[int, KeyUser] = {}
        self.user_rings: dict[int, tuple[KeyRecord, KeyRecord]] = {}
        #: A ``_uid.N`` made while its ``_uid_ses.N`` could not be (quota): used next time.
        self.uid_ring_alone: dict[int, KeyRecord] = {}
        self.limits = limits
        self.clock = clock
        self.gc_delay = gc_delay
        self.rng = random.Random()
        self._randbits = self.rng.getrandbits
        self.gc_heap: list[tuple[int, int]] = []
        #: The view whose operation is in progress (under ``lock``), for key types
        #: that act as the caller (``context.current_caller``); None between operations.
        self.caller: Caller | None = None
        #: Pins released while the world was busy, applied by the next operation.
        self._unpins: list[KeyRecord] = []
        #: ``/proc/sys/kernel/keys/persistent_keyring_expiry`` and the register of
        #: ``_persistent.<uid>`` keyrings, made on first use (core.persistent).
        self.persistent_keyring_expiry = PERSISTENT_KEYRING_EXPIRY
        self.persistent_register: KeyRecord | None = None
        #: Watches each uid holds (the kernel's ``user_struct.nr_watches``), core.watch.
        self.nr_watches: dict[int, int] = {}
        on_unregister(self)
        _worlds.add(self)

    def now(self) -> int:
        return int(self.clock())

    def construction_poll(self, rec: KeyRecord) -> float | None:
        """Seconds a waiter for ``rec``'s construction sleeps before looking again (world lock held).

        None: until this process's handler side wakes it (``construction_done``),
        as here every key is built in this process.  A world shared with other
        processes answers for keys they build, and may settle ``rec`` meanwhile.
        """
        return None

    def upcall_session(self, ring: KeyRecord) -> None:
        """``ring`` was just made as a request-key handler's session keyring (world lock held).

        Nothing to do here, where every handler runs in this process.  A world
        shared with other processes keeps it (and the authorisation key linked
        into it next) where a handler program in another process can take it over.
        """

    def key_user(self, uid: int) -> KeyUser:
        user = self.users.get(uid)
        if user is None:
            user = self.users[uid] = KeyUser(uid, self.limits, self)
        return user

    def new_serial(self) -> int:
        serial = self._randbits(31)
        keys = self.keys
        while serial < 3 or serial in keys:
            serial = max(3, (serial + 1) & 0x7FFFFFFF)
        return serial

    # -- allocation and destruction ------------------------------------------
    def alloc(
        self, ktype: KeyType, description: str, uid: int, gid: int | None, perm: int, in_quota: bool = True
    ) -> KeyRecord:
        """``key_alloc``: vet the description, charge the quota, take a serial."""
        if not description:
            raise error(errno.EINVAL, "a key needs a non-empty description")
        if ktype._has_vet:
            ktype.vet_description(description)
        user = self.users.get(uid) or self.key_user(uid)
        quotalen = (len(description) if description.isascii() else len(description.encode())) + 1 + ktype.def_datalen
        if in_quota:
            if user.qnkeys >= user.maxkeys or user.qnbytes + quotalen > user.maxbytes:
                user.charge_new_key(quotalen)  # raises EDQUOT with the message
            # charge_new_key()'s accounting, inline: this runs for every new key.
            user.qnkeys += 1
            user.qnbytes += quotalen
        serial = self._randbits(31)
        if serial < 3 or serial in self.keys:
            serial = self.new_serial()
        rec = KeyRecord(serial, ktype, description, uid, gid, perm, user, None, ktype.def_datalen, quotalen, in_quota)
        rec.index_key = (ktype.name, description)
        user.nkeys += 1
        self.keys[rec.serial] = rec
        return rec

    def new_keyring(self, description: str, uid: int, gid: int | None, perm: int) -> KeyRecord:
        ktype = lookup_key_type("keyring")
        rec = self.alloc(ktype, description, uid, gid, perm)
        with calling(self, NO_CALLER):
            ktype.instantiate(rec, ktype.preparse(b""))
        rec.instantiated = True
        rec.user.nikeys += 1
        return rec

    def maybe_destroy(self, rec: KeyRecord) -> None:
        """Destroy ``rec`` if nothing links or pins it, cascading through keyrings."""
        pending = [rec]
        while pending:
            r = pending.pop()
            if r.pins or r.parents or r.serial not in self.keys:
                continue
            if r.links is not None:
                for child in list(r.links.values()):
                    self.drop_link(r, child, refund=False)
                    pending.append(child)
            self.destroy(r)

    def destroy(self, rec: KeyRecord) -> None:
        del self.keys[rec.serial]
        rec.ktype.destroy(rec)
        if rec.restriction is not None:
            release_restriction(self, rec)
        if rec.in_quota:
            rec.user.release_key(rec.quotalen)
        rec.user.nkeys -= 1
        if rec.instantiated:
            rec.user.nikeys -= 1
        rec.dead = True
        if rec.watchers:
            remove_all_watches(rec)

    def release_pin(self, rec: KeyRecord) -> None:
        """Drop a pin whose holder is gone (a thread's ``@t`` at thread exit), from any thread.

        It runs from a finaliser, perhaps in the middle of an operation on this very
        thread or while another thread holds the lock; then the release waits for
        the next operation (:meth:`release_pending`) rather than change the world
        under that operation.
        """
        lock = self.lock
        if not lock._is_owned() and lock.acquire(blocking=False):  # type: ignore[attr-defined]
            try:
                self._unpins.append(rec)
                self.release_pending()
            finally:
                lock.release()
        else:
            self._unpins.append(rec)  # list.append is atomic

    def release_pending(self) -> None:
        """Apply the pin releases :meth:`release_pin` deferred (with the lock held)."""
        unpins = self._unpins
        while unpins:
            rec = unpins.pop()
            rec.pins -= 1
            self.maybe_destroy(rec)

    # -- links ------------------------------------------------------------------
    def add_link(self, ring: KeyRecord, key: KeyRecord) -> KeyRecord | None:
        """Install ``key`` in ``ring``, displacing a same-index key; returns the displaced one."""
        assert ring.links is not None and ring.rings is not None
        idx = key.index_key
        old = ring.links.get(idx)
        if old is key:
            return None
        if old is not None:
            self.drop_link(ring, old, refund=False)
        ring.links[idx] = key
        if key.links is not None:
            ring.rings[idx] = key
        key.parents[ring.serial] = None
        return old

    def drop_link(self, ring: KeyRecord, key: KeyRecord, refund: bool = True) -> None:
        assert ring.links is not None and ring.rings is not None
        idx = key.index_key
        del ring.links[idx]
        ring.rings.pop(idx, None)
        del key.parents[ring.serial]
        if refund:
            ring.payload_reserve(ring.datalen - KEYQUOTA_LINK_BYTES)

    def unlink_everywhere(self, key: KeyRecord) -> None:
        parents = key.parents
        idx = key.index_key
        keys = self.keys
        for serial in list(parents):
            ring = keys[serial]  # a linking keyring is live: destroy() unlinks its keys first
            # drop_link() inlined: this is the invalidate hot path.
            del ring.links[idx]  # type: ignore[union-attr]
            if key.links is not None:
                ring.rings.pop(idx, None)  # type: ignore[union-attr]
            # No refund: the kernel's GC drops dead keys from keyrings (keyring_gc)
            # without key_payload_reserve, so the link's 4 bytes stay charged to the
            # keyring's owner until the keyring is cleared or destroyed.
        parents.clear()
        if key.pins == 0:
            if key.links is None:
                self.destroy(key)
            else:
                self.maybe_destroy(key)

    # -- garbage collection ---------------------------------------------------
    def schedule_gc(self, when: int, key: KeyRecord) -> None:
        """Make sure the GC looks at ``key`` no later than ``when``.

        A key has at most one live heap entry (``key.gc_at``): a later reap time
        needs none, since the GC re-examines the key when the earlier entry falls
        due and reschedules it then.  Entries left stale by an earlier one are
        skipped when popped, and the heap is rebuilt when they outnumber the keys,
        so repeated ``set_timeout`` cannot grow it.
        """
        if key.gc_at and key.gc_at <= when:
            return
        key.gc_at = when
        heap = self.gc_heap
        if len(heap) > 2 * len(self.keys) + 64:
            keys = self.keys
            heap[:] = [e for e in heap if (r := keys.get(e[1])) is not None and r.gc_at == e[0]]
            heapq.heapify(heap)
        heapq.heappush(heap, (when, key.serial))

    def gc_due(self) -> None:
        """Run :meth:`gc` if a scheduled reap is due (every operation starts with this)."""
        if self.gc_heap and self.gc_heap[0][0] <= self.now():
            self.gc()

    def gc(self) -> None:
        """Reap revoked and expired keys whose grace period (gc_delay) has passed."""
        if self._unpins:
            self.release_pending()
        now = self.now()
        heap = self.gc_heap
        while heap and heap[0][0] <= now:
            when, serial = heapq.heappop(heap)
            rec = self.keys.get(serial)
            if rec is None or rec.gc_at != when:
                continue  # a stale entry: the key has died, or has an earlier one
            rec.gc_at = 0
            dead_at = None
            if rec.revoked:
                dead_at = rec.revoked_at + self.gc_delay
            if rec.expiry:
                exp = rec.expiry + self.gc_delay
                dead_at = exp if dead_at is None else min(dead_at, exp)
            if dead_at is None:
                continue
            if dead_at <= now:
                self.unlink_everywhere(rec)
            else:
                # The expiry moved later since this entry was made: look again then.
                rec.gc_at = dead_at
                heapq.heappush(heap, (dead_at, serial))

    def type_unregistered(self, ktype: KeyType) -> None:
        """Keys of an unregistered type die: payload freed, links dropped."""
        with self.lock:
            for rec in [r for r in self.keys.values() if r.ktype is ktype]:
                rec.dead = True
                ktype.destroy(rec)
                self.unlink_everywhere(rec)

    def user_keyrings(self, uid: int) -> tuple[KeyRecord, KeyRecord]:
        """``look_up_user_keyrings``: ``_uid.N`` and ``_uid_ses.N``, made on first use.

        As the kernel's register of user keyrings: one that was invalidated, or
        reaped after revocation or expiry, is replaced by a new one on the next
        use (a new ``_uid.N`` is not linked from an existing ``_uid_ses.N``; a new
        ``_uid_ses.N`` links ``_uid.N``).  ENOKEY while either is revoked or
        expired but not yet reaped; EDQUOT if one cannot be made, in which case a
        ``_uid.N`` already made stays registered for the next try and nothing else
        is left behind.
        """
        rings = self.user_rings.get(uid)
        if rings is not None:
            u, s = rings
            if not (u.invalidated or u.revoked or u.expiry or s.invalidated or s.revoked or s.expiry):
                return rings
        return self._look_up_user_keyrings(uid, rings)

    def _look_up_user_keyrings(self, uid: int, rings: tuple[KeyRecord, KeyRecord] | None) -> tuple[KeyRecord, KeyRecord]:
        now = self.now()
        uid_ring = self._registered(rings[0] if rings else self.uid_ring_alone.get(uid), now)
        ses_ring = self._registered(rings[1], now) if rings else None
        if uid_ring is not None and ses_ring is not None:
            return rings  # type: ignore[return-value]  # only expiring, still usable
        self.user_rings.pop(uid, None)
        if uid_ring is None:
            self.uid_ring_alone.pop(uid, None)
            uid_ring = self.new_keyring(f"_uid.{uid}", uid, None, _UID_PERM)
            uid_ring.pins += 1
            uid_ring.uid_keyring = True
        self.uid_ring_alone[uid] = uid_ring
        if ses_ring is None:
            ses_ring = self.new_keyring(f"_uid_ses.{uid}", uid, None, _UID_PERM)
            ses_ring.uid_keyring = True
            try:
                ses_ring.payload_reserve(ses_ring.datalen + KEYQUOTA_LINK_BYTES)
                self.add_link(ses_ring, uid_ring)
            except BaseException:
                self.maybe_destroy(ses_ring)
                raise
            ses_ring.pins += 1
        del self.uid_ring_alone[uid]
        rings = self.user_rings[uid] = (uid_ring, ses_ring)
        return rings

    def _registered(self, ring: KeyRecord | None, now: int) -> KeyRecord | None:
        """A registered user keyring if usable; None (and unregistered) if gone; ENOKEY if unusable."""
        if ring is None:
            return None
        if not (ring.invalidated or ring.dead):
            if not (ring.revoked or ring.expired_at(now)):
                return ring
            reaped_at = min(
                ring.revoked_at + self.gc_delay if ring.revoked else now + 1,
                ring.expiry + self.gc_delay if ring.expiry else now + 1,
            )
            if now < reaped_at:
                state = "revoked" if ring.revoked else "expired"
                raise error(errno.ENOKEY, f"user keyring {ring.description} (key {ring.serial}) is {state}")
        ring.pins -= 1
        self.maybe_destroy(ring)
        return None


# -- fork ------------------------------------------------------------------------
# A child of fork() has only the forking thread.  A world lock another thread held
# at that moment would stay held in the child for ever, and the world's state could
# be half-changed.  So fork waits until every world is between operations (the locks
# are taken in a fixed order, so two forking threads cannot deadlock) and both sides
# release them afterwards; the child inherits a consistent, unlocked world.
_worlds: weakref.WeakSet[World] = weakref.WeakSet()
_held_at_fork: list[threading.RLock] = []


def _before_fork() -> None:
    locks = [w.lock for w in sorted(_worlds, key=id)]
    for lock in locks:
        lock.acquire()
    _held_at_fork[:] = locks


def _after_fork() -> None:
    locks = _held_at_fork[:]
    _held_at_fork.clear()
    for lock in reversed(locks):
        lock.release()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)


class NoCaller:
    """The caller seen by type operations run on behalf of no one (GC, destroy)."""

    cred = Cred(0, 0)

    def lookup_key(self, type_name: str, description: str) -> KeyRecord:
        raise error(errno.ENOKEY, f"no caller to look up {type_name}:{description} for")


NO_CALLER = NoCaller()
