"""``ktctl --test limits`` and ``--test limits2``: keyctl's own probes of add_key's limits.

keyutils' suite (features/limits) runs them: every type-name length 0..8191
(1..31 name no type, so ENODEV; 0 and 32 on are EINVAL), every description
length (1..4095 accepted, 0 and 4096 on EINVAL), and every payload length up to
just over 1 MiB for a ``user`` key (1..32767 accepted, EDQUOT tolerated, the
rest EINVAL). Each key made is unlinked from ``@t`` again. The progress dots
and messages are keyctl's; the exit status is 1 if anything answered wrongly.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from keyring_types.cli.keyctl_args import Exit

if TYPE_CHECKING:
    from keyring_types.cli.keyctl_verbs import Ctx

__all__ = ["test_verb"]

THREAD = -1


def _format() -> NoReturn:
    from keyring_types.cli.keyctl_verbs import format_help

    sys.stderr.write("Format:\n  keyctl --test limits \n  keyctl --test limits2 \n")
    # The rest of keyctl's test format is the key-id legend of the main one.
    format_help(legend_only=True)


class _Out:
    """Unbuffered stdout (keyctl sets it so: the dots show progress as they happen)."""

    def __init__(self) -> None:
        self.pending: list[str] = []

    def put(self, text: str) -> None:
        self.pending.append(text)
        if len(self.pending) >= 64:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            os.write(1, "".join(self.pending).encode())
            self.pending.clear()

    def err(self, text: str) -> None:
        self.put("\n")
        self.flush()
        sys.stderr.write(text + "\n")


def _try_add(ctx: Ctx, type_name: str, desc: str, payload: memoryview) -> tuple[int | None, int]:
    try:
        return ctx.ks.sys_add_key(type_name, desc, payload, THREAD), 0  # type: ignore[arg-type]
    except OSError as exc:
        return None, exc.errno or 0


def _unlink(ctx: Ctx, out: _Out, key: int) -> int:
    try:
        ctx.ks.sys_unlink(key, THREAD)
    except OSError as exc:
        out.err(f"Unlink failed: {os.strerror(exc.errno or 0)}")
        return 1
    return 0


def _limits(ctx: Ctx) -> int:
    out = _Out()
    fails = 0
    one = memoryview(b"a")
    for i in range(8192):
        if i % 32 == 0:
            if i:
                out.put("\n")
            out.put(f"TEST SIZE {i}")
        name = "a" * i
        out.put(".")
        key, err = _try_add(ctx, name, "wibble", one)
        if key is None:
            want = errno.EINVAL if i == 0 or i >= 32 else errno.ENODEV
            if err != want:
                out.err(f"{i} type failed: {os.strerror(err)}")
                fails += 1
        else:
            out.err(f"{i} type unexpectedly succeeded")
            fails += 1
        out.put("_")
        key, err = _try_add(ctx, "user", name, one)
        if key is None:
            if i == 0 or i >= 4096:
                if err != errno.EINVAL:
                    out.err(f"{i} desc failed: {os.strerror(err)}")
                    fails += 1
            else:
                out.err(f"{i} desc wrong error: {os.strerror(err)}")
                fails += 1
        else:
            if i == 0 or i >= 4096:
                out.err(f"{i} desc unexpectedly succeeded")
                fails += 1
            fails += _unlink(ctx, out, key)
        if fails > 20:
            out.flush()
            sys.stderr.write("Aborting with too many failures\n")
            return 1
    out.put("\n")
    out.flush()
    return 1 if fails else 0


def _limits2(ctx: Ctx) -> int:
    out = _Out()
    fails = 0
    buf = memoryview(b"a" * (1030 * 1024))
    for i in range(len(buf)):
        if i % 2048 == 0:
            if i:
                out.put("\n")
            out.put(f"TEST SIZE {i:7d} ")
        if i % 64 == 0:
            out.put(".")
        key, err = _try_add(ctx, "user", "a", buf[:i])
        if key is None:
            if i == 0 or i > 32767:
                if err != errno.EINVAL:
                    out.err(f"{i} desc failed: {os.strerror(err)}")
                    fails += 1
            elif err != errno.EDQUOT:  # keys made this fast may meet the quota
                out.err(f"{i} desc wrong error: {os.strerror(err)}")
                fails += 1
        else:
            if i == 0 or i > 32767:
                out.err(f"{i} desc unexpectedly succeeded")
                fails += 1
            fails += _unlink(ctx, out, key)
        if fails > 20:
            out.flush()
            sys.stderr.write("Aborting with too many failures\n")
            return 1
    out.put("\n")
    out.flush()
    return 1 if fails else 0


def test_verb(ctx: Ctx) -> None:
    """``--test <name>``: keyctl's test commands (exact or unique-prefix names)."""
    a = ctx.argv
    if len(a) < 2:
        _format()
    word = a[1]
    names = {"limits": _limits, "limits2": _limits2}
    fn = names.get(word)
    if fn is None:
        matches = [n for n in names if n.startswith(word)]
        if not matches:
            sys.stderr.write("Unknown test command\n")
            raise Exit(2)
        if len(matches) > 1:
            sys.stderr.write("Ambiguous test command\n")
            raise Exit(2)
        fn = names[matches[0]]
    if len(a) != 2:
        _format()
    raise Exit(fn(ctx))
