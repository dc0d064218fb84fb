"""A key under construction by a request-key upcall, seen from another process on the store.

Process A requests a key whose handler builds it; the key lands in the stored
``@u``.  Process B (the test) looks for it meanwhile: it must see it under
construction and wait, then see the outcome, and when A dies mid-construction
B negates it for the kernel's negative timeout, as the kernel does when
/sbin/request-key exits without building the key.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types.constants import KEY_REQKEY_DEFL_USER_KEYRING
from keyring_types.core.request_key import NEGATIVE_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent.parent

# Process A: requests user key "xp:<name>" into the stored @u; its handler either
# dies at once (os._exit) or says so, sleeps, and then builds the key.
_PEER = """
import os, sys, time
import keyring_types as kt
from keyring_types.constants import KEY_REQKEY_DEFL_USER_KEYRING

store, mode, name = sys.argv[1], sys.argv[2], sys.argv[3]
ks = kt.Keyspace(store=store)
ks.session.link(ks.user_keyring)
ks.set_reqkey_keyring(KEY_REQKEY_DEFL_USER_KEYRING)

def handler(req):
    print("constructing", flush=True)
    if mode == "exit":
        os._exit(3)
    if mode.startswith("exit-after-"):
        time.sleep(float(mode[11:]))
        os._exit(3)
    if mode == "reject":
        time.sleep(0.5)
        req.keyspace.reject(req.key, 30, 129, 0)  # EKEYREJECTED for 30 s
        return
    time.sleep(float(mode))
    req.keyspace.instantiate(req.key, b"built by A", 0)

kt.register_request_key_handler("user", "xp:*", handler)
try:
    key = ks.request_key("user", "xp:" + name, "info")
except OSError as exc:
    print("failed", exc.errno, flush=True)
else:
    print("done", key.read().decode(), flush=True)
"""


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _close_peers() -> Iterator[None]:
    """Each test's peer processes are gone, and their pipes closed, when it ends."""
    yield
    while _started:
        peer = _started.pop()
        if peer.poll() is None:
            peer.kill()
            peer.wait()
        if peer.stdout is not None:
            peer.stdout.close()


def _start(store: Path, mode: str, name: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    peer = subprocess.Popen(
        [sys.executable, "-c", _PEER, str(store), mode, name],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    _started.append(peer)
    return peer


def _wait_constructing(peer: subprocess.Popen[str]) -> None:
    assert peer.stdout is not None
    line = peer.stdout.readline()
    assert line == "constructing\n", line


class _Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _keyspace(store: Path, clock: _Clock | None = None) -> kt.Keyspace:
    ks = kt.Keyspace(store=store, clock=clock or time.time)
    ks.session.link(ks.user_keyring)
    ks.set_reqkey_keyring(KEY_REQKEY_DEFL_USER_KEYRING)
    return ks


def test_constructor_dies_then_negative_for_the_timeout(store: Path) -> None:
    a = _start(store, "exit", "dies")
    _wait_constructing(a)
    assert a.wait(10) == 3
    clock = _Clock()
    b = _keyspace(store, clock)
    with pytest.raises(OSError) as info:
        b.request_key("user", "xp:dies")
    assert info.value.errno == errno.ENOKEY
    # Negated by B, as the kernel negates a key its helper did not build: N in
    # /proc/keys, expiring NEGATIVE_TIMEOUT seconds from the moment B looked.
    (rec,) = [r for r in b._world.keys.values() if r.description == "xp:dies"]
    assert rec.upcall == errno.ENOKEY
    assert abs(rec.expiry - (time.time() + NEGATIVE_TIMEOUT)) <= 5
    # The outcome is in the store: a third process sees the negative key too.
    c = _keyspace(store)
    with pytest.raises(OSError) as info:
        c.request_key("user", "xp:dies", "info")
    assert info.value.errno == errno.ENOKEY
    # Once the negative key has expired, the key can be requested (and built) again.
    clock.offset = NEGATIVE_TIMEOUT + 1

    def build(req: kt.UpcallRequest) -> None:
        req.keyspace.instantiate(req.key, b"second try", 0)

    kt.register_request_key_handler("user", "xp:dies", build)
    try:
        assert b.request_key("user", "xp:dies", "info").read() == b"second try"
    finally:
        kt.unregister_request_key_handler("user", "xp:dies")


def test_other_process_waits_for_the_build(store: Path) -> None:
    a = _start(store, "1.0", "slow")
    try:
        _wait_constructing(a)
        b = _keyspace(store)
        started = time.monotonic()
        key = b.request_key("user", "xp:slow")  # no callout: finds A's key and waits
        waited = time.monotonic() - started
        assert key.read() == b"built by A"
        assert waited > 0.3, waited  # it did wait for A's handler
        assert a.stdout is not None
        assert a.stdout.readline() == "done built by A\n"
    finally:
        assert a.wait(10) == 0


def test_reviewers_scenario_does_not_crash(store: Path) -> None:
    # A's handler dies; B requests (with callout) and reads: no AttributeError,
    # the kernel's ENOKEY, and the row does not stay half-built.
    a = _start(store, "exit", "review")
    _wait_constructing(a)
    a.wait(10)
    b = _keyspace(store)
    for _ in range(2):
        with pytest.raises(OSError) as info:
            b.request_key("user", "xp:review", "info").read()
        assert info.value.errno == errno.ENOKEY
    c = _keyspace(store)
    (rec,) = [r for r in c._world.keys.values() if r.description == "xp:review"]
    assert rec.upcall == errno.ENOKEY and rec.instantiated


def test_other_process_sees_the_rejection(store: Path) -> None:
    a = _start(store, "reject", "rejected")
    try:
        _wait_constructing(a)
        b = _keyspace(store)
        with pytest.raises(OSError) as info:
            b.request_key("user", "xp:rejected")
        assert info.value.errno == errno.EKEYREJECTED
        (rec,) = [r for r in b._world.keys.values() if r.description == "xp:rejected"]
        assert abs(rec.expiry - (time.time() + 30)) <= 5
        assert a.stdout is not None
        assert a.stdout.readline() == f"failed {errno.EKEYREJECTED}\n"  # its own requester too
    finally:
        assert a.wait(10) == 0


def test_partial_lookups_see_it_under_construction(store: Path) -> None:
    a = _start(store, "1.0", "partial")
    try:
        _wait_constructing(a)
        b = _keyspace(store)
        (rec,) = [r for r in b._world.keys.values() if r.description == "xp:partial"]
        key = b.key(rec.serial)
        # describe takes a key under construction as it is (KEY_LOOKUP_PARTIAL) ...
        assert key.describe().endswith(";xp:partial")
        # ... read waits for the outcome.
        assert key.read() == b"built by A"
    finally:
        assert a.wait(10) == 0


def test_constructor_dies_while_another_waits(store: Path) -> None:
    # B is already waiting when A dies (A stays a zombie meanwhile: not reaped by us).
    a = _start(store, "exit-after-0.5", "midway")
    _wait_constructing(a)
    b = _keyspace(store)
    with pytest.raises(OSError) as info:
        b.request_key("user", "xp:midway")
    assert info.value.errno == errno.ENOKEY
    assert a.wait(10) == 3


def test_half_built_row_of_an_older_writer_is_negated(store: Path) -> None:
    # A row as the library wrote it before builders were recorded: uninstantiated,
    # no payload, no U flag and no tag.
    a = _start(store, "exit", "old")
    _wait_constructing(a)
    a.wait(10)
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE keys SET flags = flags & ~0x100000")
        conn.execute("DELETE FROM meta WHERE k LIKE 'uc.%'")
    conn.close()
    b = _keyspace(store)
    with pytest.raises(OSError) as info:
        b.request_key("user", "xp:old", "info")
    assert info.value.errno == errno.ENOKEY


def test_uninstantiated_key_reads_as_eio_not_a_crash() -> None:
    # Defensive: a key left uninstantiated (no payload) answers EIO, as the kernel's
    # lookup_user_key does, instead of the type's read failing on a missing payload.
    ks = kt.Keyspace()
    key = ks.add_key("user", "half", b"x", "@s")
    rec = ks._world.keys[key.serial]
    rec.instantiated = False
    rec.payload = None
    with pytest.raises(OSError) as info:
        key.read()
    assert info.value.errno == errno.EIO
    with pytest.raises(OSError) as info, key.secret():
        pass
    assert info.value.errno == errno.EIO


class _Interrupted(Exception):
    pass


def _interrupt(signum: int, frame: object) -> None:
    raise _Interrupted


def test_wait_is_interruptible(store: Path) -> None:
    # The kernel's wait is interruptible and unbounded: a signal ends it, and the
    # keyspace is left usable (its lock not left half-held).
    a = _start(store, "1.5", "interrupted")
    old = signal.signal(signal.SIGALRM, _interrupt)
    try:
        _wait_constructing(a)
        b = _keyspace(store)
        (rec,) = [r for r in b._world.keys.values() if r.description == "xp:interrupted"]
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(_Interrupted):
            b.request_key("user", "xp:interrupted")
        assert b.key(rec.serial).describe().endswith(";xp:interrupted")
        assert b.request_key("user", "xp:interrupted").read() == b"built by A"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        assert a.wait(10) == 0
