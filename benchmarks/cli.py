#!/usr/bin/env python3
"""Start-up cost of a one-shot ``ktctl`` command against a bare interpreter, side by side.

Each case is a fresh process, ``--runs`` times, in rounds that alternate the
cases so that load on the machine hits them alike; a case's figure is the
median wall-clock time. Cases:

* ``python3 -I -c pass`` - the peer (this interpreter, isolated mode);
* ``ktctl rdescribe @s`` - what the ``ktctl`` console script runs, on the store
  backend (a store in a private state directory, holding one key);
* ``ktctl --kernel rdescribe @s`` - the same on the kernel keyring (where /proc/keys exists);
* ``keyctl rdescribe @s`` - the C keyctl, for reference (where installed).

Goal (issue 14): ``ktctl rdescribe @s`` <= 2.5 x ``python3 -I -c pass``. Exit status 0
when the store case meets it, 1 otherwise. Then one ``-X importtime`` run of the
store case lists the modules that cost most, so a regression shows its source.

Usage: python benchmarks/cli.py [--runs 30] [--top 12]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 2.5
#: What the ``ktctl`` console script does (pyproject: ktctl = "keyring_types.cli:console_main").
KTCTL = [sys.executable, "-c", "from keyring_types.cli import console_main; console_main()"]


def _time(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = (time.perf_counter() - t0) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode(errors='replace').strip()}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="kt-bench-cli-"))
    home.chmod(0o700)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["KEYRING_TYPES_HOME"] = str(home)
    env["KEYRING_TYPES_STORE"] = str(home / "keys.db")
    env.pop("KTCTL_BACKEND", None)
    env.pop("KTCTL_SESSION", None)  # outside a session: ktctl runs in @us, as a kernel process does
    # An installed package has its bytecode compiled; so does this run (in its own directory).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(home / "pycache")
    try:
        cases: dict[str, list[str]] = {
            "python3 -I -c pass": [sys.executable, "-I", "-c", "pass"],
            "ktctl rdescribe @s (store)": [*KTCTL, "rdescribe", "@s"],
        }
        if os.path.exists("/proc/keys"):
            cases["ktctl --kernel rdescribe @s"] = [*KTCTL, "--kernel", "rdescribe", "@s"]
        keyctl = shutil.which("keyctl")
        if keyctl:
            cases["keyctl rdescribe @s (C)"] = [keyctl, "rdescribe", "@s"]
        # One key in the store (in @u: outside a session, adding to @s would make a new
        # anonymous session, as the kernel does), so the run opens a store with a key in it.
        subprocess.run([*KTCTL, "add", "user", "bench", "x", "@u"], cwd=ROOT, env=env, check=True, capture_output=True)
        for argv in cases.values():  # warm the page cache and the bytecode caches
            _time(argv, env)
        times: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for r in range(args.runs):
            for name in names if r % 2 == 0 else reversed(names):
                times[name].append(_time(cases[name], env))
        med = {name: statistics.median(v) for name, v in times.items()}
        base = med["python3 -I -c pass"]
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = float("nan")
        print(f"# {args.runs} runs per case, alternating; {os.cpu_count()} CPUs, load average {load:.2f} at the end")
        print(f"{'case':<32}{'median ms':>10}{'min ms':>8}{'x peer':>8}")
        for name in names:
            print(f"{name:<32}{med[name]:>10.1f}{min(times[name]):>8.1f}{med[name] / base:>8.2f}")
        ratio = med["ktctl rdescribe @s (store)"] / base
        ok = ratio <= GOAL
        print(f"ktctl rdescribe @s = {ratio:.2f} x python3 -I -c pass (goal <= {GOAL}): {'met' if ok else 'NOT met'}")

        out = subprocess.run(
            [KTCTL[0], "-X", "importtime", *KTCTL[1:], "rdescribe", "@s"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
        ).stderr
        rows = []
        for line in out.splitlines():
            if line.startswith("import time:") and "self [us]" not in line:
                self_us, cum_us, mod = line[len("import time:") :].split("|", 2)
                rows.append((int(cum_us), int(self_us), mod.strip()))
        print(f"\n-X importtime of the store case, largest inclusive times (top {args.top}):")
        for cum_us, self_us, mod in sorted(rows, reverse=True)[: args.top]:
            print(f"  {cum_us / 1000:7.1f} ms  (self {self_us / 1000:5.1f})  {mod}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
