#!/usr/bin/env python3
"""Reports through the configfs-tsm provider on the emulated FUSE tree, against the emulated
guest's report alone, in one run: what the file-system round trips (mkdir, generation, inblob,
auxblob, outblob, provider, generation, rmdir) cost on top of building and signing the report.

The tree is served by ``keyring_types.attest.configfs_fuse`` in its own process (needs FUSE:
``/dev/fuse``, libfuse 3, ``mfusepy``); the peer is ``EmulatedSevSnp.report`` on the same chip
in this process.  No goal in the issue: the figure says whether high-frequency use through
configfs holds (one fresh entry per request, as go-configfs-tsm does it).  ``--threads``
requests at once through one provider object measure concurrent agents.

Usage: python benchmarks/tsm_configfs.py [--seconds 3] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keyring_types.attest.providers import ConfigfsTsm, EmulatedSevSnp

ROOT = Path(__file__).resolve().parents[1]


def rate(fn: Callable[[], object], seconds: float, threads: int) -> float:
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def work(i: int) -> None:
        while time.perf_counter() < deadline:
            fn()
            counts[i] += 1

    start = time.perf_counter()
    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kt-bench-tsm-"))
    state, mnt = work / "state", work / "mnt"
    guest = EmulatedSevSnp(state)
    guest.report(bytes(64))  # roots and VCEK, once, before the server reads them
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyring_types.attest.configfs_fuse", str(mnt), "--state-dir", str(state)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                print("the emulated configfs-tsm tree did not mount (is FUSE here?)", file=sys.stderr)
                return 2
            time.sleep(0.05)
        provider = ConfigfsTsm(mnt)
        data = b"\xab" * 64
        provider.get_report(data)  # warm the server's guest
        a: list[float] = []
        b: list[float] = []
        for _ in range(args.rounds):  # interleaved, best round of each kept
            a.append(rate(lambda: provider.get_report(data), args.seconds, args.threads))
            b.append(rate(lambda: guest.report(data), args.seconds, args.threads))
    finally:
        proc.terminate()
        proc.wait(10)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    best_a, best_b = max(a), max(b)
    print(f"configfs-tsm report (FUSE tree) : {best_a:8.0f} /s  (rounds: {', '.join(f'{x:.0f}' for x in a)})")
    print(f"emulated guest report alone     : {best_b:8.0f} /s  (rounds: {', '.join(f'{x:.0f}' for x in b)})")
    print(f"cost ratio (configfs / direct)  : {best_b / best_a:8.2f}x  ({args.threads} thread(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
