#!/usr/bin/env python3
"""A 32-byte derived key through the public API against raw tpm2-pytss Hash + Sign, same run.

One private swtpm (fresh state, loopback).  The library is used the way a user
uses it: ``KEYRING_TYPES_TPM2_TCTI`` names the swtpm,
``KEYRING_TYPES_DERIVE_ROOT=tpm2``, and one cycle on a ``keyring_types.Keyspace()`` is
``ks.add_key("derived", desc, "32 path", "@s")`` then ``key.read()`` (the key is
invalidated after the cycle, outside the timed part).  That is: find who is
asking (``/proc/self/exe``, ``/proc/self/uid_map``), TPM2_Hash and TPM2_Sign
with the kept primary, the key stored and read back.

``esapi`` is the floor the issue names: TPM2_Hash (owner) and TPM2_Sign with
the ticket through tpm2-pytss' ESAPI, on a primary of the RFC's template
created once beforehand, the message (counter and info) built once.  Both
sides take turns cycle by cycle (the side that goes first rotates); figures
are medians of per-cycle times, p10/p90 show the spread.  The outputs are
compared once: the same bytes, or the run fails.

Goal printed: ours <= 1.25 x esapi.

Usage: python benchmarks/derived.py [--cycles 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # swtpm_util: the same swtpm launcher the tests use

from swtpm_util import start_swtpm  # noqa: E402

GOAL = 1.25


class Ours:
    """The public API: one Keyspace, the key in its session keyring."""

    def __init__(self) -> None:
        import keyring_types as kt

        self.ks = kt.Keyspace()
        self.n = 0

    def cycle(self) -> tuple[int, bytes]:
        self.n += 1
        clock = time.perf_counter_ns
        t0 = clock()
        key = self.ks.add_key("derived", f"bench:{self.n}", "32 path", "@s")
        out = key.read()
        t1 = clock()
        key.invalidate()
        return t1 - t0, out


class RawEsapi:
    """TPM2_Hash + TPM2_Sign through ESAPI on an already loaded primary of the RFC's template."""

    def __init__(self, tcti: str) -> None:
        from tpm2_pytss import ESAPI
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
        from tpm2_pytss.types import TPM2B_MAX_BUFFER, TPM2B_PUBLIC, TPMT_SIG_SCHEME

        from keyring_types.derive.identity import exe_path, kernel_euid
        from keyring_types.derive.kdf import kdf_info
        from keyring_types.derive.tpm2 import PRIMARY_TEMPLATE

        self.esapi = ESAPI(tcti)
        public, _ = TPM2B_PUBLIC.unmarshal(PRIMARY_TEMPLATE)
        self.primary, *_ = self.esapi.create_primary(None, public, ESYS_TR.OWNER)
        self.message = TPM2B_MAX_BUFFER(struct.pack(">I", 1) + kdf_info(32, kernel_euid(), b"path", exe_path()))
        self.scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.HMAC)
        self.scheme.details.hmac.hashAlg = TPM2_ALG.SHA256
        self.sha256, self.owner = TPM2_ALG.SHA256, ESYS_TR.OWNER

    def cycle(self) -> tuple[int, bytes]:
        esapi = self.esapi
        clock = time.perf_counter_ns
        t0 = clock()
        digest, ticket = esapi.hash(self.message, self.sha256, self.owner)
        sig = esapi.sign(self.primary, digest, self.scheme, ticket)
        t1 = clock()
        return t1 - t0, bytes(sig.signature.hmac.digest.sha256)

    def close(self) -> None:
        self.esapi.flush_context(self.primary)
        self.esapi.close()


def stats(ns: list[int]) -> dict[str, float]:
    q = statistics.quantiles(ns, n=10)
    return {"median": statistics.median(ns) / 1000, "p10": q[0] / 1000, "p90": q[-1] / 1000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--cycles", type=int, default=2000)
    args = ap.parse_args()
    sim = start_swtpm()
    try:
        os.environ["KEYRING_TYPES_TPM2_TCTI"] = sim.tcti
        os.environ["KEYRING_TYPES_DERIVE_ROOT"] = "tpm2"
        ours, raw = Ours(), RawEsapi(sim.tcti)
        # Warm-up (connections, the kept primary, imports), and the outputs compared.
        _, a = ours.cycle()
        _, b = raw.cycle()
        if a != b:
            raise SystemExit("ours and ESAPI derived different bytes")
        times: dict[str, list[int]] = {"ours": [], "esapi": []}
        sides: list[tuple[str, Any]] = [("ours", ours), ("esapi", raw)]
        for i in range(args.cycles):
            order = sides if i % 2 == 0 else sides[::-1]
            for name, side in order:
                times[name].append(side.cycle()[0])
        raw.close()
        from keyring_types.derive import registry

        registry.clear_cache()  # flush the kept primary while swtpm still runs
    finally:
        sim.stop()
    print(f"# derived keys, 32 bytes, swtpm on loopback; {args.cycles} cycles; {platform.python_implementation()} "
          f"{platform.python_version()}, {platform.machine()}")
    print(f"{'side':8} {'median us':>10} {'p10':>8} {'p90':>8}")
    summary = {name: stats(ns) for name, ns in times.items()}
    for name, s in summary.items():
        print(f"{name:8} {s['median']:10.1f} {s['p10']:8.1f} {s['p90']:8.1f}")
    ratio = summary["ours"]["median"] / summary["esapi"]["median"]
    verdict = "ok" if ratio <= GOAL else "OVER"
    print(f"ours / esapi (add_key + read vs Hash + Sign): {ratio:.2f}x  (goal <= {GOAL}x: {verdict})")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
