"""keyutils' own test suite, run with ``ktctl`` first on PATH as ``keyctl`` (tests/cli/keyutils_suite.py).

* kernel mode (``ktctl --kernel``): every test the real keyctl passes on this
  machine passes (:data:`REAL_KEYCTL_HERE`; the slow test checks that record
  against /bin/keyctl itself);
* store mode (``ktctl`` on a fresh store): every test not excluded for a stated
  reason (``keyutils_suite.STORE_EXCLUDED``) passes, or is skipped by the suite
  itself for the same reason it skips with the real keyctl.

The suite is fetched with ``apt-get source keyutils`` at test time (cached
afterwards); it needs root (some tests do), the kernel keyring, apt-get and
dpkg-source.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keyutils_suite
from conftest import kernel_keyring_reachable, require

#: The real keyctl 1.6.3 on this kernel (6.x without DH, key notifications or
#: .secondary_trusted_keys, without SELinux), with the have_move_key fix:
#: 77 PASS, 1 FAIL, 5 skipped by the suite itself.
REAL_SKIPS = {
    "bugzillas/bz1031154": "no SELinux",
    "keyctl/dh_compute/bad-args": "kernel without KEYCTL_DH_COMPUTE",
    "keyctl/dh_compute/noargs": "kernel without KEYCTL_DH_COMPUTE",
    "keyctl/dh_compute/valid": "kernel without KEYCTL_DH_COMPUTE",
    "keyctl/watch/bad-args": "kernel without key notifications",
}


def _need_suite_prerequisites() -> None:
    require(os.geteuid() == 0, "root (keyutils' suite has tests that need it)")
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    require(shutil.which("apt-get") is not None and shutil.which("dpkg-source") is not None, "apt-get and dpkg-source")
    require(shutil.which("keyctl") is not None, "keyctl (Debian package keyutils): the outer session")


class _Runs:
    """The kernel and store runs, started together on first use (two cores, half the wait).

    They share nothing but the machine: each test runs in a fresh session
    keyring, the store run in a private store and state directory.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[str, concurrent.futures.Future[dict[str, object]]] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)

    def get(self, mode: str) -> dict[str, object]:
        _need_suite_prerequisites()
        with self._lock:
            if not self._futures:
                try:  # fetched (or found in the cache) once, before both start
                    keyutils_suite.fetch_suite()
                except RuntimeError as exc:
                    require(False, f"keyutils' test suite ({exc})")
                for m in ("kernel", "store"):
                    self._futures[m] = self._pool.submit(keyutils_suite.run_suite, m)
        return self._futures[mode].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def runs() -> Iterator[_Runs]:
    r = _Runs()
    yield r
    r.close()


def _suite(mode: str) -> dict[str, object]:
    _need_suite_prerequisites()
    try:
        return keyutils_suite.run_suite(mode)
    except RuntimeError as exc:
        require(False, f"keyutils' test suite ({exc})")
        raise


def _expected_real(tests: list[str]) -> dict[str, str]:
    return {
        t: "SKIP" if t in REAL_SKIPS else "FAIL" if t in keyutils_suite.KNOWN_FAILURES else "PASS" for t in tests
    }


@pytest.mark.kernel
@pytest.mark.root
def test_kernel_mode_passes_what_keyctl_passes(runs: _Runs) -> None:
    report = runs.get("kernel")
    results: dict[str, str] = report["results"]  # type: ignore[assignment]
    expected = _expected_real(list(results))
    wrong = {t: (results[t], want) for t, want in expected.items() if want == "PASS" and results[t] != "PASS"}
    assert not wrong, f"ktctl --kernel (got, keyctl's): {wrong}\n{report['driver_tail']}"
    assert len(results) == 83, sorted(results)
    assert sum(1 for r in results.values() if r == "PASS") >= 77


@pytest.mark.kernel
@pytest.mark.root
def test_store_mode_passes_what_the_store_implements(runs: _Runs) -> None:
    report = runs.get("store")
    results: dict[str, str] = report["results"]  # type: ignore[assignment]
    excluded: dict[str, str] = report["excluded"]  # type: ignore[assignment]
    assert set(excluded) == set(keyutils_suite.STORE_EXCLUDED), "every exclusion is listed with its reason"
    assert all(reason for reason in excluded.values())
    bad = {t: r for t, r in results.items() if not (r == "PASS" or (r == "SKIP" and t in REAL_SKIPS))}
    assert not bad, f"store mode: {bad}\n{report['driver_tail']}"
    assert len(results) + len(excluded) == 83


@pytest.mark.slow
@pytest.mark.kernel
@pytest.mark.root
def test_real_keyctl_baseline_is_what_this_machine_gives() -> None:
    """The record above, checked against /bin/keyctl (a slow run: the suite takes ~2 minutes)."""
    report = _suite("real")
    results: dict[str, str] = report["results"]  # type: ignore[assignment]
    assert results == _expected_real(list(results))
