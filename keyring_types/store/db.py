"""The store file: opening and checking it, its schema, and SQLite's errors as OSError.

One SQLite database in WAL mode with ``synchronous=FULL``: a transaction that
returned from COMMIT is on disk, and a writer killed at any point leaves either
the whole of its last transaction or none of it.  The file is recognised by
``PRAGMA application_id``; a file that is not a SQLite database, or is one of
something else, is refused (``EINVAL``) and never written to, and a damaged one
gives ``EBADMSG``.  A new store is created mode 0600 in a checked directory
(:mod:`keyring_types.state`), exclusively, so two processes starting at once
make one store between them.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path

from keyring_types.errors import error
from keyring_types.state import check_private_file, private_dir

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "VER_SHIFT", "create_schema", "db_error", "open_connection", "upgrade_schema"]

#: "KTST", in the header of every store file.
APPLICATION_ID = 0x4B545354
#: 3: the keys table ordered by ``ver`` (generation, then serial) with no index, and the
#: ``restrictions`` table (keyring restrictions); a store of version 1 or 2 is brought
#: to 3 when this library opens it (:func:`upgrade_schema`).  Two branches each called
#: their own change "2" (one the ``ver`` order, the other the restrictions table), and
#: files of both exist: 3 is the two together, and 2 is upgraded by what it holds.
SCHEMA_VERSION = 3
#: A row's ``ver`` is its generation shifted left by this, plus its serial (31 bits).
VER_SHIFT = 31
#: How long an operation waits for another process's transaction, in milliseconds.
BUSY_TIMEOUT_MS = 30_000
_SQLITE_MAGIC = b"SQLite format 3\x00"

# The keys table is ordered by ``ver`` (generation, then serial): the rows a commit
# writes all go at the end of the table, next to the rows of the last commits, so a
# commit usually writes one page where ordering by serial with an index on the
# generation wrote three (the key's leaf, its keyring's leaf, the index's leaf).
# Nothing indexes the serial: the library knows the ``ver`` of every row it
# rewrites.  At most one row per serial is live (not F_GONE); a key stored again
# after it was dropped gets a new row next to its older tombstone.  The CHECK keeps
# ``ver`` equal to what ``gen`` and ``serial`` say (and so refuses the writes of a
# library of schema 1 that still has the file open when it is upgraded).
_KEYS_TABLE = """
CREATE TABLE {name} (
    ver INTEGER PRIMARY KEY,
    serial INTEGER NOT NULL,
    gen INTEGER NOT NULL,
    type TEXT NOT NULL,
    description TEXT NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER,
    perm INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    expiry INTEGER NOT NULL,
    revoked_at INTEGER NOT NULL,
    datalen INTEGER NOT NULL,
    quotalen INTEGER NOT NULL,
    payload BLOB,
    links BLOB,
    usage TEXT,
    CHECK (ver = (gen << {shift}) | serial)
)"""

#: A keyring's restriction as ``keyctl restrict_keyring`` was given it (both NULL: reject-all).
_RESTRICTIONS_TABLE = "CREATE TABLE restrictions (serial INTEGER PRIMARY KEY, type TEXT, restriction TEXT)"

SCHEMA = (
    "CREATE TABLE meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
    + _KEYS_TABLE.format(name="keys", shift=VER_SHIFT)
    + ";"
    + _RESTRICTIONS_TABLE
    + ";"
)

# SQLite's primary result codes and the errno each is reported with.
_ERRNO = {
    5: errno.EBUSY,  # SQLITE_BUSY: another process held the store past the timeout
    6: errno.EBUSY,  # SQLITE_LOCKED
    7: errno.ENOMEM,
    8: errno.EROFS,  # SQLITE_READONLY
    10: errno.EIO,  # SQLITE_IOERR
    11: errno.EBADMSG,  # SQLITE_CORRUPT
    13: errno.ENOSPC,  # SQLITE_FULL
    14: errno.EACCES,  # SQLITE_CANTOPEN
    26: errno.EINVAL,  # SQLITE_NOTADB
}



def _uri_path(path: object) -> str:
    """``path`` quoted for an SQLite file: URI (urllib imported here: start-up time)."""
    from urllib.parse import quote

    return quote(str(path))

def db_error(exc: sqlite3.Error, path: Path, doing: str) -> OSError:
    """``exc`` as an OSError naming the store and what was being done."""
    code = getattr(exc, "sqlite_errorcode", None)
    err = _ERRNO.get(code & 0xFF, errno.EIO) if isinstance(code, int) else errno.EIO
    if err == errno.EBADMSG:
        why = "the file is damaged"
    elif err == errno.EINVAL:
        why = "not a keyring_types store (not an SQLite database)"
    else:
        why = str(exc)
    return error(err, f"store {path}: {doing}: {why}")


def _check_header(path: Path) -> None:
    """EINVAL unless the file is empty (ours, being made) or starts as a SQLite database."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        check_private_file(os.fstat(fd), path)
        head = os.pread(fd, len(_SQLITE_MAGIC), 0)
    finally:
        os.close(fd)
    if head and head != _SQLITE_MAGIC:
        raise error(errno.EINVAL, f"store {path}: not a keyring_types store (not an SQLite database); left as it is")


def open_connection(path: Path) -> tuple[sqlite3.Connection, bool]:
    """Open (creating if absent) the store at ``path``; (connection, whether it is new and empty).

    ``EACCES`` when the directory or file fails the owner/mode checks, ``EINVAL``
    for a file that is not a store (left untouched), ``EBADMSG`` for a damaged
    one, ``EPROTONOSUPPORT`` for a store written by a newer schema, ``EBUSY`` when
    other processes kept it locked for the whole busy timeout.
    """
    # SQLite answers SQLITE_BUSY at once, without its busy handler, in some races
    # of a store being made (switching a new file to WAL while another process
    # reads it): such an answer is retried for as long as the busy timeout.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return _open_once(path)
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if not isinstance(code, int) or code & 0xFF not in (5, 6) or time.monotonic() >= deadline:
                raise db_error(exc, path, "opening") from None
            time.sleep(0.01)


def _open_once(path: Path) -> tuple[sqlite3.Connection, bool]:
    """One attempt of :func:`open_connection`; SQLITE_BUSY comes out as ``sqlite3.OperationalError``."""
    private_dir(path.parent, create=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
    except FileExistsError:
        pass
    _check_header(path)
    try:
        conn = sqlite3.connect(
            f"file:{_uri_path(path)}?mode=rw",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
    except sqlite3.OperationalError:
        raise
    except sqlite3.Error as exc:
        raise db_error(exc, path, "opening") from None
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # One snapshot for all three: another process may be making the store right now.
        conn.execute("BEGIN")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute("COMMIT")
        if app_id != APPLICATION_ID:
            if app_id != 0 or tables:
                raise error(
                    errno.EINVAL, f"store {path}: an SQLite database of something else (application id {app_id:#x}); left as it is"
                )
        else:
            if version > SCHEMA_VERSION:
                raise error(errno.EPROTONOSUPPORT, f"store {path}: schema version {version} is newer than this library's {SCHEMA_VERSION}")
        # Only now, knowing the file is ours (or empty), may anything be written to it.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        fresh = app_id == 0
        return conn, fresh
    except sqlite3.OperationalError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise db_error(exc, path, "opening") from None
    except BaseException:
        conn.close()
        raise


def create_schema(conn: sqlite3.Connection) -> bool:
    """Inside a write transaction: make the tables if the file is still empty; whether it made them."""
    if conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
        return False  # another process made the store meanwhile
    # Statement by statement: executescript() would commit the transaction.
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return True


def upgrade_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Inside a write transaction: bring a store of an older schema to this one (nothing if it is current).

    Schema 1 ordered the keys by serial, with an index on the generation, and
    kept no restrictions; its rows move to the table of this schema as they are,
    each at its ``ver``, and an empty ``restrictions`` table is added.  A file of
    schema 2 has one of the two (see SCHEMA_VERSION) and gets the other.  Done in
    the caller's transaction: another process sees the old schema or the new one,
    and a crash leaves the old one.  Once upgraded, an older library refuses the
    file (``EPROTONOSUPPORT``) rather than ignore what it cannot honour (a
    restricted keyring would accept any key there).  ``EBADMSG`` for a version
    this library never wrote; ``EPROTONOSUPPORT`` if a newer library changed the
    file since :func:`open_connection` looked.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise error(errno.EPROTONOSUPPORT, f"store {path}: schema version {version} is newer than this library's {SCHEMA_VERSION}")
    if version == SCHEMA_VERSION:
        return
    if version not in (1, 2):
        raise error(errno.EBADMSG, f"store {path}: schema version {version} is not one this library knows")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(keys)")}
    if "ver" not in columns:
        conn.execute(_KEYS_TABLE.format(name="keys_v2", shift=VER_SHIFT))
        conn.execute(
            "INSERT INTO keys_v2 (ver, serial, gen, type, description, uid, gid, perm, flags, expiry, revoked_at, "
            "datalen, quotalen, payload, links, usage) "
            "SELECT (gen << 31) | serial, serial, gen, type, description, uid, gid, perm, flags, expiry, revoked_at, "
            "datalen, quotalen, payload, links, usage FROM keys"
        )
        conn.execute("DROP TABLE keys")  # and its index keys_gen
        conn.execute("ALTER TABLE keys_v2 RENAME TO keys")
    if conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'restrictions'").fetchone()[0] == 0:
        conn.execute(_RESTRICTIONS_TABLE)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
