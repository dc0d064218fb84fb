"""Construction by upcall (security/keys/request_key.c and keyctl.c's handler-side calls).

``request_key`` with callout info, finding nothing, makes the key itself in
state "under construction" (``U`` in /proc/keys), links it into the
destination keyring, makes a ``.request_key_auth`` key that carries the
authority to build it, and runs a handler the way the kernel runs
``/sbin/request-key``: in a fresh session keyring ``_req.<serial>`` that holds
the authorisation key, as root.  The handler instantiates the key, or negates or
rejects it (a negative key, ``N``, answers later requests with ENOKEY or the
reject errno until it expires).  Whoever else asks for the key meanwhile waits
for that one outcome.

:class:`Upcalls` adds the system calls to :class:`~keyring_types.core.keyctl.Keyctl`:
``request_key`` itself and ``KEYCTL_INSTANTIATE``, ``_INSTANTIATE_IOV``,
``_NEGATE``, ``_REJECT``, ``_ASSUME_AUTHORITY`` and ``_SET_REQKEY_KEYRING``.
"""

from __future__ import annotations

import errno
import threading
from typing import TYPE_CHECKING

from keyring_types.constants import (
    KEY_POS_ALL,
    KEY_REQKEY_DEFL_DEFAULT,
    KEY_REQKEY_DEFL_NO_CHANGE,
    KEY_REQKEY_DEFL_PROCESS_KEYRING,
    KEY_REQKEY_DEFL_REQUESTOR_KEYRING,
    KEY_REQKEY_DEFL_SESSION_KEYRING,
    KEY_REQKEY_DEFL_THREAD_KEYRING,
    KEY_REQKEY_DEFL_USER_KEYRING,
    KEY_REQKEY_DEFL_USER_SESSION_KEYRING,
    KEY_SPEC_REQKEY_AUTH_KEY,
    KEY_SPEC_REQUESTOR_KEYRING,
    KEY_USR_READ,
    KEY_USR_VIEW,
    KEYQUOTA_LINK_BYTES,
)
from keyring_types.core.construction import construction_done, negative_error, wait_for_construction
from keyring_types.core.context import calling
from keyring_types.core.hints import search_failure, unreachable_hint
from keyring_types.core.key import default_perm, key_revoke
from keyring_types.core.keyctl import Keyctl, _search_type, check_desc_size, check_type_name
from keyring_types.core.keyring import key_link
from keyring_types.core.keytype import KeyType, lookup_key_type
from keyring_types.core.perm import NEED_LINK, NEED_WRITE
from keyring_types.core.process_keys import ProcessKeyrings
from keyring_types.core.record import UNDER_CONSTRUCTION, KeyRecord
from keyring_types.core.request_key_auth import AUTH_KEY_PERM, AUTH_TYPE, RequestKeyAuth
from keyring_types.core.restrict import check_restriction
from keyring_types.core.search import EAGAIN, SearchContext, search_cred_keyrings
from keyring_types.core.watch import NOTIFY_KEY_INSTANTIATED, NOTIFY_KEY_LINKED, notify_key
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.keyspace import Keyspace
    from keyring_types.core.world import World

__all__ = ["NEGATIVE_TIMEOUT", "Upcalls"]

#: Seconds a key stays negative when its handler did not build it (key_negative_timeout).
NEGATIVE_TIMEOUT = 60
#: request_key copies callout info with strndup_user(..., PAGE_SIZE): at most 4095 bytes.
_CALLOUT_MAX = 4095
#: KEYCTL_INSTANTIATE's payload limit.
_INSTANTIATE_MAX = 1024 * 1024 - 1
#: readv's limit on an iovec array (UIO_MAXIOV).
_UIO_MAXIOV = 1024
#: Kernel-internal restart codes a reject may not carry (ERESTARTSYS ... ERESTART_RESTARTBLOCK).
_RESTART_CODES = frozenset({512, 513, 514, 516})
_MAX_ERRNO = 4095


class Upcalls(Keyctl):
    """``request_key`` with construction, and the calls a request-key handler makes."""

    #: The default destination of constructed keys (the kernel's ``cred->jit_keyring``).
    _jit_keyring: int = KEY_REQKEY_DEFL_DEFAULT

    # -- the requester's side --------------------------------------------------------
    def sys_request_key(self, type_name: str, description: str, callout: bytes | None, destringid: int) -> int:
        """``request_key(2)``: find the key, or have a handler build it from ``callout``.

        ENOKEY (none and no callout info, an unknown type, a handler that did not
        build it), a negative key's error (ENOKEY or what the handler rejected it
        with), EKEYREVOKED / EKEYEXPIRED / EACCES for unusable matches, EPERM (a
        keyring cannot be constructed), EINVAL (callout info over 4095 bytes),
        EDQUOT.
        """
        check_type_name(type_name)
        check_desc_size(description)
        if callout is not None and len(callout) > _CALLOUT_MAX:
            raise error(errno.EINVAL, f"callout info of {len(callout)} bytes exceeds one page ({_CALLOUT_MAX} + NUL)")
        w = self._world
        with self._scope:
            dest = self._lookup(destringid, NEED_WRITE, create=True)[0] if destringid else None
            _search_type(type_name)
            found, err = self._search_process((type_name, description))
            if found is not None:
                if dest is not None:
                    # Found through the caller's keyrings, so possessed; linking it still
                    # needs LINK on the key, as request_key_and_link checks.
                    self._check(found, True, NEED_LINK)
                    key_link(w, self.cred, dest, found)
                if not found.upcall:
                    return found.serial  # built and usable: the search checked its state
                rec, auth = found, None
            elif err != EAGAIN:
                raise self._search_error(err, type_name, description)
            elif callout is None:
                raise error(
                    errno.ENOKEY,
                    f"no {type_name} key {description!r} in the caller's keyrings"
                    + unreachable_hint(self, type_name, description),
                )
            else:
                rec, auth = self._construct(lookup_key_type(type_name), description, callout, dest)
        if auth is not None:
            outcome = self._run_upcall(rec, auth)
            if outcome is not None:
                raise outcome
        with self._scope:
            wait_for_construction(w, rec)
            if rec.upcall > 0:
                raise negative_error(rec)
            rec.validate(w.now())
            return rec.serial

    def _search_error(self, err: int, type_name: str, description: str) -> OSError:
        """The error of a search that found only unusable keys (no construction then)."""
        if err == errno.ENOKEY:
            return error(err, f"the {type_name} key {description!r} found is negative (its handler negated it)")
        if err in (errno.EKEYREVOKED, errno.EKEYEXPIRED, errno.EACCES):
            return error(err, search_failure(err, type_name, description))
        name = errno.errorcode.get(err, str(err))
        return error(err, f"the {type_name} key {description!r} found is negative (its handler rejected it with {name})")

    def _construct(
        self, ktype: KeyType, description: str, callout: bytes, dest: KeyRecord | None
    ) -> tuple[KeyRecord, KeyRecord]:
        """``construct_key_and_link`` up to the upcall: the key, linked, and its authorisation key."""
        if ktype.name == "keyring":
            raise error(errno.EPERM, "request_key cannot construct a keyring")
        w = self._world
        dest = self._construct_dest(dest)
        rec = w.alloc(ktype, description, self.cred.uid, self.cred.gid, default_perm(ktype))
        rec.upcall = UNDER_CONSTRUCTION
        try:
            if dest is not None:
                # construct_alloc_key links without asking a restriction: the check
                # comes when the handler instantiates into a keyring.
                _link_unrestricted(w, dest, rec)
            auth = self._new_auth_key(rec, callout, dest)
        except BaseException:
            w.maybe_destroy(rec)
            raise
        return rec, auth

    def _construct_dest(self, dest: KeyRecord | None) -> KeyRecord | None:
        """``construct_get_dest_keyring``: the explicit one, or the default by ``set_reqkey_keyring``."""
        if dest is not None:
            return dest
        w = self._world
        jit = self._jit_keyring
        order = (
            KEY_REQKEY_DEFL_THREAD_KEYRING,
            KEY_REQKEY_DEFL_PROCESS_KEYRING,
            KEY_REQKEY_DEFL_SESSION_KEYRING,
            KEY_REQKEY_DEFL_USER_SESSION_KEYRING,
        )
        if jit in (KEY_REQKEY_DEFL_DEFAULT, KEY_REQKEY_DEFL_REQUESTOR_KEYRING):
            auth = self._reqkey_auth
            if auth is not None and not auth.revoked and auth.payload is not None and auth.payload.dest is not None:
                # A handler requesting a key of its own: it goes where its requester
                # wanted, without the WRITE check (so request-key may add there).
                found: KeyRecord = auth.payload.dest
                return found
            start = 0
        elif jit == KEY_REQKEY_DEFL_USER_KEYRING:
            ring = w.user_keyrings(self.cred.uid)[0]
            self._check(ring, True, NEED_WRITE)
            return ring
        else:
            start = order.index(jit)
        candidate: KeyRecord | None = None
        for step in order[start:]:
            if step == KEY_REQKEY_DEFL_THREAD_KEYRING:
                candidate = self._thread_ring(False)
            elif step == KEY_REQKEY_DEFL_PROCESS_KEYRING:
                candidate = self._proc.process
            elif step == KEY_REQKEY_DEFL_SESSION_KEYRING:
                candidate = self._proc.session
            else:
                candidate = w.user_keyrings(self.cred.uid)[1]
            if candidate is not None:
                break
        assert candidate is not None
        # WRITE is needed: the default may be the session keyring, which joining needs only SEARCH for.
        self._check(candidate, True, NEED_WRITE)
        return candidate

    def _new_auth_key(self, target: KeyRecord, callout: bytes, dest: KeyRecord | None) -> KeyRecord:
        """``request_key_auth_new``: the authorisation key for ``target`` (not charged to quota)."""
        w = self._world
        held = self._reqkey_auth
        if held is not None:
            # A handler asking for another key: the context stays its original requester's.
            if held.revoked or held.payload is None:
                raise error(errno.EKEYREVOKED, "the request-key authority this handler holds has been revoked")
            requester, pid = held.payload.requester, held.payload.pid
        else:
            requester, pid = self, threading.get_native_id()
        auth = w.alloc(AUTH_TYPE, f"{target.serial:x}", self.cred.uid, self.cred.gid, AUTH_KEY_PERM, in_quota=False)
        auth.payload = RequestKeyAuth(target, dest, callout, requester, pid)
        auth.instantiated = True
        auth.user.nikeys += 1
        return auth

    def _run_upcall(self, rec: KeyRecord, auth: KeyRecord) -> OSError | None:
        """``call_sbin_request_key`` with a registered handler; the error to raise, or None.

        Runs without the world lock, in the requester's thread, as the kernel runs
        the helper synchronously.  The handler's view is root with a session
        keyring ``_req.<serial>`` holding the authorisation key, and the authority
        already assumed.  Afterwards, as complete_request_key: a key still under
        construction (or no longer valid) is negated for NEGATIVE_TIMEOUT seconds
        and the requester gets ENOKEY; otherwise the authority is revoked.
        """
        from keyring_types.core.request_key_handlers import UpcallRequest, find_request_key_handler

        w = self._world
        with self._scope:
            try:
                w.user_keyrings(self.cred.uid)  # install_user_keyrings, as the kernel does first
                view = self._handler_view(rec, auth)
            except BaseException:
                # The helper could not be started (EDQUOT linking the authority into its
                # session ...): complete_request_key(auth, error) negates the key, so no
                # requester waits on it for ever, and the error goes to the caller.
                if rec.upcall == UNDER_CONSTRUCTION:
                    _reject_and_link(w, rec, NEGATIVE_TIMEOUT, errno.ENOKEY, None, auth)
                raise
            rka: RequestKeyAuth = auth.payload
            requester = rka.requester
            thread_ring = requester._thread_ring(False)
            process_ring = requester._proc.process
            session = requester._proc.session or w.user_keyrings(requester.cred.uid)[1]
        from keyring_types.core.handle import Key, Keyring

        handler = find_request_key_handler(rec.ktype.name, rec.description)
        failure: BaseException | None = None
        interrupted: BaseException | None = None
        if handler is not None:
            dest = None if rka.dest is None else Keyring(view, rka.dest.serial, "keyring", rka.dest.description)
            request = UpcallRequest(
                keyspace=view,
                key=Key(view, rec.serial, rec.ktype.name, rec.description),
                callout_info=rka.callout,
                dest=dest,
                uid=requester.cred.uid,
                gid=requester.cred.gid,
                thread_keyring=0 if thread_ring is None else thread_ring.serial,
                process_keyring=0 if process_ring is None else process_ring.serial,
                session_keyring=session.serial,
            )
            try:
                handler(request)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 -- a failing handler is a program exiting non-zero
                failure = exc
            except BaseException as exc:  # noqa: BLE001 -- re-raised once the key is completed
                # Interrupted: the key is still completed below (so no requester waits
                # on it for ever), then the interrupt goes on.
                failure = interrupted = exc
        result: OSError | None = None
        with self._scope:
            try:
                if rec.upcall == UNDER_CONSTRUCTION or not _valid(rec, w.now()):
                    if rec.upcall == UNDER_CONSTRUCTION:
                        _reject_and_link(w, rec, NEGATIVE_TIMEOUT, errno.ENOKEY, None, auth)
                    reason = "no request-key handler matches it" if handler is None else "its handler did not build it"
                    result = error(
                        errno.ENOKEY, f"{rec.ktype.name} key {rec.description!r} was not constructed: {reason}"
                    )
                    if failure is not None:
                        result.__cause__ = failure
                else:
                    _revoke_auth(w, auth)
            finally:
                # The helper exits: its credentials and session keyring go.
                view._drop_authority()
                view._leave_session()
        if interrupted is not None:
            raise interrupted
        return result

    def _handler_view(self, rec: KeyRecord, auth: KeyRecord) -> Keyspace:
        """The helper's view: root, session ``_req.<serial>`` holding ``auth``, authority assumed."""
        from keyring_types.core.upcall_view import HandlerKeyspace
        from keyring_types.core.world import NO_CALLER

        w = self._world
        ring_type = lookup_key_type("keyring")
        # KEY_ALLOC_QUOTA_OVERRUN: charged to the requester, but never refused for quota.
        ring = w.alloc(ring_type, f"_req.{rec.serial}", self.cred.uid, self.cred.gid,
                       KEY_POS_ALL | KEY_USR_VIEW | KEY_USR_READ, in_quota=False)
        ring.in_quota = True
        ring.user.qnkeys += 1
        ring.user.qnbytes += ring.quotalen
        with calling(w, NO_CALLER):
            ring_type.instantiate(ring, ring_type.preparse(b""))
        ring.instantiated = True
        ring.user.nikeys += 1
        try:
            w.upcall_session(ring)
            key_link(w, self.cred, ring, auth)
        except BaseException:
            w.maybe_destroy(ring)
            raise
        proc = ProcessKeyrings(w)
        proc.set_session(ring)
        view = HandlerKeyspace(uid=0, gid=0, groups=(), _world=w, _proc=proc)
        # The helper starts from init's credentials, whose default destination is the
        # thread keyring: a key the handler requests lands in _req.N unless it says otherwise.
        view._jit_keyring = KEY_REQKEY_DEFL_THREAD_KEYRING
        view._take_authority(auth)
        return view

    # -- the handler's side ------------------------------------------------------------
    def _take_authority(self, auth: KeyRecord | None) -> None:
        """``keyctl_change_reqkey_auth``: hold ``auth`` (pinned) instead of any earlier one."""
        old = self._reqkey_auth
        if old is auth:
            return
        pinned = self._proc._pinned
        if auth is not None:
            auth.pins += 1
            # Released with the view's other pins if the view goes without giving it up.
            pinned["auth"] = auth
        else:
            pinned.pop("auth", None)
        self._reqkey_auth = auth
        if old is not None:
            old.pins -= 1
            self._world.maybe_destroy(old)

    def _drop_authority(self) -> None:
        self._take_authority(None)

    def _leave_session(self) -> None:
        """The helper exits: its session keyring goes (and with it the authorisation key's link)."""
        ses = self._proc.session
        if ses is not None:
            self._proc.session = None
            self._proc._pinned.pop("session", None)
            ses.pins -= 1
            self._world.maybe_destroy(ses)

    def _authority(self, keyid: int) -> RequestKeyAuth:
        """The assumed authority over ``keyid``; EPERM without one for exactly that key."""
        auth = self._reqkey_auth
        if auth is None:
            raise error(errno.EPERM, f"no request-key authority is assumed, so key {keyid} cannot be built here")
        rka: RequestKeyAuth | None = auth.payload
        if rka is None:
            raise error(errno.EKEYREVOKED, f"the request-key authority (key {auth.serial}) has been revoked")
        if rka.target.serial != keyid:
            raise error(
                errno.EPERM, f"the assumed authority is over key {rka.target.serial}, not key {keyid}"
            )
        return rka

    def _instantiation_keyring(self, ringid: int, rka: RequestKeyAuth) -> KeyRecord | None:
        """``get_instantiation_keyring``: 0 none; a serial (WRITE needed); a special id: the requester's."""
        if ringid == 0:
            return None
        if ringid > 0:
            return self._lookup(ringid, NEED_WRITE, create=True)[0]
        if ringid == KEY_SPEC_REQKEY_AUTH_KEY:
            raise error(errno.EINVAL, "the authorisation key (@a) is not a keyring to link into")
        if ringid >= KEY_SPEC_REQUESTOR_KEYRING:
            return rka.dest
        raise error(errno.ENOKEY, f"invalid keyring id {ringid}")

    def sys_instantiate(self, keyid: int, payload: bytes | None, ringid: int) -> None:
        """``KEYCTL_INSTANTIATE``: give the key under construction its payload, link it into ``ringid``.

        EINVAL (payload over 1 MiB - 1, or refused by the type), EPERM (no
        authority over ``keyid``), EBUSY (already built), EACCES/ENOKEY (``ringid``),
        ENOTDIR, EDQUOT.  Success ends the authority.
        """
        if payload is not None and len(payload) > _INSTANTIATE_MAX:
            raise error(errno.EINVAL, f"payload of {len(payload)} bytes exceeds {_INSTANTIATE_MAX}")
        data = payload or b""
        with self._scope:
            rka = self._authority(keyid)
            dest = self._instantiation_keyring(ringid, rka)
            target = rka.target
            ktype = target.ktype
            prep = self._preparse_unlocked(ktype, data) if ktype.preparse_blocks else ktype.preparse(data)
            w = self._world
            try:
                if self._authority(keyid) is not rka:
                    raise error(errno.EPERM, f"the authority over key {keyid} went away during the call")
                # The link is made (and its quota reserved) first, as __key_link_begin
                # does, so a refused link leaves the key under construction.
                was_linked = dest is None or dest.serial in target.parents
                if dest is not None:
                    if dest.links is None:
                        raise error(errno.ENOTDIR, f"key {dest.serial} is not a keyring")
                    # Asked with the payload about to be installed (key_instantiate_and_link).
                    check_restriction(w, dest, ktype, prep.payload)
                    _link_unrestricted(w, dest, target)
                try:
                    if target.upcall != UNDER_CONSTRUCTION:
                        raise error(errno.EBUSY, f"key {keyid} has already been instantiated or negated")
                    ktype.instantiate(target, prep)
                except BaseException:
                    if not was_linked and dest is not None and dest.serial in target.parents:
                        w.drop_link(dest, target)
                    raise
            finally:
                ktype.free_preparse(prep)
            target.instantiated = True
            target.user.nikeys += 1
            target.upcall = 0
            if target.watchers:
                notify_key(target, NOTIFY_KEY_INSTANTIATED)
            auth = self._reqkey_auth
            assert auth is not None
            _invalidate_auth(w, auth)
            construction_done(w)
            self._drop_authority()

    def sys_instantiate_iov(self, keyid: int, parts: list[bytes], ringid: int) -> None:
        """``KEYCTL_INSTANTIATE_IOV``: as :meth:`sys_instantiate` with the payload in pieces.

        EINVAL also for more than 1024 pieces (UIO_MAXIOV).
        """
        if len(parts) > _UIO_MAXIOV:
            raise error(errno.EINVAL, f"{len(parts)} payload pieces exceed the iovec limit of {_UIO_MAXIOV}")
        data = b"".join(parts)
        self.sys_instantiate(keyid, data if data else None, ringid)

    def sys_reject(self, keyid: int, timeout: int, err: int, ringid: int) -> None:
        """``KEYCTL_REJECT``: make the key negative with ``err`` for ``timeout`` seconds.

        EINVAL (``err`` not an errno, or a kernel-internal restart code), EPERM (no
        authority over ``keyid``), EBUSY (already built), EACCES/ENOKEY (``ringid``).
        Success ends the authority.
        """
        if err <= 0 or err >= _MAX_ERRNO or err in _RESTART_CODES:
            raise error(errno.EINVAL, f"{err} is not an error number a key can be rejected with")
        with self._scope:
            rka = self._authority(keyid)
            dest = self._instantiation_keyring(ringid, rka)
            auth = self._reqkey_auth
            assert auth is not None
            _reject_and_link(self._world, rka.target, timeout, err, dest, auth)
            self._drop_authority()

    def sys_negate(self, keyid: int, timeout: int, ringid: int) -> None:
        """``KEYCTL_NEGATE``: :meth:`sys_reject` with ENOKEY."""
        self.sys_reject(keyid, timeout, errno.ENOKEY, ringid)

    def sys_assume_authority(self, keyid: int) -> int:
        """``KEYCTL_ASSUME_AUTHORITY``: take the authority over ``keyid`` found in the caller's keyrings.

        0 gives up any authority (returns 0); otherwise returns the authorisation
        key's serial.  EINVAL (negative id), ENOKEY (no authorisation key for it
        reachable), EKEYREVOKED (its authority is spent).
        """
        if keyid < 0:
            raise error(errno.EINVAL, f"assume_authority takes a key serial, not the special id {keyid}")
        with self._scope:
            if keyid == 0:
                self._drop_authority()
                return 0
            ctx = SearchContext((AUTH_TYPE.name, f"{keyid:x}"), self.cred, self._world.now())
            found, err = search_cred_keyrings(self._cred_rings(), ctx)
            if found is None:
                if err in (EAGAIN, errno.ENOKEY):
                    raise error(errno.ENOKEY, f"no request-key authority over key {keyid} is reachable from here")
                raise error(err, f"the request-key authority over key {keyid} cannot be used")
            if found.revoked:
                raise error(errno.EKEYREVOKED, f"the request-key authority over key {keyid} has been revoked")
            self._take_authority(found)
            return found.serial

    def sys_set_reqkey_keyring(self, which: int) -> int:
        """``KEYCTL_SET_REQKEY_KEYRING``: the default destination of constructed keys; returns the old one.

        ``KEY_REQKEY_DEFL_NO_CHANGE`` only reads it; the thread and process
        settings make that keyring if absent.  EINVAL for the group keyring and
        unknown values.
        """
        old = self._jit_keyring
        if which == KEY_REQKEY_DEFL_NO_CHANGE:
            return old
        valid = (
            KEY_REQKEY_DEFL_DEFAULT,
            KEY_REQKEY_DEFL_THREAD_KEYRING,
            KEY_REQKEY_DEFL_PROCESS_KEYRING,
            KEY_REQKEY_DEFL_SESSION_KEYRING,
            KEY_REQKEY_DEFL_USER_KEYRING,
            KEY_REQKEY_DEFL_USER_SESSION_KEYRING,
            KEY_REQKEY_DEFL_REQUESTOR_KEYRING,
        )
        if which not in valid:
            raise error(errno.EINVAL, f"{which} is not a request-key default keyring setting")
        with self._scope:
            if which == KEY_REQKEY_DEFL_THREAD_KEYRING:
                self._thread_ring(True)
            elif which == KEY_REQKEY_DEFL_PROCESS_KEYRING:
                self._process_ring(True)
            self._jit_keyring = which
        return old


def _link_unrestricted(world: World, ring: KeyRecord, key: KeyRecord) -> None:
    """``__key_link`` without the restriction check (the caller asked it, or the kernel does not).

    ENOTDIR (not a keyring), EDQUOT (the keyring's owner cannot pay for the link).
    """
    if ring.links is None:
        raise error(errno.ENOTDIR, f"key {ring.serial} is not a keyring")
    existing = ring.links.get(key.index_key)
    if existing is key:
        return
    if existing is None:
        ring.payload_reserve(ring.datalen + KEYQUOTA_LINK_BYTES)
    displaced = world.add_link(ring, key)
    if ring.watchers:
        notify_key(ring, NOTIFY_KEY_LINKED, key.serial)
    if displaced is not None:
        world.maybe_destroy(displaced)


def _valid(rec: KeyRecord, now: int) -> bool:
    try:
        rec.validate(now)
    except OSError:
        return False
    return True


def _invalidate_auth(world: World, auth: KeyRecord) -> None:
    """``key_invalidate`` on a spent authorisation key: it leaves every keyring at once."""
    if not auth.invalidated and not auth.dead:
        auth.invalidated = True
        world.unlink_everywhere(auth)


def _revoke_auth(world: World, auth: KeyRecord) -> None:
    if not auth.dead:
        key_revoke(world, auth)


def _reject_and_link(
    world: World,
    rec: KeyRecord,
    timeout: int,
    err: int,
    dest: KeyRecord | None,
    auth: KeyRecord | None,
) -> None:
    """``key_reject_and_link``: negative with ``err`` until now + ``timeout``; EBUSY if already built.

    A failure to link into ``dest`` (quota) is reported after the key has been
    negated, as in the kernel.
    """
    if dest is not None and dest.restriction is not None:
        raise error(errno.EPERM, f"keyring {dest.serial} is restricted: a negative key is not linked there")
    if rec.upcall != UNDER_CONSTRUCTION:
        raise error(errno.EBUSY, f"key {rec.serial} has already been instantiated or negated")
    rec.instantiated = True
    rec.user.nikeys += 1
    rec.upcall = err
    if rec.watchers:
        notify_key(rec, NOTIFY_KEY_INSTANTIATED, -err)
    rec.expiry = world.now() + timeout
    world.schedule_gc(rec.expiry + world.gc_delay, rec)
    link_error: OSError | None = None
    if dest is not None:
        try:
            _link_unrestricted(world, dest, rec)
        except OSError as exc:
            link_error = exc
    if auth is not None:
        _invalidate_auth(world, auth)
    construction_done(world)
    if link_error is not None:
        raise link_error

