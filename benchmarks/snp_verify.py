#!/usr/bin/env python3
"""SEV-SNP report verification against the raw ECDSA P-384 verify rate of OpenSSL.

``keyring_types.attest.snp.verify`` of the real Milan report (../shared/testdata/sev-snp) with
its VCEK, whose chain was seen before (the RSA-PSS chain checks are cached by the certificate
and chain bytes, so each call is: parse, one ECDSA P-384 verification, the hwID/TCB binding,
validity), against ``openssl speed -seconds S ecdsap384`` verify/s, run by this script in the
same run.  Goal: >= 0.8x.

Also printed: the first verify of a chain not seen before (cold: three RSA-PSS verifications
more), ``parse_report`` alone, and the OpenSSL release of each side (cryptography's wheel
bundles its own libcrypto, which may be newer and faster than the system's ``openssl``).

Usage: python benchmarks/snp_verify.py [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keyring_types.attest import snp

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "sev-snp"
GOAL = 0.8


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        n += 50
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def openssl_verify_rate(seconds: int) -> float:
    exe = shutil.which("openssl")
    if exe is None:
        raise SystemExit("openssl not found")
    out = subprocess.run([exe, "speed", "-seconds", str(seconds), "ecdsap384"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"^\s*384 bits ecdsa \(nistp384\)\s+\S+s\s+\S+s\s+[\d.]+\s+([\d.]+)\s*$", out, re.MULTILINE)
    if m is None:
        raise SystemExit(f"cannot read openssl speed output:\n{out}")
    return float(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    blob = (TESTDATA / "attestation.bin").read_bytes()
    cert = (TESTDATA / "vcek.testcer").read_bytes()

    t0 = time.perf_counter()
    snp.verify(blob, cert=cert)  # cold: this process has not seen the chain
    cold = time.perf_counter() - t0

    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(args.rounds):  # interleaved, best round kept for both
        ours.append(rate(lambda: snp.verify(blob, cert=cert), args.seconds))
        theirs.append(openssl_verify_rate(args.seconds))
    parse = rate(lambda: snp.parse_report(blob), 1.0)
    best_ours, best_theirs = max(ours), max(theirs)
    ratio = best_ours / best_theirs
    print(f"snp.verify, chain seen before : {best_ours:9.0f} /s  (rounds: {', '.join(f'{r:.0f}' for r in ours)})")
    print(f"openssl speed ecdsap384 verify: {best_theirs:9.0f} /s  (rounds: {', '.join(f'{r:.0f}' for r in theirs)})")
    print(f"ratio                         : {ratio:9.2f}x  (goal >= {GOAL}x) {'OK' if ratio >= GOAL else 'BELOW GOAL'}")
    print(f"first verify (cold chain)     : {cold * 1e3:9.1f} ms")
    print(f"parse_report alone            : {parse:9.0f} /s")
    # The two sides may run different OpenSSL releases (cryptography's wheel bundles its own).
    from cryptography.hazmat.backends.openssl import backend

    system = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"libcrypto: cryptography {backend.openssl_version_text()}; openssl command {system}")
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
