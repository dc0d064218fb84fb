"""The store keeps what the kernel keeps past a process, and only that, sealed at rest."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types.trust import registry


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A store path with its own state directory (host key) and the host trust source."""
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEYRING_TYPES_TRUST_SOURCE", "host")
    registry.clear_cache()
    yield tmp_path / "st" / "keys.db"
    registry.clear_cache()


def _open(path: Path, **kw: object) -> kt.Keyspace:
    ks = kt.Keyspace(store=path, **kw)  # type: ignore[arg-type]
    ks.session.link(ks.user_keyring)  # possess @u, so its keys read back
    return ks


def test_user_keyring_tree_survives_the_process(store: Path) -> None:
    ks = _open(store)
    k = ks.add_key("user", "app:db", b"secret", "@u")
    ring = ks.add_key("keyring", "app", None, "@u")
    inner = ks.add_key("user", "inner", b"x" * 40, ring)
    logon = ks.add_key("logon", "svc:pw", b"hunter2", ring)
    k.set_perm(0x3F3F0000)
    k.set_timeout(3600)
    described = {s: ks.key(s).describe() for s in (k.serial, ring.serial, inner.serial, logon.serial)}
    user_ring = ks.user_keyring.serial
    ks.store.close()  # type: ignore[union-attr]

    again = _open(store)
    assert again.key(k.serial).read() == b"secret"
    assert again.key(inner.serial).read() == b"x" * 40
    with again.key(logon.serial).secret() as mv:
        assert bytes(mv) == b"hunter2"
    assert {s: again.key(s).describe() for s in described} == described
    assert [h.serial for h in again.keyring(ring.serial).keys()] == [inner.serial, logon.serial]
    assert again.request_key("user", "inner").serial == inner.serial
    assert again.user_keyring.serial == user_ring
    line = next(x for x in again.proc_keys() if x.startswith(f"{k.serial:08x}"))
    assert "   1h " in line or " 59m " in line  # the expiry came back, as a time left


def test_process_keyrings_stay_in_the_process(store: Path) -> None:
    ks = kt.Keyspace(store=store)
    ses = ks.add_key("user", "in-session", b"s", "@s")
    proc = ks.add_key("user", "in-process", b"p", "@p")
    thread = ks.add_key("user", "in-thread", b"t", "@t")
    ring = ks.add_key("keyring", "sess-ring", None, "@s")
    below = ks.add_key("user", "below", b"b", ring)
    kept = ks.add_key("user", "kept", b"k", "@u")
    other = kt.Keyspace(store=store)
    for k in (ses, proc, thread, ring, below):
        with pytest.raises(OSError) as info:
            other.key(k.serial).describe()
        assert info.value.errno == errno.ENOKEY
    assert other.key(kept.serial).describe().endswith(";kept")


def test_linking_into_a_stored_keyring_stores_the_subtree_and_unlinking_forgets_it(store: Path) -> None:
    ks = _open(store)
    ring = ks.add_key("keyring", "tree", None, "@s")
    leaf = ks.add_key("user", "leaf", b"leaf", ring)
    other = kt.Keyspace(store=store)
    assert errno_of(lambda: other.key(leaf.serial).describe()) == errno.ENOKEY
    ks.user_keyring.link(ring)
    assert other.key(leaf.serial).describe().endswith(";leaf")
    ks.user_keyring.unlink(ring)
    assert errno_of(lambda: other.key(ring.serial).describe()) == errno.ENOKEY
    # Still in this process's session, where it was linked all along.
    assert ks.key(leaf.serial).read() == b"leaf"


def errno_of(fn: object) -> int:
    with pytest.raises(OSError) as info:
        fn()  # type: ignore[operator]
    assert info.value.errno is not None
    return info.value.errno


def test_named_session_persists_and_is_joined_by_name(store: Path) -> None:
    ks = kt.Keyspace(store=store)
    ses = ks.join_session_keyring("build-42")
    # As on the kernel, a named session is found by name only by those who may SEARCH it.
    ses.set_perm(ses_perm := 0x3F0B0000 | kt.KEY_USR_SEARCH)
    k = ks.add_key("user", "token", b"tok", "@s")
    later = kt.Keyspace(store=store)
    assert later.join_session_keyring("build-42").serial == ses.serial
    assert later.request_key("user", "token").read() == b"tok"
    assert k.serial == later.request_key("user", "token").serial
    assert later.session.describe().split(";")[3] == f"{ses_perm:08x}"


def test_a_child_inherits_a_stored_session_by_serial(store: Path) -> None:
    from keyring_types.store import inherit_session

    ks = kt.Keyspace(store=store)
    ses = ks.join_session_keyring("ci-job")  # no USR_SEARCH: not joinable by name
    ks.add_key("user", "token", b"tok", "@s")
    child = kt.Keyspace(store=store)
    assert inherit_session(child, ses.serial).serial == ses.serial
    assert child.session.serial == ses.serial
    assert child.request_key("user", "token").read() == b"tok"
    assert errno_of(lambda: inherit_session(child, 12345)) == errno.ENOKEY
    assert errno_of(lambda: inherit_session(child, child.request_key("user", "token").serial)) == errno.ENOTDIR
    assert errno_of(lambda: inherit_session(kt.Keyspace(), ses.serial)) == errno.EINVAL


def test_sealed_types_and_their_blobs(store: Path) -> None:
    ks = _open(store)
    ks.add_key("user", "kmk", b"k" * 32, "@u")
    enc = ks.add_key("encrypted", "evm", "new default user:kmk 32", "@u")
    trusted = ks.add_key("trusted", "tk", "new 32", "@u")
    blob_enc, blob_tk = enc.read(), trusted.read()
    with enc.secret() as mv:
        plain_enc = bytes(mv)
    with trusted.secret() as mv:
        plain_tk = bytes(mv)
    ks.store.close()  # type: ignore[union-attr]

    again = _open(store)
    assert again.key(enc.serial).read() == blob_enc
    assert again.key(trusted.serial).read() == blob_tk
    with again.key(enc.serial).secret() as mv:
        assert bytes(mv) == plain_enc
    with again.key(trusted.serial).secret() as mv:
        assert bytes(mv) == plain_tk
    # The blob still loads as a new key elsewhere: it is the kernel's format, not the store's.
    fresh = kt.Keyspace()
    fresh.add_key("user", "kmk", b"k" * 32, "@s")
    loaded = fresh.add_key("encrypted", "evm2", b"load " + blob_enc, "@s")
    with loaded.secret() as mv:
        assert bytes(mv) == plain_enc


def _file_bytes(store: Path) -> bytes:
    data = b""
    for suffix in ("", "-wal"):
        p = Path(str(store) + suffix)
        if p.exists():
            data += p.read_bytes()
    return data


def test_no_secret_is_written_in_plaintext(store: Path) -> None:
    ks = _open(store)
    secrets = [b"PLAINTEXT-MARKER-user-0123456789", b"PLAINTEXT-MARKER-logon-987654321"]
    ks.add_key("user", "u", secrets[0], "@u")
    lg = ks.add_key("logon", "l:x", secrets[1], "@u")
    tk = ks.add_key("trusted", "tk", "new 32", "@u")
    with tk.secret() as mv:
        secrets.append(bytes(mv))
    with lg.secret() as mv:
        assert bytes(mv) == secrets[1]
    data = _file_bytes(store)
    assert b"PLAINTEXT-MARKER" not in data
    assert secrets[2] not in data
    assert b"u" in data  # (descriptions are not secret, and are there)


def _rewrite_row(conn: sqlite3.Connection, serial: int, change: str, *args: object) -> None:
    """Edit the live row of ``serial`` by hand, as a newer generation (its ``ver`` with it: see store/db.py)."""
    gen = conn.execute("SELECT max(gen) FROM keys").fetchone()[0] + 1
    conn.execute(
        f"UPDATE keys SET {change}, gen = ?, ver = (? << 31) | serial WHERE serial = ? AND NOT flags & 128",
        (*args, gen, gen, serial),
    )


def test_a_payload_moved_to_another_row_does_not_open(store: Path) -> None:
    ks = _open(store)
    a = ks.add_key("user", "a", b"alpha", "@u")
    b = ks.add_key("user", "b", b"bravo", "@u")
    ks.store.close()  # type: ignore[union-attr]
    conn = sqlite3.connect(store)
    pa = conn.execute("SELECT payload FROM keys WHERE serial = ?", (a.serial,)).fetchone()[0]
    _rewrite_row(conn, b.serial, "payload = ?", pa)
    conn.commit()
    conn.close()
    again = _open(store)  # the store opens; the altered key fails when its payload is used
    assert again.key(a.serial).read() == b"alpha"
    with pytest.raises(OSError) as info:
        again.key(b.serial).read()
    assert info.value.errno == errno.EBADMSG
    assert "alpha" not in str(info.value) and "authentication" in str(info.value)


def test_expiry_is_by_the_clock_and_survives_reopening(store: Path) -> None:
    now = [1_000_000.0]
    ks = _open(store, clock=lambda: now[0])
    k = ks.add_key("user", "short", b"s", "@u")
    k.set_timeout(10)
    ks.store.close()  # type: ignore[union-attr]
    now[0] += 5
    assert _open(store, clock=lambda: now[0]).key(k.serial).read() == b"s"
    now[0] += 6
    later = _open(store, clock=lambda: now[0])
    assert errno_of(lambda: later.key(k.serial).read()) == errno.EKEYEXPIRED
    later.store.close()  # type: ignore[union-attr]
    now[0] += kt.constants.KEY_GC_DELAY if hasattr(kt, "constants") else 300
    gc_run = _open(store, clock=lambda: now[0])
    assert errno_of(lambda: gc_run.key(k.serial).describe()) == errno.ENOKEY
    conn = sqlite3.connect(store)
    assert conn.execute("SELECT count(*) FROM keys WHERE serial = ? AND NOT flags & 128", (k.serial,)).fetchone()[0] == 0
    conn.close()


def test_revoked_key_is_reaped_by_the_next_process(store: Path) -> None:
    now = [2_000_000.0]
    ks = _open(store, clock=lambda: now[0])
    k = ks.add_key("user", "r", b"r", "@u")
    k.revoke()
    ks.store.close()  # type: ignore[union-attr]
    now[0] += 301
    _open(store, clock=lambda: now[0]).store.close()  # type: ignore[union-attr]
    conn = sqlite3.connect(store)
    assert conn.execute("SELECT count(*) FROM keys WHERE serial = ? AND NOT flags & 128", (k.serial,)).fetchone()[0] == 0
    conn.close()


def test_plain_keyspace_never_touches_a_store(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_STORE", str(store))
    ks = kt.Keyspace()
    ks.add_key("user", "x", b"x", "@u")
    assert ks.store is None
    assert not store.exists()
    default = kt.Keyspace(store=True)
    assert default.store is not None and default.store.path == store
    assert store.exists()


def test_a_use_binding_persists_and_cannot_be_stripped_from_the_file(store: Path) -> None:
    ks = _open(store)
    k = ks.add_key("user", "disk", bytes(range(32)), "@u", usage="fscrypt")
    ks.store.close()  # type: ignore[union-attr]
    again = _open(store)
    bound = again.key(k.serial)
    assert bound.usage == "fscrypt"
    with bound.secret(consumer="fscrypt") as mv:
        assert bytes(mv) == bytes(range(32))
    assert errno_of(lambda: bound.secret(consumer="luks").__enter__()) == errno.EKEYREJECTED
    assert errno_of(bound.read) == errno.EKEYREJECTED
    again.store.close()  # type: ignore[union-attr]
    # Someone with write access to the file drops the binding: the payload no longer opens.
    conn = sqlite3.connect(store)
    _rewrite_row(conn, k.serial, "usage = NULL")
    conn.commit()
    conn.close()
    stripped = _open(store).key(k.serial)
    assert stripped.usage is None
    assert errno_of(lambda: stripped.secret(consumer="luks").__enter__()) == errno.EBADMSG
    assert errno_of(stripped.read) == errno.EBADMSG


def test_a_process_only_key_gives_way_to_a_stored_key_of_the_same_serial(store: Path) -> None:
    a = kt.Keyspace(store=store)
    local = a.add_key("user", "mine", b"local", "@s")
    target = local.serial
    b = _open(store)
    b._world._randbits = lambda n: target  # type: ignore[method-assign]  # the next serial drawn
    stored = b.add_key("user", "theirs", b"stored", "@u")
    assert stored.serial == target
    # a sees the stored key under that serial; its own key lives on under another.
    assert a.key(target).describe().endswith(";theirs")
    mine = a.request_key("user", "mine")
    assert mine.serial != target and mine.read() == b"local"


class _Opaque:
    """A payload the store cannot write."""


def test_a_payload_the_store_cannot_write_fails_the_operation_and_leaves_the_store_sound(store: Path) -> None:
    from keyring_types.core.keytype import KeyType, Preparsed

    class OpaqueType(KeyType):
        name = "store-test-opaque"

        def preparse(self, data: bytes) -> Preparsed:
            return Preparsed(b"", _Opaque(), len(data))

    class CustomType(KeyType):
        """A third-party type that says how its payload is stored."""

        name = "store-test-custom"

        def preparse(self, data: bytes) -> Preparsed:
            return Preparsed(b"", ("custom", bytes(data)), len(data))

        def read(self, key: object) -> bytes:
            return key.payload[1]  # type: ignore[attr-defined,no-any-return]

        def store_encode(self, key: object) -> bytes:
            return b"v1:" + key.payload[1]  # type: ignore[attr-defined,no-any-return]

        def store_decode(self, key: object, data: bytes) -> object:
            assert data.startswith(b"v1:")
            return ("custom", data[3:])

    kt.register_key_type(OpaqueType)
    kt.register_key_type(CustomType)
    try:
        ks = _open(store)
        with pytest.raises(OSError) as info:
            ks.add_key("store-test-opaque", "o", b"data", "@u")
        assert info.value.errno == errno.EOPNOTSUPP and "_Opaque" in str(info.value)
        c = ks.add_key("store-test-custom", "c", b"payload", "@u")
        k = ks.add_key("user", "after", b"fine", "@u")
        other = _open(store)
        assert errno_of(lambda: other.request_key("store-test-opaque", "o")) == errno.ENOKEY
        assert other.key(c.serial).read() == b"payload"
        assert other.key(k.serial).read() == b"fine"
        assert ks.store is not None and ks.store.integrity_check() == "ok"
        ks.store.close()
        assert other.store is not None
        other.store.close()
    finally:
        kt.unregister_key_type("store-test-opaque")
        kt.unregister_key_type("store-test-custom")


def test_keys_of_a_type_not_registered_here_stay_linked_in_the_file(store: Path) -> None:
    import sys

    from keyring_types.core.keytype import KeyType, Preparsed

    sys.path.insert(0, str(Path(__file__).parent))
    from store_proc import check_store_file

    class PluginType(KeyType):
        name = "store-test-plugin"

        def preparse(self, data: bytes) -> Preparsed:
            return Preparsed(b"", bytes(data), len(data))

        def read(self, key: object) -> bytes:
            return bytes(key.payload)  # type: ignore[attr-defined]

    kt.register_key_type(PluginType)
    try:
        a = _open(store)
        p = a.add_key("store-test-plugin", "p", b"plugin data", "@u")
    finally:
        kt.unregister_key_type("store-test-plugin")
    # A process without the plugin: the key is not seen, and writing @u keeps its link.
    b = _open(store)
    assert errno_of(lambda: b.key(p.serial).describe()) == errno.ENOKEY
    b.add_key("user", "u1", b"1", "@u")
    b.user_keyring.unlink(b.request_key("user", "u1"))
    # (a, which unregistered the type, forgets the key but not its link)
    a.add_key("user", "u2", b"2", "@u")
    assert check_store_file(str(store)) == []
    kt.register_key_type(PluginType)
    try:
        c = _open(store)
        assert c.key(p.serial).read() == b"plugin data"
        assert c.request_key("store-test-plugin", "p").serial == p.serial
        c.user_keyring.clear()  # a clear does unlink what this process cannot see
    finally:
        kt.unregister_key_type("store-test-plugin")
    d = _open(store)
    d.add_key("user", "u3", b"3", "@u")
    kt.register_key_type(PluginType)
    try:
        assert errno_of(lambda: _open(store).key(p.serial).describe()) == errno.ENOKEY
    finally:
        kt.unregister_key_type("store-test-plugin")


def test_a_process_behind_the_pruned_tombstones_reloads_everything(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keyring_types.store import world as store_world

    monkeypatch.setattr(store_world, "_TOMBSTONE_SPAN", 4)
    a = _open(store)
    held = a.add_key("user", "held", b"h", "@u")
    a.key("@s").link(held)  # also in a's own session, so a keeps it when the store lets go
    doomed = a.add_key("user", "doomed", b"d", "@u")
    b = _open(store)
    b.user_keyring.unlink(b.key(held.serial))
    b.key(doomed.serial).invalidate()
    for i in range(12):
        b.add_key("user", f"n{i}", b"n", "@u").invalidate()
    kept = b.add_key("user", "kept", b"k", "@u")
    conn = sqlite3.connect(store)
    tombstones = conn.execute("SELECT count(*) FROM keys WHERE flags & 128").fetchone()[0]
    conn.close()
    assert tombstones < 8  # pruned as they aged
    # a is far behind: it reloads the whole store.
    assert a.key(kept.serial).read() == b"k"
    assert errno_of(lambda: a.key(doomed.serial).describe()) == errno.ENOKEY
    assert a.key(held.serial).read() == b"h"  # still in a's session
    assert [k.serial for k in a.user_keyring.keys()] == [kept.serial]
