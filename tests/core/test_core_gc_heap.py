"""The GC heap keeps at most one live entry per key: repeated set_timeout cannot grow it."""

from __future__ import annotations

import errno

import pytest

import keyring_types as kt


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_set_timeout_many_times_keeps_heap_bounded() -> None:
    ks = kt.Keyspace()
    k = ks.add_key("user", "core:gc-heap", b"v", "@s")
    for i in range(20_000):
        k.set_timeout(1000 + (i % 7) * 10)
    assert len(ks._world.gc_heap) <= 2 * len(ks._world.keys) + 65


def test_decreasing_timeouts_keep_heap_bounded() -> None:
    ks = kt.Keyspace()
    k = ks.add_key("user", "core:gc-dec", b"v", "@s")
    for i in range(20_000):
        k.set_timeout(100_000 - i)
    assert len(ks._world.gc_heap) <= 2 * len(ks._world.keys) + 65


def test_lengthened_timeout_is_still_reaped_later() -> None:
    clock = FakeClock()
    ks = kt.Keyspace(clock=clock, gc_delay=10)
    k = ks.add_key("user", "core:gc-len", b"v", "@s")
    k.set_timeout(5)
    k.set_timeout(100)  # the earlier entry stays; the GC reschedules when it falls due
    clock.t += 50
    ks.gc()
    assert k.read() == b"v"
    clock.t += 51
    with pytest.raises(OSError) as info:
        k.read()
    assert info.value.errno == errno.EKEYEXPIRED
    clock.t += 10
    ks.gc()
    assert k.serial not in ks._world.keys


def test_shortened_timeout_is_reaped_at_the_earlier_time() -> None:
    clock = FakeClock()
    ks = kt.Keyspace(clock=clock, gc_delay=10)
    k = ks.add_key("user", "core:gc-short", b"v", "@s")
    k.set_timeout(1000)
    k.set_timeout(5)
    clock.t += 16
    ks.gc()
    assert k.serial not in ks._world.keys


def test_cleared_timeout_is_never_reaped() -> None:
    clock = FakeClock()
    ks = kt.Keyspace(clock=clock, gc_delay=10)
    k = ks.add_key("user", "core:gc-clear", b"v", "@s")
    k.set_timeout(5)
    k.set_timeout(0)
    clock.t += 1000
    ks.gc()
    assert k.read() == b"v" and not ks._world.gc_heap
