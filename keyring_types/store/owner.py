"""Which process is building a key, and whether it still runs.

A key under construction in a store is tagged with its builder: boot id, pid
and the process's start time (field 22 of ``/proc/<pid>/stat``, in clock ticks
since boot).  A pid is reused, but not with the same start time in the same
boot, so the tag names one process for good: when no running process matches
it, the builder is gone and the key will never be built.
"""

from __future__ import annotations

import os

__all__ = ["alive", "own_tag"]

_own: tuple[int, str] | None = None


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of ``pid`` from /proc, or None if /proc has no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    rest = raw[raw.rfind(b")") + 2 :].split()
    return rest[0].decode("ascii", "replace"), rest[19].decode("ascii", "replace")


def own_tag() -> str:
    """The tag of this process: ``"<boot id> <pid> <start time>"`` (start time empty without /proc)."""
    global _own
    pid = os.getpid()
    if _own is None or _own[0] != pid:  # computed again in a forked child
        try:
            st = _stat(pid)
        except OSError:
            st = None
        _own = (pid, f"{_boot_id()} {pid} {'' if st is None else st[1]}")
    return _own[1]


def alive(tag: str | None) -> bool:
    """Whether the process ``tag`` names still runs (None, or a tag that does not parse: no)."""
    if not tag:
        return False
    parts = tag.split(" ")
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    boot, pid, start = parts[0], int(parts[1]), parts[2]
    if boot != _boot_id():
        return False  # written before a reboot
    if start:
        try:
            st = _stat(pid)
        except OSError:
            return True  # /proc unreadable here (hidepid): do not declare it dead
        # A zombie has exited: it will never finish the key.
        return st is not None and st[1] == start and st[0] not in ("Z", "X")
    # Written where /proc was not available: only the pid to go by.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
