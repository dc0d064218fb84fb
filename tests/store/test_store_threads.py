"""Threads of one process share a store-backed Keyspace; a thread keyring's release waits for the next operation."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import keyring_types as kt


def test_threads_adding_at_once_lose_nothing(store: Path) -> None:
    ks = kt.Keyspace(store=store)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(10):
                ks.add_key("user", f"t{t}.{i}", b"v", "@u")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    fresh = kt.Keyspace(store=store)
    fresh.session.link(fresh.user_keyring)
    assert {k.description for k in fresh.user_keyring.keys()} == {f"t{t}.{i}" for t in range(4) for i in range(10)}


def test_a_thread_keyring_is_released_by_the_next_operation(store: Path) -> None:
    ks = kt.Keyspace(store=store)
    made: list[int] = []

    def work() -> None:
        made.append(ks.add_key("user", "in-thread", b"t", "@t").serial)

    th = threading.Thread(target=work)
    th.start()
    th.join()
    del th
    gc.collect()  # the thread's @t is released (deferred: the finaliser takes no transaction)
    ks.add_key("user", "next", b"n", "@u")  # the next operation applies the release
    assert ks.store is not None
    assert all(not line.startswith(f"{made[0]:08x}") for line in ks.proc_keys())
