"""``ktctl``: a keyctl for keyring_types, plus the library's own verb families.

Exit codes follow keyctl: 0 success, 1 the call failed (a message on
stderr), 2 usage. A family word (``ktctl rpmb ...``) runs that family's
module; every other word is one of keyctl's verbs.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from keyring_types.cli.families import FAMILIES, KEYCTL_VERBS


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``ktctl`` command line; returns the exit status (0, 1 or 2)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in FAMILIES:
        module = importlib.import_module(FAMILIES[args[0]])
        status: int = module.main(args[1:])
        return status
    module = importlib.import_module(KEYCTL_VERBS)
    status = module.main(args)
    return status


def console_main() -> None:
    """Entry point of the ``ktctl`` console script."""
    sys.exit(main())
