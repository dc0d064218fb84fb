#!/usr/bin/env python3
"""Trusted keys on swtpm, through the public API, against raw tpm2-pytss.

One private swtpm (fresh state, loopback) with an ECC P-256 storage primary at
0x81000001 serves every peer in the same run.  The library is used the way a
user uses it: ``KEYRING_TYPES_TPM2_TCTI`` names the swtpm,
``KEYRING_TYPES_TRUST_SOURCE=tpm2``, and one cycle on a ``keyring_types.Keyspace()``
is

* seal   - ``ks.add_key("trusted", desc, "new 32 keyhandle=0x81000001", "@s")``
* read   - ``key.read()`` (the hex blob, what ``keyctl pipe`` prints; no TPM command)
* load   - ``ks.add_key("trusted", desc2, "load <hex blob> keyhandle=0x81000001", "@s")``

(both keys are invalidated after the cycle, outside the timed part).  The TPM
commands are those the kernel's ``trusted_tpm2.c`` sends for the same seal and
unseal, with password sessions (``CONFIG_TCG_TPM2_HMAC=n``) and the key from
the OS RNG, as ours:

* seal   - TPM2_Create of a KEYEDHASH sealed-data object (userWithAuth) under the parent;
* load   - TPM2_Load + TPM2_Unseal + TPM2_FlushContext.

Two peers send exactly those commands through tpm2-pytss, structures prepared
once, no blob written:

* ``esapi`` - the ESAPI calls a tpm2-pytss user writes (``create``; ``load``,
  ``unseal``, ``flush_context``): one TPM command each;
* ``tcti``  - the kernel's command bytes, built with ``struct`` and sent with
  ``TCTI.transmit``/``receive``: the TPM's own time plus the transport, the
  floor for any library (ESAPI's client-side work is most of its ``load``).

``tools`` is the tpm2-tools process chain ``tpm2_create`` -> ``tpm2_load`` ->
``tpm2_unseal`` -> ``tpm2_flushcontext -t``.

Ours, tcti and esapi take turns cycle by cycle (the side that goes first
rotates), each operation timed on its own; one tpm2-tools chain runs every
``cycles / tools-cycles`` cycles, so load from other processes on the machine
hits all peers alike.  Figures are medians of per-cycle times (a burst of load
moves a few samples, not the median); p10/p90 show the spread.

Goals printed: ours <= 1.25 x esapi for the cycle (seal + read + load against
seal + load), and tools >= 30 x ours; ours against the tcti floor is printed
too.  With ``--profile FILE`` the ours side is also run under cProfile
afterwards and the top functions are printed (cProfile slows the Python side,
which leaves swtpm idle longer between commands; read its TPM times with care).

With ``--breakdown``, 400 more ours cycles run with a timer around each function
of the public path (``BREAKDOWN``), and the time outside the TPM exchanges is
printed: the table in docs/performance.md comes from it.

Usage: python benchmarks/trusted_tpm.py [--cycles 1000] [--tools-cycles 30] [--profile FILE] [--breakdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run from a checkout: prefer the package next to this script over whatever is installed.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # swtpm_util: the same swtpm launcher the tests use

from swtpm_util import Swtpm, create_primary, start_swtpm  # noqa: E402

PARENT = 0x81000001
KEY_LEN = 32
NEW_PAYLOAD = f"new {KEY_LEN} keyhandle={PARENT:#x}"
OPS = ("seal", "read", "load")


class Ours:
    """The public API: one Keyspace, keys in its session keyring."""

    def __init__(self) -> None:
        import keyring_types as kt

        self.ks = kt.Keyspace()
        self.n = 0

    def cycle(self) -> dict[str, int]:
        """One seal + read + load; nanoseconds per operation."""
        add = self.ks.add_key
        self.n += 1
        desc, desc2 = f"bench:{self.n}", f"bench-load:{self.n}"
        clock = time.perf_counter_ns
        t0 = clock()
        key = add("trusted", desc, NEW_PAYLOAD, "@s")
        t1 = clock()
        blob = key.read()
        t2 = clock()
        loaded = add("trusted", desc2, b"load " + blob + b" keyhandle=0x81000001", "@s")
        t3 = clock()
        key.invalidate()
        loaded.invalidate()
        return {"seal": t1 - t0, "read": t2 - t1, "load": t3 - t2}


class RawEsapi:
    """The TPM commands of the kernel's trusted_tpm2 seal/unseal, through tpm2-pytss' ESAPI."""

    def __init__(self, tcti: str) -> None:
        from tpm2_pytss import ESAPI
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
        from tpm2_pytss.types import TPM2B_PUBLIC, TPMT_PUBLIC

        self.esapi = ESAPI(tcti)
        self.parent = self.esapi.tr_from_tpmpublic(PARENT)
        template = TPMT_PUBLIC(type=TPM2_ALG.KEYEDHASH, nameAlg=TPM2_ALG.SHA256, objectAttributes=0x40)
        template.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
        self.public = TPM2B_PUBLIC(publicArea=template)
        self.password = ESYS_TR.PASSWORD

    def cycle(self) -> dict[str, int]:
        from tpm2_pytss.types import (
            TPM2B_SENSITIVE_CREATE,
            TPM2B_SENSITIVE_DATA,
            TPMS_SENSITIVE_CREATE,
        )

        esapi, parent, public, pw = self.esapi, self.parent, self.public, self.password
        clock = time.perf_counter_ns
        t0 = clock()
        key = os.urandom(KEY_LEN)
        sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(key)))
        priv, pub, *_ = esapi.create(parent, sensitive, public, session1=pw)
        t1 = clock()
        obj = esapi.load(parent, priv, pub)
        data = esapi.unseal(obj, session1=pw)
        esapi.flush_context(obj)
        t2 = clock()
        if bytes(data) != key:
            raise RuntimeError("ESAPI unseal returned other bytes")
        return {"seal": t1 - t0, "read": 0, "load": t2 - t1}

    def transient_handles(self) -> list[int]:
        """Transient objects on the TPM now (swtpm has no resource manager: all of them)."""
        from tpm2_pytss.constants import TPM2_CAP

        _, cap = self.esapi.get_capability(TPM2_CAP.HANDLES, 0x80 << 24, 64)
        handles = cap.data.handles
        return [int(handles.handle[i]) for i in range(handles.count)]

    def close(self) -> None:
        self.esapi.close()


# TPM 2.0 Part 2/3 constants for the hand-built commands of RawTcti.
_ST_NO_SESSIONS, _ST_SESSIONS = 0x8001, 0x8002
_CC_CREATE, _CC_LOAD, _CC_UNSEAL, _CC_FLUSH = 0x153, 0x157, 0x15E, 0x165
_RS_PW = 0x40000009
# An empty password authorisation: TPM_RS_PW, no nonce, attributes 0, empty hmac.
_PW_AUTH = struct.pack(">IIHBH", 9, _RS_PW, 0, 0, 0)


def _command(tag: int, code: int, body: bytes) -> bytes:
    return struct.pack(">HII", tag, 10 + len(body), code) + body


def _tpm2b(data: bytes, at: int) -> tuple[bytes, int]:
    """(TPM2B with its size prefix, offset after it) in a response."""
    n = int.from_bytes(data[at : at + 2], "big")
    return data[at : at + 2 + n], at + 2 + n


class RawTcti:
    """The kernel's command bytes for the same seal/unseal, sent through tpm2-pytss' TCTI.

    What ``trusted_tpm2.c`` writes into its ``tpm_buf`` (password sessions), built
    with ``struct`` and exchanged with ``TCTI.transmit``/``receive``: no ESAPI, so
    this is the TPM's own time plus the transport, the floor for any library.
    """

    def __init__(self, tcti: str) -> None:
        from tpm2_pytss.constants import TPM2_ALG
        from tpm2_pytss.TCTILdr import TCTILdr
        from tpm2_pytss.types import TPM2B_PUBLIC, TPMT_PUBLIC

        self.tcti = TCTILdr.parse(tcti)
        template = TPMT_PUBLIC(type=TPM2_ALG.KEYEDHASH, nameAlg=TPM2_ALG.SHA256, objectAttributes=0x40)
        template.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
        self.public = TPM2B_PUBLIC(publicArea=template).marshal()

    def _exchange(self, command: bytes) -> bytes:
        self.tcti.transmit(command)
        response = bytes(self.tcti.receive(4096, -1))
        rc = int.from_bytes(response[6:10], "big")
        if rc:
            raise RuntimeError(f"TPM refused command {int.from_bytes(command[6:10], 'big'):#x}: rc {rc:#x}")
        return response

    def cycle(self) -> dict[str, int]:
        parent = struct.pack(">I", PARENT)
        clock = time.perf_counter_ns
        t0 = clock()
        key = os.urandom(KEY_LEN)
        sensitive = struct.pack(">HH", 4 + KEY_LEN, 0) + struct.pack(">H", KEY_LEN) + key
        rsp = self._exchange(
            _command(_ST_SESSIONS, _CC_CREATE, parent + _PW_AUTH + sensitive + self.public + b"\0\0" + b"\0\0\0\0")
        )
        private, at = _tpm2b(rsp, 14)  # header, parameterSize
        public, _ = _tpm2b(rsp, at)
        t1 = clock()
        rsp = self._exchange(_command(_ST_SESSIONS, _CC_LOAD, parent + _PW_AUTH + private + public))
        item = rsp[10:14]
        rsp = self._exchange(_command(_ST_SESSIONS, _CC_UNSEAL, item + _PW_AUTH))
        data, _ = _tpm2b(rsp, 14)
        self._exchange(_command(_ST_NO_SESSIONS, _CC_FLUSH, item))
        t2 = clock()
        if data[2:] != key:
            raise RuntimeError("TCTI unseal returned other bytes")
        return {"seal": t1 - t0, "read": 0, "load": t2 - t1}

    def close(self) -> None:
        self.tcti.finalize()


def tools_cycle(sim: Swtpm, workdir: Path) -> int:
    """One tpm2-tools seal + unseal chain, nanoseconds."""
    env = sim.tools_env()
    key = os.urandom(KEY_LEN)
    (workdir / "secret.bin").write_bytes(key)

    def run(*args: str) -> bytes:
        return subprocess.run(list(args), env=env, cwd=workdir, check=True, capture_output=True).stdout

    t0 = time.perf_counter_ns()
    run("tpm2_create", "-C", hex(PARENT), "-i", "secret.bin", "-u", "o.pub", "-r", "o.priv")
    run("tpm2_load", "-C", hex(PARENT), "-u", "o.pub", "-r", "o.priv", "-c", "o.ctx")
    if run("tpm2_unseal", "-c", "o.ctx") != key:
        raise RuntimeError("tpm2_unseal returned other bytes")
    run("tpm2_flushcontext", "-t")
    elapsed = time.perf_counter_ns() - t0
    (workdir / "secret.bin").unlink()
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def profile_ours(ours: Ours, cycles: int, path: str) -> None:
    """Run ``cycles`` public-API cycles under cProfile; save to ``path`` and print the top entries."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(cycles):
        ours.cycle()
    prof.disable()
    prof.dump_stats(path)
    print(f"\n# cProfile of {cycles} ours cycles (saved to {path}), by own time:")
    pstats.Stats(prof).strip_dirs().sort_stats("tottime").print_stats(25)


#: Functions on the public path timed by ``--breakdown``: (module, qualified name).
#: Names that no longer exist are reported and skipped, so the list can lag a refactor.
BREAKDOWN: tuple[tuple[str, str], ...] = (
    ("keyring_types.core.keyctl", "Keyctl.sys_add_key"),
    ("keyring_types.types.trusted", "TrustedKeyType.preparse"),
    ("keyring_types.types.trusted", "TrustedKeyType.instantiate"),
    ("keyring_types.types.trusted", "parse_payload"),
    ("keyring_types.trust.registry", "get_trust_source"),
    ("keyring_types.trust.registry", "_config_key"),
    ("keyring_types.trust.options", "check_supported"),
    ("keyring_types.types.trusted", "TrustedKeyType._new_key"),
    ("keyring_types.osrng", "fill_random"),
    ("keyring_types.types.trusted", "TrustedKeyType._seal"),
    ("keyring_types.trust.tpm2", "Tpm2Source.seal"),
    ("keyring_types.trust.tpm2", "Tpm2Source.unseal"),
    ("keyring_types.tpm.commands", "create"),
    ("keyring_types.tpm.commands", "load"),
    ("keyring_types.tpm.commands", "unseal"),
    ("keyring_types.tpm.commands", "flush_context"),
    ("keyring_types.tpm.connection", "TpmConnection.exchange"),
    ("keyring_types.trust.tpm2_blob", "encode_tpmkey"),
    ("keyring_types.trust.tpm2_blob", "decode"),
    ("keyring_types.trust.tpm2", "_split_unsealed"),
    ("keyring_types.core.handle", "Key.read"),
)


def breakdown_ours(ours: Ours, cycles: int) -> list[str]:
    """Time each BREAKDOWN function (inclusive) over ``cycles`` public-API cycles: report lines, per-cycle medians.

    Each function is replaced by a timing wrapper wherever it is bound: on its class,
    or in every ``keyring_types`` module that imported it by name.  A wrapper costs
    about half a microsecond per call.  ``us/cycle`` is the median over cycles of
    the function's time within each cycle; ``us/call`` the median per call (a
    function called for seal and for load mixes both).  Unlike cProfile, this leaves the rest of the
    Python side at full speed, so swtpm is not kept waiting longer than usual.
    """
    import importlib

    times: dict[str, list[int]] = {}
    undo: list[tuple[Any, str, Any]] = []

    def timed(label: str, fn: Any) -> Any:
        bucket = times.setdefault(label, [])
        clock = time.perf_counter_ns

        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = clock()
            try:
                return fn(*a, **k)
            finally:
                bucket.append(clock() - t0)

        return wrapper

    missing = []
    for module_name, qualname in BREAKDOWN:
        label = f"{module_name.removeprefix('keyring_types.')}: {qualname}"
        try:
            owner: Any = importlib.import_module(module_name)
            *path, name = qualname.split(".")
            for part in path:
                owner = getattr(owner, part)
            raw = owner.__dict__[name] if path else getattr(owner, name)
        except (ImportError, AttributeError, KeyError):
            missing.append(label)
            continue
        if path:  # a method: patch the class, keeping staticmethods static
            fn = raw.__func__ if isinstance(raw, staticmethod) else raw
            wrapped = timed(label, fn)
            undo.append((owner, name, raw))
            setattr(owner, name, staticmethod(wrapped) if isinstance(raw, staticmethod) else wrapped)
            continue
        wrapped = timed(label, raw)
        for mod in [m for n, m in sys.modules.items() if n.startswith("keyring_types") and m is not None]:
            if getattr(mod, name, None) is raw:
                undo.append((mod, name, raw))
                setattr(mod, name, wrapped)
    per_cycle: dict[str, list[int]] = {label: [] for label in times}
    try:
        cycle_ns = []
        for _ in range(cycles):
            start = {label: len(values) for label, values in times.items()}
            cycle_ns.append(sum(ours.cycle().values()))
            for label, values in times.items():
                per_cycle[label].append(sum(values[start[label]:]))
    finally:
        for owner, name, raw in reversed(undo):
            setattr(owner, name, raw)
    exchange = per_cycle.get("tpm.connection: TpmConnection.exchange", [0] * cycles)
    outside = [c - e for c, e in zip(cycle_ns, exchange, strict=True)]
    lines = [
        f"# where an ours cycle goes ({cycles} more cycles, each function timed inclusive, medians)",
        (f"  cycle {statistics.median(cycle_ns) / 1000:.1f} us; outside the TPM exchanges "
         f"{statistics.median(outside) / 1000:.1f} us"),
        f"  {'function':<58}{'calls/cycle':>12}{'us/call':>9}{'us/cycle':>10}",
    ]
    for label, values in times.items():
        if not values:
            lines.append(f"  {label:<58}{'not called':>12}")
            continue
        lines.append(f"  {label:<58}{len(values) / cycles:>12.1f}{statistics.median(values) / 1000:>9.1f}"
                     f"{statistics.median(per_cycle[label]) / 1000:>10.1f}")
    lines += [f"  {label:<58}{'(not found)':>12}" for label in missing]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=1000, help="seal+read+load cycles for ours and for raw")
    ap.add_argument("--tools-cycles", type=int, default=30, help="cycles for the tpm2-tools chain (0: skip)")
    ap.add_argument("--profile", metavar="FILE", help="afterwards, profile 300 ours cycles into FILE")
    ap.add_argument("--breakdown", action="store_true", help="afterwards, time 400 ours cycles function by function")
    args = ap.parse_args()

    needed = ["swtpm"] + (["tpm2_create", "tpm2_load", "tpm2_unseal", "tpm2_flushcontext"] if args.tools_cycles else [])
    for tool in needed:
        if shutil.which(tool) is None:
            print(f"needs {tool}", file=sys.stderr)
            return 2

    sim = start_swtpm()
    workdir = Path(tempfile.mkdtemp(prefix="kt-bench-tpm-"))
    # What a user does: name the TPM and the source in the environment, then call add_key.
    os.environ["KEYRING_TYPES_TPM2_TCTI"] = sim.tcti
    os.environ["KEYRING_TYPES_TRUST_SOURCE"] = "tpm2"
    os.environ["KEYRING_TYPES_HOME"] = str(workdir / "state")
    names = ("ours", "tcti", "esapi")
    samples: dict[str, dict[str, list[float]]] = {side: {op: [] for op in (*OPS, "cycle")} for side in names}
    tools: list[float] = []
    leftover: list[int] = []
    breakdown: list[str] = []
    try:
        create_primary(sim.tcti)
        esapi = RawEsapi(sim.tcti)
        sides: dict[str, Any] = {"ours": Ours(), "tcti": RawTcti(sim.tcti), "esapi": esapi}
        # Warm-up: open contexts, look up the parent, fault in code paths.
        for _ in range(20):
            for side in sides.values():
                side.cycle()
        if args.tools_cycles:
            tools_cycle(sim, workdir)
        tools_every = max(1, args.cycles // max(1, args.tools_cycles))
        for i in range(args.cycles):
            # Rotate which side goes first.
            for name in names[i % 3 :] + names[: i % 3]:
                took = sides[name].cycle()
                for op, ns in took.items():
                    samples[name][op].append(ns / 1000)
                samples[name]["cycle"].append(sum(took.values()) / 1000)
            if args.tools_cycles and i % tools_every == tools_every // 2 and len(tools) < args.tools_cycles:
                tools.append(tools_cycle(sim, workdir) / 1000)
        leftover = esapi.transient_handles()
        if args.profile:
            profile_ours(sides["ours"], 300, args.profile)
        if args.breakdown:
            breakdown = breakdown_ours(sides["ours"], 400)
        sides["tcti"].close()
        esapi.close()
    finally:
        from keyring_types.trust import registry

        registry.clear_cache()
        sim.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    med = {side: {op: statistics.median(v) for op, v in ops.items()} for side, ops in samples.items()}
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = float("nan")
    print(f"# {platform.machine()} {platform.python_implementation()} {platform.python_version()}, "
          f"Linux {platform.release()}, {os.cpu_count()} CPUs, load average {load1:.2f} at the end")
    print(f"# swtpm on loopback; ours = Keyspace.add_key/read with KEYRING_TYPES_TRUST_SOURCE=tpm2; "
          f"{args.cycles} cycles per side, the first side rotating")
    print(f"{'peer':<44}{'op':>7}{'median us':>11}{'p10':>9}{'p90':>9}")
    labels = {
        "ours": "keyring_types Keyspace.add_key (ours)",
        "tcti": "raw tpm2-pytss TCTI, kernel's command bytes",
        "esapi": "raw tpm2-pytss ESAPI, the same commands",
    }
    for side, label in labels.items():
        for op in (*OPS, "cycle"):
            if side != "ours" and op == "read":
                continue
            values = samples[side][op]
            print(f"{label:<44}{op:>7}{med[side][op]:>11.1f}{percentile(values, 0.1):>9.1f}"
                  f"{percentile(values, 0.9):>9.1f}")
    if tools:
        print(f"{'tpm2-tools process chain':<44}{'cycle':>7}{statistics.median(tools):>11.1f}"
              f"{percentile(tools, 0.1):>9.1f}{percentile(tools, 0.9):>9.1f}")
    for peer in ("tcti", "esapi"):
        print(f"ours / {peer:<5}: seal {med['ours']['seal'] / med[peer]['seal']:.2f}x, "
              f"load {med['ours']['load'] / med[peer]['load']:.2f}x, "
              f"cycle {med['ours']['cycle'] / med[peer]['cycle']:.2f}x")
    ratio = med["ours"]["cycle"] / med["esapi"]["cycle"]
    ok_raw = ratio <= 1.25
    print(f"cycle: ours / raw tpm2-pytss ESAPI = {ratio:.2f}x  (goal <= 1.25x: {'met' if ok_raw else 'NOT met'})")
    extra = med["ours"]["cycle"] - med["tcti"]["cycle"]
    print(f"cycle: ours / TCTI floor = {med['ours']['cycle'] / med['tcti']['cycle']:.2f}x  "
          f"(ours spends {extra:.0f} us per cycle beyond the TPM's commands)")
    ok_tools = True
    if tools:
        tools_vs_ours = statistics.median(tools) / med["ours"]["cycle"]
        ok_tools = tools_vs_ours >= 30.0
        print(f"tpm2-tools / ours = {tools_vs_ours:.1f}x  (goal >= 30x: {'met' if ok_tools else 'NOT met'})")
    print(f"transient handles left on the TPM after the run: {len(leftover)}")
    if breakdown:
        print()
        print("\n".join(breakdown))
    return 0 if ok_raw and ok_tools and not leftover else 1


if __name__ == "__main__":
    sys.exit(main())
