"""Crash safety of the emulated RPMB device: after kill -9 at any point a write is wholly
there with its counter or wholly absent, and the counter never goes back.

Deterministic: the emulator kills itself at each named step of a write (``--crash-at``).
Random: a loop kills it at random moments while a client writes; 8 kills in the normal
suite, 500 under ``-m slow``.
"""

from __future__ import annotations

import errno
import random
import struct
import threading
import time
from pathlib import Path

import pytest
from conftest import errno_of
from rpmb_util import Emulator, emulator

from keyring_types.rpmb import RpmbDevice
from keyring_types.rpmb.emulator_store import SLOTS

KEY = bytes(range(50, 82))
REGION = 100  # first block of the 8-block region every write covers
BLOCKS = 8


def tagged(counter: int) -> bytes:
    """The data of the write that leaves the counter at ``counter``: every block says so."""
    return struct.pack(">I", counter) * (64 * BLOCKS)


def check_whole(dev: RpmbDevice) -> int:
    """The counter, after checking that the region holds exactly the write that set it."""
    c = dev.counter(KEY)
    data = dev.read_blocks(REGION, BLOCKS, KEY)
    assert data == (tagged(c) if c else bytes(256 * BLOCKS)), f"torn or stale region at counter {c}"
    return c


@pytest.mark.parametrize(
    ("stage", "writes_before", "kept"),
    [("journal-torn", 0, False), ("journal-synced", 0, True), ("image-written", 0, True), ("checkpoint-tmp", SLOTS, False)],
)
def test_crash_at_each_step_of_a_write(tdir: Path, stage: str, writes_before: int, kept: bool) -> None:
    with emulator(tdir, "--crash-at", stage) as e:
        with RpmbDevice.open(e.sock) as d:
            d.program_key(KEY, confirm=True)
            for i in range(writes_before):
                assert d.write_blocks(REGION, tagged(i + 1), KEY) == i + 1
            assert errno_of(d.write_blocks, REGION, tagged(writes_before + 1), KEY) == errno.ECONNRESET
        assert e.proc is not None and e.proc.wait(10) == -9
        e.args = ()
        e.start()
        with RpmbDevice.open(e.sock) as d:
            assert check_whole(d) == writes_before + (1 if kept else 0)
            # And the device goes on from there.
            c = d.counter(KEY)
            assert d.write_blocks(REGION, tagged(c + 1), KEY) == c + 1
            assert check_whole(d) == c + 1


def test_crash_before_the_key_is_stored(tdir: Path) -> None:
    with emulator(tdir, "--crash-at", "key-before") as e:
        with RpmbDevice.open(e.sock) as d:
            assert errno_of(d.program_key, KEY, confirm=True) == errno.ECONNRESET
        assert e.proc is not None and e.proc.wait(10) == -9
        e.args = ()
        e.start()
        with RpmbDevice.open(e.sock) as d:
            assert errno_of(d.counter, KEY) == errno.ENOKEY
            d.program_key(KEY, confirm=True)
            assert d.counter(KEY) == 0


def kill_loop(d: Path, kills: int, seed: int) -> dict[str, int]:
    """Write tagged regions while killing the emulator at random; check after every restart."""
    rng = random.Random(seed)
    acked = 0
    stats = {"kills": 0, "unacknowledged_kept": 0, "writes": 0}
    with emulator(d, "--max-write-blocks", str(BLOCKS)) as e:
        with RpmbDevice.open(e.sock) as dev:
            dev.program_key(KEY, confirm=True)
        for _ in range(kills):
            assert isinstance(e, Emulator) and e.proc is not None
            proc = e.proc
            delay = rng.uniform(0.0, 0.04)
            killer = threading.Timer(delay, proc.kill)
            killer.start()
            try:
                with RpmbDevice.open(e.sock, timeout=10) as dev:
                    while True:
                        acked = dev.write_blocks(REGION, tagged(acked + 1), KEY)
                        stats["writes"] += 1
            except OSError as exc:
                # Killed mid-call (or before the connection): an errno, not a hang.
                assert exc.errno in (errno.ECONNRESET, errno.ECONNREFUSED, errno.ENOENT), exc
            finally:
                killer.join()
            proc.wait(10)
            stats["kills"] += 1
            e.start()
            with RpmbDevice.open(e.sock) as dev:
                c = check_whole(dev)
            assert c in (acked, acked + 1), f"counter {c} after {acked} acknowledged writes"
            stats["unacknowledged_kept"] += c - acked
            acked = c
    return stats


def test_kill_loop_short(tdir: Path) -> None:
    stats = kill_loop(tdir, 8, seed=18)
    assert stats["kills"] == 8


@pytest.mark.slow
def test_kill_loop_500(tdir: Path) -> None:
    t = time.monotonic()
    stats = kill_loop(tdir, 500, seed=int(t))
    print(f"kill loop: {stats} in {time.monotonic() - t:.0f} s")
    assert stats["kills"] == 500
    assert stats["writes"] > 500  # the kills landed while writes were going on
