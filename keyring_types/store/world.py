"""A Keyspace world whose persistent part lives in a store file shared by processes.

:class:`StoreWorld` is the core's :class:`~keyring_types.core.world.World` with
three things added:

* **Which keys persist.**  The roots are the user keyrings (``_uid.N``,
  ``_uid_ses.N``), named session keyrings and persistent keyrings; a key
  persists while a persistent keyring links it.  Thread, process and anonymous
  session keyrings, and what only they link, stay in the process, as in the
  kernel they die with it.
* **One transaction per operation.**  The world lock is a :class:`StoreLock`:
  the outermost acquire starts a write transaction (``BEGIN IMMEDIATE``, so
  operations of all processes are serialised) and brings the in-memory world up
  to date with what other processes committed; the matching release writes what
  the operation changed and commits.  Every ``sys_*`` call of the core — and any
  added later — takes the world lock, so every one is covered without the core
  knowing about the store.  A type whose preparse blocks (a TPM seal) lets the
  lock go meanwhile, which here also ends the transaction, so no process waits
  on another's TPM.
* **What changed.**  Records of a store world are of a per-world subclass of
  :class:`~keyring_types.core.record.KeyRecord` whose ``__setattr__`` notes the
  change; link changes are noted by the overridden link methods.  A commit
  writes only those rows, each with the generation it was written in, and a
  process catches up by reading rows newer than its own generation (and the
  tombstones of deleted ones).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import struct
import sys
import threading
from array import array
from pathlib import Path
from typing import Any

from keyring_types.constants import KEYQUOTA_LINK_BYTES
from keyring_types.core.key import key_revoke
from keyring_types.core.keytype import lookup_key_type
from keyring_types.core.quota import QuotaLimits
from keyring_types.core.record import UNDER_CONSTRUCTION, KeyRecord
from keyring_types.core.request_key_auth import AUTH_TYPE
from keyring_types.core.restrict import (
    KeyRestriction,
    rebuild_restriction,
    release_restriction,
    restrict_link_unavailable,
)
from keyring_types.core.world import Clock, World
from keyring_types.errors import error
from keyring_types.store import db
from keyring_types.store.codec import encode_payload
from keyring_types.store.owner import alive, own_tag
from keyring_types.store.seal import RowSealer, new_store_key, seal_store_key, unseal_store_key

__all__ = ["StoreLock", "StoreWorld"]

# Row flags.
F_INSTANTIATED = 0x01
F_REVOKED = 0x02
#: A tombstone: the key was deleted at this row's generation (invalidated, if F_INVALIDATED).
F_INVALIDATED = 0x04
F_GONE = 0x80
F_UID_KEYRING = 0x08
F_ROOT = 0x10
F_IN_QUOTA = 0x20
F_KEYRING = 0x40
#: Where a negative key's errno sits in the flags column (errno < 4096).
_NEGATIVE_SHIFT = 8
_NEGATIVE_MASK = 0xFFF
#: Under construction by a request-key upcall (``U``); its builder's tag is in meta ``uc.<serial>``.
F_CONSTRUCTING = 0x100000
#: A restricted keyring; its restriction is in the ``restrictions`` table.
F_RESTRICTED = 0x200000
#: Seconds between looks at the store while waiting for a key another process builds.
CONSTRUCTION_POLL = 0.05

#: The attributes of a record that are written to its row.
_TRACKED = frozenset(
    {
        "description",
        "upcall",
        "uid",
        "gid",
        "perm",
        "payload",
        "datalen",
        "quotalen",
        "in_quota",
        "instantiated",
        "revoked",
        "dead",
        "invalidated",
        "expiry",
        "revoked_at",
        "uid_keyring",
        "links",
        "usage",
        "restriction",
    }
)
#: Tracked attributes a keyring's link changes set: alone, they leave the rest of the row as it was.
_SIZES = frozenset({"datalen", "quotalen"})
_BIG_ENDIAN = sys.byteorder == "big"
#: The array type code of a 4-byte integer (a keyring's links are 4-byte serials).
_LINK_CODE = "i" if array("i").itemsize == 4 else "l"
#: The register the core keeps ``_persistent.<uid>`` keyrings in (held by the world, linked nowhere).
_PERSISTENT_REGISTER = ".persistent_register"
#: Keyrings that are the process's own, never stored.
_PROCESS_RINGS = frozenset({"_ses", "_tid", "_pid"})
#: Tombstone rows older than this many generations are pruned; a process further behind reloads everything.
_TOMBSTONE_SPAN = 4096
_KEEP_FOREVER: list[sqlite3.Connection] = []

# Rows come in file order, which is generation order: a key's tombstone before the
# row that stored it again.
_SELECT_ALL = (
    "SELECT serial, gen, type, description, uid, gid, perm, flags, expiry, revoked_at, datalen, quotalen, payload, links, usage, ver "
    "FROM keys ORDER BY ver"
)
_SELECT_NEWER = (
    "SELECT serial, gen, type, description, uid, gid, perm, flags, expiry, revoked_at, datalen, quotalen, payload, links, usage, ver "
    "FROM keys WHERE ver >= ? ORDER BY ver"
)
_MAX_VER = "SELECT max(ver) FROM keys"
_VER_SHIFT = db.VER_SHIFT
# Every write names the row by the ``ver`` this process knows it at (see db.py).
_TOMBSTONE = "UPDATE keys SET ver = ?, gen = ?, flags = ?, payload = NULL, links = NULL, usage = NULL WHERE ver = ?"
_PRUNE = "DELETE FROM keys WHERE ver < ? AND flags & ?"
# Tags of handler sessions whose row is gone (each is deleted with its row; a backstop).
_PRUNE_REQ_TAGS = (
    "DELETE FROM meta WHERE k LIKE 'rq.%' AND CAST(substr(k, 4) AS INTEGER) NOT IN "
    "(SELECT serial FROM keys WHERE NOT flags & ?)"
)
# Restrictions whose keyring's row is gone (each is deleted with its row; this is a backstop).
_PRUNE_RESTRICTIONS = "DELETE FROM restrictions WHERE serial NOT IN (SELECT serial FROM keys WHERE NOT flags & ?)"
# Builder tags of keys no longer under construction (their rows went meanwhile).
_PRUNE_TAGS = (
    "DELETE FROM meta WHERE k LIKE 'uc.%' AND CAST(substr(k, 4) AS INTEGER) NOT IN "
    "(SELECT serial FROM keys WHERE flags & ?)"
)
_INSERT = (
    "INSERT INTO keys "
    "(ver, serial, gen, type, description, uid, gid, perm, flags, expiry, revoked_at, datalen, quotalen, payload, links, usage) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_UPDATE_ALL = (
    "UPDATE keys SET ver=?, gen=?, type=?, description=?, uid=?, gid=?, perm=?, flags=?, expiry=?, "
    "revoked_at=?, datalen=?, quotalen=?, payload=?, links=?, usage=? WHERE ver=?"
)
_UPDATE_LINKS = "UPDATE keys SET ver=?, gen=?, datalen=?, quotalen=?, links=? WHERE ver=?"
# A change that leaves the payload as it was keeps its sealed bytes (no re-seal).
_UPDATE_META = (
    "UPDATE keys SET ver=?, gen=?, type=?, description=?, uid=?, gid=?, perm=?, flags=?, expiry=?, "
    "revoked_at=?, datalen=?, quotalen=?, links=?, usage=? WHERE ver=?"
)


# -- fork: the world lock is taken around fork() by the core (world.py); that must
# not start or end a transaction, and the child must not use the parent's connection.
_forking_thread: int | None = None


def _before_fork() -> None:
    global _forking_thread
    _forking_thread = threading.get_ident()


def _after_fork() -> None:
    global _forking_thread
    _forking_thread = None


# Registered after the core's hooks (this module imports the core first), so this
# "before" runs before the core takes the locks and this "after" after it let them go.
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)


class StoreLock:
    """The world lock of a store world: a re-entrant lock whose outermost hold is a transaction."""

    __slots__ = ("_depth", "_raw", "_world")

    def __init__(self, world: StoreWorld) -> None:
        self._raw = threading.RLock()
        self._depth = 0
        self._world = world

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock; the outermost take begins a transaction (``EBUSY``, ``EIO``, ... from the store).

        A non-blocking take (a finaliser releasing a pin) is refused: the core
        then leaves the release to the next operation.
        """
        if _forking_thread is not None and _forking_thread == threading.get_ident():
            return self._raw.acquire()
        if not blocking:
            return False
        self._raw.acquire()
        if self._depth == 0:
            try:
                self._world.begin()
            except BaseException:
                self._raw.release()
                raise
        self._depth += 1
        return True

    def release(self) -> None:
        """Let the lock go; the outermost release writes the changes and commits."""
        if _forking_thread is not None and _forking_thread == threading.get_ident():
            self._raw.release()
            return
        if self._depth == 1:
            try:
                self._world.end()
            finally:
                self._depth = 0
                self._raw.release()
        else:
            self._depth -= 1
            self._raw.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _is_owned(self) -> bool:
        return bool(self._raw._is_owned())  # type: ignore[attr-defined]


class StoreWorld(World):
    """A world whose user keyrings, named sessions and all they link live in a store file.

    ``EACCES`` (directory or file fails its checks), ``EINVAL`` (not a store),
    ``EBADMSG`` (damaged), ``EPROTONOSUPPORT`` (newer schema), the trust source's
    errors when a new store's key is sealed.  An existing store's key is unsealed
    when a payload is first sealed or opened, and its errors come from there.
    """

    def __init__(self, path: Path, limits: QuotaLimits, clock: Clock, gc_delay: int) -> None:
        super().__init__(limits, clock, gc_delay)
        self.path = path
        self.lock = StoreLock(self)  # type: ignore[assignment]
        #: Records that have a row (or get one at the next commit).
        self.pers: set[KeyRecord] = set()
        #: Roots: persistent whether linked or not.
        self.roots: set[KeyRecord] = set()
        #: Roots this world pins so that they outlive every process holding them.
        self.store_pinned: set[KeyRecord] = set()
        #: Changed since the last commit: any record; whose payload changed; rows to delete.
        self.dirty: set[KeyRecord] = set()
        self.pdirty: set[KeyRecord] = set()
        #: Changed in more than their size and links (whose rows are rewritten whole).
        self.mdirty: set[KeyRecord] = set()
        self.gone: dict[int, bool] = {}
        #: The sealed payload last read or written for each record (to skip unchanged ones).
        self.sealed_seen: dict[KeyRecord, bytes] = {}
        #: Per stored keyring, the serials it links that this process does not load
        #: (keys of a type not registered here): written back with its row.
        self.hidden: dict[KeyRecord, list[int]] = {}
        #: Keys under construction by another process: serial -> its builder's tag
        #: (None: no builder recorded, as a row written before tags were).
        self.foreign: dict[int, str | None] = {}
        #: Serials whose builder tag is in the file (written here or seen), to delete with it.
        self.tagged: set[int] = set()
        #: Serials whose restriction is in the file (written here or seen), to delete with the row.
        self.restricted: set[int] = set()
        #: Keyrings whose restriction holds a key: that key stays stored while they are.
        self.restriction_holders: set[KeyRecord] = set()
        #: Stored keyrings read as restricted, whose restriction is rebuilt once all rows are in.
        self._to_restrict: list[KeyRecord] = []
        #: Request-key handler sessions (``_req.<serial>``) made here, and the serials of
        #: those whose maker's tag (meta ``rq.<serial>``) is in the file.
        self.upcall_sessions: set[KeyRecord] = set()
        self.req_tagged: set[int] = set()
        #: Handler sessions made by another process: serial -> its maker's tag.
        self.req_foreign: dict[int, str | None] = {}
        #: serial -> ``ver`` of its live row, for every live row in the file as this
        #: process last saw it (rows are rewritten by ``ver``: nothing indexes serials).
        self.row_ver: dict[int, int] = {}
        self.gen = -1
        #: ``PRAGMA data_version`` when this process last caught up: unchanged, no other
        #: connection has committed since, and the catch-up query is skipped.
        self._data_version = -1
        self.syncing = False
        self.closed = False
        self._record_class = _record_class(self)
        self._sealer: RowSealer | None = None
        self._pid = os.getpid()
        self.conn, fresh = db.open_connection(path)
        # One cursor for the statements of every operation: conn.execute() would make one each time.
        self._cur = self.conn.cursor()
        try:
            self._open_store(fresh)
        except BaseException:
            self.conn.close()
            raise

    def __repr__(self) -> str:
        return f"<StoreWorld {self.path}>"

    # -- opening -----------------------------------------------------------------
    def _open_store(self, fresh: bool) -> None:
        conn = self.conn
        self._execute("BEGIN IMMEDIATE", "starting a transaction")
        try:
            if fresh and db.create_schema(conn):
                key = new_store_key()
                try:
                    source, blob = seal_store_key(key)
                    conn.executemany(
                        "INSERT INTO meta (k, v) VALUES (?, ?)",
                        [("pruned", 0), ("key_source", source), ("key_blob", blob)],
                    )
                    self._sealer = RowSealer(key)
                finally:
                    key.wipe()
            else:
                # The store key is unsealed when a payload is first sealed or opened, so
                # work on names, links and permissions needs no trust source at all.
                meta = {k for (k,) in conn.execute("SELECT k FROM meta").fetchall()}
                if not {"pruned", "key_source", "key_blob"} <= meta:
                    raise error(errno.EBADMSG, f"store {self.path}: its metadata is incomplete")
                db.upgrade_schema(conn, self.path)
            self._execute("COMMIT", "creating the store")
        except sqlite3.Error as exc:
            self._rollback()
            raise db.db_error(exc, self.path, "opening") from None
        except BaseException:
            self._rollback()
            raise

    def _load_key(self) -> RowSealer:
        """Unseal the store key from the file's metadata (inside a transaction); the trust source's errors."""
        meta = dict(self.conn.execute("SELECT k, v FROM meta").fetchall())
        if not {"pruned", "key_source", "key_blob"} <= meta.keys():
            raise error(errno.EBADMSG, f"store {self.path}: its metadata is incomplete")
        key = unseal_store_key(str(meta["key_source"]), bytes(meta["key_blob"]))
        try:
            self._sealer = RowSealer(key)
        finally:
            key.wipe()
        return self._sealer

    def close(self) -> None:
        """Close the store file (again: nothing); later operations on this world fail with ``EBADF``."""
        if self.closed:
            return
        with self.lock:
            self.closed = True
        self.conn.close()

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` of the store file: ``"ok"`` or what is wrong."""
        with self.lock:
            rows = self.conn.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(r[0]) for r in rows)

    # -- the transaction around each operation ---------------------------------------
    def _execute(self, sql: str, doing: str) -> None:
        try:
            self.conn.execute(sql)
        except sqlite3.Error as exc:
            raise db.db_error(exc, self.path, doing) from None

    def _rollback(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def begin(self) -> None:
        """Start an operation: take the store's write lock and catch up with other processes."""
        if self.closed:
            raise error(errno.EBADF, f"store {self.path} is closed")
        if self._pid != os.getpid():
            self._reopen_after_fork()
        cur = self._cur
        try:
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise db.db_error(exc, self.path, "starting a transaction") from None
        try:
            # SQLite changes data_version when another connection commits, never for this
            # one's own commits: while it holds still, memory is what the file says, and
            # there is nothing to catch up with (the common case of one busy process).
            version = cur.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version or self.gen < 0:
                # The store's generation is that of its newest row (tombstones included).
                top = cur.execute(_MAX_VER).fetchone()[0]
                db_gen = 0 if top is None else top >> _VER_SHIFT
                if db_gen != self.gen:
                    self._sync(db_gen)
                    self._settle_orphans()
                self._data_version = version
        except sqlite3.Error as exc:
            self._rollback()
            raise db.db_error(exc, self.path, "reading") from None
        except BaseException:
            self._rollback()
            raise

    def end(self) -> None:
        """End an operation: write what it changed and commit (``EIO``, ``ENOSPC`` ...)."""
        try:
            if self.dirty or self.gone:
                self._flush()
            self._cur.execute("COMMIT")
        except BaseException as exc:
            self._rollback()
            # Memory is now ahead of the file: reload everything, payloads included,
            # at the next operation.
            self.gen = -1
            self.sealed_seen.clear()
            self.dirty.clear()
            self.pdirty.clear()
            self.mdirty.clear()
            self.gone.clear()
            if isinstance(exc, sqlite3.Error):
                raise db.db_error(exc, self.path, "writing") from None
            raise

    def _reopen_after_fork(self) -> None:
        # The parent's connection must never be used (or closed: that could
        # checkpoint or drop locks under the parent) in the child: keep it referenced.
        _KEEP_FOREVER.append(self.conn)
        self.conn, _ = db.open_connection(self.path)
        self._cur = self.conn.cursor()
        self._pid = os.getpid()
        # Secrets are not inherited across fork (secret memory reads as zeros in the
        # child): unseal the store key again and reload every stored payload.
        self._sealer = None
        self.sealed_seen.clear()
        self.gen = -1

    # -- which records persist (called with the lock held, during an operation) ---------
    def alloc(self, *args: Any, **kwargs: Any) -> KeyRecord:
        rec = super().alloc(*args, **kwargs)
        rec.__class__ = self._record_class
        if rec.description == _PERSISTENT_REGISTER and rec.ktype.name == "keyring" and not self.syncing:
            # The register of persistent keyrings (core/persistent.py) is a root: the
            # ``_persistent.<uid>`` keyrings it links, and all they link, are stored.
            self.roots.add(rec)
            self._persist_tree(rec)
        return rec

    def upcall_session(self, ring: KeyRecord) -> None:
        """A request-key handler's session is a root, so a handler program in another process can
        take it over (``KTCTL_SESSION``) with the authorisation key it holds.

        Not pinned by the store: it goes when its maker lets go of it (the upcall
        ends), or, if that process dies first, when another process finds its
        maker's tag dead (:meth:`_settle_orphans`).
        """
        if not self.syncing:
            self.roots.add(ring)
            self.upcall_sessions.add(ring)
            self._persist_tree(ring)

    def new_keyring(self, description: str, uid: int, gid: int | None, perm: int) -> KeyRecord:
        rec = super().new_keyring(description, uid, gid, perm)
        if description not in _PROCESS_RINGS and not self.syncing:
            # A user, named-session or persistent keyring: a root of the store.
            self.roots.add(rec)
            if not (description.startswith("_uid.") or description.startswith("_uid_ses.")):
                rec.pins += 1
                self.store_pinned.add(rec)
            self._persist_tree(rec)
        return rec

    def add_link(self, ring: KeyRecord, key: KeyRecord) -> KeyRecord | None:
        displaced = super().add_link(ring, key)
        if not self.syncing and ring in self.pers:
            self.dirty.add(ring)
            if key not in self.pers:
                self._persist_tree(key)
        return displaced

    def drop_link(self, ring: KeyRecord, key: KeyRecord, refund: bool = True) -> None:
        super().drop_link(ring, key, refund)
        if not self.syncing and ring in self.pers:
            self.dirty.add(ring)
            self._maybe_unpersist(key)

    def unlink_everywhere(self, key: KeyRecord) -> None:
        if self.syncing:
            super().unlink_everywhere(key)
            return
        parents = [self.keys[s] for s in key.parents]
        if key in self.store_pinned:
            self.store_pinned.discard(key)
            key.pins -= 1
        super().unlink_everywhere(key)
        for ring in parents:
            if ring in self.pers:
                self.dirty.add(ring)
        if key in self.pers:
            if not key.invalidated and self.restriction_holders and self._held_by_restriction(key):
                # Reaped (revoked or expired) but held by a stored keyring's restriction,
                # as the kernel's restriction keeps its key: its row stays, so every
                # process goes on answering EKEYREVOKED/EKEYEXPIRED from it.
                return
            self._forget(key, key.invalidated)

    def type_unregistered(self, ktype: Any) -> None:
        """Keys of a type this process unregistered leave this process, not the store.

        Registration is per process: another process may still use the type, so
        its keys stay in the file, linked where they were, and are simply not seen
        here any more, as keys of a type never registered here are not.  Nothing
        is written (so this works on a closed store too).
        """
        with self.lock._raw:  # type: ignore[attr-defined]  # the memory only: no transaction
            for rec in [r for r in self.keys.values() if r.ktype is ktype]:
                stored = rec in self.pers
                for p in list(rec.parents):
                    ring = self.keys.get(p)
                    if ring is not None and ring.links is not None and ring.rings is not None:
                        ring.links.pop(rec.index_key, None)
                        ring.rings.pop(rec.index_key, None)
                        if stored and ring in self.pers:
                            # Still linked in the file, and still charged there.
                            self.hidden.setdefault(ring, []).append(rec.serial)
                rec.parents.clear()
                self.pers.discard(rec)
                self.roots.discard(rec)
                if _payload_slot.__get__(rec) is _SEALED:
                    _payload_slot.__set__(rec, None)
                World.destroy(self, rec)
                self.dirty.discard(rec)
                self.pdirty.discard(rec)
                self.mdirty.discard(rec)
                self.sealed_seen.pop(rec, None)

    def destroy(self, rec: KeyRecord) -> None:
        if _payload_slot.__get__(rec) is _SEALED:
            _payload_slot.__set__(rec, None)  # never opened: nothing in memory to wipe
        # Taken before the core releases the restriction, which _forget() then no longer sees.
        held = _restriction_key(rec)
        super().destroy(rec)
        self.sealed_seen.pop(rec, None)
        self.foreign.pop(rec.serial, None)
        self.req_foreign.pop(rec.serial, None)
        self.upcall_sessions.discard(rec)
        self.hidden.pop(rec, None)
        if rec in self.store_pinned:
            self.store_pinned.discard(rec)
        if rec in self.pers:
            if self.syncing:
                # Its row is gone already (its tombstone comes in this same catch-up).
                self.pers.discard(rec)
                self.roots.discard(rec)
            else:
                self._forget(rec, rec.invalidated)
                if held is not None:
                    self._maybe_unpersist(held)

    def _forget(self, rec: KeyRecord, invalidated: bool) -> None:
        """Delete ``rec``'s row at the commit, and let go of what only it kept stored."""
        self.pers.discard(rec)
        self.roots.discard(rec)
        self.dirty.discard(rec)
        self.gone[rec.serial] = invalidated
        if rec.links:
            for child in list(rec.links.values()):
                self._maybe_unpersist(child)
        held = _restriction_key(rec)
        if held is not None:
            self._maybe_unpersist(held)

    def restriction_set(self, ring: KeyRecord) -> None:
        """``ring.restriction`` was just set or dropped (lock held): the key it holds is stored with it."""
        held = _restriction_key(ring)
        if held is None:
            self.restriction_holders.discard(ring)
            return
        self.restriction_holders.add(ring)
        if ring in self.pers and held not in self.pers and not self.syncing:
            self._persist_tree(held)

    def _held_by_restriction(self, rec: KeyRecord) -> bool:
        """Whether a stored keyring's restriction holds ``rec`` (then it stays stored, as the kernel keeps it)."""
        pers = self.pers
        return any(_restriction_key(ring) is rec and ring in pers for ring in self.restriction_holders)

    def _persist_tree(self, rec: KeyRecord) -> None:
        pending = [rec]
        while pending:
            r = pending.pop()
            if r in self.pers or r.dead:
                continue
            self.pers.add(r)
            self.dirty.add(r)
            self.pdirty.add(r)
            self.gone.pop(r.serial, None)
            if r.links:
                pending.extend(r.links.values())
            held = _restriction_key(r)
            if held is not None:
                pending.append(held)

    def _maybe_unpersist(self, rec: KeyRecord) -> None:
        pending = [rec]
        keys = self.keys
        while pending:
            r = pending.pop()
            if r not in self.pers or r in self.roots:
                continue
            if any(keys.get(p) in self.pers for p in r.parents):
                continue
            if self.restriction_holders and self._held_by_restriction(r):
                continue
            self._forget(r, r.invalidated)

    # -- writing ------------------------------------------------------------------
    def _flush(self) -> None:
        execute = self._cur.execute
        gen = self.gen + 1
        base = gen << _VER_SHIFT
        pers = self.pers
        dirty = self.dirty
        row_ver = self.row_ver
        # Settle first: a dead or invalidated record loses its row, and so may what it linked.
        for rec in tuple(dirty):
            if (rec.dead or rec.invalidated) and rec in pers:
                self._forget(rec, rec.invalidated)
        wrote = False
        gone = self.gone
        if gone:
            tagged = self.tagged
            restricted = self.restricted
            req_tagged = self.req_tagged
            for serial, invalidated in gone.items():
                # The row becomes a tombstone (a row never written has nothing to mark).
                old = row_ver.pop(serial, None)
                if old is not None:
                    flags = F_GONE | (F_INVALIDATED if invalidated else 0)
                    wrote |= execute(_TOMBSTONE, (base | serial, gen, flags, old)).rowcount > 0
                if serial in tagged:
                    tagged.discard(serial)
                    execute("DELETE FROM meta WHERE k = ?", (f"uc.{serial}",))
                if serial in restricted:
                    restricted.discard(serial)
                    execute("DELETE FROM restrictions WHERE serial = ?", (serial,))
                if serial in req_tagged:
                    req_tagged.discard(serial)
                    execute("DELETE FROM meta WHERE k = ?", (f"rq.{serial}",))
            gone.clear()
        write_row = self._write_row
        for rec in dirty:
            if rec in pers:
                write_row(rec, gen, base)
                wrote = True
        if wrote:
            if gen % _TOMBSTONE_SPAN == 0:
                execute(_PRUNE, ((gen - _TOMBSTONE_SPAN + 1) << _VER_SHIFT, F_GONE))
                execute(_PRUNE_TAGS, (F_CONSTRUCTING,))
                execute(_PRUNE_RESTRICTIONS, (F_GONE,))
                execute(_PRUNE_REQ_TAGS, (F_GONE,))
                execute("UPDATE meta SET v = ? WHERE k = 'pruned'", (gen - _TOMBSTONE_SPAN,))
            self.gen = gen
        dirty.clear()
        self.pdirty.clear()
        self.mdirty.clear()

    def _write_row(self, rec: KeyRecord, gen: int, base: int) -> None:
        """Write ``rec``'s row at generation ``gen`` (``base``: ``gen << _VER_SHIFT``)."""
        execute = self._cur.execute
        serial = rec.serial
        upcall = rec.upcall
        links = rec.links
        flags = (
            (F_INSTANTIATED if rec.instantiated else 0)
            | (F_REVOKED if rec.revoked else 0)
            | (F_UID_KEYRING if rec.uid_keyring else 0)
            | (F_ROOT if rec in self.roots else 0)
            | (F_IN_QUOTA if rec.in_quota else 0)
            | (F_KEYRING if links is not None else 0)
            | (F_RESTRICTED if rec.restriction is not None else 0)
        )
        if rec in self.upcall_sessions and serial not in self.req_tagged:
            execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", (f"rq.{serial}", own_tag()))
            self.req_tagged.add(serial)
        if rec.restriction is not None and serial not in self.restricted:
            # In the same transaction as the keyring's row: a restriction is never
            # changed once set, so it is written once, and deleted with the row.
            res = rec.restriction
            execute(
                "INSERT OR REPLACE INTO restrictions (serial, type, restriction) VALUES (?, ?, ?)",
                (serial, res.type_name, res.spec),
            )
            self.restricted.add(serial)
        if upcall:
            if upcall > 0:
                # A negative key's errno (core.request_key), in the bits above the flags.
                flags |= upcall << _NEGATIVE_SHIFT
            elif upcall == UNDER_CONSTRUCTION:
                flags |= F_CONSTRUCTING
                if serial not in self.tagged and serial not in self.foreign:
                    # Built here: other processes wait for it while this process runs.
                    execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", (f"uc.{serial}", own_tag()))
                    self.tagged.add(serial)
        if upcall != UNDER_CONSTRUCTION and serial in self.tagged:
            self.tagged.discard(serial)
            execute("DELETE FROM meta WHERE k = ?", (f"uc.{serial}",))
        blob = None
        if links is not None:
            serials = [k.serial for k in links.values()]
            hidden = self.hidden.get(rec)
            if hidden:
                # Each link is charged KEYQUOTA_LINK_BYTES, hidden ones included, so the
                # charge says how many are still there (none after a clear).
                keep = max(0, rec.datalen // KEYQUOTA_LINK_BYTES - len(serials))
                del hidden[keep:]
                serials += hidden
            # Little-endian 4-byte serials, as struct.pack("<Ni") writes them: array is faster for short lists.
            links_array = array(_LINK_CODE, serials)
            if _BIG_ENDIAN:
                links_array.byteswap()
            blob = links_array.tobytes()
        ver = base | serial
        old = self.row_ver.get(serial)
        ktype = rec.ktype
        sealed: bytes | None = None
        if old is not None and rec not in self.pdirty and rec not in self.mdirty:
            # Only its size or links changed (a keyring gaining or losing a key): the
            # rest of the row stays as it is (measured: binding nine fewer values).
            done = execute(_UPDATE_LINKS, (ver, gen, rec.datalen, rec.quotalen, blob, old)).rowcount
            if not done:
                sealed = self._seal_payload(rec)
        elif old is not None and rec not in self.pdirty:
            done = execute(
                _UPDATE_META,
                (ver, gen, ktype.name, rec.description, rec.uid, rec.gid, rec.perm, flags, rec.expiry, rec.revoked_at,
                 rec.datalen, rec.quotalen, blob, rec.usage, old),
            ).rowcount
            if not done:
                sealed = self._seal_payload(rec)
        else:
            sealed = self._seal_payload(rec)
            done = 0 if old is None else execute(
                _UPDATE_ALL,
                (ver, gen, ktype.name, rec.description, rec.uid, rec.gid, rec.perm, flags, rec.expiry, rec.revoked_at,
                 rec.datalen, rec.quotalen, sealed, blob, rec.usage, old),
            ).rowcount
        if not done:
            # A new row; or the row is not where this process last saw it (edited by hand?): written anew.
            execute(
                _INSERT,
                (ver, serial, gen, ktype.name, rec.description, rec.uid, rec.gid, rec.perm, flags, rec.expiry, rec.revoked_at,
                 rec.datalen, rec.quotalen, sealed, blob, rec.usage),
            )
        self.row_ver[serial] = ver

    def _seal_payload(self, rec: KeyRecord) -> bytes | None:
        payload = _payload_slot.__get__(rec)
        if payload is _SEALED:
            payload = self.open_payload(rec)
        if payload is None:
            self.sealed_seen.pop(rec, None)
            return None
        ktype = rec.ktype
        encode = getattr(ktype, "store_encode", None)
        if encode is not None:
            plain = bytearray(encode(rec))
        else:
            plain = encode_payload(payload)
        try:
            sealer = self._sealer or self._load_key()
            sealed = sealer.seal(rec.serial, ktype.name, rec.description, rec.usage, plain)
        finally:
            plain[:] = bytes(len(plain))
        self.sealed_seen[rec] = sealed
        return sealed

    # -- catching up with other processes ----------------------------------------------
    def _sync(self, db_gen: int) -> None:
        conn = self.conn
        pruned = int(conn.execute("SELECT v FROM meta WHERE k = 'pruned'").fetchone()[0])
        full = self.gen < 0 or self.gen < pruned
        if full:
            every = conn.execute(_SELECT_ALL).fetchall()
            self.row_ver.clear()
        else:
            every = conn.execute(_SELECT_NEWER, ((self.gen + 1) << _VER_SHIFT,)).fetchall()
        row_ver = self.row_ver
        for r in every:  # in file order: a serial's tombstone comes before the row that stored it again
            if r[7] & F_GONE:
                row_ver.pop(r[0], None)
            else:
                row_ver[r[0]] = r[15]
        rows = [r for r in every if not r[7] & F_GONE]
        tombstones = [(r[0], r[7] & F_INVALIDATED) for r in every if r[7] & F_GONE]
        if full:
            # Anything this process holds as stored that has no live row any more is gone.
            present = {r[0] for r in rows}
            invalidated = dict(tombstones)
            tombstones = [(r.serial, invalidated.get(r.serial, 0)) for r in self.pers if r.serial not in present]
        self.syncing = True
        try:
            for serial, invalidated in tombstones:
                self._apply_tombstone(serial, bool(invalidated))
            loaded = []
            for row in rows:
                rec = self._apply_row(row)
                if rec is not None:
                    loaded.append((rec, row[13]))
            for rec, links in loaded:
                if links is not None and rec.links is not None:
                    self._apply_links(rec, links)
            if self._to_restrict:
                # After every row: a restriction names its key by serial.
                pending, self._to_restrict = self._to_restrict, []
                for rec in pending:
                    self._load_restriction(rec)
            for uid in {rec.uid for rec, _ in loaded if rec.uid_keyring}:
                self._register_user_rings(uid)
            for rec, _ in loaded:
                if rec.description == _PERSISTENT_REGISTER and rec in self.roots:
                    self._adopt_register(rec)
        finally:
            self.syncing = False
            self.dirty.clear()
            self.pdirty.clear()
            self.mdirty.clear()
            self.gone.clear()
        self.gen = db_gen

    def _apply_tombstone(self, serial: int, invalidated: bool) -> None:
        self.restricted.discard(serial)  # its deleter deleted the restriction with the row
        self.req_tagged.discard(serial)  # ... and a handler session's tag
        rec = self.keys.get(serial)
        if rec is None or rec not in self.pers:
            return
        self.pers.discard(rec)
        if rec in self.roots:
            self.roots.discard(rec)
            invalidated = True  # a root deleted from the store is gone, wherever it is held
        if rec in self.store_pinned:
            self.store_pinned.discard(rec)
            rec.pins -= 1
        for p in list(rec.parents):
            ring = self.keys.get(p)
            if ring is not None and ring in self.pers:
                self.drop_link(ring, rec)
        if invalidated:
            rec.invalidated = True
            self.unlink_everywhere(rec)
        else:
            # Kept only if something of this process still links or holds it.
            self.maybe_destroy(rec)

    def _apply_row(self, row: tuple[Any, ...]) -> KeyRecord | None:
        serial, _gen, type_name, desc, uid, gid, perm, flags, expiry, revoked_at, datalen, quotalen, sealed, _links, usage, _ver = row
        try:
            ktype = lookup_key_type(type_name)
        except OSError:
            if type_name != AUTH_TYPE.name:
                return None  # a type not registered in this process: its keys are not seen here
            # An authorisation key in a handler session: the core's own type, never registered.
            ktype = AUTH_TYPE
        rec = self.keys.get(serial)
        if rec is not None and rec in self.pers and rec.index_key != (type_name, desc):
            # The serial was freed and drawn again since this process last looked.
            self._apply_tombstone(serial, False)
            rec = self.keys.get(serial)
        if rec is not None and rec not in self.pers:
            self._renumber(rec)
            rec = None
        if rec is None:
            # Built whole as a plain record (no change tracking while loading), then typed.
            rec = KeyRecord(
                serial=serial,
                ktype=ktype,
                description=desc,
                uid=uid,
                gid=gid,
                perm=perm,
                user=self.key_user(uid),
                datalen=datalen,
                quotalen=quotalen,
                in_quota=bool(flags & F_IN_QUOTA),
                instantiated=bool(flags & F_INSTANTIATED),
                revoked=bool(flags & F_REVOKED),
                expiry=expiry,
                revoked_at=revoked_at,
                uid_keyring=bool(flags & F_UID_KEYRING),
                upcall=self._upcall_state(serial, flags),
                links={} if flags & F_KEYRING else None,
                rings={} if flags & F_KEYRING else None,
                usage=usage,
            )
            rec.index_key = (type_name, desc)
            rec.__class__ = self._record_class
            self.keys[serial] = rec
        else:
            self._charge(rec, -1)
            put = _slot_set
            if rec.uid != uid:
                put(rec, "user", self.key_user(uid))
            put(rec, "uid", uid)
            put(rec, "gid", gid)
            put(rec, "perm", perm)
            put(rec, "in_quota", bool(flags & F_IN_QUOTA))
            put(rec, "instantiated", bool(flags & F_INSTANTIATED))
            put(rec, "revoked", bool(flags & F_REVOKED))
            put(rec, "uid_keyring", bool(flags & F_UID_KEYRING))
            put(rec, "upcall", self._upcall_state(serial, flags))
            put(rec, "expiry", expiry)
            put(rec, "revoked_at", revoked_at)
            put(rec, "datalen", datalen)
            put(rec, "quotalen", quotalen)
            put(rec, "usage", usage)
        self._charge(rec, +1)
        if sealed is None:
            self._drop_payload(rec)
        elif self.sealed_seen.get(rec) != sealed:
            # Opened when first used (see StoredKeyRecord.payload): a store of many
            # keys opens without decrypting them all, and a row that fails to open
            # fails the key it belongs to, not the whole store.
            self._drop_payload(rec)
            _payload_slot.__set__(rec, _SEALED)
            self.sealed_seen[rec] = bytes(sealed)
        self.pers.add(rec)
        if flags & F_RESTRICTED:
            self.restricted.add(serial)
            if rec.restriction is None:
                self._to_restrict.append(rec)
        elif rec.restriction is not None:
            # Restricted in memory by an operation whose commit failed: the file wins.
            self.restricted.discard(serial)
            release_restriction(self, rec)
        if flags & F_ROOT:
            if rec.links is not None and desc.startswith("_req.") and rec not in self.upcall_sessions:
                self._note_upcall_session(serial)
            self.roots.add(rec)
            # A handler session made here is held by its upcall, not by the store.
            if not rec.uid_keyring and rec not in self.store_pinned and rec not in self.upcall_sessions:
                rec.pins += 1
                self.store_pinned.add(rec)
        if rec.expiry:
            self.schedule_gc(rec.expiry + self.gc_delay, rec)
        if rec.revoked:
            self.schedule_gc(rec.revoked_at + self.gc_delay, rec)
        return rec

    def _load_restriction(self, ring: KeyRecord) -> None:
        """Install the stored restriction of ``ring`` (read as restricted), holding its key."""
        if ring.dead or ring.restriction is not None:
            return
        row = self.conn.execute("SELECT type, restriction FROM restrictions WHERE serial = ?", (ring.serial,)).fetchone()
        if row is None:
            # Flagged restricted with no restriction stored: refuse every link rather than none.
            res = rebuild_restriction(self, None, None)
        else:
            res = rebuild_restriction(self, row[0], row[1])
            if res.key is not None and res.key not in self.pers:
                # The serial names a key of this process only, not the stored key it meant.
                res = KeyRestriction(restrict_link_unavailable, None, None, row[0], row[1])
        if res.key is not None:
            res.key.pins += 1
        _slot_set(ring, "restriction", res)
        self.restriction_set(ring)

    def _upcall_state(self, serial: int, flags: int) -> int:
        """A loaded row's ``upcall``: the negative errno, 0, or UNDER_CONSTRUCTION (noting its builder)."""
        if flags & F_CONSTRUCTING:
            found = self.conn.execute("SELECT v FROM meta WHERE k = ?", (f"uc.{serial}",)).fetchone()
            tag = None if found is None else str(found[0])
            self.tagged.add(serial)
            if tag != own_tag():
                self.foreign[serial] = tag
            return UNDER_CONSTRUCTION
        self.foreign.pop(serial, None)
        self.tagged.discard(serial)
        if not flags & F_INSTANTIATED:
            # Uninstantiated and not under construction: a row written before builders
            # were recorded, by a process that never finished it.  Settled below as a
            # key whose builder died, so its missing payload is never used.
            self.foreign[serial] = None
            return UNDER_CONSTRUCTION
        return (flags >> _NEGATIVE_SHIFT) & _NEGATIVE_MASK

    def _note_upcall_session(self, serial: int) -> None:
        """A stored handler session made by another process: remember its maker, to outlive it not."""
        found = self.conn.execute("SELECT v FROM meta WHERE k = ?", (f"rq.{serial}",)).fetchone()
        if found is None:
            return  # a named session that happens to be called so: the tag is written with the row
        tag = str(found[0])
        self.req_tagged.add(serial)
        if tag != own_tag():
            self.req_foreign[serial] = tag

    def _settle_orphans(self) -> None:
        """Negate the stored keys under construction whose builder no longer runs (in a transaction),
        and delete the handler sessions whose maker no longer runs (with their authorisation keys)."""
        for serial, tag in list(self.foreign.items()):
            rec = self.keys.get(serial)
            if rec is None or rec.upcall != UNDER_CONSTRUCTION or rec.dead:
                self.foreign.pop(serial, None)
            elif not alive(tag):
                self._negate_orphan(rec)
        for serial, tag in list(self.req_foreign.items()):
            rec = self.keys.get(serial)
            if rec is None or rec.dead or rec not in self.pers:
                self.req_foreign.pop(serial, None)
            elif not alive(tag):
                self.req_foreign.pop(serial, None)
                for child in list((rec.links or {}).values()):
                    if child.ktype is AUTH_TYPE and not child.dead:
                        key_revoke(self, child)  # as complete_request_key revokes it
                rec.invalidated = True
                self.unlink_everywhere(rec)

    def _negate_orphan(self, rec: KeyRecord) -> None:
        """As the kernel when /sbin/request-key exits without building the key: ENOKEY for key_negative_timeout."""
        from keyring_types.core.request_key import NEGATIVE_TIMEOUT, _reject_and_link

        self.foreign.pop(rec.serial, None)
        _reject_and_link(self, rec, NEGATIVE_TIMEOUT, errno.ENOKEY, None, None)

    def construction_poll(self, rec: KeyRecord) -> float | None:
        """Keys another process builds are looked at again every CONSTRUCTION_POLL s; negated if it died."""
        if rec.serial not in self.foreign:
            return None
        if not alive(self.foreign[rec.serial]):
            self._negate_orphan(rec)
        return CONSTRUCTION_POLL

    def open_payload(self, rec: KeyRecord) -> Any:
        """Decrypt and decode the stored payload of ``rec`` into its slot; ``EBADMSG`` if it does not open."""
        sealed = self.sealed_seen.get(rec)
        if sealed is None:
            raise error(errno.EKEYREVOKED, f"the stored payload of key {rec.serial} is not available")
        sealer = self._sealer or self._load_key()
        plain = sealer.open(rec.serial, rec.ktype.name, rec.description, rec.usage, sealed)
        try:
            mv = plain.view()
            try:
                decode = getattr(rec.ktype, "store_decode", None)
                if decode is not None:
                    payload = decode(rec, bytes(mv))
                else:
                    from keyring_types.store.codec import decode_payload

                    payload = decode_payload(mv, type(rec.ktype).__module__)
            finally:
                mv.release()
        finally:
            plain.wipe()
        _payload_slot.__set__(rec, payload)
        return payload

    def _drop_payload(self, rec: KeyRecord) -> None:
        """Wipe and clear the payload in memory without opening a sealed one (no change is recorded)."""
        old = _payload_slot.__get__(rec)
        _payload_slot.__set__(rec, None)
        if old is not _SEALED:
            _wipe(old)
        self.sealed_seen.pop(rec, None)

    def _apply_links(self, ring: KeyRecord, blob: bytes) -> None:
        assert ring.links is not None and ring.rings is not None
        serials = struct.unpack(f"<{len(blob) // 4}i", blob)
        keys = self.keys
        new: dict[tuple[str, str], KeyRecord] = {}
        hidden = []
        for s in serials:
            child = keys.get(s)
            if child is not None:
                new[child.index_key] = child
            else:
                hidden.append(s)
        if hidden:
            self.hidden[ring] = hidden
        else:
            self.hidden.pop(ring, None)
        for idx, child in list(ring.links.items()):
            if new.get(idx) is not child:
                del ring.links[idx]
                ring.rings.pop(idx, None)
                child.parents.pop(ring.serial, None)
                if child not in self.pers:
                    self.maybe_destroy(child)
        ring.links.clear()
        ring.rings.clear()
        for idx, child in new.items():
            ring.links[idx] = child
            if child.links is not None:
                ring.rings[idx] = child
            child.parents[ring.serial] = None

    def _register_user_rings(self, uid: int) -> None:
        """Make the stored ``_uid.N``/``_uid_ses.N`` of ``uid`` this world's registered user keyrings.

        The registration holds a pin on each, as the core's own does.
        """
        u = s = None
        for r in self.roots:
            if r.uid_keyring and not (r.dead or r.invalidated):
                if r.description == f"_uid.{uid}":
                    u = r
                elif r.description == f"_uid_ses.{uid}":
                    s = r
        held: list[KeyRecord] = list(self.user_rings.pop(uid, ()))
        alone = self.uid_ring_alone.pop(uid, None)
        if alone is not None:
            held.append(alone)
        if u is not None:
            u.pins += 1
            if s is not None:
                s.pins += 1
                self.user_rings[uid] = (u, s)
            else:
                self.uid_ring_alone[uid] = u
        for r in held:
            r.pins -= 1
            self.maybe_destroy(r)

    def _adopt_register(self, rec: KeyRecord) -> None:
        """Make a stored persistent-keyring register this world's own (``world.persistent_register``)."""
        current = getattr(self, "persistent_register", None)
        if current is rec:
            return
        setattr(self, "persistent_register", rec)  # noqa: B010  (an attribute of the core's World, when it has one)
        if current is not None:
            current.pins -= 1
            self.maybe_destroy(current)

    def _renumber(self, rec: KeyRecord) -> None:
        """Give a process-only key another serial: the store's key of that serial wins."""
        old = rec.serial
        del self.keys[old]
        rec.serial = self.new_serial()
        self.keys[rec.serial] = rec
        # Keyrings hold it by index key, not serial; its children name it by serial.
        for child in (rec.links or {}).values():
            child.parents.pop(old, None)
            child.parents[rec.serial] = None
        if rec.gc_at:
            when, rec.gc_at = rec.gc_at, 0
            self.schedule_gc(when, rec)

    @staticmethod
    def _charge(rec: KeyRecord, sign: int) -> None:
        user = rec.user
        user.nkeys += sign
        if rec.instantiated:
            user.nikeys += sign
        if rec.in_quota:
            user.qnkeys += sign
            user.qnbytes += sign * rec.quotalen


def _restriction_key(ring: KeyRecord) -> KeyRecord | None:
    """The key ``ring``'s restriction holds, if any."""
    res = ring.restriction
    return None if res is None else res.key


#: The payload slot of KeyRecord itself, below the StoredKeyRecord property.
_payload_slot: Any = KeyRecord.__dict__["payload"]
_slot_set = object.__setattr__


class _Sealed:
    """The payload slot's value while the stored payload has not been opened yet."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<sealed payload>"


_SEALED = _Sealed()


def _wipe(payload: object) -> None:
    wipe = getattr(payload, "wipe", None)
    if callable(wipe):
        wipe()


def _record_class(world: StoreWorld) -> type[KeyRecord]:
    """A KeyRecord subclass, one per world, whose attribute writes mark the record changed.

    Its ``payload`` opens a stored payload the first time it is read.
    """
    dirty = world.dirty
    pdirty = world.pdirty
    mdirty = world.mdirty
    setter = object.__setattr__
    tracked = _TRACKED
    sizes = _SIZES
    slot_get = _payload_slot.__get__
    slot_set = _payload_slot.__set__

    def get_payload(self: KeyRecord) -> Any:
        value = slot_get(self)
        if value is _SEALED:
            value = world.open_payload(self)
        return value

    class StoredKeyRecord(KeyRecord):
        __slots__ = ()

        payload = property(get_payload, slot_set)

        def __setattr__(self, name: str, value: Any) -> None:
            setter(self, name, value)
            if name in tracked:
                dirty.add(self)
                if name == "payload":
                    pdirty.add(self)
                    world.sealed_seen.pop(self, None)
                elif name not in sizes:
                    mdirty.add(self)
                    if name == "restriction":
                        world.restriction_set(self)

    return StoredKeyRecord

