"""``ktctl``: a keyctl for keyring_types, plus the library's own verb families.

``ktctl [--kernel | --store PATH] <word> ...``. Exit codes follow keyctl: 0
success, 1 the call failed (a message on stderr), 2 usage. A family word
(``ktctl rpmb ...``) runs that family's module; every other word is one of
keyctl's verbs (:mod:`keyring_types.cli.keyctl_verbs`). The global options
choose the backend for both: a family sees them as ``KTCTL_BACKEND`` and
``KEYRING_TYPES_STORE``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from keyring_types.cli.families import FAMILIES, KEYCTL_VERBS


def _family_after_options(args: list[str]) -> int | None:
    """The index of a family word behind the global options, if that is what follows them."""
    i = 0
    while i < len(args) and args[i] in ("--kernel", "--store"):
        i += 2 if args[i] == "--store" else 1
    return i if i < len(args) and args[i] in FAMILIES else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``ktctl`` command line; returns the exit status (0, 1 or 2)."""
    args = list(sys.argv[1:] if argv is None else argv)
    at = _family_after_options(args)
    if at is not None:
        options = args[:at]
        if "--kernel" in options:
            os.environ["KTCTL_BACKEND"] = "kernel"
        if "--store" in options:
            os.environ["KTCTL_BACKEND"] = "store"
            os.environ["KEYRING_TYPES_STORE"] = options[options.index("--store") + 1]
        module = importlib.import_module(FAMILIES[args[at]])
        status: int = module.main(args[at + 1 :])
        return status
    module = importlib.import_module(KEYCTL_VERBS)
    status = module.main(args)
    return status


def console_main() -> None:
    """Entry point of the ``ktctl`` console script."""
    sys.exit(main())
