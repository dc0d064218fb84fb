"""A thread keyring lives as long as its thread: released at exit, never inherited by a reused ident."""

from __future__ import annotations

import errno
import threading

import pytest

import keyring_types as kt


def _in_thread(fn):  # type: ignore[no-untyped-def]
    out: dict[str, object] = {}

    def run() -> None:
        out["ident"] = threading.get_ident()
        try:
            out["value"] = fn()
        except OSError as exc:
            out["errno"] = exc.errno

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out


def test_thread_keyring_is_released_when_its_thread_ends() -> None:
    ks = kt.Keyspace()

    def make() -> tuple[int, int]:
        ring = ks.keyring("@t", create=True)
        key = ks.add_key("user", "core:tkey", b"t", ring)
        return ring.serial, key.serial

    out = _in_thread(make)
    ring_serial, key_serial = out["value"]  # type: ignore[misc]
    ks.session.keys()  # any operation applies releases deferred while the world was busy
    assert ring_serial not in ks._world.keys
    assert key_serial not in ks._world.keys
    with pytest.raises(OSError) as info:
        ks.key(key_serial)
    assert info.value.errno == errno.ENOKEY


def test_a_thread_with_a_reused_ident_does_not_possess_the_old_thread_keyring() -> None:
    ks = kt.Keyspace()

    def make() -> int:
        ring = ks.keyring("@t", create=True)
        ks.add_key("user", "core:tsecret", b"t", ring)
        return ring.serial

    first = _in_thread(make)
    # Threads run one after another usually get the same ident back; try a few.
    for _ in range(50):
        later = _in_thread(lambda: ks.request_key("user", "core:tsecret").serial)
        if later["ident"] == first["ident"]:
            break
    else:
        pytest.skip("no thread ident was reused")
    assert later.get("errno") == errno.ENOKEY, later
    again = _in_thread(lambda: ks.keyring("@t").serial)
    assert again.get("errno") == errno.ENOKEY


def test_thread_keyring_linked_elsewhere_survives_its_thread() -> None:
    ks = kt.Keyspace()

    def make() -> int:
        ring = ks.keyring("@t", create=True)
        ks.session.link(ring)
        return ring.serial

    serial = _in_thread(make)["value"]
    assert ks.key(serial).serial == serial  # still linked in the session, so alive
    assert serial in ks.session


def test_thread_keyring_is_per_thread_while_the_thread_lives() -> None:
    ks = kt.Keyspace()
    mine = ks.keyring("@t", create=True)
    other = _in_thread(lambda: ks.keyring("@t", create=True).serial)["value"]
    assert other != mine.serial
    assert ks.keyring("@t").serial == mine.serial
