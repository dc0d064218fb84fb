"""The TDX half of ``ktctl attest``: verifying TDX quotes and the ``mr`` verbs.

``verify`` options for TDX quotes (added to ``ktctl attest verify`` by :func:`add_verify_arguments`,
used when :func:`is_tdx` recognises the blob): collateral files as Intel PCS serves them, trusted roots, the
verification time and a policy.  ``mr read [NAME...]``, ``mr extend NAME (--digest HEX | --data
FILE)`` and ``mr replay [LOG]`` work on the guest's measurement registers: the kernel's sysfs
group when present, else the legacy configfs ``tsm/rtmrs``, else the emulated TDX guest
(``--emulated`` forces it, ``--state-dir`` places it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keyring_types.cli.family import fail, run_verb

PROG = "ktctl attest"


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def _hex(value: str, what: str) -> bytes:
    from keyring_types.errors import error

    try:
        return bytes.fromhex(value)
    except ValueError:
        raise error(errno.EINVAL, f"{what} is not hex") from None


def _time(value: str | dt.datetime | None) -> dt.datetime | None:
    from keyring_types.errors import error

    if value is None or isinstance(value, dt.datetime):
        return value
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise error(errno.EINVAL, "--at is not an ISO 8601 time") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------------------------------------
# verify


def add_verify_arguments(p: argparse.ArgumentParser) -> None:
    """The TDX options of ``verify`` (all optional; ``--at``, ``--report-data``, ``--nonce``,
    ``--user-data`` and ``--allow-debug`` are the verb's own, shared with SEV-SNP)."""
    g = p.add_argument_group("TDX quotes")
    g.add_argument("--roots", metavar="PEM", help="trusted root certificate(s) instead of Intel's SGX Root CA")
    g.add_argument("--pck-crl", metavar="FILE", help="PCK CRL (DER or PEM)")
    g.add_argument("--root-crl", metavar="FILE", help="root CA CRL (DER or PEM)")
    g.add_argument("--tcb-info", metavar="FILE", help="PCS TCB info body (needs --tcb-info-chain)")
    g.add_argument("--tcb-info-chain", metavar="PEM", help="its TCB-Info-Issuer-Chain header, URL-decoded")
    g.add_argument("--qe-identity", metavar="FILE", help="PCS QE identity body (needs --qe-identity-chain)")
    g.add_argument("--qe-identity-chain", metavar="PEM", help="its SGX-Enclave-Identity-Issuer-Chain header, URL-decoded")
    g.add_argument("--mrtd", metavar="HEX", help="expected MRTD")
    g.add_argument("--rtmr", metavar="N=HEX", action="append", default=[], help="expected RTMR N (repeatable)")
    g.add_argument("--mrconfigid", metavar="HEX", help="expected MRCONFIGID")
    g.add_argument("--mrowner", metavar="HEX", help="expected MROWNER")
    g.add_argument("--min-tee-tcb-svn", metavar="HEX", help="minimum TEE_TCB_SVN (16 bytes, byte by byte)")
    g.add_argument("--accept-tcb", metavar="STATUS,...", help="accepted PCS TCB statuses, e.g. UpToDate,SWHardeningNeeded")


def _tdx_policy(args: argparse.Namespace) -> Any:
    from keyring_types.attest import tdx
    from keyring_types.errors import error

    rtmrs: list[bytes | None] = [None, None, None, None]
    for item in args.rtmr:
        index, sep, value = item.partition("=")
        if not sep or index not in ("0", "1", "2", "3"):
            raise error(errno.EINVAL, "--rtmr takes N=HEX with N 0..3")
        rtmrs[int(index)] = _hex(value, "--rtmr")
    opt: dict[str, Any] = {n: _hex(getattr(args, n), f"--{n}") for n in ("mrtd", "mrconfigid", "mrowner") if getattr(args, n)}
    for name in ("report_data", "nonce", "user_data"):
        value = getattr(args, name, None)
        if value:
            opt[name] = _hex(value, f"--{name.replace('_', '-')}")
    return tdx.Policy(
        **opt,
        rtmrs=tuple(rtmrs) if any(r is not None for r in rtmrs) else None,
        debug_allowed=bool(getattr(args, "allow_debug", False)),
        minimum_tee_tcb_svn=_hex(args.min_tee_tcb_svn, "--min-tee-tcb-svn") if args.min_tee_tcb_svn else None,
        accepted_tcb_statuses=args.accept_tcb.split(",") if args.accept_tcb else None,
    )


def is_tdx(blob: bytes) -> bool:
    """Whether ``blob`` starts as a TDX quote does."""
    from keyring_types.attest.detect import report_format

    try:
        return report_format(blob) == "tdx"
    except OSError:
        return False


def verify_tdx(blob: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """Verify a TDX quote as the options say; the summary ``verify`` prints.  Errors as
    :func:`keyring_types.attest.tdx.verify`."""
    from keyring_types.attest import tdx

    def opt(name: str) -> bytes | None:
        path = getattr(args, name, None)
        return _read(path) if path else None

    collateral = None
    if any(opt(n) is not None for n in ("pck_crl", "root_crl", "tcb_info", "qe_identity")):
        collateral = tdx.Collateral(pck_crl=opt("pck_crl"), root_crl=opt("root_crl"), tcb_info=opt("tcb_info"),
                                    tcb_info_issuer_chain=opt("tcb_info_chain"), qe_identity=opt("qe_identity"),
                                    qe_identity_issuer_chain=opt("qe_identity_chain"))  # fmt: skip
    q = tdx.verify(blob, at=_time(getattr(args, "at", None)), collateral=collateral, policy=_tdx_policy(args), roots=opt("roots"))
    out: dict[str, Any] = {
        "version": q.version,
        "body_type": q.body_type,
        "mrtd": q.mrtd.hex(),
        **{f"rtmr{i}": r.hex() for i, r in enumerate(q.rtmrs)},
        "report_data": q.report_data.hex(),
        "mrconfigid": q.mrconfigid.hex(),
        "mrowner": q.mrowner.hex(),
        "td_attributes": f"{q.td_attributes:#018x}",
        "xfam": f"{q.xfam:#018x}",
        "tee_tcb_svn": q.tee_tcb_svn.hex(),
        "debug": q.debug,
    }
    if q.pck is not None:
        out["fmspc"] = q.pck.fmspc.hex()
        out["pck_ca"] = q.pck.ca
    if q.tcb is not None and q.tcb.tcb_status is not None:
        out["tcb_status"] = q.tcb.tcb_status
    if q.tcb is not None and q.tcb.qe_tcb_status is not None:
        out["qe_tcb_status"] = q.tcb.qe_tcb_status
    return out


# ---------------------------------------------------------------------------------------------
# mr


def _registers(args: argparse.Namespace) -> Any:
    from keyring_types.attest import measurements
    from keyring_types.attest.emulated_tdx import EmulatedTdx

    if args.emulated or args.state_dir:
        return measurements.EmulatedMeasurements(EmulatedTdx(args.state_dir))
    return measurements.open_measurements()


def _mr_read(args: argparse.Namespace) -> int:
    mr = _registers(args)
    regs = [mr.register(n) for n in args.names] if args.names else mr.registers()
    values = {r.file: mr.read(r.file).hex() for r in regs}
    if args.json:
        print(json.dumps({"kind": mr.kind, "registers": values}, indent=2))
    else:
        for name, value in values.items():
            print(f"{name} {value}")
    return 0


def _mr_extend(args: argparse.Namespace) -> int:
    import hashlib

    from keyring_types.errors import error

    mr = _registers(args)
    reg = mr.register(args.name)
    if (args.digest is None) == (args.data is None):
        raise error(errno.EINVAL, "give --digest HEX or --data FILE")
    if args.digest is not None:
        digest = _hex(args.digest, "--digest")
    else:
        digest = hashlib.new(reg.hash or "sha384", _read(args.data)).digest()
    print(mr.extend(reg.file, digest).hex())
    return 0


def _mr_replay(args: argparse.Namespace) -> int:
    from keyring_types.attest import eventlog, measurements, tdx
    from keyring_types.errors import error

    if args.log is not None:
        log = _read(args.log)
    else:
        mr = _registers(args)
        if not isinstance(mr, measurements.EmulatedMeasurements):
            raise error(errno.EINVAL, "give the event log file (the kernel keeps no log of runtime extends)")
        log = mr.event_log()
    values = eventlog.replay(log, algorithm=args.algorithm)
    result: dict[str, Any] = {"registers": {str(i): v.hex() for i, v in sorted(values.items())}}
    code = 0
    if args.quote:
        explained = eventlog.check_quote(log, tdx.parse_quote(_read(args.quote)), strict=False)
        result["quote"] = [{"rtmr": x.rtmr, "matches": x.matches, "events": len(x.events)} for x in explained]
        code = 0 if all(x.matches for x in explained) else 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for index, value in result["registers"].items():
            print(f"{index} {value}")
        for x in result.get("quote", []):
            print(f"RTMR{x['rtmr']}: {'matches' if x['matches'] else 'DOES NOT MATCH'} ({x['events']} events)")
    if code:
        print(f"{PROG} mr replay: the log does not reproduce the quote's RTMRs", file=sys.stderr)
    return code


def add_mr_parser(verbs: Any) -> None:
    """The ``mr`` verb and its sub-verbs, on ``ktctl attest``'s subparsers."""
    mr = verbs.add_parser("mr", help="measurement registers: read, extend, replay an event log")
    mr.set_defaults(run=run_mr)
    sub = mr.add_subparsers(dest="mr_verb", required=True, metavar="VERB")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--emulated", action="store_true", help="use the emulated TDX guest even where real registers exist")
        p.add_argument("--state-dir", metavar="DIR", help="the emulated guest's state directory (implies --emulated)")

    read = sub.add_parser("read", help="print registers (all, or those named: rtmr0, rtmr0:sha384, mrtd, ...)")
    read.add_argument("names", nargs="*", metavar="NAME")
    read.add_argument("--json", action="store_true", help="print JSON")
    common(read)
    extend = sub.add_parser("extend", help="extend a runtime register; prints its new value")
    extend.add_argument("name", metavar="NAME")
    extend.add_argument("--digest", metavar="HEX", help="the digest to extend with (exactly the register's size)")
    extend.add_argument("--data", metavar="FILE", help="extend with the register's hash of FILE ('-': stdin)")
    common(extend)
    replay = sub.add_parser("replay", help="replay a TCG crypto-agile event log (CCEL) into register values")
    replay.add_argument("log", nargs="?", metavar="LOG", help="the log ('-': stdin); default: the emulated guest's")
    replay.add_argument("--algorithm", metavar="HASH", help="the bank to replay (default: the only one, else sha384)")
    replay.add_argument("--quote", metavar="FILE", help="also say which RTMRs of this TDX quote the log reproduces")
    replay.add_argument("--json", action="store_true", help="print JSON")
    common(replay)


def run_mr(args: argparse.Namespace) -> int:
    """Run a parsed ``mr`` command."""
    verb = f"mr {args.mr_verb}"
    try:
        if args.mr_verb == "read":
            return _mr_read(args)
        if args.mr_verb == "extend":
            return _mr_extend(args)
        return _mr_replay(args)
    except OSError as exc:
        if exc.errno is None:
            exc = OSError(errno.EIO, str(exc))
        return fail(PROG, verb, exc)


def main(argv: Sequence[str]) -> int:
    """``mr ...`` on its own (what ``ktctl attest mr`` runs)."""
    parser = argparse.ArgumentParser(prog=PROG, description="TDX measurement registers.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    add_mr_parser(verbs)
    return run_verb(parser, argv)
