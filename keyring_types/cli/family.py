"""What every ``ktctl`` family module shares: running one verb with keyctl's exit codes.

A family builds an :mod:`argparse` parser whose verbs set ``run`` (a function
of the parsed arguments returning the exit status) and hands it to
:func:`run_verb`: 0 success, 1 the operation failed (``<prog> <verb>:
<reason>`` on standard error, never a traceback), 2 a usage error (argparse's,
or :class:`UsageError` raised by a verb that finds its arguments inconsistent).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["UsageError", "fail", "run_verb"]


class UsageError(Exception):
    """A bad command line found after parsing (exit 2)."""


def fail(prog: str, verb: str, exc: OSError) -> int:
    """Print ``<prog> <verb>: <reason>`` for a failed operation; exit status 1."""
    print(f"{prog} {verb}: {exc.strerror or exc}", file=sys.stderr)
    return 1


def run_verb(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    """Parse ``argv`` and run the chosen verb's ``run``; the exit status (0, 1 or 2)."""
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse's --help (0) and usage errors (2)
        return int(exc.code or 0)
    try:
        status: int = args.run(args)
    except UsageError as exc:
        print(f"{parser.prog} {args.verb}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        return fail(parser.prog, args.verb, exc)
    return status
