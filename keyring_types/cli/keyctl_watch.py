"""keyctl's ``watch``, ``watch_add``, ``watch_rm``, ``watch_session`` and ``watch_sync``.

Key notifications (``KEYCTL_WATCH_KEY`` over a notification pipe) reach
neither of ``ktctl``'s backends: the kernel here is built without them
(``supports notify`` says 0), and a store-backed keyspace does not claim
``notify``, since one ``ktctl`` command is one process and the changes other
processes make reach no watch in it (an in-process ``Keyspace`` has watch
queues: ``kt.WatchQueue``). The verbs parse their arguments as keyctl does, so
usage errors are keyctl's, and then fail the way keyctl fails on such a kernel:
opening the notification pipe with ENOPKG on the kernel backend (what the
kernel answers), ``keyctl_watch_key`` with EOPNOTSUPP on the store.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from keyring_types.cli.keyctl_args import Exit

if TYPE_CHECKING:
    from keyring_types.cli.keyctl_verbs import Ctx

__all__ = ["watch_verb"]

#: keyctl's filter letters: instantiated, updated, linked, unlinked, cleared, revoked, invalidated, setattr.
FILTER_LETTERS = "iplncrvs"
#: O_NOTIFICATION_PIPE shares O_EXCL's bit (include/uapi/linux/watch_queue.h).
O_NOTIFICATION_PIPE = os.O_EXCL


def _usage(message: str) -> NoReturn:
    sys.stderr.write(message + "\n")
    raise Exit(2)


def _options(args: list[str], letters: str) -> list[str]:
    """getopt for ``-f<filters>`` (and ``-n <name>``, ``-d`` for watch_session); the operands."""
    out = list(args)
    while out and out[0].startswith("-") and out[0] != "-":
        opt = out.pop(0)
        if opt == "--":
            break
        letter, value = opt[1], opt[2:]
        if letter not in letters:
            _usage("Unknown option")
        if letter in "fn" and not value:
            if not out:
                _usage("Unknown option")
            value = out.pop(0)
        if letter == "f":
            for ch in value:
                if ch not in FILTER_LETTERS:
                    _usage(f"Unknown filter character '{ch}'")
    return out


def _open_watch(ctx: Ctx) -> None:
    """The notification pipe: on the kernel backend, ask the kernel for one."""
    from keyring_types.cli.keyctl_verbs import fail

    if ctx.backend.is_kernel:
        try:
            r, w = os.pipe2(O_NOTIFICATION_PIPE | os.O_NONBLOCK)
        except OSError as exc:
            fail("pipe2", exc)
        os.close(r)
        os.close(w)


def _no_watch(what: str = "keyctl_watch_key") -> NoReturn:
    from keyring_types.cli.keyctl_verbs import fail

    fail(what, OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP)))


def watch_verb(ctx: Ctx) -> None:
    """Dispatch on the verb word keyctl's table matched."""
    from keyring_types.cli.keyctl_verbs import format_help, key_id

    a = ctx.argv
    word = a[0]
    names = ("watch", "watch_add", "watch_rm", "watch_session", "watch_sync")
    # The dispatcher matched ``word`` exactly or as a unique prefix.
    name = word if word in names else next(n for n in names if n.startswith(word))
    if name == "watch":
        operands = _options(a[1:], "f")
        if len(operands) != 1:
            format_help()
        key_id(ctx, operands[0])
        _open_watch(ctx)
        _no_watch()
    if name in ("watch_add", "watch_rm"):
        if len(a) != 3:
            format_help()
        key_id(ctx, a[2])
        _no_watch()
    if name == "watch_sync":
        if len(a) != 2:
            format_help()
        fd = _atoi(a[1])
        from keyring_types.cli.keyctl_verbs import fail

        try:
            os.fstat(fd)
        except OSError as exc:
            fail("ioctl(PIPE_IOC_SYNC)", exc)
        return
    operands = _options(a[1:], "dfn")
    if len(operands) < 4:
        format_help()
    fd = _atoi(operands[2])
    if not 3 <= fd <= 9:
        _usage("The target fd must be between 3 and 9")
    _open_watch(ctx)
    _no_watch("keyctl_watch_key/session")


def _atoi(text: str) -> int:
    """C's atoi: leading digits (with sign), 0 when there are none."""
    from keyring_types.cli.keyctl_args import int32, strtoul

    value, _rest = strtoul(text, 10)
    return int32(value)
