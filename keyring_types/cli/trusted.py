"""``ktctl trusted``: what keyctl cannot tell about trusted keys.

``ktctl trusted sources [--json]``: every trust source this installation
knows (built-in, plugin or registered), whether it can be used here now, which
one a ``trusted`` key without ``source=`` would use, and what stands behind it:
real hardware, an emulated device (named "emulated"), or software. The keys
themselves are made with keyctl's verbs: ``ktctl add trusted kmk "new 32" @u``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

PROG = "ktctl trusted"

__all__ = ["main", "source_rows"]


def _backing(name: str) -> tuple[str, str]:
    """(kind, what) for a source: kind is ``hardware``, ``emulated`` or ``software``."""
    if name == "tpm2":
        from keyring_types.tpm.connection import configured_tcti

        tcti = configured_tcti()
        if tcti.startswith(("swtpm", "mssim")):
            return "emulated", f"a software TPM (TCTI {tcti})"
        return "hardware", f"a TPM 2.0 (TCTI {tcti})"
    if name == "tee":
        setting = os.environ.get("KEYRING_TYPES_TEE_TRANSPORT", "emulated")
        if setting.startswith("device"):
            return "hardware", f"OP-TEE's trusted-keys TA ({setting.partition(':')[2] or '/dev/tee0'})"
        return "emulated", "an emulated OP-TEE trusted-keys TA in its own process"
    if name == "caam":
        return "emulated", "CAAM blobs under an emulated device master key file"
    if name == "host":
        return "software", "a sealed host key file in the state directory"
    if name == "tsm":
        if os.environ.get("KEYRING_TYPES_TSM_FIRMWARE") == "emulated":
            return "emulated", "the emulated SEV-SNP guest's derived key (SNP_GET_DERIVED_KEY)"
        return "hardware", "an SEV-SNP guest's derived key (SNP_GET_DERIVED_KEY on /dev/sev-guest)"
    return "plugin", "a third-party trust source"


def source_rows() -> list[dict[str, object]]:
    """One row per known source: name, available, default, kind, backing, note."""
    from keyring_types.trust.registry import default_source_name, source_class, source_names

    try:
        default: str | None = default_source_name()
    except OSError:
        default = None
    rows: list[dict[str, object]] = []
    for name in source_names():
        kind, backing = _backing(name)
        note = ""
        try:
            cls = source_class(name)
            available = bool(cls.available())
            if getattr(cls, "emulated", False):  # a plugin may say so itself
                kind = "emulated"
        except OSError as exc:
            available, note = False, f"cannot be loaded: {exc.strerror or exc}"
        rows.append(
            {
                "name": name,
                "available": available,
                "default": name == default,
                "kind": kind,
                "backing": backing,
                "note": note,
            }
        )
    return rows


def _sources(args: argparse.Namespace) -> int:
    rows = source_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        mark = "*" if row["default"] else " "
        state = "available" if row["available"] else "not here"
        extra = f" ({row['note']})" if row["note"] else ""
        print(f"{mark} {row['name']:<6} {state:<10} {row['kind']:<9} {row['backing']}{extra}")
    return 0


def main(argv: Sequence[str]) -> int:
    """``ktctl trusted <verb>``; 0, 1 (failed, message on stderr) or 2 (usage)."""
    from keyring_types.cli.family import run_verb

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="<verb>")
    p = verbs.add_parser("sources", help="the trust sources here: which is the default, which are emulated")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.set_defaults(run=_sources)
    return run_verb(parser, argv)
