#!/usr/bin/env python3
"""HMAC-SHA256 and RPMB frame MACs: the native hot path against its peers.

Measured in one run, each ours-vs-peer pair interleaved in rounds (best round
kept for both) so that drift on a shared machine hits both alike:

1. batch single-frame MACs: ``HmacSha256.mac_batch`` over N 284-byte messages
   (the RPMB MAC input) and ``frames.sign_each`` over N 512-byte frames, in
   frames/s, against ``openssl speed -hmac sha256 -bytes 284`` (run by this
   script, its output parsed; it reuses one keyed context, i.e. precomputed
   pads too).  Goal >= 1.5x.
2. the same batch against stdlib ``hmac`` (``hmac.new(key, m, sha256).digest()``
   per message, and the faster precomputed ``.copy()`` form).  Goal >= 20x
   against ``hmac.new``.
3. the MAC of one 64-frame authenticated write (``frames.sign`` over 64 x 512
   bytes, 64 x 284 covered bytes) in bytes/s of MAC input, against
   ``openssl speed -evp sha256 -bytes 8192`` (raw SHA-256).  Goal >= 80 %.
4. ``mac_batch`` from 1 thread against 2 threads (each its own buffers, same
   key object).  Goal >= 1.8x.  ``openssl speed -multi 2`` against one process
   is printed beside it: how well two CPUs scale at all on the machine at
   that moment (other load on a shared box shows up there too).

Usage: python benchmarks/hmac_frames.py [--seconds 1.0] [--rounds 5] [--batch 8192]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac as stdlib_hmac
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

# Run from a checkout: prefer the package next to this script over whatever is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keyring_types.hmac import HmacSha256, batch_lanes
from keyring_types.rpmb import frames

MSG = 284  # bytes 228..511 of a frame
WRITE_FRAMES = 64


def openssl_speed(args: list[str], size: int, seconds: float) -> float:
    """Bytes/s that ``openssl speed <args> -bytes size`` reports (its table is in 1000s of bytes/s)."""
    exe = shutil.which("openssl")
    if exe is None:
        raise SystemExit("openssl(1) is needed for the peer measurement")
    secs = max(1, round(seconds))
    out = subprocess.run(
        [exe, "speed", "-seconds", str(secs), "-bytes", str(size), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # The result row: "<algorithm>   <number>k" after the "type  <size> bytes" header.
    rows = [ln for ln in out.splitlines() if re.match(r"^\S+\s+[0-9.]+k\s*$", ln)]
    if not rows:
        raise SystemExit(f"could not parse openssl speed output:\n{out}")
    return float(rows[-1].split()[-1].rstrip("k")) * 1000.0


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Units/s of ``fn`` (which returns how many units it did) over about ``seconds``."""
    done = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        done += fn()
        t = time.perf_counter()
        if t >= end:
            return done / (t - t0)


def best_interleaved(named: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Run each measurement once per round, alternating; keep each one's best."""
    best = {k: 0.0 for k in named}
    for _ in range(rounds):
        for k, f in named.items():
            best[k] = max(best[k], f())
    return best


def threaded_rate(h: HmacSha256, bufs: list[bytes], seconds: float) -> float:
    """Total MACs/s of len(bufs) threads each batching its own buffer."""
    counts = [0] * len(bufs)
    go = threading.Barrier(len(bufs) + 1)
    stop = time.perf_counter() + seconds + 0.05

    def work(i: int) -> None:
        buf = bufs[i]
        n = len(buf) // MSG
        go.wait()
        c = 0
        while time.perf_counter() < stop:
            h.mac_batch(buf, MSG)
            c += n
        counts[i] = c

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(bufs))]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def verdict(ratio: float, goal: float) -> str:
    return "meets goal" if ratio >= goal else "BELOW goal"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="length of one measurement")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per comparison")
    ap.add_argument("--batch", type=int, default=8192, help="messages per mac_batch call")
    a = ap.parse_args()

    key = os.urandom(32)
    h = HmacSha256(key)
    msgs = os.urandom(MSG * a.batch)
    frame_buf = bytearray(os.urandom(512 * a.batch))
    write = frames.write_request(h, os.urandom(256 * WRITE_FRAMES), address=0, write_counter=1)
    assert isinstance(write, bytearray)

    # Cross-check before timing anything: ours must equal stdlib on this data.
    tags = h.mac_batch(msgs[: MSG * 4], MSG)
    assert tags == b"".join(
        stdlib_hmac.new(key, msgs[i * MSG : (i + 1) * MSG], hashlib.sha256).digest() for i in range(4)
    )

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    ver = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"# peer: {ver}; batch kernel: {batch_lanes()} lane(s)")
    print(f"# {a.rounds} interleaved rounds of ~{a.seconds:.1f} s each, best round kept\n")

    s = a.seconds
    n_std = 2000  # messages per stdlib timing chunk
    std_msgs = [msgs[i * MSG : (i + 1) * MSG] for i in range(n_std)]
    pre = stdlib_hmac.new(key, digestmod=hashlib.sha256)

    def stdlib_new() -> int:
        new, sha = stdlib_hmac.new, hashlib.sha256
        for m in std_msgs:
            new(key, m, sha).digest()
        return n_std

    def stdlib_copy() -> int:
        for m in std_msgs:
            c = pre.copy()
            c.update(m)
            c.digest()
        return n_std

    # 1 + 2: single-frame MACs
    r1 = best_interleaved(
        {
            "ours mac_batch": lambda: rate(lambda: (h.mac_batch(msgs, MSG), a.batch)[1], s),
            "ours sign_each": lambda: rate(lambda: (frames.sign_each(h, frame_buf), a.batch)[1], s),
            "openssl speed -hmac": lambda: openssl_speed(["-hmac", "sha256"], MSG, s) / MSG,
            "stdlib hmac.new": lambda: rate(stdlib_new, s / 2),
            "stdlib hmac copy()": lambda: rate(stdlib_copy, s / 2),
        },
        a.rounds,
    )
    ours = r1["ours mac_batch"]
    print("## Batch single-frame MACs (284-byte messages), frames/s")
    for k, v in r1.items():
        print(f"  {k:24s} {v / 1e6:8.3f} M/s   {1e9 / v:8.1f} ns/MAC")
    g1 = ours / r1["openssl speed -hmac"]
    g2 = ours / r1["stdlib hmac.new"]
    print(f"  ratio mac_batch / openssl speed -hmac sha256 -bytes 284: {g1:5.2f}x  (goal >= 1.5x: {verdict(g1, 1.5)})")
    sign_vs_openssl = r1["ours sign_each"] / r1["openssl speed -hmac"]
    print(f"  ratio sign_each / openssl speed:                         {sign_vs_openssl:5.2f}x")
    print(f"  ratio mac_batch / stdlib hmac.new:                       {g2:5.1f}x  (goal >= 20x: {verdict(g2, 20)})")
    print(f"  ratio mac_batch / stdlib precomputed copy():             {ours / r1['stdlib hmac copy()']:5.1f}x\n")

    # 3: multi-frame MAC throughput
    covered = WRITE_FRAMES * MSG
    reps = 256

    def sign_write() -> int:
        for _ in range(reps):
            frames.sign(h, write)
        return reps * covered

    r3 = best_interleaved(
        {
            "ours frames.sign(64 frames)": lambda: rate(sign_write, s),
            "openssl speed -evp sha256 8192": lambda: openssl_speed(["-evp", "sha256"], 8192, s),
        },
        a.rounds,
    )
    g3 = r3["ours frames.sign(64 frames)"] / r3["openssl speed -evp sha256 8192"]
    print(f"## 64-frame write MAC ({covered} covered bytes), MB/s of MAC input")
    for k, v in r3.items():
        print(f"  {k:32s} {v / 1e6:8.1f} MB/s")
    print(f"  ratio to raw SHA-256: {g3 * 100:5.1f} %  (goal >= 80 %: {verdict(g3, 0.8)})\n")

    # 4: threads
    bufs = [os.urandom(MSG * a.batch) for _ in range(2)]
    r4 = best_interleaved(
        {
            "1 thread": lambda: threaded_rate(h, bufs[:1], s),
            "2 threads": lambda: threaded_rate(h, bufs, s),
            "openssl speed -hmac, 1 process": lambda: openssl_speed(["-hmac", "sha256"], MSG, s) / MSG,
            "openssl speed -hmac -multi 2": lambda: openssl_speed(["-multi", "2", "-hmac", "sha256"], MSG, s) / MSG,
        },
        a.rounds,
    )
    g4 = r4["2 threads"] / r4["1 thread"]
    peer4 = r4["openssl speed -hmac -multi 2"] / r4["openssl speed -hmac, 1 process"]
    print("## mac_batch threads (GIL released in C), frames/s")
    for k, v in r4.items():
        print(f"  {k:32s} {v / 1e6:8.3f} M/s")
    print(f"  ratio 2 threads / 1: {g4:4.2f}x  (goal >= 1.8x: {verdict(g4, 1.8)})")
    print(f"  for reference, openssl speed -multi 2 / 1 process in this run: {peer4:4.2f}x"
          " (what two CPUs gave any program at the time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
