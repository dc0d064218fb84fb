#!/usr/bin/env python3
"""Constant-time check of MAC verification, dudect style (Reparaz, Balasch, Verbauwhede 2017).

Two classes of wrong tags go to the same verify call, in random order:
class A differs from the correct MAC in its first byte, class B in its last
byte.  An early-exit compare returns sooner for class A; a constant-time one
cannot tell them apart.  Each sample times ``--inner`` back-to-back calls of one
class (to rise above timer resolution); Welch's t-test then compares the two
timing distributions, on all samples and on samples cropped at several
percentiles (cropping removes interrupt and scheduling outliers, as dudect
does).  |t| above ``--threshold`` (default 4.5, the usual TVLA bound) is
evidence of a timing difference when it shows in every one of ``--runs``
independent runs with the same sign (single runs on a shared machine cross it
by chance).

Targets: ``HmacSha256.verify`` and ``rpmb.frames.verify`` (one frame, MAC
field altered).  A positive control, a deliberately early-exit Python compare,
shows that the harness does detect a leak of that kind on this machine; a
probe (``bytes ==``, whose early exit saves only a few ns) is printed for
information on how fine the run could resolve.

Exit status 0 when no target leaks and the control is detected, 1 otherwise.

Usage: python benchmarks/ct_verify.py [--samples 200000] [--inner 8] [--threshold 4.5] [--runs 3]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keyring_types.hmac import HmacSha256
from keyring_types.rpmb import frames

PERCENTILES = (None, 0.5, 0.75, 0.9, 0.95, 0.99)


def welch_t(a: list[float], b: list[float]) -> float:
    """Welch's t statistic of two samples."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return 0.0
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    den = math.sqrt(va / na + vb / nb)
    return (ma - mb) / den if den else 0.0


def max_t(a: list[float], b: list[float]) -> tuple[float, str]:
    """The largest |t| over the raw and percentile-cropped samples, and which crop gave it."""
    both = sorted(a + b)
    worst, where = 0.0, "raw"
    for p in PERCENTILES:
        if p is None:
            ca, cb = a, b
            label = "raw"
        else:
            cut = both[int(p * (len(both) - 1))]
            ca = [x for x in a if x <= cut]
            cb = [x for x in b if x <= cut]
            label = f"<=p{int(p * 100)}"
        t = welch_t(ca, cb)
        if abs(t) > abs(worst):
            worst, where = t, label
    return worst, where


def measure(
    call: Callable[[], object], buf: bytearray, at: int, class_a: bytes, class_b: bytes, samples: int, inner: int
) -> tuple[list[float], list[float]]:
    """Time ``inner`` calls per sample on one buffer whose bytes at ``at`` hold class A or B.

    Both classes run on the very same memory: only the secret-dependent bytes differ,
    so address or cache-layout effects cannot pass for a leak.  The class is chosen at
    random per sample and written before the clock starts.
    """
    rng = random.Random(1)
    ta: list[float] = []
    tb: list[float] = []
    clock = time.perf_counter_ns
    rounds = range(inner)
    end = at + len(class_a)
    for _ in range(samples):
        pick_a = rng.getrandbits(1)
        buf[at:end] = class_a if pick_a else class_b
        t0 = clock()
        for _ in rounds:
            call()
        (ta if pick_a else tb).append(clock() - t0)
    return ta, tb


def leaky_equal(x: bytes, y: bytes) -> bool:
    """Positive control: returns at the first differing byte."""
    for i in range(len(x)):
        if x[i] != y[i]:
            return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--inner", type=int, default=8)
    ap.add_argument("--threshold", type=float, default=4.5)
    ap.add_argument("--runs", type=int, default=3, help="independent runs; a leak must show in all")
    a = ap.parse_args()

    key = os.urandom(32)
    h = HmacSha256(key)
    data = os.urandom(284)
    good = h.mac(data)
    # Class A: the tag is wrong in its first byte; class B: in its last byte.
    tag = bytearray(good)
    first = bytes([good[0] ^ 0x01]) + good[1:]
    last = good[:-1] + bytes([good[-1] ^ 0x80])

    frame = bytearray(frames.counter_read_response(h, nonce=os.urandom(16), write_counter=9))
    mac_at = frames.OFF_KEY_MAC
    mac = bytes(frame[mac_at : mac_at + 32])
    frame_first = bytes([mac[0] ^ 0x01]) + mac[1:]
    frame_last = mac[:-1] + bytes([mac[-1] ^ 0x80])
    for variant in (frame_first, frame_last):
        frame[mac_at : mac_at + 32] = variant
        assert not frames.verify(h, frame)

    # expect_leak: False for targets, True for the control, None for the
    # sensitivity probe (bytes == stops at the first byte before its memcmp:
    # a few ns; whether that shows says how fine this run could resolve).
    Target = tuple[str, Callable[[], object], bytearray, int, bytes, bytes, "bool | None"]
    targets: list[Target] = [
        ("HmacSha256.verify", lambda: h.verify(data, tag), tag, 0, first, last, False),
        ("rpmb.frames.verify", lambda: frames.verify(h, frame), frame, mac_at, frame_first, frame_last, False),
        ("control: early-exit compare", lambda: leaky_equal(good, tag), tag, 0, first, last, True),
        ("probe: bytes ==", lambda: good == tag, tag, 0, first, last, None),
    ]
    print(
        f"# {a.samples} samples x {a.inner} calls per target, {a.runs} runs, |t| threshold {a.threshold}; "
        "a leak must show in every run with the same sign"
    )
    ok = True
    for name, call, buf, at, class_a, class_b, expect_leak in targets:
        ts = []
        for _ in range(a.runs):
            for _ in range(1000):  # warm caches and branch predictors
                call()
            ta, tb = measure(call, buf, at, class_a, class_b, a.samples, a.inner)
            t, _where = max_t(ta, tb)
            ts.append(t)
        # Noise on a shared machine moves t both ways between runs; a real leak does not.
        leak = all(abs(t) > a.threshold for t in ts) and len({t > 0 for t in ts}) == 1
        verdict = "timing difference" if leak else "no evidence of a difference"
        shown = ", ".join(f"{t:+.2f}" for t in ts)
        print(f"  {name:30s} t per run = [{shown}]  -> {verdict}")
        if expect_leak is not None and leak != expect_leak:
            ok = False
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
