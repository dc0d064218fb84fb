"""``ktctl derive``: what the ``derived`` key type derives from, as a user debugging one sees it.

``roots``: the roots this machine knows (``tpm2``, ``host``, plugins), which
one a key without ``root=`` would use, and whether each is reachable here.
``measure PATH``: the value the ``csum`` mode mixes for a program at ``PATH``
(IMA's last measurement of it, from the same list the key type reads), which
is where a ``csum`` key's EOPNOTSUPP comes from.

The keys themselves are made with keyctl's verb: ``ktctl add derived <desc>
'<len> path|csum' @u``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from keyring_types.cli.family import fail, run_verb

PROG = "ktctl derive"


def _roots(args: argparse.Namespace) -> int:
    from keyring_types.derive.registry import default_root_name, root_class, root_names

    default = default_root_name()
    rows = []
    for name in root_names():
        try:
            cls = root_class(name)
            available = bool(cls.available())
            doc = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "") if cls.__doc__ else ""
        except OSError as exc:
            available, doc = False, f"cannot be loaded: {exc.strerror}"
        rows.append({"name": name, "available": available, "default": name == default, "about": doc})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        mark = "*" if row["default"] else " "
        state = "available" if row["available"] else "not reachable"
        print(f"{mark} {row['name']:<8} {state:<14} {row['about']}")
    return 0


def _measure(args: argparse.Namespace) -> int:
    from keyring_types.derive.identity import ENV_IMA_LOG, IMA_LOGS, ima_digest

    path = os.fsencode(args.path)
    log_path = os.environ.get(ENV_IMA_LOG) or next((p for p in IMA_LOGS if os.path.exists(p)), None)
    if log_path is None:
        print(f"{PROG} measure: this system has no IMA measurement list (set {ENV_IMA_LOG} to read one)", file=sys.stderr)
        return 1
    try:
        with open(log_path, "rb") as f:
            digest = ima_digest(f.read(), path)
    except OSError as exc:
        return fail(PROG, "measure", exc)
    if digest is None:
        print(f"{PROG} measure: IMA has no measurement of that path", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"path": args.path, "digest": digest.hex(), "log": log_path}))
    else:
        print(digest.hex())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Inspect what derived keys are derived from.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    roots = verbs.add_parser("roots", help="list derived-key roots; * marks the default")
    roots.add_argument("--json", action="store_true", help="print a JSON list")
    roots.set_defaults(run=_roots)
    measure = verbs.add_parser("measure", help="IMA's measurement of a program, as the csum mode mixes it")
    measure.add_argument("path", help="the program's path as IMA records it")
    measure.add_argument("--json", action="store_true", help="print a JSON object")
    measure.set_defaults(run=_measure)
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``ktctl derive VERB ...``; 0 ok, 1 failed, 2 usage."""
    return run_verb(_parser(), argv)
