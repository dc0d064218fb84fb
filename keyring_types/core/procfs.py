"""Formatting of ``/proc/keys`` lines (proc.c's ``proc_keys_show``)."""

from __future__ import annotations

from keyring_types.constants import OVERFLOW_GID
from keyring_types.core.cred import signed_id
from keyring_types.core.record import UNDER_CONSTRUCTION, KeyRecord

__all__ = ["proc_keys_line", "format_timeout"]


def format_timeout(rec: KeyRecord, now: int) -> str:
    """``perm``, ``expd``, or the time left in the largest whole unit (s, m, h, d, w)."""
    if not rec.expiry:
        return "perm"
    left = rec.expiry - now
    if left <= 0:
        return "expd"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if left >= size:
            return f"{left // size}{unit}"
    return f"{left}s"


def proc_keys_line(rec: KeyRecord, now: int) -> str:
    """One ``/proc/keys`` line: serial, flags IRDQUNi, usage, timeout, perm, uid, gid, type, text."""
    flags = "".join(
        (
            "I" if rec.instantiated else "-",
            "R" if rec.revoked else "-",
            "D" if rec.dead else "-",
            "Q" if rec.in_quota else "-",
            "U" if rec.upcall == UNDER_CONSTRUCTION else "-",
            "N" if rec.upcall > 0 else "-",
            "i" if rec.invalidated else "-",
        )
    )
    usage = len(rec.parents) + rec.pins
    gid = OVERFLOW_GID if rec.gid is None else rec.gid
    # The kernel's describe ops add payload details only for a positive key.
    text = rec.ktype.describe(rec) if rec.instantiated and not rec.upcall else rec.description
    return (
        f"{rec.serial:08x} {flags} {usage:5d} {format_timeout(rec, now):>4s} {rec.perm:08x} "
        f"{signed_id(rec.uid):5d} {signed_id(gid):5d} {rec.ktype.name[:9]:<9s} {text}"
    )
