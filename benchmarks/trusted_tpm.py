#!/usr/bin/env python3
"""Trusted keys on swtpm: seal + unseal through the ``tpm2`` source against its peers.

One private swtpm (fresh state, loopback) with an ECC P-256 storage primary at
0x81000001 serves all three in the same run.  One cycle = seal a 32-byte key, then
unseal it (TPM2_Create; TPM2_Load + TPM2_Unseal + TPM2_FlushContext):

* ours  - ``Tpm2Source.seal`` + ``Tpm2Source.unseal`` (kernel TPMKey blob
  encode/decode, option checks, secret memory included);
* raw   - the minimal tpm2-pytss sequence for the same TPM commands on one
  ESAPI context, structures prepared once, no blob format;
* tools - the tpm2-tools process chain ``tpm2_create`` -> ``tpm2_load`` ->
  ``tpm2_unseal`` -> ``tpm2_flushcontext -t`` (the flush, which the other two
  also do, keeps swtpm's three object slots free).

Ours and raw alternate cycle by cycle (each cycle timed on its own, the
order swapped every cycle) and one tpm2-tools chain runs every
``cycles / tools-cycles`` cycles, so load from other processes on the machine
hits all peers alike.  Each peer's figure is the median of its per-cycle
times (a burst of load moves a few samples, not the median); the 10th and
90th percentiles are printed to show the spread.

Goals printed: ours <= 1.25 x raw, and tools >= 30 x ours (ratios of medians).

Usage: python benchmarks/trusted_tpm.py [--cycles 1000] [--tools-cycles 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout: prefer the package next to this script over whatever is installed.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # swtpm_util: the same swtpm launcher the tests use

from swtpm_util import Swtpm, create_primary, start_swtpm  # noqa: E402

from keyring_types.secret import SecretBuffer  # noqa: E402
from keyring_types.trust.base import TrustedOptions  # noqa: E402
from keyring_types.trust.tpm2 import Tpm2Source  # noqa: E402

PARENT = 0x81000001
KEY_LEN = 32


def bench_ours(source: Tpm2Source, count: int) -> int:
    key = SecretBuffer.from_bytes(os.urandom(KEY_LEN))
    seal_opts = TrustedOptions(keyhandle=PARENT, given=frozenset({"keyhandle"}))
    load_opts = TrustedOptions()
    t0 = time.perf_counter_ns()
    for _ in range(count):
        out = source.unseal(source.seal(key, seal_opts), load_opts)
        out.secret.wipe()
    elapsed = time.perf_counter_ns() - t0
    key.wipe()
    return elapsed


class RawPytss:
    """The fewest tpm2-pytss calls for one seal + unseal of the same object."""

    def __init__(self, tcti: str) -> None:
        from tpm2_pytss import ESAPI
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
        from tpm2_pytss.types import TPM2B_PUBLIC, TPMT_PUBLIC

        self.esapi = ESAPI(tcti)
        self.parent = self.esapi.tr_from_tpmpublic(PARENT)
        self.esapi.tr_set_auth(self.parent, b"\x00" * 20)
        template = TPMT_PUBLIC(type=TPM2_ALG.KEYEDHASH, nameAlg=TPM2_ALG.SHA256, objectAttributes=0x40)
        template.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
        self.public = TPM2B_PUBLIC(publicArea=template)
        self.password = ESYS_TR.PASSWORD

    def run(self, count: int) -> int:
        from tpm2_pytss.types import TPM2B_SENSITIVE_CREATE, TPM2B_SENSITIVE_DATA, TPMS_SENSITIVE_CREATE

        esapi, parent, public, pw = self.esapi, self.parent, self.public, self.password
        key = os.urandom(KEY_LEN)
        t0 = time.perf_counter_ns()
        for _ in range(count):
            sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(key)))
            priv, pub, *_ = esapi.create(parent, sensitive, public, session1=pw)
            obj = esapi.load(parent, priv, pub)
            data = esapi.unseal(obj, session1=pw)
            esapi.flush_context(obj)
            if len(data) != KEY_LEN:
                raise RuntimeError("raw unseal returned the wrong length")
        return time.perf_counter_ns() - t0

    def close(self) -> None:
        self.esapi.close()


def bench_tools(sim: Swtpm, workdir: Path, count: int) -> int:
    env = sim.tools_env()
    key = os.urandom(KEY_LEN)
    secret = workdir / "secret.bin"
    secret.write_bytes(key)

    def run(*args: str) -> bytes:
        return subprocess.run(list(args), env=env, cwd=workdir, check=True, capture_output=True).stdout

    t0 = time.perf_counter_ns()
    for _ in range(count):
        run("tpm2_create", "-C", hex(PARENT), "-i", "secret.bin", "-u", "o.pub", "-r", "o.priv")
        run("tpm2_load", "-C", hex(PARENT), "-u", "o.pub", "-r", "o.priv", "-c", "o.ctx")
        if run("tpm2_unseal", "-c", "o.ctx") != key:
            raise RuntimeError("tpm2_unseal returned other bytes")
        run("tpm2_flushcontext", "-t")
    elapsed = time.perf_counter_ns() - t0
    secret.unlink()
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=1000, help="seal+unseal cycles for ours and for raw")
    ap.add_argument("--tools-cycles", type=int, default=30, help="cycles for the tpm2-tools chain")
    args = ap.parse_args()

    for tool in ("swtpm", "tpm2_create", "tpm2_load", "tpm2_unseal", "tpm2_flushcontext"):
        if shutil.which(tool) is None:
            print(f"needs {tool}", file=sys.stderr)
            return 2

    sim = start_swtpm()
    workdir = Path(tempfile.mkdtemp(prefix="kt-bench-tpm-"))
    samples: dict[str, list[float]] = {"ours": [], "raw": [], "tools": []}
    try:
        create_primary(sim.tcti)
        source = Tpm2Source(sim.tcti)
        raw = RawPytss(sim.tcti)
        # warm-up: open contexts, cache the parent, fault in code paths
        bench_ours(source, 20)
        raw.run(20)
        bench_tools(sim, workdir, 1)
        tools_every = max(1, args.cycles // max(1, args.tools_cycles))
        for i in range(args.cycles):
            order = ("ours", "raw") if i % 2 == 0 else ("raw", "ours")
            for name in order:
                ns = bench_ours(source, 1) if name == "ours" else raw.run(1)
                samples[name].append(ns / 1000)
            if i % tools_every == tools_every // 2 and len(samples["tools"]) < args.tools_cycles:
                samples["tools"].append(bench_tools(sim, workdir, 1) / 1000)
        leftover = source.transient_handles()
        source.close()
        raw.close()
    finally:
        sim.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    med = {name: statistics.median(values) for name, values in samples.items()}
    ours_vs_raw = med["ours"] / med["raw"]
    tools_vs_ours = med["tools"] / med["ours"]
    print(f"# {platform.machine()} {platform.python_implementation()} {platform.python_version()}, swtpm on loopback")
    print(f"# cycle = seal a {KEY_LEN}-byte key + unseal it; ours/raw alternate cycle by cycle")
    print(f"{'peer':<38}{'cycles':>8}{'median us':>12}{'p10':>10}{'p90':>10}")
    labels = {
        "ours": "keyring_types Tpm2Source (ours)",
        "raw": "raw tpm2-pytss ESAPI sequence",
        "tools": "tpm2-tools process chain",
    }
    for name, label in labels.items():
        values = samples[name]
        print(
            f"{label:<38}{len(values):>8}{med[name]:>12.1f}"
            f"{percentile(values, 0.1):>10.1f}{percentile(values, 0.9):>10.1f}"
        )
    ok_raw = ours_vs_raw <= 1.25
    ok_tools = tools_vs_ours >= 30.0
    print(f"ours / raw tpm2-pytss = {ours_vs_raw:.2f}x  (goal <= 1.25x: {'met' if ok_raw else 'NOT met'})")
    print(f"tpm2-tools / ours     = {tools_vs_ours:.1f}x  (goal >= 30x: {'met' if ok_tools else 'NOT met'})")
    print(f"transient handles left by ours: {len(leftover)}")
    return 0 if ok_raw and ok_tools and not leftover else 1


if __name__ == "__main__":
    sys.exit(main())
