#!/usr/bin/env python3
"""Key lifecycle and search scaling: the in-process Keyspace against the kernel.

1. add_key + read + invalidate of a 32-byte user key, the same number of cycles
   on ``keyring_types.Keyspace()`` and on ``KernelKeyspace(new_session=True)``
   (the real kernel keyring through add_key/keyctl), interleaved in rounds so
   that drift on the machine hits both alike.  Prints µs/cycle and the ratio
   ours/kernel (goal <= 1.0).  The kernel side runs in a fresh anonymous
   session keyring (KEYCTL_JOIN_SESSION_KEYRING with a NULL name, what
   ``keyctl session`` does), which is checked to be empty before the run.
   The kernel's GC walks every key it holds, so its figure depends on what
   else the kernel holds: ``/proc/key-users`` is printed before the run and
   after it (once the GC has freed the invalidated keys), and keys held by
   other users, which earlier test runs can leave behind, are reported.
2. ``Keyring.search`` and the raw ``sys_search`` in one in-process keyring
   holding 1 k, 100 k and 1 M user keys.  Prints µs per search and the ratio
   1 M / 1 k (goal <= 2.0: search must not grow with the keyring).  The kernel's
   KEYCTL_SEARCH on a keyring with the same keys is the peer column, up to
   ``--kernel-max-keys`` (root's kernel byte quota cannot hold a million).

Usage: python benchmarks/lifecycle.py [--cycles 20000] [--max-keys 1000000]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Run from a checkout: prefer the package next to this script over whatever is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keyring_types as kt

PAYLOAD_LEN = 32
SIZES = (1_000, 100_000, 1_000_000)


def lifecycle_round(ks: kt.KeyspaceAPI, tag: str, start: int, count: int, payload: bytes) -> int:
    """Run ``count`` add/read/invalidate cycles; the elapsed nanoseconds."""
    add = ks.add_key
    t0 = time.perf_counter_ns()
    for i in range(start, start + count):
        k = add("user", f"{tag}:{i}", payload, "@s")
        k.read()
        k.invalidate()
    return time.perf_counter_ns() - t0


def key_users() -> dict[int, tuple[int, int]]:
    """``/proc/key-users``: uid -> (keys the user owns, bytes charged to its quota)."""
    out: dict[int, tuple[int, int]] = {}
    try:
        with open("/proc/key-users", encoding="ascii") as fh:
            for line in fh:
                # "  uid: usage nkeys/nikeys qnkeys/maxkeys qnbytes/maxbytes"
                uid, _, rest = line.partition(":")
                fields = rest.split()
                out[int(uid)] = (int(fields[1].split("/")[0]), int(fields[3].split("/")[0]))
    except (OSError, ValueError, IndexError):
        pass
    return out


def describe_key_users(users: dict[int, tuple[int, int]], before: dict[int, tuple[int, int]] | None = None) -> str:
    """One line: this uid's keys and quota bytes (with the change since ``before``), and other users' keys."""
    me = os.getuid()
    mine = users.get(me, (0, 0))
    text = f"uid {me}: {mine[0]} keys, {mine[1]} bytes"
    if before is not None:
        was = before.get(me, (0, 0))
        text += f" ({mine[0] - was[0]:+d} keys, {mine[1] - was[1]:+d} bytes)"
    others = {uid: v for uid, v in users.items() if uid != me}
    text += f"; {len(others)} other users"
    if others:
        total = sum(k for k, _ in others.values())
        shown = ", ".join(f"uid {uid}: {k}" for uid, (k, _) in sorted(others.items())[:8])
        text += f" holding {total} keys ({shown}{', ...' if len(others) > 8 else ''}): left-over junk"
    else:
        text += " (clean)"
    return text


def settle_kernel_gc(baseline: int, timeout: float = 5.0) -> dict[int, tuple[int, int]]:
    """Wait until the kernel's GC has freed what the run made (our uid back to ``baseline`` keys)."""
    deadline = time.monotonic() + timeout
    users = key_users()
    while users.get(os.getuid(), (0, 0))[0] > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
        users = key_users()
    # The GC frees a key's quota in the same step as its count, but give a freed
    # keyring's last links a moment.
    time.sleep(0.2)
    return key_users()


def bench_lifecycle(cycles: int, warmup: int, rounds: int) -> tuple[float, float, float]:
    """µs/cycle for (in-process, kernel) over all rounds, and the median per-round ratio.

    This VM's timing drifts by tens of percent from one second to the next, so the
    cycles are split into many short rounds that alternate between the two sides;
    the median of the per-round ratios is the figure that is stable from run to run.
    """
    payload = os.urandom(PAYLOAD_LEN)
    ours = kt.Keyspace()
    kernel = kt.KernelKeyspace(new_session=True)
    left = kernel.session.keys()
    if left:
        raise SystemExit(f"the fresh kernel session keyring is not empty: {len(left)} keys")
    lifecycle_round(ours, "warm", 0, warmup, payload)
    lifecycle_round(kernel, "warm", 0, warmup, payload)
    per_round = max(1, cycles // rounds)
    total = {"ours": 0, "kernel": 0}
    ratios = []
    done = 0
    for r in range(rounds):
        # A fresh session keyring per round on both sides: the kernel charges 4 bytes
        # of quota per link ever made into a keyring and keeps that count in 16 bits,
        # so a keyring that has seen 16 384 links leaves 64 KiB charged to its owner
        # for good when it is freed (see docs/performance.md).
        ours.join_session_keyring()
        kernel.join_session_keyring()
        # Alternate who goes first, so neither always runs on a warmer machine.
        order = [("ours", ours), ("kernel", kernel)]
        if r % 2:
            order.reverse()
        took = {}
        for name, ks in order:
            gc.collect()
            took[name] = lifecycle_round(ks, "bench", done, per_round, payload)
            total[name] += took[name]
        ratios.append(took["ours"] / took["kernel"])
        done += per_round
    # Leave the last round's keyring too, so that everything the run made can be freed.
    kernel.join_session_keyring()
    return total["ours"] / done / 1000, total["kernel"] / done / 1000, statistics.median(ratios)


def time_searches(fn: Callable[[str], object], descs: list[str], repeats: int) -> float:
    """Best of ``repeats`` passes over ``descs``: µs per search."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for d in descs:
            fn(d)
        best = min(best, (time.perf_counter_ns() - t0) / len(descs) / 1000)
    return best


def bench_search(
    max_keys: int, kernel_max_keys: int, searches: int, repeats: int, seed: int
) -> list[tuple[int, float, float, float, float | None]]:
    """(keys, build s, Keyring.search µs, sys_search µs, kernel KEYCTL_SEARCH µs) per size."""
    # Root's default quota (1 M keys / 25 MB, as the kernel's root_maxkeys/maxbytes)
    # cannot hold a million keys plus their descriptions; raise it as one would
    # raise /proc/sys/kernel/keys/root_max* for such a keyring.
    limits = kt.QuotaLimits(root_maxkeys=10 * max(SIZES), root_maxbytes=1 << 40)
    ks = kt.Keyspace(limits=limits)
    ring = ks.add_key("keyring", "bench-search", None, "@s")
    assert isinstance(ring, kt.Keyring)
    payload = os.urandom(PAYLOAD_LEN)
    # The peer: the same keyring in the kernel (its assoc_array), as far as root's
    # real kernel quota allows (about 50 bytes per key against 25 MB).
    kernel = kt.KernelKeyspace(new_session=True)
    kring = kernel.add_key("keyring", "bench-search", None, "@s")
    assert isinstance(kring, kt.Keyring)
    rng = random.Random(seed)
    add = ks.sys_add_key
    rows: list[tuple[int, float, float, float, float | None]] = []
    have = 0
    try:
        for size in SIZES:
            if size > max_keys:
                break
            t0 = time.perf_counter()
            for i in range(have, size):
                add("user", f"bench:{i:07d}", payload, ring.serial)
            build = time.perf_counter() - t0
            in_kernel = size <= kernel_max_keys
            if in_kernel:
                for i in range(have, size):
                    kernel.sys_add_key("user", f"bench:{i:07d}", payload, kring.serial)
            have = size
            gc.collect()
            descs = [f"bench:{rng.randrange(size):07d}" for _ in range(searches)]
            api = time_searches(lambda d: ring.search("user", d), descs, repeats)
            raw = time_searches(lambda d: ks.sys_search(ring.serial, "user", d, 0), descs, repeats)
            peer = None
            if in_kernel:
                peer = time_searches(lambda d: kernel.sys_search(kring.serial, "user", d, 0), descs, repeats)
            rows.append((size, build, api, raw, peer))
            print(f"  ... {size:>9,} keys built in {build:.1f} s", file=sys.stderr, flush=True)
    finally:
        kring.clear()  # hand the kernel quota back at once rather than at exit
    return rows


def _size_name(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=20_000, help="measured lifecycle cycles per backend")
    p.add_argument("--warmup", type=int, default=2_000, help="warm-up cycles per backend")
    p.add_argument("--rounds", type=int, default=40, help="interleaved rounds the cycles are split into")
    p.add_argument("--max-keys", type=int, default=1_000_000, help="largest keyring for the search benchmark")
    p.add_argument("--kernel-max-keys", type=int, default=100_000, help="largest keyring built in the kernel too")
    p.add_argument("--searches", type=int, default=5_000, help="searches per keyring size")
    p.add_argument("--repeats", type=int, default=3, help="passes per size (best is reported)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip-lifecycle", action="store_true")
    p.add_argument("--skip-search", action="store_true")
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress goes to stderr

    print(f"keyring_types {kt.__version__}, Python {platform.python_version()}, "
          f"Linux {platform.release()}, {os.cpu_count()} CPUs")
    print(f"command: python benchmarks/lifecycle.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print()
    if not args.skip_lifecycle:
        before = key_users()
        print(f"/proc/key-users before: {describe_key_users(before)}")
        ours, kernel, median_ratio = bench_lifecycle(args.cycles, args.warmup, args.rounds)
        # Once the GC is done, our uid holds one key more than before: the empty session
        # keyring the process sits in now.  Anything else was left behind by the run.
        after = settle_kernel_gc(before.get(os.getuid(), (0, 0))[0] + 1)
        print(f"/proc/key-users after:  {describe_key_users(after, before)}")
        print(f"Key lifecycle: add_key + read + invalidate, {PAYLOAD_LEN}-byte user key, "
              f"{args.cycles:,} cycles ({args.warmup:,} warm-up), {args.rounds} interleaved rounds")
        print(f"  {'backend':<36} {'µs/cycle':>10}")
        print(f"  {'kernel (KernelKeyspace, syscalls)':<36} {kernel:>10.2f}")
        print(f"  {'in-process (Keyspace)':<36} {ours:>10.2f}")
        print(f"  {'ratio of the totals':<36} {ours / kernel:>10.2f}")
        print(f"  {'median per-round ratio (goal <= 1.0)':<36} {median_ratio:>10.2f}")
        print()
    if not args.skip_search:
        rows = bench_search(args.max_keys, args.kernel_max_keys, args.searches, args.repeats, args.seed)
        print(f"Search in one keyring: {args.searches:,} searches for random existing "
              f"descriptions, best of {args.repeats} (kernel column: KEYCTL_SEARCH, same keys)")
        print(f"  {'keys':>10} {'Keyring.search µs':>18} {'sys_search µs':>14} {'kernel µs':>10}")
        for size, _build, api, raw, peer in rows:
            shown = "-" if peer is None else f"{peer:.2f}"
            print(f"  {size:>10,} {api:>18.2f} {raw:>14.2f} {shown:>10}")
        if len(rows) > 1:
            first, last = rows[0], rows[-1]
            print(f"  ratio {_size_name(last[0])}/{_size_name(first[0])} (goal <= 2.0): "
                  f"Keyring.search {last[2] / first[2]:.2f}, sys_search {last[3] / first[3]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
