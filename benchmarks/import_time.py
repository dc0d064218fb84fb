#!/usr/bin/env python3
"""Import time of ``keyring_types``, against the interpreter's own start-up.

Each case runs in a fresh interpreter (this one's ``sys.executable``, from the
repository root), ``--runs`` times, in rounds that alternate the cases so that
load on the machine hits all of them alike.  A case's figure is the median of
its wall-clock times minus the median of the baseline ``python -c pass``, i.e.
what the import adds to a command's start.  Cases:

* ``import keyring_types`` - what a command-line tool pays before doing anything
  (goal: <= 40 ms);
* first use, in-process: ``kt.Keyspace().add_key("user", ...)``;
* first use, kernel: ``kt.KernelKeyspace()`` (loads the keyctl cffi module).

Then one ``python -X importtime -c 'import keyring_types'`` breaks the bare
import down: the modules with the largest inclusive time are printed, so a
regression shows where it comes from.

Usage: python benchmarks/import_time.py [--runs 30] [--top 15]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_MS = 40.0

CASES: dict[str, str] = {
    "baseline: python -c pass": "pass",
    "import keyring_types": "import keyring_types",
    "first use: Keyspace().add_key('user')": (
        "import keyring_types as kt; kt.Keyspace().add_key('user', 'probe', b'x', '@s')"
    ),
    "first use: KernelKeyspace()": "import keyring_types as kt; kt.KernelKeyspace()",
}
#: The same without ``site`` (``-S``, the checkout and site-packages on PYTHONPATH).
#: An editable install's import hook loads re, pathlib and more at start-up, so in
#: this venv they are in the baseline; a regular install starts without them, and
#: whatever of them keyring_types needs is charged to it here.
NO_SITE = {"-S baseline: python -S -c pass": "pass", "-S import keyring_types": "import keyring_types"}


def _argv(name: str, code: str) -> list[str]:
    return [sys.executable, *(["-S"] if name.startswith("-S") else []), "-c", code]


def _env() -> dict[str, str]:
    import sysconfig

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    return env


def run_once(name: str, code: str) -> tuple[float, float]:
    """(wall-clock ms, CPU ms) of one fresh interpreter running ``code``.

    The CPU time (user + system, from wait4) is what the import costs whatever
    else the machine runs; the wall time is what a user waits for.
    """
    t0 = time.perf_counter()
    env = _env() if name.startswith("-S") else None
    proc = subprocess.Popen(_argv(name, code), cwd=ROOT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = (time.perf_counter() - t0) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, code)
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def importtime_rows(code: str) -> list[tuple[int, int, str]]:
    """(self µs, cumulative µs, indented module name) from ``-X importtime``."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stderr
    rows = []
    for line in out.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|", 2)
        rows.append((int(self_us), int(cum_us), name.rstrip()))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="fresh interpreters per case")
    ap.add_argument("--top", type=int, default=15, help="modules shown from -X importtime")
    args = ap.parse_args()

    cases = {**CASES, **NO_SITE}
    for name, code in cases.items():  # warm the page cache and the bytecode caches
        run_once(name, code)
    times: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(args.runs):
        for name in names if r % 2 == 0 else reversed(names):
            wall, used = run_once(name, cases[name])
            times[name].append(wall)
            cpu[name].append(used)
    med = {name: statistics.median(v) for name, v in times.items()}
    med_cpu = {name: statistics.median(v) for name, v in cpu.items()}
    base = med["baseline: python -c pass"]
    base_cpu = med_cpu["baseline: python -c pass"]

    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = float("nan")
    print(f"# Python {platform.python_version()} ({sys.executable}), Linux {platform.release()}, "
          f"{os.cpu_count()} CPUs, load average {load1:.2f} at the end; {args.runs} runs per case, alternating")
    print(f"{'case':<40}{'wall ms':>9}{'min':>7}{'added':>7}{'cpu ms':>9}{'added':>7}   (medians)")
    for name in names:
        b, bc = (base, base_cpu) if not name.startswith("-S") else (med[names[-2]], med_cpu[names[-2]])
        added = "" if "baseline" in name else f"{med[name] - b:7.1f}"
        added_cpu = "" if "baseline" in name else f"{med_cpu[name] - bc:7.1f}"
        print(f"{name:<40}{med[name]:>9.1f}{min(times[name]):>7.1f}{added:>7}{med_cpu[name]:>9.1f}{added_cpu:>7}")
    bare = med["import keyring_types"] - base
    bare_cpu = med_cpu["import keyring_types"] - base_cpu
    ok = bare <= GOAL_MS
    print(f"import keyring_types adds {bare:.1f} ms wall ({bare_cpu:.1f} ms CPU) = {bare / GOAL_MS:.2f} x the "
          f"{GOAL_MS:.0f} ms goal ({'met' if ok else 'NOT met'}); the whole process takes "
          f"{med['import keyring_types'] / base:.2f} x 'python -c pass'")
    no_site = med["-S import keyring_types"] - med["-S baseline: python -S -c pass"]
    print(f"without site (-S): import keyring_types adds {no_site:.1f} ms = {no_site / GOAL_MS:.2f} x the goal")

    rows = importtime_rows("import keyring_types")
    top = [r for r in rows if r[2].strip() == "keyring_types"]
    if top:
        print(f"\n-X importtime: keyring_types {top[-1][1] / 1000:.1f} ms inclusive; largest inclusive times:")
    # Only what importing the package brings in (the interpreter's start-up imports come first).
    start = next((i for i, r in enumerate(rows) if r[2].strip() == "site"), -1) + 1
    for self_us, cum_us, name in sorted(rows[start:], key=lambda r: -r[1])[: args.top]:
        print(f"  {cum_us / 1000:7.1f} ms  (self {self_us / 1000:5.1f})  {name.strip()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
