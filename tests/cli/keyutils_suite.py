#!/usr/bin/env python3
"""Run keyutils' own test suite against ``keyctl``, ``ktctl --kernel`` or ``ktctl`` (the store).

    python tests/cli/keyutils_suite.py {real,kernel,store} [--json FILE] [--only TEST...]

The suite is not part of this repository: it is fetched at run time with
``apt-get source keyutils`` through a private apt configuration (sources,
lists, cache and lock in a cache directory) derived from this machine's own
apt sources, so nothing is written under /etc and no host is named here.
The unpacked ``tests/`` directory is copied fresh for every run, with one
fix: its ``have_move_keys`` variable is spelled ``have_move_key`` as
``keyctl supports`` prints it (without the fix every MOVE test is skipped).

For ``kernel`` and ``store`` a ``keyctl`` wrapper that runs
``python -m keyring_types`` (this interpreter, this tree) is put first on
``PATH``. The suite's driver exits 0 whatever happens, so the result of each
test is read from its ``test.out``: ``FINISHED TEST: PASS``/``FAIL``,
``SKIPPING TEST`` (the suite's own skip), or nothing (the test died).

Exit status: 0 when every test ran as expected for the mode (see
:data:`STORE_EXCLUDED` and :data:`KNOWN_FAILURES`), 1 otherwise, 2 when the
suite cannot be fetched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Tests that fail with the real keyctl on this kernel too, and why.
KNOWN_FAILURES: dict[str, str] = {
    "features/builtin_trusted": "the kernel here has no .secondary_trusted_keys keyring (fails with the real keyctl too)",
}

#: Tests not run in store mode: each needs something only the kernel has.
STORE_EXCLUDED: dict[str, str] = {
    "features/builtin_trusted": "needs the kernel's built-in trusted keyrings (.builtin_trusted_keys, .blacklist), "
    "which the store does not have (and the test fails with the real keyctl here anyway)",
    "keyctl/session/valid2": "new_session gives the calling shell a new session keyring; a store session reaches a "
    "process only through the environment it starts with, and a running parent's cannot be changed",
}

#: Seconds one test may take (the longest, features/limits, takes about 100 s under load).
TEST_TIMEOUT = 400

SOURCE_PACKAGE = "keyutils"
EXPECTED_VERSION = "1.6.3"


def cache_dir() -> Path:
    base = os.environ.get("KT_SUITE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "keyring_types", "keyutils-suite"
    )
    return Path(base)


def _deb_src_stanzas(text: str) -> list[str]:
    """deb822 stanzas (``.sources``) turned into ``deb-src`` ones; disabled ones dropped."""
    out = []
    for stanza in re.split(r"\n\s*\n", text.strip()):
        lines = [ln for ln in stanza.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        fields = {ln.split(":", 1)[0].strip().lower(): ln for ln in lines if ":" in ln}
        if "enabled" in fields and fields["enabled"].split(":", 1)[1].strip().lower() == "no":
            continue
        types = fields.get("types", "").split(":", 1)[-1].split()
        if "deb" not in types:
            continue
        lines = ["Types: deb-src" if ln.lower().startswith("types:") else ln for ln in lines]
        out.append("\n".join(lines))
    return out


def _one_line_sources(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("deb "):
            out.append("deb-src " + line[4:])
    return out


def private_apt(root: Path) -> list[str]:
    """An apt configuration under ``root`` whose sources are this machine's, as deb-src."""
    etc = root / "etc"
    parts = etc / "sources.list.d"
    parts.mkdir(parents=True, exist_ok=True)
    (etc / "preferences.d").mkdir(exist_ok=True)
    (root / "state" / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    stanzas: list[str] = []
    one_line: list[str] = []
    apt_etc = Path("/etc/apt")
    if (apt_etc / "sources.list").is_file():
        one_line += _one_line_sources((apt_etc / "sources.list").read_text())
    sources_d = apt_etc / "sources.list.d"
    if sources_d.is_dir():
        for f in sorted(sources_d.iterdir()):
            if f.suffix == ".sources":
                stanzas += _deb_src_stanzas(f.read_text())
            elif f.suffix == ".list":
                one_line += _one_line_sources(f.read_text())
    (parts / "machine.sources").write_text("\n\n".join(stanzas) + "\n")
    (parts / "machine.list").write_text("\n".join(one_line) + "\n")
    return [
        "-o", "Dir::Etc::sourcelist=/dev/null",
        "-o", f"Dir::Etc::sourceparts={parts}",
        "-o", f"Dir::Etc::preferencesparts={etc / 'preferences.d'}",
        "-o", f"Dir::State={root / 'state'}",
        "-o", f"Dir::Cache={root / 'cache'}",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip


def fetch_suite() -> Path:
    """The unpacked ``tests/`` of Debian's keyutils source package (fetched once, then cached)."""
    root = cache_dir()
    existing = sorted(root.glob(f"src/{SOURCE_PACKAGE}-*/tests"))
    if existing:
        return existing[-1]
    if shutil.which("apt-get") is None or shutil.which("dpkg-source") is None:
        raise RuntimeError("apt-get and dpkg-source (dpkg-dev) are needed to fetch keyutils' test suite")
    opts = private_apt(root / "apt")
    quiet = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    done = subprocess.run(["apt-get", *opts, "-q", "update"], **quiet, check=False)  # type: ignore[call-overload]
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["apt-get", *opts, "-q", "source", SOURCE_PACKAGE], cwd=src, **quiet, check=False)  # type: ignore[call-overload]
    found = sorted(src.glob(f"{SOURCE_PACKAGE}-*/tests"))
    if got.returncode != 0 or not found:
        raise RuntimeError(f"apt-get source {SOURCE_PACKAGE} failed:\n{done.stdout[-2000:]}\n{got.stdout[-2000:]}")
    return found[-1]


def list_tests(suite: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(suite)) for p in suite.rglob("runtest.sh") if p.parent != suite)


def prepare_copy(suite: Path, work: Path) -> Path:
    """A fresh copy of the suite with the ``have_move_keys`` typo fixed."""
    copy = work / "tests"
    shutil.copytree(suite, copy)
    for f in copy.rglob("*.sh"):
        text = f.read_text()
        if "have_move_keys" in text:
            f.write_text(text.replace("have_move_keys", "have_move_key"))
    return copy


def keyctl_wrapper(bindir: Path, mode: str) -> None:
    """``bindir/keyctl``: this interpreter running ``python -m keyring_types`` from this tree."""
    bindir.mkdir(parents=True, exist_ok=True)
    flag = " --kernel" if mode == "kernel" else ""
    script = bindir / "keyctl"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m keyring_types{flag} "$@"\n')
    script.chmod(0o755)


def result_of(test_dir: Path) -> str:
    out = test_dir / "test.out"
    if not out.exists():
        return "NO-OUTPUT"
    text = out.read_text(errors="replace")
    if "++++ SKIPPING TEST" in text:
        return "SKIP"
    m = re.search(r"FINISHED TEST: (\w+)", text)
    return m.group(1) if m else "DIED"


def _run_one(copy: Path, test: str, env: dict[str, str]) -> tuple[float, str]:
    """One test through the suite's driver, in a fresh session, killed after :data:`TEST_TIMEOUT`.

    A test that waits for something that never happens (a key that is never
    destroyed) must not hang the run: its process group is killed and it has
    no FINISHED line, so it counts as died.
    """
    import signal

    start = time.monotonic()
    proc = subprocess.Popen(
        ["keyctl", "session", "-", "bash", "runtest.sh", test],
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=TEST_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n{test}: killed after {TEST_TIMEOUT} s\n"
    return time.monotonic() - start, out[-1500:] if result_of(copy / test) not in ("PASS", "SKIP") else ""


def run_suite(
    mode: str, only: list[str] | None = None, keep: Path | None = None, exclude: bool = True
) -> dict[str, object]:
    suite = fetch_suite()
    work = Path(tempfile.mkdtemp(prefix="kt-keyutils-"))
    try:
        copy = prepare_copy(suite, work)
        tests = only or list_tests(copy)
        excluded = {t: STORE_EXCLUDED[t] for t in tests if exclude and mode == "store" and t in STORE_EXCLUDED}
        run = [t for t in tests if t not in excluded]
        env = dict(os.environ)
        env["AUTOMATED"] = "1"
        env.pop("TEST", None)
        if mode != "real":
            bindir = work / "bin"
            keyctl_wrapper(bindir, mode)
            env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}"
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
            # Hundreds of short ktctl runs: compile the package once, into the run's own directory.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
            if mode == "store":
                env["KTCTL_BACKEND"] = "store"
                env["KEYRING_TYPES_HOME"] = str(work / "home")
                env["KEYRING_TYPES_STORE"] = str(work / "keys.db")
                (work / "home").mkdir(mode=0o700)
            else:
                env["KTCTL_BACKEND"] = "kernel"
        start = time.monotonic()
        seconds: dict[str, float] = {}
        tails: list[str] = []
        for test in run:
            seconds[test], tail = _run_one(copy, test, env)
            if tail:
                tails.append(tail)
        elapsed = time.monotonic() - start
        results = {t: result_of(copy / t) for t in run}
        if keep is not None:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(copy, keep)
        unexpected = {
            t: r
            for t, r in results.items()
            if not (r in ("PASS", "SKIP") or (r == "FAIL" and t in KNOWN_FAILURES))
        }
        return {
            "mode": mode,
            "seconds": round(elapsed, 1),
            "counts": {r: sum(1 for v in results.values() if v == r) for r in sorted(set(results.values()))},
            "results": results,
            "excluded": excluded,
            "known_failures": {t: KNOWN_FAILURES[t] for t in results if t in KNOWN_FAILURES},
            "unexpected": unexpected,
            "per_test_seconds": {t: round(v, 1) for t, v in seconds.items()},
            "driver_tail": "\n".join(tails)[-3000:] if unexpected else "",
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("real", "kernel", "store"))
    parser.add_argument("--json", metavar="FILE", help="write the results here as JSON")
    parser.add_argument("--only", nargs="+", metavar="TEST", help="run only these tests (e.g. keyctl/add/useradd)")
    parser.add_argument("--keep", metavar="DIR", help="copy the suite's directory with every test.out here")
    parser.add_argument("--no-exclude", action="store_true", help="run the tests excluded in store mode too (to recheck why)")
    args = parser.parse_args(argv)
    try:
        report = run_suite(args.mode, args.only, Path(args.keep) if args.keep else None, not args.no_exclude)
    except RuntimeError as exc:
        print(f"keyutils_suite: {exc}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    results: dict[str, str] = report["results"]  # type: ignore[assignment]
    for test, result in results.items():
        print(f"{result:9} {test}")
    for test, why in report["excluded"].items():  # type: ignore[attr-defined]
        print(f"{'EXCLUDED':9} {test}: {why}")
    counts = report["counts"]
    print(f"mode={args.mode} seconds={report['seconds']} " + " ".join(f"{k}={v}" for k, v in counts.items()))  # type: ignore[attr-defined]
    if report["unexpected"]:
        print("unexpected: " + ", ".join(f"{t} {r}" for t, r in report["unexpected"].items()), file=sys.stderr)  # type: ignore[attr-defined]
        print(report["driver_tail"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
