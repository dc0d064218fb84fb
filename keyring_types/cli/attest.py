"""``ktctl attest``: make attestation reports and verify them.

``report``: a report through a ``tsm`` provider, made as a ``tsm`` key is (the RFC's payload,
``auth <hex> [privlevel=] [format=] [nonce=]``, through the provider slot): ``configfs-tsm`` where
``/sys/kernel/config/tsm/report`` exists, else ``--provider`` must name one (``emulated-sev-snp``
is never chosen silently).  Prints the blob's hex (``-o FILE`` writes it raw).

``verify FILE``: the report in FILE (raw, or hex as ``report`` and ``keyctl print`` give it; an
extended blob carries its certificate) is recognised by :data:`FORMATS`, verified, and its fields
printed (``--json`` for a machine).  Exit 0 verified, 1 refused (reason on stderr).

``providers``: the ``tsm`` providers this installation knows, and which ``report`` would use.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import errno
import json
import os
import string
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from keyring_types.cli import attest_tdx  # the TDX half: verify options, `mr` (standard library only at import)
from keyring_types.cli.family import UsageError, fail, run_verb

if TYPE_CHECKING:
    from keyring_types.attest.tsm import TsmProvider

PROG = "ktctl attest"
CONFIGFS_ROOT = "/sys/kernel/config/tsm/report"


@attrs.frozen
class ReportFormat:
    """One kind of report ``verify`` knows: ``detect(blob)`` says whether the bytes are one;
    ``verify(blob, args)`` checks them (``OSError`` when refused) and returns the fields to print."""

    name: str
    detect: Callable[[bytes], bool]
    verify: Callable[[bytes, argparse.Namespace], dict[str, Any]]


def _hex_arg(value: str | None, what: str) -> bytes | None:
    if value is None:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise UsageError(f"{what} is not hex") from None


def _read_blob(path: str) -> bytes:
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    text = data.strip()
    # Hex text, as `report` prints it, or a whole `keyctl read` of a tsm key (hex in its third field).
    fields = text.split(b" ")
    candidate = fields[2] if len(fields) == 3 else text
    if candidate and len(candidate) % 2 == 0 and all(c in string.hexdigits.encode() for c in candidate):
        return bytes.fromhex(candidate.decode())
    return data


# -- SEV-SNP ---------------------------------------------------------------------------------------


def _is_snp(blob: bytes) -> bool:
    from keyring_types.attest import snp

    if len(blob) != snp.REPORT_SIZE and len(blob) <= 16384:
        return False
    version = int.from_bytes(blob[0:4], "little")
    sig_algo = int.from_bytes(blob[0x34:0x38], "little")
    return version in snp.SUPPORTED_VERSIONS and sig_algo == 1


def _tcb_arg(text: str) -> Any:
    from keyring_types.attest import snp

    levels: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if name not in ("bl", "tee", "snp", "ucode", "fmc") or not value.isdigit():
            raise UsageError("--min-tcb is bl=N,tee=N,snp=N,ucode=N[,fmc=N]")
        levels[name] = int(value)
    return snp.Tcb(**levels)


def _verify_snp(blob: bytes, args: argparse.Namespace) -> dict[str, Any]:
    from keyring_types.attest import snp

    report, cert = blob[: snp.REPORT_SIZE], None
    if len(blob) > snp.REPORT_SIZE:  # an extended blob: the report, padding, then the table
        table = snp.parse_cert_table(blob[16384:])
        cert = table.vcek or table.vlek
    if args.cert:
        with open(args.cert, "rb") as f:
            cert = f.read()
    if cert is None:
        raise UsageError("--cert (the VCEK or VLEK) is needed: the file carries no certificate table")
    chain = crl = None
    if args.chain:
        with open(args.chain, "rb") as f:
            chain = f.read()
    if args.crl:
        with open(args.crl, "rb") as f:
            crl = f.read()
    policy_fields: dict[str, Any] = {
        "measurement": _hex_arg(args.measurement, "--measurement"),
        "report_data": _hex_arg(args.report_data, "--report-data"),
        "host_data": _hex_arg(args.host_data, "--host-data"),
        "nonce": _hex_arg(args.nonce, "--nonce"),
        "user_data": _hex_arg(args.user_data, "--user-data"),
        "vmpl": args.vmpl,
        "minimum_tcb": _tcb_arg(args.min_tcb) if args.min_tcb else None,
        "debug_allowed": args.allow_debug,
    }
    policy = snp.Policy(**{k: v for k, v in policy_fields.items() if v is not None})
    r = snp.verify(report, cert=cert, chain=chain, at=args.at, crl=crl, policy=policy)
    return {
        "version": r.version,
        "product": r.product,
        "signing_key": r.signing_key,
        "vmpl": r.vmpl,
        "policy": f"0x{r.policy:x}",
        "debug": r.debug,
        "guest_svn": r.guest_svn,
        "measurement": r.measurement.hex(),
        "report_data": r.report_data.hex(),
        "host_data": r.host_data.hex(),
        "family_id": r.family_id.hex(),
        "image_id": r.image_id.hex(),
        "chip_id": r.chip_id.hex(),
        "reported_tcb": attrs.asdict(r.tcb("reported")),
        "platform_info": f"0x{r.platform_info:x}",
    }


#: The report formats ``verify`` recognises, tried in order (a later one may add its own).
FORMATS: list[ReportFormat] = [ReportFormat("sev-snp", _is_snp, _verify_snp), ReportFormat("tdx", attest_tdx.is_tdx, attest_tdx.verify_tdx)]


def detect_format(blob: bytes) -> ReportFormat | None:
    """The first of :data:`FORMATS` whose detector accepts ``blob``."""
    return next((f for f in FORMATS if f.detect(blob)), None)


def _at_arg(text: str) -> _dt.datetime:
    try:
        at = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("--at is an ISO 8601 date or time, e.g. 2025-06-01 or 2025-06-01T12:00:00Z") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=_dt.UTC)


def _verify(args: argparse.Namespace) -> int:
    try:
        blob = _read_blob(args.file)
    except OSError as exc:
        return fail(PROG, "verify", exc)
    fmt = detect_format(blob)
    if fmt is None:
        names = ", ".join(f.name for f in FORMATS)
        print(f"{PROG} verify: not a report this command knows ({names})", file=sys.stderr)
        if args.json:
            print(json.dumps({"verified": False, "format": None, "error": "unknown format"}))
        return 1
    try:
        fields = fmt.verify(blob, args)
    except OSError as exc:
        if args.json:
            print(json.dumps({"verified": False, "format": fmt.name, "errno": exc.errno, "error": exc.strerror}))
        return fail(PROG, "verify", exc)
    if args.json:
        print(json.dumps({"verified": True, "format": fmt.name, "fields": fields}, indent=2))
    else:
        print(f"verified: {fmt.name} report")
        for name, value in fields.items():
            print(f"{name}: {value}")
    return 0


# -- report ----------------------------------------------------------------------------------------


def _provider(args: argparse.Namespace) -> TsmProvider:
    from keyring_types.attest import TSM_PROVIDERS
    from keyring_types.errors import error

    name = args.provider or ("configfs-tsm" if os.path.isdir(args.configfs_root) else None)
    if name is None:
        raise error(errno.ENXIO, f"no TSM provider: {args.configfs_root} does not exist; name one with --provider (see `{PROG} providers`)")
    cls = TSM_PROVIDERS.load(name)
    if name == "configfs-tsm":
        return cls(args.configfs_root)  # type: ignore[no-any-return]
    if name in ("emulated-sev-snp", "emulated-tdx"):
        return cls(args.state_dir)  # type: ignore[no-any-return]
    return cls()  # type: ignore[no-any-return]


def _report(args: argparse.Namespace) -> int:
    import keyring_types as kt
    from keyring_types.attest import register_tsm_provider, unregister_tsm_provider
    from keyring_types.errors import error

    user = _hex_arg(args.user_data, "--user-data") or b""
    payload = f"auth {user.hex()}"
    if args.privlevel is not None:
        payload += f" privlevel={args.privlevel:x}"  # the RFC's privlevel is hexadecimal
    if args.format:
        payload += f" format={args.format}"
    if args.nonce:
        payload += f" nonce={args.nonce}"
    try:
        provider = _provider(args)
        register_tsm_provider(provider)
        try:
            key = kt.Keyspace().add_key("tsm", "ktctl-attest", payload, "@s")
            _pub, desc, blob_hex = key.read().split(b" ")
            key.invalidate()
        finally:
            unregister_tsm_provider(provider)
        blob = bytes.fromhex(blob_hex.decode())
        if args.output:
            with open(args.output, "wb") as f:
                f.write(blob)
        if args.roots_out:
            from keyring_types.attest.providers import EmulatedTdx

            if not isinstance(provider, EmulatedTdx):
                raise error(errno.EINVAL, "--roots-out is for the emulated TDX guest")
            with open(args.roots_out, "wb") as f:
                f.write(provider.root_pem())
        if args.cert_out or args.chain_out:
            from keyring_types.attest.providers import EmulatedSevSnp

            if not isinstance(provider, EmulatedSevSnp):
                raise error(errno.EINVAL, "--cert-out/--chain-out are for the emulated guest (a real one's come in format=extended)")
            if args.cert_out:
                with open(args.cert_out, "wb") as f:
                    f.write(provider.cert_der())
            if args.chain_out:
                with open(args.chain_out, "wb") as f:
                    f.write(provider.chain_pem())
    except OSError as exc:
        return fail(PROG, "report", exc)
    if args.json:
        print(json.dumps({"provider": desc.decode(), "size": len(blob), "report": blob.hex()}))
    elif not args.output:
        print(blob.hex())
    return 0


# -- providers -------------------------------------------------------------------------------------


def _providers(args: argparse.Namespace) -> int:
    from keyring_types.attest import TSM_PROVIDERS

    default = "configfs-tsm" if os.path.isdir(args.configfs_root) else None
    rows = []
    for name in TSM_PROVIDERS.names():
        try:
            cls = TSM_PROVIDERS.load(name)
            probe = getattr(cls, "available", None)
            available = bool(probe(args.configfs_root)) if name == "configfs-tsm" and probe else True
            doc = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "") if cls.__doc__ else ""
        except OSError as exc:
            available, doc = False, f"cannot be loaded: {exc.strerror}"
        rows.append({"name": name, "available": available, "default": name == default, "emulated": "emulated" in name, "about": doc})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        mark = "*" if row["default"] else " "
        state = "available" if row["available"] else "not here"
        print(f"{mark} {row['name']:<18} {state:<10} {row['about']}")
    if default is None:
        print(f"(no default: {args.configfs_root} does not exist; `report` needs --provider)")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Make attestation reports and verify them.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    report = verbs.add_parser("report", help="make a report through a tsm provider (prints its hex)")
    report.add_argument("--provider", help="a tsm provider's name (default: configfs-tsm where it exists)")
    report.add_argument("--user-data", help="up to 64 bytes of hex signed into the report (the RFC's pubkey)")
    report.add_argument("--nonce", help="a verifier's challenge (hex): the report data becomes SHA-512(nonce || user data)")
    report.add_argument("--privlevel", type=int, help="the privilege level (SEV-SNP: the VMPL)")
    report.add_argument("--format", help="provider format (extended: the report, then the certificate table at 16 KiB)")
    report.add_argument("-o", "--output", help="write the raw report to this file instead of printing hex")
    report.add_argument("--cert-out", help="emulated guest only: write its VCEK/VLEK certificate (DER) here")
    report.add_argument("--chain-out", help="emulated guest only: write its ASK/ASVK and ARK (PEM) here")
    report.add_argument("--roots-out", help="emulated TDX guest only: write its root certificate (PEM, for verify --roots) here")
    report.add_argument("--state-dir", help="the emulated guest's state directory")
    report.add_argument("--configfs-root", default=CONFIGFS_ROOT, help=f"the configfs-tsm report directory (default {CONFIGFS_ROOT})")
    report.add_argument("--json", action="store_true", help="print a JSON object")
    report.set_defaults(run=_report)

    verify = verbs.add_parser("verify", help="verify a report file; print its fields")
    verify.add_argument("file", help="the report (raw or hex; - for standard input)")
    verify.add_argument("--cert", help="the VCEK or VLEK certificate (DER or PEM); an extended blob carries it")
    verify.add_argument("--chain", help="trust this ASK/ASVK + ARK (PEM) instead of AMD's roots")
    verify.add_argument("--crl", help="AMD's CRL for the ARK (DER or PEM)")
    verify.add_argument("--at", type=_at_arg, help="check validity at this time (ISO 8601; default now)")
    verify.add_argument("--measurement", help="expected MEASUREMENT (hex)")
    verify.add_argument("--report-data", help="expected REPORT_DATA (hex, 64 bytes)")
    verify.add_argument("--host-data", help="expected HOST_DATA (hex, 32 bytes)")
    verify.add_argument("--nonce", help="with --user-data: REPORT_DATA must be SHA-512(nonce || user data)")
    verify.add_argument("--user-data", help="the user data bound with --nonce (hex)")
    verify.add_argument("--vmpl", type=int, help="expected VMPL")
    verify.add_argument("--min-tcb", help="minimum TCB: bl=N,tee=N,snp=N,ucode=N[,fmc=N]")
    verify.add_argument("--allow-debug", action="store_true", default=None, help="accept a guest policy that allows debugging")
    verify.add_argument("--json", action="store_true", help="print the verdict and fields as JSON")
    verify.set_defaults(run=_verify)
    attest_tdx.add_verify_arguments(verify)
    attest_tdx.add_mr_parser(verbs)

    providers = verbs.add_parser("providers", help="list tsm providers; * marks the one report uses")
    providers.add_argument("--configfs-root", default=CONFIGFS_ROOT, help=f"the configfs-tsm report directory (default {CONFIGFS_ROOT})")
    providers.add_argument("--json", action="store_true", help="print a JSON list")
    providers.set_defaults(run=_providers)
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``ktctl attest VERB ...``; 0 ok, 1 failed (or refused), 2 usage."""
    return run_verb(_parser(), argv)
