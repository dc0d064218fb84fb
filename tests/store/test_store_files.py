"""A store file that is not ours, is damaged, or is exposed gives a clear OSError and is left as it is."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types.secret import SecretBuffer
from keyring_types.trust import registry
from keyring_types.trust.base import TrustedOptions


def _refused(path: Path) -> OSError:
    with pytest.raises(OSError) as info:
        kt.Keyspace(store=path)
    assert str(path) in str(info.value)
    return info.value


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)}


def test_a_text_file_is_not_a_store_and_is_not_touched(store: Path) -> None:
    store.write_text("these are my notes, not a database\n" * 100)
    store.chmod(0o600)
    before = _snapshot(store)
    exc = _refused(store)
    assert exc.errno == errno.EINVAL and "not a keyring_types store" in str(exc)
    assert _snapshot(store) == before


def test_another_programs_sqlite_database_is_not_touched(store: Path) -> None:
    conn = sqlite3.connect(store)
    conn.execute("CREATE TABLE notes (t TEXT)")
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.commit()
    conn.close()
    store.chmod(0o600)
    before = _snapshot(store)
    exc = _refused(store)
    assert exc.errno == errno.EINVAL and "something else" in str(exc)
    assert _snapshot(store) == before


def _made_store(store: Path) -> int:
    ks = kt.Keyspace(store=store)
    for i in range(60):
        ks.add_key("user", f"k{i}", b"v" * 600, "@u")
    assert ks.store is not None
    ks.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ks.store.close()
    return store.stat().st_size


def test_a_damaged_store_gives_ebadmsg_not_a_traceback(store: Path) -> None:
    size = _made_store(store)
    with open(store, "r+b") as f:  # scribble over the middle pages (the keys table's b-tree)
        f.seek(size // 3)
        f.write(os.urandom(size // 3))
    before = _snapshot(store)
    # In a fresh process, as a user would meet it: one line, no traceback.
    code = (
        "import keyring_types as kt, sys\n"
        "try:\n"
        f"    kt.Keyspace(store={str(store)!r}).key('@u').keys()\n"
        "except OSError as e:\n"
        "    print(e.errno, e.strerror); sys.exit(1)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), check=False)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout.startswith(f"{errno.EBADMSG} ") and "damaged" in out.stdout
    assert _snapshot(store) == before


def test_a_store_with_a_bad_header_field_is_refused(store: Path) -> None:
    _made_store(store)
    with open(store, "r+b") as f:  # the page size field: an impossible value
        f.seek(16)
        f.write(b"\x00\x03")
    before = _snapshot(store)
    exc = _refused(store)
    assert exc.errno in (errno.EBADMSG, errno.EINVAL)
    assert _snapshot(store) == before


def test_a_store_others_can_read_is_refused(store: Path) -> None:
    _made_store(store)
    store.chmod(0o644)
    exc = _refused(store)
    assert exc.errno == errno.EACCES


def test_a_store_sealed_under_another_host_key_says_so(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _made_store(store)
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "other-host"))
    (tmp_path / "other-host").mkdir(mode=0o700)
    registry.clear_cache()
    registry.get_trust_source("host").seal(SecretBuffer.from_bytes(b"x" * 32), TrustedOptions())  # makes its host key
    ks = kt.Keyspace(store=store)  # names, links and permissions need no store key
    ks.session.link(ks.user_keyring)
    k = ks.request_key("user", "k0")
    assert k.describe().endswith(";k0")
    with pytest.raises(OSError) as info:
        k.read()  # the first payload to open unseals the store key: not on this host
    assert info.value.errno == errno.EBADMSG and "another host key" in str(info.value)


def test_a_store_from_a_newer_schema_is_refused(store: Path) -> None:
    _made_store(store)
    conn = sqlite3.connect(store)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    exc = _refused(store)
    assert exc.errno == errno.EPROTONOSUPPORT


def test_bad_store_arguments(tmp_path: Path) -> None:
    for bad in ("", "a\0b", 3, b"x"):
        with pytest.raises(OSError) as info:
            kt.Keyspace(store=bad)  # type: ignore[arg-type]
        assert info.value.errno == errno.EINVAL


def test_a_store_held_too_long_by_another_process_gives_ebusy(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keyring_types.store import db

    kt.Keyspace(store=store).store.close()  # type: ignore[union-attr]
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 200)
    ks = kt.Keyspace(store=store)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(store)!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(5)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(OSError) as info:
            ks.add_key("user", "blocked", b"b", "@u")
        assert info.value.errno == errno.EBUSY and str(store) in str(info.value)
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    assert ks.add_key("user", "later", b"l", "@u").serial  # usable again once the holder is gone


_MAKER = """
import sys
import keyring_types as kt
print("ready", flush=True)
sys.stdin.readline()
kt.Keyspace(store=sys.argv[1]).add_key("user", "made-by-the-other", b"x", "@u")
print("made", flush=True)
"""


def test_a_store_another_process_is_making_is_not_taken_for_a_foreign_file(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other process commits the new schema between this one's first reads of the file."""
    import select

    from keyring_types.store import db

    maker = subprocess.Popen([sys.executable, "-c", _MAKER, str(store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert maker.stdout is not None and maker.stdin is not None
    assert maker.stdout.readline().strip() == "ready"
    real_connect = sqlite3.connect

    class Conn:
        """A connection that lets the other process make the store right after the first read."""

        def __init__(self, conn: sqlite3.Connection) -> None:
            self._conn = conn
            self._done = False

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql == "SELECT count(*) FROM sqlite_master" and not self._done:
                # After the application id was read, before the tables are counted.
                self._done = True
                maker.stdin.write("go\n")  # type: ignore[union-attr]
                maker.stdin.flush()  # type: ignore[union-attr]
                # Give it the time it needs; it may have to wait for this snapshot to end.
                select.select([maker.stdout], [], [], 1.5)
            return self._conn.execute(sql, *args)

        def __getattr__(self, name: str) -> object:
            return getattr(self._conn, name)

    def connect(*args: object, **kwargs: object) -> object:
        return Conn(real_connect(*args, **kwargs))  # type: ignore[arg-type]

    monkeypatch.setattr(db.sqlite3, "connect", connect)
    try:
        ks = kt.Keyspace(store=store)
    finally:
        monkeypatch.setattr(db.sqlite3, "connect", real_connect)
        maker.communicate(timeout=60)
    assert maker.returncode == 0
    ks.session.link(ks.user_keyring)
    assert ks.request_key("user", "made-by-the-other").read() == b"x"
