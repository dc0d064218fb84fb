"""The in-process keyspace: the kernel's key management, emulated.

A :class:`Keyspace` is a view (credentials plus thread/process/session
keyrings) onto a shared world of keys with its own serial numbers, per-user
keyrings, quotas, clock and garbage collector.  Each ``sys_*`` method follows
the corresponding kernel entry point step by step, so that the checks happen in
the kernel's order and the errno that comes out is the kernel's.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from keyring_types.constants import (
    KEY_ADD_PAYLOAD_MAX,
    KEY_GC_DELAY,
    KEY_MAX_DESC_SIZE,
    KEY_PERM_MASK,
    KEY_POS_ALL,
    KEY_POS_LINK,
    KEY_POS_READ,
    KEY_POS_SEARCH,
    KEY_POS_SETATTR,
    KEY_POS_VIEW,
    KEY_POS_WRITE,
    KEY_SPEC_GROUP_KEYRING,
    KEY_SPEC_PROCESS_KEYRING,
    KEY_SPEC_REQKEY_AUTH_KEY,
    KEY_SPEC_REQUESTOR_KEYRING,
    KEY_SPEC_SESSION_KEYRING,
    KEY_SPEC_THREAD_KEYRING,
    KEY_SPEC_USER_KEYRING,
    KEY_SPEC_USER_SESSION_KEYRING,
    KEY_TYPE_NAME_MAX,
    KEY_UPDATE_PAYLOAD_MAX,
    KEY_USR_LINK,
    KEY_USR_READ,
    KEY_USR_VIEW,
    KEYQUOTA_LINK_BYTES,
    OVERFLOW_GID,
)
from keyring_types.core.api import KeyspaceAPI
from keyring_types.core.context import Caller
from keyring_types.core.cred import Cred
from keyring_types.core.keytype import KeyType, lookup_key_type, registered_type
from keyring_types.core.perm import (
    NEED_LINK,
    NEED_NAMES,
    NEED_READ,
    NEED_SEARCH,
    NEED_SETATTR,
    NEED_VIEW,
    NEED_WRITE,
    caller_class,
    permitted,
)
from keyring_types.core.quota import KeyUser, QuotaLimits
from keyring_types.core.record import KeyRecord
from keyring_types.core.search import (
    EAGAIN,
    SearchContext,
    direct_hit,
    search_cred_keyrings,
    search_keyring_tree,
)
from keyring_types.core.world import Clock, World
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.secret import SecretBuffer

__all__ = ["Keyspace"]

# Lookup modes beyond a permission mask (``KEY_DEFER_PERM_CHECK``, ``KEY_NEED_UNLINK``).
_DEFER = -1
_UNLINK = -2

_SES_PERM = KEY_POS_ALL | KEY_USR_VIEW | KEY_USR_READ  # anonymous session keyring
_NAMED_SES_PERM = KEY_POS_ALL | KEY_USR_VIEW | KEY_USR_READ | KEY_USR_LINK
_PROC_PERM = KEY_POS_ALL | KEY_USR_VIEW  # thread and process keyrings

def _default_perm(ktype: KeyType) -> int:
    """The mask add_key gives a new key (key_create_or_update), cached on the type object."""
    ktype._add_key_perm = _compute_default_perm(ktype)  # type: ignore[misc]
    return ktype._add_key_perm


def _compute_default_perm(ktype: KeyType) -> int:
    perm = KEY_POS_VIEW | KEY_POS_SEARCH | KEY_POS_LINK | KEY_POS_SETATTR | KEY_USR_VIEW
    if ktype._has_read:
        perm |= KEY_POS_READ
    if ktype.name == "keyring" or ktype._has_update:
        perm |= KEY_POS_WRITE
    return perm


_GOOD_TYPE_NAMES: set[str] = set()


def _check_type_name(type_name: str) -> None:
    if type_name in _GOOD_TYPE_NAMES:
        return
    raw = type_name.encode()
    if not raw or len(raw) >= KEY_TYPE_NAME_MAX or b"\0" in raw:
        raise error(errno.EINVAL, f"key type name must be 1..{KEY_TYPE_NAME_MAX - 1} bytes: {type_name!r}")
    if raw[:1] == b".":
        raise error(errno.EPERM, f"key type {type_name!r} is internal to the kernel (starts with '.')")
    if len(_GOOD_TYPE_NAMES) < 256:
        _GOOD_TYPE_NAMES.add(type_name)


def _check_desc_size(description: str) -> None:
    # UTF-8 takes at most 4 bytes a character: short strings need no encoding.
    if len(description) * 4 < KEY_MAX_DESC_SIZE:
        return
    if len(description.encode()) + 1 > KEY_MAX_DESC_SIZE:
        raise error(
            errno.EINVAL,
            f"description is {len(description.encode())} bytes; at most {KEY_MAX_DESC_SIZE - 1} are allowed",
        )


class _Process:
    """The keyrings a process's credentials point at."""

    def __init__(self, session_from: _Process | None = None) -> None:
        self.threads: dict[int, KeyRecord] = {}
        self.process: KeyRecord | None = None
        self._session: KeyRecord | None = None
        # A process made by as_user() sees its creator's session until it joins its own.
        self._session_from = session_from

    @property
    def session(self) -> KeyRecord | None:
        if self._session_from is not None:
            return self._session_from.session
        return self._session

    def set_session(self, ring: KeyRecord | None) -> KeyRecord | None:
        old = self.session
        self._session_from = None
        self._session = ring
        return old


class Keyspace(KeyspaceAPI):
    """An isolated in-process world of keys with the kernel's semantics.

    ``Keyspace()`` starts like a fresh login session: the caller (this process's
    credentials unless ``uid``/``gid`` are given) holds a new anonymous session
    keyring.  ``clock`` (seconds) drives expiry and GC; ``limits`` the quotas.
    """

    def __init__(
        self,
        *,
        uid: int | None = None,
        gid: int | None = None,
        groups: Iterable[int] | None = None,
        limits: QuotaLimits | None = None,
        clock: Clock = time.time,
        gc_delay: int = KEY_GC_DELAY,
        _world: World | None = None,
        _proc: _Process | None = None,
    ) -> None:
        cur = Cred.current()
        self.cred = Cred(
            cur.uid if uid is None else uid,
            cur.gid if gid is None else gid,
            (cur.groups if uid is None else ()) if groups is None else groups,
        )
        if _world is None:
            _world = World(limits or QuotaLimits(), clock, gc_delay)
            _proc = _Process()
            with _world.lock:
                ses = _world.new_keyring("_ses", self.cred.uid, self.cred.gid, _SES_PERM)
                ses.pins += 1
                _proc.set_session(ses)
        assert _proc is not None
        self._world = _world
        self._proc = _proc
        self._scope = _OpScope(self)

    def __repr__(self) -> str:
        return f"<Keyspace uid={self.cred.uid} gid={self.cred.gid} keys={len(self._world.keys)}>"

    # -- views ---------------------------------------------------------------
    def as_user(self, uid: int, gid: int, groups: tuple[int, ...] | list[int] = ()) -> Keyspace:
        """A process of another user in this session: same keys and session keyring.

        It has its own thread and process keyrings and its own user keyrings.
        """
        return Keyspace(uid=uid, gid=gid, groups=groups, _world=self._world, _proc=_Process(self._proc))

    def same_world(self, other: KeyspaceAPI) -> bool:
        return isinstance(other, Keyspace) and other._world is self._world

    # The Caller protocol, for key types that look up other keys (encrypted masters).

    # -- resolving ids (lookup_user_key) --------------------------------------
    def _thread_ring(self, create: bool) -> KeyRecord | None:
        tid = threading.get_ident()
        ring = self._proc.threads.get(tid)
        if ring is None and create:
            ring = self._world.new_keyring("_tid", self.cred.uid, self.cred.gid, _PROC_PERM)
            ring.pins += 1
            self._proc.threads[tid] = ring
        return ring

    def _process_ring(self, create: bool) -> KeyRecord | None:
        ring = self._proc.process
        if ring is None and create:
            ring = self._world.new_keyring("_pid", self.cred.uid, self.cred.gid, _PROC_PERM)
            ring.pins += 1
            self._proc.process = ring
        return ring

    def _install_session(self, ring: KeyRecord) -> None:
        ring.pins += 1
        old = self._proc.set_session(ring)
        if old is not None:
            old.pins -= 1
            self._world.maybe_destroy(old)

    def _special(self, keyid: int, create: bool) -> KeyRecord:
        w = self._world
        if keyid == KEY_SPEC_THREAD_KEYRING:
            ring = self._thread_ring(create)
            if ring is None:
                raise error(errno.ENOKEY, "this thread has no thread keyring (@t); create it first")
            return ring
        if keyid == KEY_SPEC_PROCESS_KEYRING:
            ring = self._process_ring(create)
            if ring is None:
                raise error(errno.ENOKEY, "this process has no process keyring (@p); create it first")
            return ring
        if keyid == KEY_SPEC_SESSION_KEYRING:
            ses = self._proc.session
            if ses is None:
                if create:
                    ses = w.new_keyring("_ses", self.cred.uid, self.cred.gid, _SES_PERM)
                else:
                    ses = w.user_keyrings(self.cred.uid)[1]
                self._install_session(ses)
            return ses
        if keyid == KEY_SPEC_USER_KEYRING:
            return w.user_keyrings(self.cred.uid)[0]
        if keyid == KEY_SPEC_USER_SESSION_KEYRING:
            return w.user_keyrings(self.cred.uid)[1]
        if keyid == KEY_SPEC_GROUP_KEYRING:
            raise error(errno.EINVAL, "group keyrings (@g) are not implemented, as in the kernel")
        if keyid in (KEY_SPEC_REQKEY_AUTH_KEY, KEY_SPEC_REQUESTOR_KEYRING):
            raise error(errno.ENOKEY, f"special key {keyid} exists only inside a request-key upcall")
        raise error(errno.EINVAL, f"invalid key id {keyid}")

    def _cred_rings(self) -> list[KeyRecord | None]:
        proc = self._proc
        ses = proc._session if proc._session_from is None else proc.session
        if ses is None:
            rings = self._world.user_rings.get(self.cred.uid)
            ses = rings[1] if rings else None
        threads = proc.threads
        return [threads.get(threading.get_ident()) if threads else None, proc.process, ses]

    def _possessed(self, rec: KeyRecord) -> bool:
        """Whether ``rec`` is reachable from the caller's keyrings (identity search)."""
        cred = self.cred
        # Every path ends in the same check of the key's own possessor SEARCH bit.  A
        # possessor bit grants whatever else the mask says, so it alone settles the
        # common case without the full permitted() (likewise below).
        if not rec.perm & KEY_POS_SEARCH and not permitted(rec, cred, True, NEED_SEARCH):
            return False
        parents = rec.parents
        # The commonest case first, without building the list of caller keyrings: a key
        # linked directly in a live session keyring its possessor may search.
        proc = self._proc
        ses = proc._session if proc._session_from is None else proc.session
        if (
            ses is not None
            and ses.serial in parents
            and not (ses.revoked or ses.invalidated)
            and (ses.perm & KEY_POS_SEARCH or permitted(ses, cred, True, NEED_SEARCH))
        ):
            return True
        rings = self._cred_rings()
        keys = self._world.keys
        # Possession asks only whether some search path reaches the key.  Linked in a
        # caller keyring, or in a keyring linked there, the search would find it at
        # depth 0 or 1, so the common cases need no walk.  On the path every keyring
        # must be live and searchable by the possessor.
        for ring in rings:
            if ring is None:
                continue
            if ring is rec:
                return True
            if ring.revoked or ring.invalidated:
                continue
            if not (ring.perm & KEY_POS_SEARCH or permitted(ring, cred, True, NEED_SEARCH)):
                continue
            if ring.serial in parents:
                return True
            for mid_serial in parents:
                mid = keys[mid_serial]
                if (
                    ring.serial in mid.parents
                    and not (mid.revoked or mid.invalidated)
                    and (mid.perm & KEY_POS_SEARCH or permitted(mid, cred, True, NEED_SEARCH))
                ):
                    return True
        ctx = SearchContext(
            rec.index_key, cred, self._world.now(), match=lambda k: k is rec, state_check=False, recurse=True
        )
        found, _ = search_cred_keyrings(rings, ctx)
        return found is not None

    def _lookup(self, keyid: int, need: int, *, create: bool = False, partial: bool = False) -> tuple[KeyRecord, bool]:
        """``lookup_user_key``: resolve, validate, check permission; (record, possessed)."""
        if keyid > 0:
            rec = self._world.keys.get(keyid)
            if rec is None:
                raise error(errno.ENOKEY, f"key {keyid} does not exist")
            possessed = self._possessed(rec)
        elif keyid == 0:
            raise error(errno.EINVAL, "key id 0 names no key")
        else:
            proc = self._proc
            rec = None
            if keyid == KEY_SPEC_SESSION_KEYRING:
                rec = proc._session if proc._session_from is None else proc.session
            if rec is None:
                rec = self._special(keyid, create)
            possessed = True
        if need == _UNLINK:
            return rec, possessed
        if need != _DEFER:
            if rec.invalidated or rec.revoked or rec.dead or rec.expiry:
                rec.validate(self._world.now())
            if not (possessed and (rec.perm >> 24) & need == need) and not permitted(rec, self.cred, possessed, need):
                raise self._denied(rec, possessed, need)
        return rec, possessed

    def _check(self, rec: KeyRecord, possessed: bool, need: int) -> None:
        if not permitted(rec, self.cred, possessed, need):
            raise self._denied(rec, possessed, need)

    def _denied(self, rec: KeyRecord, possessed: bool, need: int) -> OSError:
        who = caller_class(rec, self.cred)
        msg = (
            f"{rec.ktype.name} key {rec.serial} ({rec.description!r}, perm {rec.perm:08x}, owner {rec.uid}): "
            f"uid {self.cred.uid} lacks {NEED_NAMES.get(need, hex(need))} as '{who}'"
            f"{' and possessor' if possessed else ''}"
        )
        if not possessed:
            msg += "; the key is not possessed (not reachable from the thread, process or session keyring)"
            hint = self._user_ring_hint(rec)
            if hint:
                msg += "; " + hint
        return error(errno.EACCES, msg)

    def _user_ring_hint(self, rec: KeyRecord) -> str:
        """Say so when ``rec`` sits in the caller's @u but @u is not reachable from @s."""
        rings = self._world.user_rings.get(self.cred.uid)
        if rings is None:
            return ""
        uid_ring = rings[0]
        now = self._world.now()
        ctx = SearchContext(rec.index_key, self.cred, now, match=lambda k: k is rec, state_check=False, possessed=True)
        if search_keyring_tree(uid_ring, ctx) is None or self._possessed(uid_ring):
            return ""
        return (
            "it is in your user keyring (@u), which is not linked into your session keyring (@s): "
            "link it with `keyctl link @u @s` or ks.session.link(ks.user_keyring)"
        )

    def _unreachable_hint(self, type_name: str, description: str) -> str:
        rings = self._world.user_rings.get(self.cred.uid)
        if rings is None:
            return ""
        ctx = SearchContext((type_name, description), self.cred, self._world.now(), possessed=True)
        found = search_keyring_tree(rings[0], ctx)
        if found is None or self._possessed(rings[0]):
            return ""
        return (
            f"; key {found.serial} ({type_name}:{description}) exists in your user keyring (@u), "
            "which is not linked into your session keyring (@s): link it with `keyctl link @u @s` "
            "or ks.session.link(ks.user_keyring)"
        )

    def _op(self) -> _OpScope:
        return self._scope

    # -- the system calls --------------------------------------------------------
    def sys_add_key(self, type_name: str, description: str | None, payload: bytes | None, ringid: int) -> int:
        """``add_key(2)``; see :meth:`KeyspaceAPI.add_key` for the errno."""
        if type_name not in _GOOD_TYPE_NAMES:
            _check_type_name(type_name)
        if description is not None:
            if len(description) * 4 >= KEY_MAX_DESC_SIZE:
                _check_desc_size(description)
            if not description:
                description = None
            elif description.startswith(".") and type_name.startswith("keyring"):
                raise error(errno.EPERM, f"keyring names starting with '.' are reserved: {description!r}")
        data = payload or b""
        if len(data) > KEY_ADD_PAYLOAD_MAX:
            raise error(errno.EINVAL, f"payload of {len(data)} bytes exceeds add_key's limit of {KEY_ADD_PAYLOAD_MAX}")
        w = self._world
        w.lock.acquire()  # _OpScope inlined, as in sys_read
        prev_caller, w.caller = w.caller, self
        try:
            if w.gc_heap:
                w.gc_due()
            ring, ring_possessed = self._lookup(ringid, NEED_WRITE, create=True)
            ktype = registered_type(type_name) or lookup_key_type(type_name)
            if ring.links is None:
                raise error(errno.ENOTDIR, f"destination {ring.serial} is a '{ring.ktype.name}' key, not a keyring")
            prep = ktype.preparse(data)
            try:
                desc = description if description is not None else prep.description
                if not desc:
                    raise error(errno.EINVAL, f"a '{type_name}' key needs a description")
                assert ring.links is not None
                existing = ring.links.get((type_name, desc))
                # A new link (no same-index key to displace) costs the keyring's owner 4 bytes.
                reserved = existing is None
                if reserved:
                    ring.payload_reserve(ring.datalen + KEYQUOTA_LINK_BYTES)
                try:
                    if ktype._has_update and existing is not None and not (existing.invalidated or existing.revoked):
                        self._check(existing, ring_possessed, NEED_WRITE)
                        ktype.update(existing, prep)
                        return existing.serial
                    perm = ktype._add_key_perm or _default_perm(ktype)
                    rec = w.alloc(ktype, desc, self.cred.uid, self.cred.gid, perm)
                    try:
                        ktype.instantiate(rec, prep)
                    except BaseException:
                        w.destroy(rec)
                        raise
                    rec.instantiated = True
                    rec.user.nikeys += 1
                except BaseException:
                    if reserved:
                        ring.payload_reserve(ring.datalen - KEYQUOTA_LINK_BYTES)
                    raise
                displaced = w.add_link(ring, rec)
                if displaced is not None:
                    w.maybe_destroy(displaced)
                return rec.serial
            finally:
                # The base free_preparse has nothing to do once instantiate took the payload.
                if prep.payload is not None or ktype._has_free_preparse:
                    ktype.free_preparse(prep)
        finally:
            w.caller = prev_caller
            w.lock.release()

    def lookup_key(self, type_name: str, description: str) -> KeyRecord:
        """``request_key_and_link``'s search over the caller's keyrings (no upcall).

        Also the in-kernel ``request_key`` that key types use (:class:`Caller`):
        ENOKEY / EKEYREVOKED / EACCES.
        """
        index = (type_name, description)
        proc = self._proc
        if not proc.threads and proc.process is None and type_name != "keyring":
            # Only the session keyring to search: a usable key linked directly in it is
            # what the search returns first.  Anything else takes the full search.
            ses = proc._session if proc._session_from is None else proc.session
            if ses is not None:
                found = direct_hit(ses, index, self.cred, self._world.now)
                if found is not None:
                    return found
        rings = self._cred_rings()
        ctx = SearchContext(index, self.cred, self._world.now(), skip_expired=True)
        found, err = search_cred_keyrings(rings, ctx)
        if found is not None:
            return found
        if err in (EAGAIN, errno.ENOKEY):
            raise error(
                errno.ENOKEY,
                f"no {type_name} key {description!r} in the caller's keyrings"
                + self._unreachable_hint(type_name, description),
            )
        raise error(err, _search_failure(err, type_name, description))

    def sys_request_key(self, type_name: str, description: str, callout: bytes | None, destringid: int) -> int:
        """``request_key(2)`` without an upcall; ENOKEY (also for an unknown type) / EKEYREVOKED / EACCES."""
        _check_type_name(type_name)
        _check_desc_size(description)
        with self._scope:
            dest = self._lookup(destringid, NEED_WRITE, create=True)[0] if destringid else None
            _search_type(type_name)
            try:
                found = self.lookup_key(type_name, description)
            except OSError as exc:
                if exc.errno == errno.ENOKEY and callout is not None:
                    raise error(
                        errno.ENOKEY,
                        f"no {type_name} key {description!r} found, and a Keyspace has no request-key upcall "
                        "to construct one from callout info",
                    ) from None
                raise
            if dest is not None:
                self._link(dest, found)
            return found.serial

    def sys_get_keyring_id(self, keyid: int, create: bool) -> int:
        """``KEYCTL_GET_KEYRING_ID``; ENOKEY when a special keyring is absent and not created."""
        with self._scope:
            return self._lookup(keyid, NEED_SEARCH, create=create)[0].serial

    def sys_join_session_keyring(self, name: str | None) -> int:
        """``KEYCTL_JOIN_SESSION_KEYRING``: a new anonymous session, or join/create ``name``.

        EPERM for names starting with '.', EDQUOT when a new keyring is over quota.
        """
        with self._scope:
            w = self._world
            if name is None:
                ring = w.new_keyring("_ses", self.cred.uid, self.cred.gid, _SES_PERM)
                self._install_session(ring)
                return ring.serial
            _check_desc_size(name)
            if name.startswith("."):
                raise error(errno.EPERM, f"session keyring names starting with '.' are reserved: {name!r}")
            found = self._find_keyring_by_name(name)
            if found is None:
                found = w.new_keyring(name, self.cred.uid, self.cred.gid, _NAMED_SES_PERM)
            elif found is self._proc.session:
                return found.serial
            self._install_session(found)
            return found.serial

    def _find_keyring_by_name(self, name: str) -> KeyRecord | None:
        """``find_keyring_by_name``: a live named keyring the caller may search."""
        uid_names = {r.description for pair in self._world.user_rings.values() for r in pair}
        now = self._world.now()
        for rec in self._world.keys.values():
            if not rec.is_keyring or rec.description != name or name in uid_names:
                continue
            if rec.revoked or rec.invalidated or rec.dead or rec.expired_at(now):
                continue
            if permitted(rec, self.cred, False, NEED_SEARCH):
                return rec
        return None

    def sys_update(self, keyid: int, payload: bytes) -> None:
        """``KEYCTL_UPDATE``; EINVAL over one page, EOPNOTSUPP, EACCES, EKEYREVOKED, EDQUOT."""
        if len(payload) > KEY_UPDATE_PAYLOAD_MAX:
            raise error(
                errno.EINVAL, f"update payload of {len(payload)} bytes exceeds one page ({KEY_UPDATE_PAYLOAD_MAX})"
            )
        with self._scope:
            rec, _ = self._lookup(keyid, NEED_WRITE)
            ktype = rec.ktype
            if not ktype._has_update:
                raise error(errno.EOPNOTSUPP, f"'{ktype.name}' keys cannot be updated (key {rec.serial})")
            prep = ktype.preparse(payload)
            try:
                ktype.update(rec, prep)
            finally:
                ktype.free_preparse(prep)

    def sys_revoke(self, keyid: int) -> None:
        """``KEYCTL_REVOKE``: needs WRITE or SETATTR; EKEYREVOKED if already revoked."""
        with self._scope:
            try:
                rec, _ = self._lookup(keyid, NEED_WRITE)
            except OSError as exc:
                if exc.errno != errno.EACCES:
                    raise
                rec, _ = self._lookup(keyid, NEED_SETATTR)
            self._revoke(rec)

    def _revoke(self, rec: KeyRecord) -> None:
        if rec.revoked:
            return
        rec.revoked = True
        rec.ktype.revoke(rec)  # runs inside the caller's operation
        if rec.is_keyring:
            # keyring_revoke empties the keyring as well.
            self._clear_ring(rec)
        now = self._world.now()
        if rec.revoked_at == 0 or rec.revoked_at > now:
            rec.revoked_at = now
            self._world.schedule_gc(now + self._world.gc_delay, rec)

    def sys_invalidate(self, keyid: int) -> None:
        """``KEYCTL_INVALIDATE``: needs SEARCH; the key is unlinked everywhere at once."""
        w = self._world
        w.lock.acquire()  # _OpScope inlined, as in sys_read
        prev, w.caller = w.caller, self
        try:
            if w.gc_heap:
                w.gc_due()
            rec, _ = self._lookup(keyid, NEED_SEARCH)
            rec.invalidated = True
            w.unlink_everywhere(rec)
        finally:
            w.caller = prev
            w.lock.release()

    def sys_set_timeout(self, keyid: int, timeout: int) -> None:
        """``KEYCTL_SET_TIMEOUT``: expire ``timeout`` s from now (0 clears); needs SETATTR."""
        with self._scope:
            rec, _ = self._lookup(keyid, NEED_SETATTR, create=True, partial=True)
            if timeout > 0:
                rec.expiry = self._world.now() + timeout
                self._world.schedule_gc(rec.expiry + self._world.gc_delay, rec)
            else:
                rec.expiry = 0

    def sys_setperm(self, keyid: int, perm: int) -> None:
        """``KEYCTL_SETPERM``: EINVAL for unknown bits; EACCES unless owner or sysadmin."""
        if perm < 0 or perm & ~KEY_PERM_MASK:
            raise error(errno.EINVAL, f"permission mask {perm:#x} has bits outside {KEY_PERM_MASK:#010x}")
        with self._scope:
            rec, _ = self._lookup(keyid, NEED_SETATTR, create=True, partial=True)
            if rec.uid != self.cred.uid and not self.cred.sysadmin:
                raise error(
                    errno.EACCES, f"only the owner (uid {rec.uid}) or root may change key {rec.serial}'s permissions"
                )
            rec.perm = perm

    def sys_chown(self, keyid: int, uid: int, gid: int) -> None:
        """``KEYCTL_CHOWN``: giving a key away or to a foreign group needs root; EDQUOT."""
        if uid == -1 and gid == -1:
            return
        if uid < -1 or gid < -1:
            raise error(errno.EINVAL, f"invalid owner {uid}:{gid}")
        with self._scope:
            w = self._world
            rec, _ = self._lookup(keyid, NEED_SETATTR, create=True, partial=True)
            privileged = (uid != -1 and uid != rec.uid) or (gid != -1 and gid != rec.gid and not self.cred.in_group(gid))
            if privileged and not self.cred.sysadmin:
                raise error(
                    errno.EACCES,
                    f"only root may give key {rec.serial} to uid {uid} or to a group the caller is not in",
                )
            if uid != -1 and uid != rec.uid:
                new_owner = w.key_user(uid)
                if rec.in_quota:
                    new_owner.charge_new_key(rec.quotalen)
                    rec.user.release_key(rec.quotalen)
                rec.user.nkeys -= 1
                new_owner.nkeys += 1
                if rec.instantiated:
                    rec.user.nikeys -= 1
                    new_owner.nikeys += 1
                rec.user = new_owner
                rec.uid = uid
            if gid != -1:
                rec.gid = gid

    def sys_describe(self, keyid: int) -> str:
        """``KEYCTL_DESCRIBE``: ``type;uid;gid;perm;description``; EACCES without VIEW."""
        with self._scope:
            rec, _ = self._lookup(keyid, NEED_VIEW, partial=True)
            gid = OVERFLOW_GID if rec.gid is None else rec.gid
            return f"{rec.ktype.name};{rec.uid};{gid};{rec.perm:08x};{rec.description}"

    def sys_clear(self, ringid: int) -> None:
        """``KEYCTL_CLEAR``: unlink every key; ENOTDIR, EACCES without WRITE."""
        with self._scope:
            ring, _ = self._lookup(ringid, NEED_WRITE, create=True)
            if not ring.is_keyring:
                raise error(errno.ENOTDIR, f"key {ring.serial} is not a keyring")
            self._clear_ring(ring)

    def _clear_ring(self, ring: KeyRecord) -> None:
        assert ring.links is not None
        children = list(ring.links.values())
        for child in children:
            self._world.drop_link(ring, child, refund=False)
        ring.payload_reserve(0)
        for child in children:
            self._world.maybe_destroy(child)

    def sys_link(self, keyid: int, ringid: int) -> None:
        """``KEYCTL_LINK``; EACCES, ENOTDIR, EDEADLK (cycle), ELOOP (too deep), EDQUOT."""
        with self._scope:
            ring, _ = self._lookup(ringid, NEED_WRITE, create=True)
            key, _ = self._lookup(keyid, NEED_LINK, create=True)
            self._link(ring, key)

    def _link(self, ring: KeyRecord, key: KeyRecord) -> None:
        """``key_link``: reserve the link's bytes, refuse cycles, install."""
        if not ring.is_keyring:
            raise error(errno.ENOTDIR, f"key {ring.serial} is not a keyring")
        assert ring.links is not None
        existing = ring.links.get(key.index_key)
        if existing is key:
            return
        if existing is None:
            ring.payload_reserve(ring.datalen + KEYQUOTA_LINK_BYTES)
        try:
            if key.is_keyring:
                self._detect_cycle(ring, key)
        except BaseException:
            if existing is None:
                ring.payload_reserve(ring.datalen - KEYQUOTA_LINK_BYTES)
            raise
        displaced = self._world.add_link(ring, key)
        if displaced is not None:
            self._world.maybe_destroy(displaced)

    def _detect_cycle(self, ring: KeyRecord, key: KeyRecord) -> None:
        """EDEADLK if ``ring`` is reachable from ``key``; ELOOP if the tree would be too deep."""
        ctx = SearchContext(
            ring.index_key,
            self.cred,
            self._world.now(),
            match=lambda k: k is ring,
            state_check=False,
            check_perm=False,
            detect_too_deep=True,
        )
        if search_keyring_tree(key, ctx) is not None:
            raise error(
                errno.EDEADLK, f"linking keyring {key.serial} into {ring.serial} would make a cycle"
            )
        if ctx.err == errno.ELOOP:
            raise error(errno.ELOOP, f"linking keyring {key.serial} into {ring.serial} nests keyrings too deeply")

    def sys_unlink(self, keyid: int, ringid: int) -> None:
        """``KEYCTL_UNLINK``: ENOENT if not linked, EACCES without WRITE on the keyring."""
        with self._scope:
            ring, _ = self._lookup(ringid, NEED_WRITE)
            key, _ = self._lookup(keyid, _UNLINK, partial=True)
            if not ring.is_keyring:
                raise error(errno.ENOTDIR, f"key {ring.serial} is not a keyring")
            assert ring.links is not None
            # The kernel deletes by (type, description), whichever key holds that slot.
            victim = ring.links.get(key.index_key)
            if victim is None:
                raise error(errno.ENOENT, f"key {key.serial} is not linked in keyring {ring.serial}")
            self._world.drop_link(ring, victim)
            self._world.maybe_destroy(victim)

    def sys_search(self, ringid: int, type_name: str, description: str, destringid: int) -> int:
        """``KEYCTL_SEARCH``; ENOKEY, EKEYREVOKED/EKEYEXPIRED/EACCES for unusable matches."""
        _check_type_name(type_name)
        _check_desc_size(description)
        with self._scope:
            ring, possessed = self._lookup(ringid, NEED_SEARCH)
            dest = self._lookup(destringid, NEED_WRITE, create=True)[0] if destringid else None
            _search_type(type_name)
            if not ring.is_keyring:
                raise error(errno.ENOTDIR, f"key {ring.serial} is not a keyring")
            ctx = SearchContext((type_name, description), self.cred, self._world.now(), possessed=possessed)
            found = search_keyring_tree(ring, ctx)
            if found is None:
                if ctx.err == EAGAIN:
                    raise error(
                        errno.ENOKEY,
                        f"no {type_name} key {description!r} in keyring {ring.serial} or below"
                        + self._unreachable_hint(type_name, description),
                    )
                raise error(ctx.err, _search_failure(ctx.err, type_name, description))
            if dest is not None:
                self._check(found, possessed, NEED_LINK)
                self._link(dest, found)
            return found.serial

    def _readable(self, keyid: int, need_read_op: bool = True) -> KeyRecord:
        """KEYCTL_READ's checks: READ or possession, a read op, a valid key."""
        try:
            rec, possessed = self._lookup(keyid, _DEFER)
        except OSError as exc:
            raise error(errno.ENOKEY, f"cannot read key {keyid}: {exc.strerror}") from None
        if not possessed and not permitted(rec, self.cred, False, NEED_READ):
            raise self._denied(rec, possessed, NEED_READ)
        if need_read_op and not rec.ktype._has_read:
            raise error(errno.EOPNOTSUPP, f"'{rec.ktype.name}' keys cannot be read (key {rec.serial})")
        if rec.invalidated or rec.revoked or rec.dead or rec.expiry:
            rec.validate(self._world.now())
        return rec

    def sys_read(self, keyid: int) -> bytes:
        """``KEYCTL_READ``; ENOKEY, EACCES, EOPNOTSUPP, EKEYREVOKED, EKEYEXPIRED."""
        # _OpScope inlined (two Python calls fewer): read, add and invalidate are the hot path.
        w = self._world
        w.lock.acquire()
        prev, w.caller = w.caller, self
        try:
            if w.gc_heap:
                w.gc_due()
            rec = self._readable(keyid)
            return rec.ktype.read(rec)
        finally:
            w.caller = prev
            w.lock.release()

    def sys_secret(self, keyid: int) -> SecretBuffer:
        """The plaintext for in-process use; the same access rules as ``read``.

        Types without a read op (logon) still hand their secret to in-process consumers,
        as the kernel hands logon keys to kernel consumers.
        """
        with self._scope:
            rec = self._readable(keyid, need_read_op=False)
            return rec.ktype.secret(rec)

    # -- introspection (the /proc/keys and /proc/key-users views) ---------------
    def proc_keys(self) -> list[str]:
        """Lines as ``/proc/keys`` shows them, for keys the caller may VIEW."""
        from keyring_types.core.procfs import proc_keys_line

        with self._scope:
            now = self._world.now()
            out = []
            for rec in sorted(self._world.keys.values(), key=lambda r: r.serial):
                if permitted(rec, self.cred, self._possessed(rec), NEED_VIEW):
                    out.append(proc_keys_line(rec, now))
            return out

    def quota(self, uid: int | None = None) -> KeyUser:
        """The quota record of ``uid`` (default: the caller), as ``/proc/key-users`` shows it."""
        with self._world.lock:
            return self._world.key_user(self.cred.uid if uid is None else uid)

    def gc(self) -> None:
        """Run the garbage collector now (it also runs before every operation)."""
        with self._world.lock:
            self._world.gc()


class _OpScope:
    """Hold the world lock, run due GC, and make the view the world's current caller.

    One per view, reused: the world lock serialises operations, so the world has
    one caller at a time; re-entry (a key type calling the API from inside an
    operation) stacks the callers it replaced.  The hottest system calls do the
    same inline (see ``sys_read``).
    """

    __slots__ = ("_ks", "_lock", "_world", "_saved")

    def __init__(self, ks: Keyspace) -> None:
        self._ks = ks
        self._world = ks._world
        self._lock = ks._world.lock
        self._saved: list[Caller | None] = []

    def __enter__(self) -> None:
        self._lock.acquire()
        w = self._world
        self._saved.append(w.caller)
        w.caller = self._ks
        if w.gc_heap:
            try:
                w.gc_due()
            except BaseException:
                self.__exit__(None, None, None)
                raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._world.caller = self._saved.pop()
        self._lock.release()


def _search_type(type_name: str) -> None:
    """Search and request_key report an unknown type as ENOKEY (key_type_lookup's own errno)."""
    try:
        lookup_key_type(type_name)
    except OSError:
        raise error(errno.ENOKEY, f"no key can match: key type '{type_name}' is not registered") from None


def _search_failure(err: int, type_name: str, description: str) -> str:
    what = {
        errno.EKEYREVOKED: "was revoked or invalidated",
        errno.EKEYEXPIRED: "has expired",
        errno.EACCES: "is not searchable by the caller",
    }.get(err, "could not be used")
    return f"the only {type_name} key {description!r} found {what}"
