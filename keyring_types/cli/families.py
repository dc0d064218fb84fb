"""The ``ktctl`` families: the verbs keyctl does not have, one module each.

``ktctl <family> ...`` imports the module named here and calls its
``main(argv: list[str]) -> int`` with the words after the family name. The
table is a plain dict of strings so that ``ktctl`` imports only the family
it runs (start-up time is a goal: docs/performance.md).
"""

from __future__ import annotations

FAMILIES: dict[str, str] = {
    "trusted": "keyring_types.cli.trusted",
    "attest": "keyring_types.cli.attest",
    "derive": "keyring_types.cli.derive",
    "rpmb": "keyring_types.cli.rpmb",
    "fscrypt": "keyring_types.cli.fscrypt",
    "luks": "keyring_types.cli.luks",
}

#: Module that carries keyctl's own verbs (add, read, show, ...).
KEYCTL_VERBS = "keyring_types.cli.keyctl_verbs"
