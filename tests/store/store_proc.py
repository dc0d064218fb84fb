"""Helpers for the store tests: a store-backed process driven over a pipe, and the crash writer.

``python store_proc.py serve <store>`` reads one JSON request a line on stdin
and answers one JSON line on stdout, so a test can interleave the operations of
two processes exactly.  ``python store_proc.py add-many <store> <prefix> <n>``
adds ``n`` user keys to ``@u`` one operation at a time (the concurrent writers).
:func:`crash_writer` runs in a forked child and reports each committed change
on a pipe before the parent kills it.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import struct
import sys
from pathlib import Path
from typing import Any

import keyring_types as kt


def serve(store: str) -> None:
    ks = kt.Keyspace(store=store)
    ks.session.link(ks.user_keyring)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            out: dict[str, Any] = {"ok": _do(ks, req)}
        except OSError as exc:
            out = {"errno": exc.errno}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


def _do(ks: kt.Keyspace, req: dict[str, Any]) -> Any:
    op = req["op"]
    if op == "add":
        payload = None if req.get("payload") is None else bytes.fromhex(req["payload"])
        return ks.add_key(req["type"], req["desc"], payload, req.get("ring", "@u")).serial
    if op == "read":
        return ks.key(req["key"]).read().hex()
    if op == "describe":
        return ks.key(req["key"]).describe()
    if op == "invalidate":
        ks.key(req["key"]).invalidate()
        return None
    if op == "revoke":
        ks.key(req["key"]).revoke()
        return None
    if op == "setperm":
        ks.key(req["key"]).set_perm(req["perm"])
        return None
    if op == "link":
        ks.keyring(req["ring"]).link(ks.key(req["key"]))
        return None
    if op == "unlink":
        ks.keyring(req["ring"]).unlink(ks.key(req["key"]))
        return None
    if op == "request":
        return ks.request_key(req["type"], req["desc"]).serial
    if op == "secret":
        with ks.key(req["key"]).secret() as mv:
            return bytes(mv).hex()
    if op == "session":
        return ks.join_session_keyring(req.get("name")).serial
    if op == "gc":
        ks.gc()
        return None
    if op == "restrict":
        ks.keyring(req["ring"]).restrict(req.get("type"), req.get("restriction"))
        return None
    raise ValueError(op)


def add_many(store: str, prefix: str, n: int) -> None:
    ks = kt.Keyspace(store=store)
    for i in range(n):
        ks.add_key("user", f"{prefix}{i}", f"{prefix}-{i}".encode(), "@u")


def crash_writer(store: str, seed: int, report: int) -> None:
    """Change the store for ever, reporting on fd ``report``: ``+serial desc`` after a key's add
    committed, ``~serial`` before its invalidation starts.  Updates write ``updated`` * 3."""
    rng = random.Random(seed)
    ks = kt.Keyspace(store=store)
    ks.session.link(ks.user_keyring)
    live: list[int] = []
    rings = [ks.user_keyring]
    # Keyrings nest at most 3 deep below @u: a search from @s stops at depth 6 (the
    # kernel's limit), and a key it cannot reach is not possessed.
    shallow = [ks.user_keyring]
    depth = {ks.user_keyring.serial: 0}
    i = 0
    while True:
        i += 1
        choice = rng.random()
        if choice < 0.45 or not live:
            desc = f"k{seed}.{i}"
            ring = rng.choice(rings)
            k = ks.add_key("user", desc, desc.encode() * 3, ring)
            os.write(report, f"+{k.serial} {desc}\n".encode())
            live.append(k.serial)
        elif choice < 0.55:
            parent = rng.choice(shallow)
            r = ks.add_key("keyring", f"r{seed}.{i}", None, parent)
            rings.append(r)
            depth[r.serial] = depth[parent.serial] + 1
            if depth[r.serial] < 3:
                shallow.append(r)
        elif choice < 0.7:
            # A key linked in a second keyring, then unlinked from the first: never without a parent.
            serial = rng.choice(live)
            key = ks.key(serial)
            rng.choice(rings).link(key)
        elif choice < 0.85:
            # Announced first: killed after the commit but before the report, the key may be gone.
            serial = live.pop(rng.randrange(len(live)))
            os.write(report, f"~{serial}\n".encode())
            ks.key(serial).invalidate()
        else:
            serial = rng.choice(live)
            ks.key(serial).update(b"updated" * 3)


def check_store_file(path: str) -> list[str]:
    """What is wrong with a store file, read with sqlite3 alone: integrity, dangling or orphaned rows."""
    problems: list[str] = []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchall()
        if result != [("ok",)]:
            problems.append(f"integrity_check: {result}")
        # Live rows only (0x80: a tombstone, the record of a deletion).
        rows = conn.execute("SELECT serial, flags, links FROM keys WHERE NOT flags & 128").fetchall()
    finally:
        conn.close()
    serials = {r[0] for r in rows}
    if len(serials) != len(rows):
        problems.append(f"{len(rows) - len(serials)} serials have more than one live row")
    linked: set[int] = set()
    for _serial, _flags, links in rows:
        if links:
            targets = struct.unpack(f"<{len(links) // 4}i", links)
            linked.update(targets)
            for t in targets:
                if t not in serials:
                    problems.append(f"keyring {_serial} links missing key {t}")
    for serial, flags, _links in rows:
        if not flags & 0x10 and serial not in linked:
            problems.append(f"key {serial} is stored but linked from no stored keyring")
    return problems


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif sys.argv[1] == "add-many":
        add_many(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown command {sys.argv[1]}")


# The keys table of schema 1, as that library made it: rows by serial, an index on the generation.
_SCHEMA_1 = """
CREATE TABLE keys (
    serial INTEGER PRIMARY KEY, gen INTEGER NOT NULL, type TEXT NOT NULL, description TEXT NOT NULL,
    uid INTEGER NOT NULL, gid INTEGER, perm INTEGER NOT NULL, flags INTEGER NOT NULL, expiry INTEGER NOT NULL,
    revoked_at INTEGER NOT NULL, datalen INTEGER NOT NULL, quotalen INTEGER NOT NULL,
    payload BLOB, links BLOB, usage TEXT
)"""
_COLUMNS = "serial, gen, type, description, uid, gid, perm, flags, expiry, revoked_at, datalen, quotalen, payload, links, usage"


def _rewrite_with_schema_1_keys(path: Path, version: int, *, keep_restrictions: bool) -> None:
    """Put a closed store's rows back into the keys table of schema 1 and label it ``version``.

    One row per serial there: where a key was stored again, its live row wins over
    the older tombstone (rows are copied in ``ver`` order).
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute(_SCHEMA_1.replace("CREATE TABLE keys", "CREATE TABLE keys_v1"))
        conn.execute(f"INSERT OR REPLACE INTO keys_v1 ({_COLUMNS}) SELECT {_COLUMNS} FROM keys ORDER BY ver")
        conn.execute("DROP TABLE keys")
        conn.execute("ALTER TABLE keys_v1 RENAME TO keys")
        conn.execute("CREATE INDEX keys_gen ON keys (gen)")
        if not keep_restrictions:
            conn.execute("DROP TABLE restrictions")
        conn.execute(f"PRAGMA user_version={version}")
        conn.execute("COMMIT")
    finally:
        conn.close()


def downgrade_to_schema_1(path: Path) -> None:
    """Rewrite a closed store as the library of schema 1 left its files (it kept no restrictions)."""
    _rewrite_with_schema_1_keys(path, 1, keep_restrictions=False)


def downgrade_to_restrictions_schema_2(path: Path) -> None:
    """Rewrite a closed store as the library between the two schema-2 merges left its files.

    That library (the request-key/restrictions branch merged alone) numbered its
    schema 2 as well: the keys table of schema 1 plus the ``restrictions`` table.
    """
    _rewrite_with_schema_1_keys(path, 2, keep_restrictions=True)
