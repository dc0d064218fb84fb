"""Keyring restrictions in the store: set in one process, honoured by every other and after a restart."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from asym_certs import ca_cert, leaf_cert
from store_proc import downgrade_to_restrictions_schema_2, downgrade_to_schema_1
from test_store_processes import Peer

import keyring_types as kt
from keyring_types.store import db
from keyring_types.store.world import F_RESTRICTED


@pytest.fixture
def peers(store: Path) -> Iterator[tuple[Peer, Peer]]:
    a, b = Peer(store), Peer(store)
    yield a, b
    a.close()
    b.close()


def _errno(fn: object, *args: object, **kw: object) -> int:
    with pytest.raises(OSError) as info:
        fn(*args, **kw)  # type: ignore[operator]
    assert info.value.errno is not None
    return info.value.errno


def _open(store: Path) -> kt.Keyspace:
    ks = kt.Keyspace(store=store)
    ks.session.link(ks.user_keyring)
    return ks


def test_a_reject_all_restriction_reaches_the_other_process(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    ring = a("add", type="keyring", desc="locked", payload=None)
    inside = a("add", type="user", desc="in", payload=b"1".hex(), ring=ring)
    outside = a("add", type="user", desc="out", payload=b"1".hex())
    assert b("describe", key=ring).endswith(";locked")  # b has the keyring loaded, unrestricted
    a("restrict", ring=ring)
    # b's next operation sees the restriction: a second one is EEXIST, as on the kernel ...
    assert _errno(b, "restrict", ring=ring) == errno.EEXIST
    assert _errno(b, "restrict", ring=ring, type="asymmetric", restriction="builtin_trusted") == errno.EEXIST
    # ... and every new link is refused with EPERM, an update of a key already there too.
    assert _errno(b, "add", type="user", desc="new", payload=b"1".hex(), ring=ring) == errno.EPERM
    assert _errno(b, "add", type="user", desc="in", payload=b"2".hex(), ring=ring) == errno.EPERM
    assert _errno(b, "link", ring=ring, key=outside) == errno.EPERM
    assert bytes.fromhex(b("read", key=inside)) == b"1"
    b("unlink", ring=ring, key=inside)  # unlinking is not restricted
    assert _errno(a, "link", ring=ring, key=outside) == errno.EPERM
    assert _errno(a, "restrict", ring=ring) == errno.EEXIST


def test_a_restriction_by_serial_keeps_its_key_across_a_restart(store: Path) -> None:
    a = _open(store)
    ca = a.add_key("asymmetric", None, ca_cert(), "@u")
    ring = a.add_key("keyring", "signed-only", None, "@u")
    ring.restrict("asymmetric", f"key_or_keyring:{ca.serial}")
    # No keyring links the CA key any more: the restriction alone holds it, in the file too.
    a.user_keyring.unlink(ca)
    a.store.close()

    b = _open(store)
    rb = b.keyring(ring.serial)
    assert b.key(ca.serial).describe().startswith("asymmetric;")
    assert b.add_key("asymmetric", None, leaf_cert(), rb).description.startswith("Leaf Ltd: leaf signing key: ")
    assert _errno(b.add_key, "asymmetric", None, leaf_cert("l2", "ca2"), rb) == errno.ENOKEY  # another CA's
    assert _errno(b.add_key, "user", "u", b"1", rb) == errno.EOPNOTSUPP
    assert _errno(rb.restrict) == errno.EEXIST
    # The keyring goes, and with it the hold: the CA key leaves the store.
    b.user_keyring.unlink(rb)
    b.store.close()

    c = _open(store)
    assert _errno(lambda: c.key(ca.serial).describe()) == errno.ENOKEY
    assert _errno(lambda: c.key(ring.serial).describe()) == errno.ENOKEY
    c.store.close()
    conn = sqlite3.connect(store)
    try:
        assert conn.execute("SELECT count(*) FROM restrictions").fetchone()[0] == 0
    finally:
        conn.close()


def test_a_process_only_key_named_by_the_restriction_becomes_stored(store: Path) -> None:
    a = _open(store)
    ca = a.add_key("asymmetric", None, ca_cert(), "@p")  # this process's only
    ring = a.add_key("keyring", "r", None, "@u")
    ring.restrict("asymmetric", f"key_or_keyring:{ca.serial}")
    b = _open(store)
    assert b.add_key("asymmetric", None, leaf_cert(), ring.serial)
    assert b.key(ca.serial).describe().startswith("asymmetric;")
    a.store.close()
    b.store.close()


def test_a_restriction_made_in_the_process_is_stored_when_its_keyring_is(store: Path) -> None:
    a = _open(store)
    ca = a.add_key("asymmetric", None, ca_cert(), "@s")
    ring = a.add_key("keyring", "r", None, "@p")  # not stored yet
    ring.restrict("asymmetric", f"key_or_keyring:{ca.serial}:chain")
    a.user_keyring.link(ring)  # now the keyring, its restriction and the CA key are
    a.session.unlink(ca)
    b = _open(store)
    rb = b.keyring(ring.serial)
    assert _errno(rb.restrict) == errno.EEXIST
    assert b.add_key("asymmetric", None, leaf_cert(), rb)
    a.store.close()
    b.store.close()


def test_a_revoked_trusted_key_answers_ekeyrevoked_in_every_process(store: Path) -> None:
    a = _open(store)
    ca = a.add_key("asymmetric", None, ca_cert(), "@u")
    ring = a.add_key("keyring", "r", None, "@u")
    ring.restrict("asymmetric", f"key_or_keyring:{ca.serial}")
    ca.revoke()
    b = _open(store)
    assert _errno(b.add_key, "asymmetric", None, leaf_cert(), b.keyring(ring.serial)) == errno.EKEYREVOKED
    a.store.close()
    b.store.close()


def test_failed_restricts_write_nothing(store: Path) -> None:
    a = _open(store)
    ring = a.add_key("keyring", "r", None, "@u")
    user = a.add_key("user", "u", b"x", "@u")
    assert _errno(ring.restrict, "asymmetric", "key_or_keyring:12345") == errno.ENOKEY
    assert _errno(ring.restrict, "asymmetric", "nonsense") == errno.EINVAL
    assert _errno(ring.restrict, "user", "x") == errno.ENOENT
    assert _errno(a.sys_restrict_keyring, user.serial, None, None) == errno.ENOTDIR
    b = _open(store)
    rb = b.keyring(ring.serial)
    assert b.add_key("user", "ok", b"1", rb)  # still unrestricted
    rb.restrict()
    assert _errno(ring.restrict) == errno.EEXIST  # the first process sees the one that took
    a.store.close()
    b.store.close()
    conn = sqlite3.connect(store)
    try:
        rows = conn.execute("SELECT serial, type, restriction FROM restrictions").fetchall()
        flags = conn.execute("SELECT flags FROM keys WHERE serial = ?", (ring.serial,)).fetchone()[0]
    finally:
        conn.close()
    assert rows == [(ring.serial, None, None)]
    assert flags & F_RESTRICTED


def test_a_restriction_this_process_cannot_check_refuses_every_link(store: Path) -> None:
    a = _open(store)
    ring = a.add_key("keyring", "r", None, "@u")
    ring.restrict("asymmetric", "builtin_trusted")
    a.store.close()
    # As if written by a process with a key type not registered here.
    conn = sqlite3.connect(store)
    try:
        with conn:
            conn.execute("UPDATE restrictions SET type = 'no-such-type' WHERE serial = ?", (ring.serial,))
    finally:
        conn.close()
    b = _open(store)
    rb = b.keyring(ring.serial)
    assert _errno(b.add_key, "user", "u", b"1", rb) == errno.EPERM
    assert _errno(b.add_key, "asymmetric", None, leaf_cert(), rb) == errno.EPERM
    assert _errno(rb.restrict) == errno.EEXIST
    b.store.close()


def test_a_version_1_store_is_migrated_and_keeps_its_keys(store: Path) -> None:
    a = _open(store)
    key = a.add_key("user", "old", b"kept", "@u")
    ring = a.add_key("keyring", "r", None, "@u")
    a.store.close()
    downgrade_to_schema_1(store)  # as the library of schema 1 left it: no restrictions table
    b = _open(store)
    assert b.key(key.serial).read() == b"kept"
    b.keyring(ring.serial).restrict()
    assert _errno(b.add_key, "user", "x", b"1", ring.serial) == errno.EPERM
    b.store.close()
    conn = sqlite3.connect(store)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == 3
        assert conn.execute("SELECT serial FROM restrictions").fetchall() == [(ring.serial,)]
    finally:
        conn.close()
    c = _open(store)
    assert _errno(c.keyring(ring.serial).restrict) == errno.EEXIST
    c.store.close()


def test_a_store_of_the_restrictions_only_schema_2_is_upgraded(store: Path) -> None:
    # Both branches merged into this schema called theirs 2; files of the one that
    # kept the schema-1 keys table and added restrictions must still open and upgrade.
    a = _open(store)
    key = a.add_key("user", "old", b"kept", "@u")
    ring = a.add_key("keyring", "r", None, "@u")
    ring.restrict()
    a.store.close()
    downgrade_to_restrictions_schema_2(store)
    b = _open(store)
    assert b.key(key.serial).read() == b"kept"
    assert _errno(b.add_key, "user", "x", b"1", ring.serial) == errno.EPERM
    added = b.add_key("user", "after", b"after the upgrade", "@u")
    b.store.close()
    conn = sqlite3.connect(store)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'keys_gen'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM keys WHERE ver != (gen << 31) | serial").fetchone()[0] == 0
    finally:
        conn.close()
    c = _open(store)
    assert c.key(added.serial).read() == b"after the upgrade"
    assert _errno(c.keyring(ring.serial).restrict) == errno.EEXIST
    c.store.close()


def _live_serials(store: Path) -> set[int]:
    conn = sqlite3.connect(store)
    try:
        return {s for (s,) in conn.execute("SELECT serial FROM keys WHERE NOT flags & 128")}
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["invalidate", "unlink"])
def test_the_key_a_restriction_held_leaves_the_store_with_its_keyring(store: Path, how: str) -> None:
    # The keyring is destroyed (its restriction released) before its row is dropped:
    # the key only its restriction kept stored must go too, not stay charged forever.
    a = _open(store)
    ca = a.add_key("asymmetric", None, ca_cert(), "@s")
    ring = a.add_key("keyring", "r", None, "@u")
    ring.restrict("asymmetric", f"key_or_keyring:{ca.serial}")
    a.session.unlink(ca)
    assert ca.serial in _live_serials(store)
    if how == "invalidate":
        ring.invalidate()
    else:
        a.user_keyring.unlink(ring)
    b = _open(store)
    assert _errno(lambda: b.key(ca.serial).describe()) == errno.ENOKEY
    a.store.close()
    b.store.close()
    assert not {ca.serial, ring.serial} & _live_serials(store)


def test_a_store_of_the_ver_ordered_schema_2_gets_its_restrictions_table(store: Path) -> None:
    # The other schema 2: the keys table ordered by ver, no restrictions table.
    a = _open(store)
    key = a.add_key("user", "old", b"kept", "@u")
    ring = a.add_key("keyring", "r", None, "@u")
    a.store.close()
    conn = sqlite3.connect(store, isolation_level=None)
    try:
        conn.execute("DROP TABLE restrictions")
        conn.execute("PRAGMA user_version=2")
    finally:
        conn.close()
    b = _open(store)
    assert b.key(key.serial).read() == b"kept"
    b.keyring(ring.serial).restrict()
    b.store.close()
    c = _open(store)
    assert _errno(c.add_key, "user", "x", b"1", ring.serial) == errno.EPERM
    c.store.close()
