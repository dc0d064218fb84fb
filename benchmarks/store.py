#!/usr/bin/env python3
"""The store: add_key + read + invalidate through a store-backed Keyspace against raw sqlite3.

Both sides write to a file in the same fresh directory with the same durability
settings (WAL, ``synchronous=FULL``: each commit is on disk before it returns):

* ours: ``kt.Keyspace(store=...)``, a 32-byte user key added to ``@u`` (a stored
  keyring), read back, invalidated — the public API, each call its own
  transaction, payload sealed with AES-256-GCM, and the keyring's row updated;
* peer: ``sqlite3`` in autocommit mode doing the same work by hand: INSERT the
  key's row (a commit), SELECT its payload, DELETE it (a commit).

Rounds alternate between the two so that drift on the machine hits both alike;
printed are µs/cycle and the median per-round ratio ours/peer (goal <= 1.5).

Usage: python benchmarks/store.py [--cycles 300] [--rounds 10] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keyring_types as kt

PAYLOAD = bytes(range(32))


def ours_round(ks: kt.Keyspace, start: int, count: int) -> int:
    add = ks.add_key
    t0 = time.perf_counter_ns()
    for i in range(start, start + count):
        k = add("user", f"bench:{i}", PAYLOAD, "@u")
        k.read()
        k.invalidate()
    return time.perf_counter_ns() - t0


def peer_round(conn: sqlite3.Connection, start: int, count: int) -> int:
    execute = conn.execute
    t0 = time.perf_counter_ns()
    for i in range(start, start + count):
        execute("INSERT INTO keys (serial, type, description, payload) VALUES (?, 'user', ?, ?)", (i + 3, f"bench:{i}", PAYLOAD))
        execute("SELECT payload FROM keys WHERE serial = ?", (i + 3,)).fetchone()
        execute("DELETE FROM keys WHERE serial = ?", (i + 3,))
    return time.perf_counter_ns() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=300, help="cycles per round, each side")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--dir", type=Path, default=None, help="where the two files go (default: a new temporary directory)")
    args = ap.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="kt-store-bench-", dir=args.dir))
    os.environ.setdefault("KEYRING_TYPES_HOME", str(base / "home"))
    ks = kt.Keyspace(store=base / "ours" / "keys.db")
    ks.session.link(ks.user_keyring)  # possess @u: read() needs it, as on the kernel
    (base / "peer").mkdir(mode=0o700)
    conn = sqlite3.connect(base / "peer" / "peer.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE keys (serial INTEGER PRIMARY KEY, type TEXT, description TEXT, payload BLOB)")

    ours_round(ks, 0, max(1, args.cycles // 10))  # warm-up
    peer_round(conn, 0, max(1, args.cycles // 10))
    totals = {"ours": 0, "peer": 0}
    ratios = []
    start = args.cycles
    for r in range(args.rounds):
        took = {}
        order = ("ours", "peer") if r % 2 == 0 else ("peer", "ours")
        for side in order:
            if side == "ours":
                took[side] = ours_round(ks, start, args.cycles)
            else:
                took[side] = peer_round(conn, start, args.cycles)
            totals[side] += took[side]
        start += args.cycles
        ratios.append(took["ours"] / took["peer"])
    n = args.cycles * args.rounds
    ours_us, peer_us = totals["ours"] / n / 1000, totals["peer"] / n / 1000
    print(f"keyring_types {kt.__version__}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {platform.machine()}")
    print(f"command: python benchmarks/store.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(f"files in {base} (WAL, synchronous=FULL on both sides)")
    print()
    print(f"add + read + invalidate of a {len(PAYLOAD)}-byte user key, {args.rounds} rounds x {args.cycles} cycles")
    print(f"  {'side':<44} {'µs/cycle':>10}")
    print(f"  {'raw sqlite3 (INSERT + SELECT + DELETE)':<44} {peer_us:>10.1f}")
    print(f"  {'Keyspace(store=...) (add_key, read, invalidate)':<44} {ours_us:>10.1f}")
    print(f"  {'ratio of the totals':<44} {ours_us / peer_us:>10.2f}")
    print(f"  {'median per-round ratio (goal <= 1.5)':<44} {statistics.median(ratios):>10.2f}")
    assert ks.store is not None
    ks.store.close()
    conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
