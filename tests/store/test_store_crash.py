"""kill -9 in the middle of writes: nothing committed is lost, nothing is half-linked,
and the file stays sound.  A short run in the normal suite, 1000 kills under ``-m slow``."""

from __future__ import annotations

import os
import random
import select
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types.trust import registry

sys.path.insert(0, str(Path(__file__).parent))
from store_proc import check_store_file, crash_writer


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEYRING_TYPES_TRUST_SOURCE", "host")
    registry.clear_cache()
    yield tmp_path
    registry.clear_cache()


def _run_and_kill(store: Path, seed: int, rng: random.Random) -> str:
    """Fork a writer, let it commit for a random while, SIGKILL it; everything it reported."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write until killed, never return into pytest
        code = 1
        try:
            os.close(r)
            crash_writer(str(store), seed, w)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    out = b""
    # Wait for the first commit (the child opens the store first), then a random while.
    deadline = time.monotonic() + 30
    while b"\n" not in out and time.monotonic() < deadline:
        if select.select([r], [], [], 0.5)[0]:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            out += chunk
    time.sleep(rng.uniform(0, 0.04))
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), "the writer died before it was killed"
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    return out.decode()


def _verify(store: Path, report: str, ks: kt.Keyspace) -> None:
    problems = check_store_file(str(store))
    assert not problems, problems
    added: dict[int, str] = {}
    doubtful: set[int] = set()
    lines = report.split("\n")
    # The last line may be cut short by the kill: only whole lines count.
    for line in lines[:-1]:
        if line.startswith("+"):
            serial, desc = line[1:].split(" ")
            added[int(serial)] = desc
        elif line.startswith("~"):
            doubtful.add(int(line[1:]))
    for serial, desc in added.items():
        if serial in doubtful:
            continue
        # Every key whose add was reported committed is there, with a payload it had.
        assert ks.key(serial).read() in (desc.encode() * 3, b"updated" * 3), serial


def crash_loop(base: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    store = base / "st" / "keys.db"
    ks: kt.Keyspace | None = None
    for i in range(kills):
        if i % 100 == 0:
            # A fresh store now and then keeps each check small.
            store = base / f"st{i}" / "keys.db"
            ks = None
        report = _run_and_kill(store, seed * 100_000 + i, rng)
        if ks is None:
            ks = kt.Keyspace(store=store)
            ks.session.link(ks.user_keyring)
        _verify(store, report, ks)
    assert ks is not None and ks.store is not None
    assert ks.store.integrity_check() == "ok"


def test_kill_9_during_writes_loses_nothing_committed(home: Path) -> None:
    crash_loop(home, 25, seed=1)


@pytest.mark.slow
def test_kill_9_a_thousand_times(home: Path) -> None:
    crash_loop(home, 1000, seed=2)
