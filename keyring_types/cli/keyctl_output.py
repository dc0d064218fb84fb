"""keyctl 1.6.3's output formats, byte for byte: hex dumps, permission strings, the key tree.

Everything here writes into an :class:`Output` buffer that the command flushes
when it exits, as C's stdio does for a redirected stdout: a failure's message
on stderr therefore precedes the stdout lines of the same command, which is
what a log captured with ``>>file 2>&1`` (keyutils' test suite) shows.
"""

from __future__ import annotations

import os

from keyring_types.constants import KEY_GRP_ALL, KEY_OTH_ALL, KEY_POS_ALL, KEY_USR_ALL

__all__ = [
    "Creds",
    "Output",
    "hexdump",
    "parse_description",
    "perm_string",
    "pretty_mask",
]


class Output:
    """Standard output, held until the command ends (stdio's full buffering)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, text: str | bytes) -> None:
        self.data += text if isinstance(text, bytes) else os.fsencode(text)

    def flush_to(self, fd: int) -> None:
        data = bytes(self.data)
        self.data.clear()
        while data:
            data = data[os.write(fd, data) :]


def hexdump(data: bytes) -> str:
    """keyctl read's body: 2 hex digits a byte, a space every 4 bytes, a newline every 32."""
    lines = []
    for start in range(0, len(data), 32):
        row = data[start : start + 32]
        lines.append(" ".join(row[i : i + 4].hex() for i in range(0, len(row), 4)))
    return "\n".join(lines) + "\n"


def parse_description(raw: str) -> tuple[str, int, int, int, str] | None:
    """``type;uid;gid;perm;description`` as keyctl's sscanf reads it, or None if it cannot.

    uid and gid are read with ``%d`` (so a 32-bit value wraps to a negative int)
    and the permission with ``%x``.
    """
    parts = raw.split(";", 4)
    if len(parts) != 5 or not parts[0]:
        return None
    try:
        uid = _c_int(parts[1], 10)
        gid = _c_int(parts[2], 10)
        perm = int(parts[3], 16) & 0xFFFFFFFF
    except ValueError:
        return None
    return parts[0], uid, gid, perm, parts[4]


def _c_int(text: str, base: int) -> int:
    value = int(text, base)
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


_LETTERS = "alswrv"


def _six(bits: int) -> str:
    """One class's 6 bits (setattr, link, search, write, read, view) as keyctl letters."""
    return "".join(ch if bits & (0x20 >> i) else "-" for i, ch in enumerate(_LETTERS))


def perm_string(perm: int) -> str:
    """keyctl describe's 24 letters: possessor, user, group, other."""
    return _six(perm >> 24) + _six(perm >> 16) + _six(perm >> 8) + _six(perm)


class Creds:
    """The caller's uid, gid and groups (keyctl's grab_creds), read once."""

    def __init__(self) -> None:
        self.uid = os.geteuid()
        self.gid = os.getegid()
        self.groups = set(os.getgroups())


def pretty_mask(perm: int, uid: int, gid: int, creds: Creds) -> str:
    """keyctl list/show's ``--alswrv``: the rights this caller has, possessor rights included.

    keyctl assumes possession: the possessor bits are always added, then the
    user bits if it owns the key, else the group bits if it is in the key's
    group, else the other bits.
    """
    perms = (perm & KEY_POS_ALL) >> 24
    if uid == creds.uid:
        perms |= (perm & KEY_USR_ALL) >> 16
    elif gid != -1 and (gid == creds.gid or gid in creds.groups):
        perms |= (perm & KEY_GRP_ALL) >> 8
    else:
        perms |= perm & KEY_OTH_ALL
    return "--" + _six(perms)
