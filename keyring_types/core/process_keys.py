"""A view's own keyrings (security/keys/process_keys.c): thread, process, session and
user keyrings, the special ids that name them, possession, and ``lookup_user_key``.

:class:`ProcessKeys` is the base of :class:`~keyring_types.core.keyspace.Keyspace`:
it holds the view's credentials and keyrings and resolves key ids for the
``sys_*`` operations in :mod:`keyring_types.core.keyctl`.
"""

from __future__ import annotations

import errno
import threading
import weakref
from typing import TYPE_CHECKING

from keyring_types.constants import (
    KEY_POS_ALL,
    KEY_POS_SEARCH,
    KEY_SPEC_GROUP_KEYRING,
    KEY_SPEC_PROCESS_KEYRING,
    KEY_SPEC_REQKEY_AUTH_KEY,
    KEY_SPEC_REQUESTOR_KEYRING,
    KEY_SPEC_SESSION_KEYRING,
    KEY_SPEC_THREAD_KEYRING,
    KEY_SPEC_USER_KEYRING,
    KEY_SPEC_USER_SESSION_KEYRING,
    KEY_USR_LINK,
    KEY_USR_READ,
    KEY_USR_VIEW,
)
from keyring_types.core.construction import negative_error, wait_for_construction
from keyring_types.core.cred import Cred
from keyring_types.core.hints import denied, search_failure, unreachable_hint
from keyring_types.core.keyring import find_keyring_by_name
from keyring_types.core.perm import NEED_SEARCH, NEED_SETATTR, NEED_VIEW, permitted
from keyring_types.core.record import KeyRecord
from keyring_types.core.search import (
    EAGAIN,
    SearchContext,
    direct_hit,
    search_cred_keyrings,
    type_match,
)
from keyring_types.core.world import World
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.keyspace import OpScope

__all__ = ["DEFER_PERM_CHECK", "NEED_UNLINK", "ProcessKeyrings", "ProcessKeys"]

# Lookup modes beyond a permission mask (``KEY_DEFER_PERM_CHECK``, ``KEY_NEED_UNLINK``).
DEFER_PERM_CHECK = -1
NEED_UNLINK = -2
#: The permissions whose lookups the kernel makes with KEY_LOOKUP_PARTIAL (describe,
#: setperm, chown, set_timeout); ``_lookup(partial=...)`` says so for other calls.
_PARTIAL_NEEDS = frozenset({NEED_VIEW, NEED_SETATTR})

SES_PERM = KEY_POS_ALL | KEY_USR_VIEW | KEY_USR_READ  # anonymous session keyring
NAMED_SES_PERM = KEY_POS_ALL | KEY_USR_VIEW | KEY_USR_READ | KEY_USR_LINK
PROC_PERM = KEY_POS_ALL | KEY_USR_VIEW  # thread and process keyrings


class _ThreadRing:
    """A thread's ``@t``, held in that thread's slot of a ``threading.local``.

    Python drops the slot when the thread ends; the finaliser then releases the
    keyring, as the kernel puts a thread keyring at thread exit.  A later thread,
    even one given the same ident, starts with an empty slot.
    """

    __slots__ = ("__weakref__", "ring")

    def __init__(self, ring: KeyRecord) -> None:
        self.ring = ring


class ProcessKeyrings:
    """The keyrings a process's credentials point at, each pinned while held.

    A process made by ``as_user`` starts holding its creator's session keyring
    (a reference of its own, as a forked child holds one): either may then join
    another session without taking the keyring from the other.  The process and
    session keyrings are released when the process (the view) is collected.
    """

    def __init__(self, world: World) -> None:
        #: Per thread: ``.t``, the thread's :class:`_ThreadRing` once it has one.
        self.threads = threading.local()
        #: Whether any thread ever had a thread keyring here (lets the common case skip the lookup).
        self.any_thread = False
        self.process: KeyRecord | None = None
        self.session: KeyRecord | None = None
        # What this process pins, shared with the finaliser that unpins it.
        self._pinned: dict[str, KeyRecord] = {}
        fin = weakref.finalize(self, _release_pins, world, self._pinned)
        fin.atexit = False  # at exit the whole world goes; no need to walk it

    def set_session(self, ring: KeyRecord) -> KeyRecord | None:
        """Hold ``ring`` as the session keyring; returns the old one, whose pin the caller drops."""
        ring.pins += 1
        old, self.session = self.session, ring
        self._pinned["session"] = ring
        return old

    def set_process(self, ring: KeyRecord) -> None:
        """Hold ``ring`` (new, unpinned) as the process keyring."""
        ring.pins += 1
        self.process = ring
        self._pinned["process"] = ring


def _release_pins(world: World, pinned: dict[str, KeyRecord]) -> None:
    for rec in pinned.values():
        world.release_pin(rec)
    pinned.clear()


class ProcessKeys:
    """Credentials plus process keyrings on a shared world: id resolution and possession.

    Every method here runs with the world lock held (inside an operation).
    """

    cred: Cred
    _world: World
    _proc: ProcessKeyrings
    _scope: OpScope
    #: The request-key authorisation key this view has assumed (the kernel's
    #: ``cred->request_key_auth``), pinned while held; see core.request_key.
    _reqkey_auth: KeyRecord | None = None

    # -- the caller's own keyrings ------------------------------------------------
    def _thread_ring(self, create: bool) -> KeyRecord | None:
        proc = self._proc
        held: _ThreadRing | None = getattr(proc.threads, "t", None)
        if held is not None:
            return held.ring
        if not create:
            return None
        w = self._world
        ring = w.new_keyring("_tid", self.cred.uid, self.cred.gid, PROC_PERM)
        ring.pins += 1
        held = _ThreadRing(ring)
        weakref.finalize(held, w.release_pin, ring)
        proc.threads.t = held
        proc.any_thread = True
        return ring

    def _process_ring(self, create: bool) -> KeyRecord | None:
        ring = self._proc.process
        if ring is None and create:
            ring = self._world.new_keyring("_pid", self.cred.uid, self.cred.gid, PROC_PERM)
            self._proc.set_process(ring)
        return ring

    def _install_session(self, ring: KeyRecord) -> None:
        old = self._proc.set_session(ring)
        if old is not None:
            old.pins -= 1
            self._world.maybe_destroy(old)

    def _join_session_keyring(self, name: str | None) -> int:
        """``join_session_keyring``: a new anonymous session, or join (creating) ``name``; EDQUOT."""
        w = self._world
        if name is None:
            ring = w.new_keyring("_ses", self.cred.uid, self.cred.gid, SES_PERM)
            self._install_session(ring)
            return ring.serial
        found = find_keyring_by_name(w, self.cred, name)
        if found is None:
            found = w.new_keyring(name, self.cred.uid, self.cred.gid, NAMED_SES_PERM)
        elif found is self._proc.session:
            return found.serial
        self._install_session(found)
        return found.serial

    def _special(self, keyid: int, create: bool) -> KeyRecord:
        """The keyring a ``KEY_SPEC_*`` id names, made if ``create``; ENOKEY, EINVAL."""
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
            # Asked to create, a caller whose session is a user keyring (none yet, or
            # joined by name) gets a new anonymous one, as lookup_user_key does.
            if ses is None or (create and ses.uid_keyring):
                if create:
                    ses = w.new_keyring("_ses", self.cred.uid, self.cred.gid, SES_PERM)
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
            return self._authority_special(keyid)
        raise error(errno.EINVAL, f"invalid key id {keyid}")

    def _authority_special(self, keyid: int) -> KeyRecord:
        """``@a`` (the assumed authorisation key) or the requestor's destination keyring.

        ENOKEY outside an upcall (no authority assumed), EKEYREVOKED once the
        authority is spent.
        """
        auth = self._reqkey_auth
        if auth is None:
            raise error(
                errno.ENOKEY,
                f"special key {keyid} exists only inside a request-key upcall, after assume_authority",
            )
        if keyid == KEY_SPEC_REQKEY_AUTH_KEY:
            return auth
        if auth.revoked or auth.payload is None:
            raise error(errno.EKEYREVOKED, f"the request-key authority (key {auth.serial}) has been revoked")
        dest: KeyRecord | None = auth.payload.dest
        if dest is None:
            raise error(errno.ENOKEY, "the key under construction has no destination keyring")
        return dest

    def _cred_rings(self) -> list[KeyRecord | None]:
        """The keyrings a search starts from: thread, process, session (or the user session)."""
        proc = self._proc
        ses = proc.session
        if ses is None:
            rings = self._world.user_rings.get(self.cred.uid)
            ses = rings[1] if rings else None
        held: _ThreadRing | None = getattr(proc.threads, "t", None) if proc.any_thread else None
        return [None if held is None else held.ring, proc.process, ses]

    # -- possession and lookup_user_key ---------------------------------------------
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
        ses = proc.session
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
        ctx = SearchContext(rec.index_key, cred, self._world.now(), match=lambda k: k is rec, state_check=False)
        found, _ = search_cred_keyrings(rings, ctx)
        return found is not None

    def _lookup(
        self, keyid: int, need: int, *, create: bool = False, partial: bool | None = None
    ) -> tuple[KeyRecord, bool]:
        """``lookup_user_key``: resolve, validate, check permission; (record, possessed).

        ``need`` is a ``NEED_*`` mask, or :data:`DEFER_PERM_CHECK` (resolve only; the
        caller checks) or :data:`NEED_UNLINK` (resolve only, not validated).
        ``partial`` (KEY_LOOKUP_PARTIAL) takes a key under construction or negative
        as it is instead of waiting; by default it follows ``need`` as the kernel's
        calls do.
        ENOKEY, EINVAL, EACCES, EKEYREVOKED, EKEYEXPIRED.
        """
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
                rec = proc.session
                if rec is not None and rec.uid_keyring and create:
                    rec = None
            if rec is None:
                rec = self._special(keyid, create)
            possessed = True
        if need == NEED_UNLINK:
            return rec, possessed
        if rec.upcall:
            # A key under construction or negative.  The kernel's PARTIAL lookups
            # (describe, setperm, chown, set_timeout: the calls needing VIEW or
            # SETATTR) take it as it is; the others wait for the handler, then
            # fail with a negative key's error (read checks that itself).
            if not (need in _PARTIAL_NEEDS if partial is None else partial):
                wait_for_construction(self._world, rec)
                if rec.upcall > 0 and need != DEFER_PERM_CHECK:
                    raise negative_error(rec)
        if need != DEFER_PERM_CHECK:
            if rec.invalidated or rec.revoked or rec.dead or rec.expiry:
                rec.validate(self._world.now())
            if not (possessed and (rec.perm >> 24) & need == need) and not permitted(rec, self.cred, possessed, need):
                raise denied(self, rec, possessed, need)
        return rec, possessed

    def _check(self, rec: KeyRecord, possessed: bool, need: int) -> None:
        """EACCES unless the caller holds ``need`` on ``rec`` (``key_permission``)."""
        if not permitted(rec, self.cred, possessed, need):
            raise denied(self, rec, possessed, need)

    # -- search_process_keyrings ----------------------------------------------------
    def lookup_key(self, type_name: str, description: str) -> KeyRecord:
        """The in-kernel ``request_key`` that key types use (:class:`Caller`), without an upcall.

        Searches the caller's keyrings and waits for a key under construction:
        ENOKEY / EKEYREVOKED / EACCES, or a negative key's error.
        """
        found = self.search_process_keyrings(type_name, description)
        if found.upcall:
            # Under construction: the kernel's request_key() waits for the outcome.
            wait_for_construction(self._world, found)
            if found.upcall > 0:
                raise negative_error(found)
        return found

    def search_process_keyrings(self, type_name: str, description: str) -> KeyRecord:
        """``request_key_and_link``'s search over the caller's keyrings; may return a key under construction.

        ENOKEY (none, or only expired ones), EKEYREVOKED / EACCES / a negative key's
        error when only unusable ones exist.
        """
        found, err = self._search_process((type_name, description))
        if found is not None:
            return found
        if err in (EAGAIN, errno.ENOKEY):
            raise error(
                errno.ENOKEY,
                f"no {type_name} key {description!r} in the caller's keyrings"
                + unreachable_hint(self, type_name, description),
            )
        raise error(err, search_failure(err, type_name, description))

    def _search_process(self, index: tuple[str, str]) -> tuple[KeyRecord | None, int]:
        """``search_process_keyrings_rcu``: (key, 0), or (None, errno) with EAGAIN for "nothing at all"."""
        proc = self._proc
        match = type_match(*index) if index[0] not in ("user", "logon", "keyring") else None
        if match is not None:
            ctx = SearchContext(index, self.cred, self._world.now(), skip_expired=True, match=match, iterate=True)
            return search_cred_keyrings(self._cred_rings(), ctx)
        if not proc.any_thread and proc.process is None and index[0] != "keyring":
            # Only the session keyring to search: a usable key linked directly in it is
            # what the search returns first.  Anything else takes the full search.
            ses = proc.session
            if ses is not None:
                found = direct_hit(ses, index, self.cred, self._world.now)
                if found is not None:
                    return found, 0
        ctx = SearchContext(index, self.cred, self._world.now(), skip_expired=True)
        return search_cred_keyrings(self._cred_rings(), ctx)
