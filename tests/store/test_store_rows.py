"""The rows of the keys table: ordered by generation, rewritten in place, upgraded from schema 1."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest
from store_proc import check_store_file, downgrade_to_schema_1

import keyring_types as kt
from keyring_types.store import db


def _open(path: Path) -> kt.Keyspace:
    ks = kt.Keyspace(store=path)
    ks.session.link(ks.user_keyring)  # possess @u, so its keys read back
    return ks


def _errno(fn: object) -> int | None:
    try:
        fn()  # type: ignore[operator]
    except OSError as exc:
        return exc.errno
    return None


def _live_rows(path: Path) -> list[tuple[int, int, int]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT serial, gen, ver FROM keys WHERE NOT flags & 128 ORDER BY ver").fetchall()
    finally:
        conn.close()


def test_a_schema_1_store_is_upgraded_when_opened(store: Path) -> None:
    ks = _open(store)
    ring = ks.add_key("keyring", "app", None, "@u")
    inner = ks.add_key("user", "inner", b"in the ring", ring)
    top = ks.add_key("user", "top", b"at the top", "@u")
    gone = ks.add_key("user", "gone", b"g", "@u")
    gone.invalidate()
    assert ks.store is not None
    ks.store.close()
    downgrade_to_schema_1(store)

    again = _open(store)
    assert again.key(top.serial).read() == b"at the top"
    assert again.key(inner.serial).read() == b"in the ring"
    assert [k.serial for k in again.key(ring.serial).keys()] == [inner.serial]
    assert _errno(lambda: again.key(gone.serial).describe()) == errno.ENOKEY
    # It goes on as a store of this schema, for this process and the next.
    added = again.add_key("user", "after", b"after the upgrade", "@u")
    third = _open(store)
    assert third.key(added.serial).read() == b"after the upgrade"
    assert third.key(top.serial).read() == b"at the top"
    conn = sqlite3.connect(store)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'keys_gen'").fetchone()[0] == 0
    finally:
        conn.close()
    assert again.store is not None and again.store.integrity_check() == "ok"
    assert check_store_file(str(store)) == []
    for serial, gen, ver in _live_rows(store):
        assert ver == (gen << db.VER_SHIFT) | serial


def test_a_store_of_an_unknown_older_schema_is_refused(store: Path) -> None:
    ks = _open(store)
    assert ks.store is not None
    ks.store.close()
    conn = sqlite3.connect(store)
    conn.execute("PRAGMA user_version = 0")
    conn.commit()
    conn.close()
    with pytest.raises(OSError) as info:
        kt.Keyspace(store=store)
    assert info.value.errno == errno.EBADMSG
    assert "schema version 0" in str(info.value)


def test_a_key_stored_again_gets_one_live_row_seen_by_every_process(store: Path) -> None:
    a = _open(store)
    b = _open(store)
    key = a.add_key("user", "k", b"v1", "@u")
    a.key("@s").link(key)  # a keeps it when the store lets go
    a.user_keyring.unlink(key)  # its row becomes a tombstone
    assert _errno(lambda: b.key(key.serial).describe()) == errno.ENOKEY
    a.user_keyring.link(key)  # stored again: a new row, after the tombstone
    key.update(b"v2")
    assert b.key(key.serial).read() == b"v2"
    rows = _live_rows(store)
    assert [r[0] for r in rows].count(key.serial) == 1
    assert check_store_file(str(store)) == []
    # A process loading the whole file sees the same.
    assert _open(store).key(key.serial).read() == b"v2"


def test_processes_alternating_on_one_store_see_each_change(store: Path) -> None:
    # Each Keyspace has its own connection: the other's commits move its data_version.
    a = _open(store)
    b = _open(store)
    for i in range(20):
        k = a.add_key("user", f"k{i}", b"%d" % i, "@u")
        assert b.key(k.serial).read() == b"%d" % i
        b.key(k.serial).update(b"b%d" % i)
        assert a.key(k.serial).read() == b"b%d" % i
        (a if i % 2 else b).key(k.serial).invalidate()
        assert _errno(lambda: (b if i % 2 else a).key(k.serial).read()) == errno.ENOKEY  # noqa: B023
    assert [k.serial for k in a.user_keyring.keys()] == []
    assert [k.serial for k in b.user_keyring.keys()] == []
    assert check_store_file(str(store)) == []


def test_a_commit_writes_the_last_pages_not_one_per_row(store: Path) -> None:
    """Rows of a commit are together at the end of the table: the WAL grows by about a page a commit."""
    ks = _open(store)
    for i in range(50):
        ks.add_key("user", f"warm{i}", b"w", "@u").invalidate()
    conn = sqlite3.connect(store, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for i in range(40):
            k = ks.add_key("user", f"k{i}", bytes(32), "@u")
            k.invalidate()
        frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    finally:
        conn.close()
    # 80 commits: schema 1 wrote three pages for each (key, keyring, index); now one, sometimes two.
    assert frames < 80 * 1.6, frames
