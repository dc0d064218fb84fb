#!/usr/bin/env python3
"""Encrypted keys: the in-process ``encrypted`` type against the kernel's, in one run.

Three operations, each timed on ``keyring_types.Keyspace()`` and on
``KernelKeyspace(new_session=True)`` (the kernel's own ``encrypted`` type via
add_key/keyctl) through the same public API.  In every round each operation runs
on the two sides back to back, the side that goes first alternating, so that both
figures of a pair see the machine in the same state:

* ``new``:  ``add_key("encrypted", d, "new user:kmk 32", "@s")``
* ``read``: ``key.read()`` of a key made by ``new`` (master looked up, blob made)
* ``load``: ``add_key("encrypted", d, "load <blob>", "@s")`` (master looked up,
  HMAC verified, data decrypted)
* ``new+read``: the sum of the first two, the issue's headline figure.

For reference it also times ``add_key``/``read`` of a 32-byte ``user`` key on both
(the cost every key type pays in that keyspace) and prints the difference: the
share of the ``encrypted`` type itself.

Prints µs/op (the median over rounds: the machine this runs on is a noisy shared
VM, and one disturbed round should not move the figure) and the ratio ours/kernel
as the median over rounds of each round's pair (goal <= 1.0 for ``new`` and
``load``).
Keys go into a keyring linked from ``@s`` (the master sits in ``@s``), which is
cleared between rounds, outside the timed region.

Usage: python benchmarks/encrypted.py [--keys 2000] [--rounds 15] [--format default]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# Run from a checkout: prefer the package next to this script over whatever is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keyring_types as kt

OPS = ("new", "read", "load", "user add", "user read")


def one_round(  # type: ignore[no-untyped-def]
    spaces: dict[str, tuple[kt.KeyspaceAPI, kt.Keyring]],
    order: list[str],
    tag: str,
    count: int,
    new_payload: str,
    blob: bytes,
    desc_of,
) -> dict[str, dict[str, int]]:
    """Time ``count`` of each operation on each side: nanoseconds per side and operation.

    Each operation runs on both sides back to back (in ``order``) before the next
    operation starts, so that the two figures of a pair see the same machine: on the
    shared VM this runs on, speed changes by half between states that last a fraction
    of a second, longer than a pair takes.
    """
    descs = [desc_of(tag, i) for i in range(count)]
    load_descs = [d + "L" if len(d) != 16 else d[:-1] + "f" for d in descs]
    load_payload = b"load " + blob
    secret = b"u" * 32
    ns: dict[str, dict[str, int]] = {side: {} for side in order}

    def pair(op: str, run) -> dict[str, list[kt.Key]]:  # type: ignore[no-untyped-def]
        """Run ``run(keyspace, ring, side)`` on each side in turn, timing each; its results by side."""
        out = {}
        for side in order:
            ks, ring = spaces[side]
            t0 = time.perf_counter_ns()
            out[side] = run(ks, ring, side)
            ns[side][op] = time.perf_counter_ns() - t0
        return out

    def read_all(keys: list[kt.Key]) -> list[kt.Key]:
        for k in keys:
            k.read()
        return []

    def add_all(
        ks: kt.KeyspaceAPI, ring: kt.Keyring, type_name: str, names: list[str], payload: str | bytes
    ) -> list[kt.Key]:
        add = ks.add_key
        return [add(type_name, d, payload, ring) for d in names]

    keys = pair("new", lambda ks, ring, side: add_all(ks, ring, "encrypted", descs, new_payload))
    pair("read", lambda ks, ring, side: read_all(keys[side]))
    pair("load", lambda ks, ring, side: add_all(ks, ring, "encrypted", load_descs, load_payload))
    # The floor every key type pays in this keyspace: add_key + read of a 32-byte user key.
    ukeys = pair("user add", lambda ks, ring, side: add_all(ks, ring, "user", descs, secret))
    pair("user read", lambda ks, ring, side: read_all(ukeys[side]))
    # Untimed: empty the benchmark keyrings (the masters stay in @s).
    for side in order:
        spaces[side][1].clear()
    return ns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=2000, help="keys per round and operation")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--format", choices=("default", "enc32", "ecryptfs"), default="default")
    args = ap.parse_args()

    fmt = args.format
    n = {"default": 32, "enc32": 32, "ecryptfs": 64}[fmt]
    new_payload = f"new {fmt} user:kmk {n}"
    if fmt == "ecryptfs":
        # ecryptfs descriptions are 16 hex digits: encode the round and index in them.
        def desc_of(tag: str, i: int) -> str:
            return f"{tag}{i:013x}0"
    else:
        def desc_of(tag: str, i: int) -> str:
            return f"{tag}:{i}"

    master = os.urandom(32)
    ours = kt.Keyspace()
    kernel = kt.KernelKeyspace(new_session=True)
    spaces: dict[str, tuple[kt.KeyspaceAPI, kt.Keyring]] = {}
    for side, ks in (("ours", ours), ("kernel", kernel)):
        ks.add_key("user", "kmk", master, "@s")
        ring = ks.add_key("keyring", "bench", None, "@s")
        assert isinstance(ring, kt.Keyring)
        spaces[side] = (ks, ring)
    # The blob to load: made by the kernel, so both sides load the same bytes.
    proto = kernel.add_key("encrypted", desc_of("aa", 0), new_payload, "@s")
    blob = proto.read()
    kernel.session.unlink(proto)

    warm = max(50, args.keys // 10)
    one_round(spaces, ["ours", "kernel"], "bb", warm, new_payload, blob, desc_of)

    per_round: dict[str, dict[str, list[float]]] = {side: {op: [] for op in OPS} for side in ("ours", "kernel")}
    for r in range(args.rounds):
        # Alternate which side goes first in each pair.
        order = ["ours", "kernel"] if r % 2 == 0 else ["kernel", "ours"]
        gc.collect()
        tag = f"{r:02x}" if fmt == "ecryptfs" else f"r{r}"
        res = one_round(spaces, order, tag, args.keys, new_payload, blob, desc_of)
        for side in order:
            for op in OPS:
                per_round[side][op].append(res[side][op] / args.keys / 1000)
    for ops in per_round.values():
        ops["new+read"] = [a + b for a, b in zip(ops["new"], ops["read"], strict=True)]

    us = {side: {op: statistics.median(v) for op, v in per_round[side].items()} for side in per_round}
    # The ratio of each pair, then the median over rounds: robust to the machine's
    # changes of speed, which hit both figures of a pair alike.
    ratio = {
        op: statistics.median(a / b for a, b in zip(per_round["ours"][op], per_round["kernel"][op], strict=True))
        for op in per_round["ours"]
    }

    print(f"encrypted keys, format {fmt} ({n} bytes), {args.rounds} rounds x {args.keys} keys")
    print(f"python {platform.python_version()}, kernel {platform.release()}, {os.cpu_count()} CPUs")
    print("µs/op: median over rounds; ratio: median over rounds of ours / kernel in the same round")
    print(f"{'operation':<10} {'ours µs':>10} {'kernel µs':>10} {'ratio':>7}")
    for op in ("new", "read", "new+read", "load"):
        print(f"{op:<10} {us['ours'][op]:>10.2f} {us['kernel'][op]:>10.2f} {ratio[op]:>6.2f}x")
    print("goal: ratio <= 1.00 for new and load (ours / kernel, same public API)")
    print("reference: a 32-byte user key through the same keyspaces (the per-call floor)")
    for op in ("user add", "user read"):
        print(f"{op:<10} {us['ours'][op]:>10.2f} {us['kernel'][op]:>10.2f} {ratio[op]:>6.2f}x")
    print("the encrypted type's own share, ours (us): "
          f"new {us['ours']['new'] - us['ours']['user add']:.2f}, "
          f"read {us['ours']['read'] - us['ours']['user read']:.2f}, "
          f"load {us['ours']['load'] - us['ours']['user add']:.2f}; kernel: "
          f"new {us['kernel']['new'] - us['kernel']['user add']:.2f}, "
          f"read {us['kernel']['read'] - us['kernel']['user read']:.2f}, "
          f"load {us['kernel']['load'] - us['kernel']['user add']:.2f}")


if __name__ == "__main__":
    main()
