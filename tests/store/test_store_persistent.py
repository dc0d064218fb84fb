"""Persistent keyrings (keyctl get_persistent) and keyctl move on a store."""

from __future__ import annotations

import errno
from pathlib import Path

from conftest import errno_of, require

import keyring_types as kt


def test_the_persistent_keyring_and_its_keys_are_stored(store: Path) -> None:
    require(hasattr(kt.Keyspace, "get_persistent"), "keyctl get_persistent in the core (issue 13)")
    a = kt.Keyspace(store=store)
    ring = a.get_persistent(-1, "@s")  # type: ignore[attr-defined]
    k = a.add_key("user", "in-persistent", b"pp", ring)
    b = kt.Keyspace(store=store)
    assert b.get_persistent(-1, "@s").serial == ring.serial  # type: ignore[attr-defined]
    assert b.request_key("user", "in-persistent").read() == b"pp"
    assert a.store is not None and b.store is not None
    a.store.close()
    b.store.close()
    c = kt.Keyspace(store=store)
    assert c.get_persistent(-1, "@s").serial == ring.serial  # type: ignore[attr-defined]
    assert c.request_key("user", "in-persistent").serial == k.serial


def test_moving_a_key_out_of_the_stored_keyrings_takes_it_out_of_the_store(store: Path) -> None:
    require(hasattr(kt.Keyspace, "move"), "keyctl move in the core (issue 13)")
    a = kt.Keyspace(store=store)
    a.session.link(a.user_keyring)
    m = a.add_key("user", "mv", b"m", "@u")
    a.move(m, "@u", "@s")  # type: ignore[attr-defined]
    assert errno_of(lambda: kt.Keyspace(store=store).key(m.serial).describe()) == errno.ENOKEY
    assert a.key(m.serial).read() == b"m"
    a.move(m, "@s", "@u")  # type: ignore[attr-defined]
    assert kt.Keyspace(store=store).key(m.serial).describe().endswith(";mv")
