"""keyctl's walks over a keyring tree: ``show``'s drawing and the scan behind ``unlink``/``reap``/``purge``."""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from keyring_types.cli.keyctl_output import Creds, pretty_mask

if TYPE_CHECKING:
    from keyring_types.cli.keyctl_verbs import Ctx

__all__ = ["dump_key_tree", "recursive_session_key_scan"]

#: ``scan(parent, key, raw_description_or_None, errno_of_describe) -> count``.
Scanner = Callable[[int, int, "str | None", int], int]

_SES = -3


def _serials(raw: bytes) -> tuple[int, ...]:
    return struct.unpack(f"={len(raw) // 4}i", raw[: len(raw) // 4 * 4])


def recursive_session_key_scan(ctx: Ctx, scan: Scanner) -> int:
    """libkeyutils' depth-first scan of the session keyring tree, children before parents."""
    try:
        session = ctx.ks.sys_get_keyring_id(_SES, False)
    except OSError:
        return 0
    if session <= 0:
        return 0
    return _scan(ctx, 0, session, 0, scan)


def _scan(ctx: Ctx, parent: int, key: int, depth: int, scan: Scanner) -> int:
    if depth > 800:
        return 0
    count = 0
    raw: str | None
    err = 0
    try:
        raw = ctx.ks.sys_describe(key)
    except OSError as exc:
        raw, err = None, exc.errno or 0
    if raw is not None:
        if raw.count(";") < 4:
            raw, err = None, errno.EINVAL
        elif raw.startswith("keyring;"):
            try:
                ring = ctx.ks.sys_read(key)
            except OSError:
                ring = b""
            for child in _serials(ring):
                count += _scan(ctx, key, child, depth + 1, scan)
    return count + scan(parent, key, raw, err)


class _Tree:
    """keyctl's dump_key_tree, including its one shared indent buffer."""

    def __init__(self, ctx: Ctx, hex_ids: bool) -> None:
        self.ctx = ctx
        self.hex_ids = hex_ids
        self.indent = ["\0"] * 64
        self.creds = Creds()

    def prefix(self) -> str:
        text = "".join(self.indent)
        return text.split("\0", 1)[0]

    def dump(self, key: int, depth: int, more: bool) -> None:
        from keyring_types.cli.keyctl_output import parse_description
        from keyring_types.cli.keyctl_verbs import fail

        ctx = self.ctx
        if depth > 32:
            return
        try:
            raw = ctx.ks.sys_describe(key)
        except OSError as exc:
            from keyring_types.cli.keyctl_verbs import _strerror

            ctx.print(f"{key}: key inaccessible ({_strerror(exc)})\n")
            return
        parsed = parse_description(raw)
        if parsed is None:
            from keyring_types.cli.keyctl_verbs import _unparsable

            _unparsable(ctx, key)
        type_name, uid, gid, perm, desc = parsed
        mask = pretty_mask(perm, uid, gid, self.creds)
        ident = f"0x{key & 0xFFFFFFFF:08x}" if self.hex_ids else f"{key:10d}"
        branch = "\\_ " if depth > 0 else ""
        ctx.print(f"{ident} {mask}  {uid:5d} {gid:5d}  {self.prefix()}{branch}{type_name}: {desc}\n")
        if type_name != "keyring":
            return
        try:
            ring = ctx.ks.sys_read(key)
        except OSError as exc:
            fail("keyctl_read_alloc", exc)
        children = _serials(ring)
        for i, child in enumerate(children):
            if depth == 0:
                self.indent[0] = " "
                self.indent[1] = "\0"
                rdepth = 1
            else:
                for j in range(depth, depth + 4):
                    self.indent[j] = " "
                self.indent[depth + 4] = "\0"
                rdepth = depth + 4
            if more:
                self.indent[depth] = "|"
            self.dump(child, rdepth, i + 1 < len(children))


def dump_key_tree(ctx: Ctx, keyring: int, title: str, hex_ids: bool) -> None:
    """``keyctl show``: the title, then the tree under ``keyring`` ("Unable to dump key" if it has none)."""
    from keyring_types.cli.keyctl_verbs import fail

    ctx.print(title + "\n")
    try:
        serial = ctx.ks.sys_get_keyring_id(keyring, False)
    except OSError as exc:
        fail("Unable to dump key", exc)
    _Tree(ctx, hex_ids).dump(serial, 0, False)
