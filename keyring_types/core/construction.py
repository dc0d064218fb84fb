"""Waiting for a key that a request-key handler is still building (``wait_for_key_construction``).

A key made by ``request_key`` with callout info stays under construction (``U``)
until its handler instantiates, negates or rejects it.  Everyone who finds such
a key waits here, with the world lock let go, for that one outcome; the handler
side (:mod:`keyring_types.core.request_key`) wakes them.
"""

from __future__ import annotations

import errno
import threading
from typing import TYPE_CHECKING

from keyring_types.core.record import UNDER_CONSTRUCTION, KeyRecord
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.world import World

__all__ = ["construction_done", "negative_error", "wait_for_construction"]


def _condition(world: World) -> threading.Condition:
    cond: threading.Condition | None = getattr(world, "_constructed", None)
    if cond is None:
        # Made under the world lock (every caller holds it), so made once.  It has a
        # lock of its own: the world lock may be a store's, which a Condition cannot
        # let go of at every level.
        cond = world._constructed = threading.Condition()  # type: ignore[attr-defined]
    return cond


def wait_for_construction(world: World, rec: KeyRecord) -> None:
    """Block (world lock let go meanwhile) until ``rec`` is no longer under construction.

    Called with the world lock held, perhaps at several levels; holds it again,
    at as many, on return.  Does not raise: the caller looks at the outcome
    (:func:`negative_error`, ``rec.validate``).
    """
    if rec.upcall != UNDER_CONSTRUCTION:
        return
    cond = _condition(world)
    lock = world.lock
    caller = world.caller
    while rec.upcall == UNDER_CONSTRUCTION and not rec.dead:
        # A world shared with other processes (the store) may have to look again after
        # a while, or settle the key itself (its builder died): no wake-up comes from there.
        poll = world.construction_poll(rec)
        if rec.upcall != UNDER_CONSTRUCTION or rec.dead:
            break
        # Take the condition's lock before letting the world go, so the wake-up that
        # construction_done sends (world lock held) cannot slip in between.
        depth = 0
        try:
            with cond:
                while lock._is_owned():  # type: ignore[attr-defined]
                    lock.release()
                    depth += 1
                cond.wait(poll)
        finally:
            # Also when a signal interrupts the wait: the caller lets go of every level.
            for _ in range(depth):
                lock.acquire()
    # Operations that ran meanwhile restored the caller they found; make sure it is ours.
    world.caller = caller


def construction_done(world: World) -> None:
    """Wake every waiter: some key's construction has ended (world lock held)."""
    cond: threading.Condition | None = getattr(world, "_constructed", None)
    if cond is not None:
        with cond:
            cond.notify_all()


def negative_error(rec: KeyRecord) -> OSError:
    """The error a negative key answers with (``ENOKEY`` once negated, else the reject errno)."""
    err = rec.upcall
    how = "negated it" if err == errno.ENOKEY else f"rejected it with {errno.errorcode.get(err, err)}"
    return error(err, f"key {rec.serial} is a negative key: its request-key handler {how}")
