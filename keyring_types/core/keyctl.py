"""The system calls (security/keys/keyctl.c): ``add_key``, ``request_key`` and ``keyctl``.

Each ``sys_*`` method follows its kernel entry point step by step (argument
checks, ``lookup_user_key`` with the permission it needs, then the operation on
the key), so the checks happen in the kernel's order and the errno that comes
out is the kernel's.  :class:`Keyctl` adds them to :class:`ProcessKeys`;
:class:`~keyring_types.core.keyspace.Keyspace` is the two together.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from keyring_types.constants import (
    KEY_ADD_PAYLOAD_MAX,
    KEY_MAX_DESC_SIZE,
    KEY_PERM_MASK,
    KEY_TYPE_NAME_MAX,
    KEY_UPDATE_PAYLOAD_MAX,
    KEYQUOTA_LINK_BYTES,
    OVERFLOW_GID,
)
from keyring_types.core import watch
from keyring_types.core.construction import construction_done, negative_error
from keyring_types.core.cred import signed_id
from keyring_types.core.hints import denied, search_failure, unreachable_hint, user_ring_hint
from keyring_types.core.key import (
    default_perm,
    key_change_owner,
    key_revoke,
    key_set_timeout,
    key_update,
)
from keyring_types.core.keyring import key_link, keyring_clear
from keyring_types.core.keytype import KeyType, Preparsed, lookup_key_type, registered_type
from keyring_types.core.perm import (
    NEED_LINK,
    NEED_READ,
    NEED_SEARCH,
    NEED_SETATTR,
    NEED_VIEW,
    NEED_WRITE,
    permitted,
)
from keyring_types.core.process_keys import DEFER_PERM_CHECK, NEED_UNLINK, ProcessKeys
from keyring_types.core.record import KeyRecord
from keyring_types.core.restrict import check_restriction
from keyring_types.core.search import EAGAIN, SearchContext, search_keyring_tree, type_match
from keyring_types.core.usage import check_consumer
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.secret import SecretBuffer

__all__ = ["Keyctl", "check_desc_size", "check_type_name"]

_GOOD_TYPE_NAMES: set[str] = set()


def check_type_name(type_name: str) -> None:
    """The kernel's checks on a type name from user space: EINVAL (length, NUL), EPERM ('.')."""
    if type_name in _GOOD_TYPE_NAMES:
        return
    raw = type_name.encode()
    if not raw or len(raw) >= KEY_TYPE_NAME_MAX or b"\0" in raw:
        raise error(errno.EINVAL, f"key type name must be 1..{KEY_TYPE_NAME_MAX - 1} bytes: {type_name!r}")
    if raw[:1] == b".":
        raise error(errno.EPERM, f"key type {type_name!r} is internal to the kernel (starts with '.')")
    if len(_GOOD_TYPE_NAMES) < 256:
        _GOOD_TYPE_NAMES.add(type_name)


def check_desc_size(description: str) -> None:
    """EINVAL if ``description`` does not fit ``KEY_MAX_DESC_SIZE`` with its NUL."""
    # UTF-8 takes at most 4 bytes a character: short strings need no encoding.
    if len(description) * 4 < KEY_MAX_DESC_SIZE:
        return
    if len(description.encode()) + 1 > KEY_MAX_DESC_SIZE:
        raise error(
            errno.EINVAL,
            f"description is {len(description.encode())} bytes; at most {KEY_MAX_DESC_SIZE - 1} are allowed",
        )


#: Types known to match by description alone: their searches skip the match_preparse lookup.
_EXACT_MATCH_TYPES = frozenset({"user", "logon", "keyring"})


def _search_type(type_name: str) -> None:
    """Search and request_key report an unknown type as ENOKEY (key_type_lookup's own errno)."""
    try:
        lookup_key_type(type_name)
    except OSError:
        raise error(errno.ENOKEY, f"no key can match: key type '{type_name}' is not registered") from None


class Keyctl(ProcessKeys):
    """The ``sys_*`` entry points of :class:`~keyring_types.core.api.KeyspaceAPI`, in process."""

    def sys_add_key(
        self, type_name: str, description: str | None, payload: bytes | None, ringid: int, *, usage: str | None = None
    ) -> int:
        """``add_key(2)``; see :meth:`KeyspaceAPI.add_key` for the errno.

        ``usage`` (checked by the caller) binds a new key to one consumer; over an
        existing key bound otherwise (or not at all) it is ``EKEYREJECTED``, before
        anything changes.
        """
        if type_name not in _GOOD_TYPE_NAMES:
            check_type_name(type_name)
        if description is not None:
            if len(description) * 4 >= KEY_MAX_DESC_SIZE:
                check_desc_size(description)
            if not description:
                description = None
            elif description.startswith(".") and type_name.startswith("keyring"):
                raise error(errno.EPERM, f"keyring names starting with '.' are reserved: {description!r}")
        data = payload or b""
        if len(data) > KEY_ADD_PAYLOAD_MAX:
            raise error(errno.EINVAL, f"payload of {len(data)} bytes exceeds add_key's limit of {KEY_ADD_PAYLOAD_MAX}")
        w = self._world
        w.lock.acquire()  # OpScope inlined, as in sys_read
        prev_caller, w.caller = w.caller, self
        try:
            if w.gc_heap:
                w.gc_due()
            ring, ring_possessed = self._lookup(ringid, NEED_WRITE, create=True)
            ktype = registered_type(type_name) or lookup_key_type(type_name)
            if ring.links is None:
                raise error(errno.ENOTDIR, f"destination {ring.serial} is a '{ring.ktype.name}' key, not a keyring")
            # key_create_or_update (key.c), written out here: this is the measured hot path.
            if ktype.preparse_blocks:
                prep = self._preparse_unlocked(ktype, data)
                try:
                    # The world may have changed meanwhile: resolve the keyring again.
                    ring, ring_possessed = self._lookup(ringid, NEED_WRITE, create=True)
                    if ring.links is None:
                        raise error(errno.ENOTDIR, f"destination {ring.serial} is a '{ring.ktype.name}' key, not a keyring")
                except BaseException:
                    ktype.free_preparse(prep)
                    raise
            else:
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
                    if ring.restriction is not None:
                        check_restriction(w, ring, ktype, prep.payload)
                    if ktype._has_update and existing is not None and not (existing.invalidated or existing.revoked):
                        self._check(existing, ring_possessed, NEED_WRITE)
                        if usage is not None and existing.usage != usage:
                            raise error(
                                errno.EKEYREJECTED,
                                f"key {existing.serial} exists with another use binding; a binding is made only at creation",
                            )
                        ktype.update(existing, prep)
                        if existing.watchers:
                            watch.notify_key(existing, watch.NOTIFY_KEY_UPDATED)
                        if existing.upcall:
                            # Updating a negative key makes it positive (__key_update).
                            existing.upcall = 0
                            construction_done(w)
                        return existing.serial
                    perm = ktype._add_key_perm or default_perm(ktype)
                    rec = w.alloc(ktype, desc, self.cred.uid, self.cred.gid, perm)
                    if usage is not None:
                        rec.usage = usage
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
                if ring.watchers:
                    watch.notify_key(ring, watch.NOTIFY_KEY_LINKED, rec.serial)
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

    def _preparse_unlocked(self, ktype: KeyType, data: bytes) -> Preparsed:
        """``ktype.preparse(data)`` with this operation's hold on the world lock let go.

        Called with the lock held once by the operation (an enclosing operation's
        hold, if any, stays: a nested call cannot let the world change under its
        caller).  The lock is held again, with this view as the caller and due GC
        run, when it returns or raises.
        """
        w = self._world
        w.lock.release()
        try:
            return ktype.preparse(data)
        finally:
            w.lock.acquire()
            w.caller = self
            if w.gc_heap or w._unpins:
                if w._unpins:
                    w.release_pending()
                w.gc_due()

    def sys_get_keyring_id(self, keyid: int, create: bool) -> int:
        """``KEYCTL_GET_KEYRING_ID``; ENOKEY when a special keyring is absent and not created."""
        with self._scope:
            return self._lookup(keyid, NEED_SEARCH, create=create)[0].serial

    def sys_join_session_keyring(self, name: str | None) -> int:
        """``KEYCTL_JOIN_SESSION_KEYRING``: a new anonymous session, or join/create ``name``.

        EPERM for names starting with '.', EDQUOT when a new keyring is over quota.
        """
        with self._scope:
            if name is not None:
                check_desc_size(name)
                if name.startswith("."):
                    raise error(errno.EPERM, f"session keyring names starting with '.' are reserved: {name!r}")
            return self._join_session_keyring(name)

    def sys_update(self, keyid: int, payload: bytes) -> None:
        """``KEYCTL_UPDATE``; EINVAL over one page, EOPNOTSUPP, EACCES, EKEYREVOKED, EDQUOT."""
        if len(payload) > KEY_UPDATE_PAYLOAD_MAX:
            raise error(
                errno.EINVAL, f"update payload of {len(payload)} bytes exceeds one page ({KEY_UPDATE_PAYLOAD_MAX})"
            )
        with self._scope:
            rec, _ = self._lookup(keyid, NEED_WRITE)
            ktype = rec.ktype
            if not (ktype.preparse_blocks and ktype._has_update):
                key_update(rec, payload)
                return
            prep = self._preparse_unlocked(ktype, payload)
            try:
                # Revoked, invalidated or replaced while the lock was let go?
                again, _ = self._lookup(keyid, NEED_WRITE)
                if again is not rec:
                    raise error(errno.ENOKEY, f"key {keyid} went away during the update")
                ktype.update(rec, prep)
            finally:
                ktype.free_preparse(prep)
            if rec.watchers:
                watch.notify_key(rec, watch.NOTIFY_KEY_UPDATED)

    def sys_revoke(self, keyid: int) -> None:
        """``KEYCTL_REVOKE``: needs WRITE or SETATTR; EKEYREVOKED if already revoked."""
        with self._scope:
            try:
                rec, _ = self._lookup(keyid, NEED_WRITE)
            except OSError as exc:
                if exc.errno != errno.EACCES:
                    raise
                rec, _ = self._lookup(keyid, NEED_SETATTR)
            key_revoke(self._world, rec)

    def sys_invalidate(self, keyid: int) -> None:
        """``KEYCTL_INVALIDATE``: needs SEARCH; the key is unlinked everywhere at once."""
        w = self._world
        w.lock.acquire()  # OpScope inlined, as in sys_read
        prev, w.caller = w.caller, self
        try:
            if w.gc_heap:
                w.gc_due()
            rec, _ = self._lookup(keyid, NEED_SEARCH)
            rec.invalidated = True
            if rec.watchers:
                watch.notify_key(rec, watch.NOTIFY_KEY_INVALIDATED)
            w.unlink_everywhere(rec)
        finally:
            w.caller = prev
            w.lock.release()

    def sys_set_timeout(self, keyid: int, timeout: int) -> None:
        """``KEYCTL_SET_TIMEOUT``: expire ``timeout`` s from now (0 clears); needs SETATTR."""
        with self._scope:
            rec, _ = self._lookup(keyid, NEED_SETATTR, create=True)
            key_set_timeout(self._world, rec, timeout)
            if rec.watchers:
                watch.notify_key(rec, watch.NOTIFY_KEY_SETATTR)

    def sys_setperm(self, keyid: int, perm: int) -> None:
        """``KEYCTL_SETPERM``: EINVAL for unknown bits; EACCES unless owner or sysadmin."""
        if perm < 0 or perm & ~KEY_PERM_MASK:
            raise error(errno.EINVAL, f"permission mask {perm:#x} has bits outside {KEY_PERM_MASK:#010x}")
        with self._scope:
            rec, _ = self._lookup(keyid, NEED_SETATTR, create=True)
            if rec.uid != self.cred.uid and not self.cred.sysadmin:
                raise error(
                    errno.EACCES, f"only the owner (uid {rec.uid}) or root may change key {rec.serial}'s permissions"
                )
            rec.perm = perm
            if rec.watchers:
                watch.notify_key(rec, watch.NOTIFY_KEY_SETATTR)

    def sys_chown(self, keyid: int, uid: int, gid: int) -> None:
        """``KEYCTL_CHOWN``: giving a key away or to a foreign group needs root; EDQUOT."""
        if uid == -1 and gid == -1:
            return
        if uid < -1 or gid < -1:
            raise error(errno.EINVAL, f"invalid owner {uid}:{gid}")
        with self._scope:
            rec, _ = self._lookup(keyid, NEED_SETATTR, create=True)
            privileged = (uid != -1 and uid != rec.uid) or (gid != -1 and gid != rec.gid and not self.cred.in_group(gid))
            if privileged and not self.cred.sysadmin:
                raise error(
                    errno.EACCES,
                    f"only root may give key {rec.serial} to uid {uid} or to a group the caller is not in",
                )
            if uid != -1 and uid != rec.uid:
                key_change_owner(self._world, rec, uid)
            if gid != -1:
                rec.gid = gid
            if rec.watchers:
                watch.notify_key(rec, watch.NOTIFY_KEY_SETATTR)

    def sys_describe(self, keyid: int) -> str:
        """``KEYCTL_DESCRIBE``: ``type;uid;gid;perm;description``; EACCES without VIEW."""
        with self._scope:
            rec, _ = self._lookup(keyid, NEED_VIEW)
            gid = OVERFLOW_GID if rec.gid is None else rec.gid
            # The kernel formats the ids with %d: 2**32-2 prints as -2.
            return f"{rec.ktype.name};{signed_id(rec.uid)};{signed_id(gid)};{rec.perm:08x};{rec.description}"

    def sys_key_usage(self, keyid: int) -> str | None:
        """The use ``keyid`` is bound to (core/usage.py), None if unbound; EACCES without VIEW."""
        with self._scope:
            rec, _ = self._lookup(keyid, NEED_VIEW)
            return rec.usage

    def sys_clear(self, ringid: int) -> None:
        """``KEYCTL_CLEAR``: unlink every key; ENOTDIR, EACCES without WRITE."""
        with self._scope:
            ring, _ = self._lookup(ringid, NEED_WRITE, create=True)
            if not ring.is_keyring:
                raise error(errno.ENOTDIR, f"key {ring.serial} is not a keyring")
            # Posted first: the kernel's GC destroys the unlinked keys (their watches'
            # removal records) only after keyring_clear has notified.
            if ring.watchers:
                watch.notify_key(ring, watch.NOTIFY_KEY_CLEARED)
            keyring_clear(self._world, ring)

    def sys_link(self, keyid: int, ringid: int) -> None:
        """``KEYCTL_LINK``; EACCES, ENOTDIR, EDEADLK (cycle), ELOOP (too deep), EDQUOT."""
        with self._scope:
            ring, _ = self._lookup(ringid, NEED_WRITE, create=True)
            key, _ = self._lookup(keyid, NEED_LINK, create=True)
            key_link(self._world, self.cred, ring, key)

    def sys_unlink(self, keyid: int, ringid: int) -> None:
        """``KEYCTL_UNLINK``: ENOENT if not linked, EACCES without WRITE on the keyring."""
        with self._scope:
            ring, _ = self._lookup(ringid, NEED_WRITE)
            key, _ = self._lookup(keyid, NEED_UNLINK)
            if not ring.is_keyring:
                raise error(errno.ENOTDIR, f"key {ring.serial} is not a keyring")
            assert ring.links is not None
            # The kernel deletes by (type, description), whichever key holds that slot.
            victim = ring.links.get(key.index_key)
            if victim is None:
                raise error(errno.ENOENT, f"key {key.serial} is not linked in keyring {ring.serial}")
            self._world.drop_link(ring, victim)
            if ring.watchers:
                watch.notify_key(ring, watch.NOTIFY_KEY_UNLINKED, key.serial)
            self._world.maybe_destroy(victim)

    def sys_search(self, ringid: int, type_name: str, description: str, destringid: int) -> int:
        """``KEYCTL_SEARCH``; ENOKEY, EKEYREVOKED/EKEYEXPIRED/EACCES for unusable matches."""
        check_type_name(type_name)
        check_desc_size(description)
        with self._scope:
            ring, possessed = self._lookup(ringid, NEED_SEARCH)
            dest = self._lookup(destringid, NEED_WRITE, create=True)[0] if destringid else None
            _search_type(type_name)
            match = type_match(type_name, description) if type_name not in _EXACT_MATCH_TYPES else None
            if not ring.is_keyring:
                raise error(errno.ENOTDIR, f"key {ring.serial} is not a keyring")
            ctx = SearchContext(
                (type_name, description), self.cred, self._world.now(), possessed=possessed, match=match,
                iterate=match is not None,
            )
            found = search_keyring_tree(ring, ctx)
            if found is None:
                if ctx.err == EAGAIN:
                    raise error(
                        errno.ENOKEY,
                        f"no {type_name} key {description!r} in keyring {ring.serial} or below"
                        + unreachable_hint(self, type_name, description),
                    )
                raise error(ctx.err, search_failure(ctx.err, type_name, description))
            if dest is not None:
                self._check(found, possessed, NEED_LINK)
                key_link(self._world, self.cred, dest, found)
            return found.serial

    def _readable(self, keyid: int) -> KeyRecord:
        """KEYCTL_READ's checks: READ or possession, a read op, a valid key."""
        try:
            rec, possessed = self._lookup(keyid, DEFER_PERM_CHECK)
        except OSError as exc:
            raise error(errno.ENOKEY, f"cannot read key {keyid}: {exc.strerror}") from None
        if rec.upcall > 0:
            raise negative_error(rec)
        if not rec.instantiated:
            raise _uninstantiated(rec)
        if not possessed and not permitted(rec, self.cred, False, NEED_READ):
            raise denied(self, rec, possessed, NEED_READ)
        if not rec.ktype._has_read:
            raise error(errno.EOPNOTSUPP, f"'{rec.ktype.name}' keys cannot be read (key {rec.serial})")
        if rec.invalidated or rec.revoked or rec.dead or rec.expiry:
            rec.validate(self._world.now())
        if rec.usage is not None:
            # Not even a sealed type's blob: loaded again (with the master or the TPM at
            # hand) it would make an unbound copy of the same secret.
            raise error(errno.EKEYREJECTED, f"key {rec.serial} is bound to use '{rec.usage}': it is not read out")
        return rec

    def sys_read(self, keyid: int) -> bytes:
        """``KEYCTL_READ``; ENOKEY, EACCES, EOPNOTSUPP, EKEYREVOKED, EKEYEXPIRED."""
        # OpScope inlined (two Python calls fewer): read, add and invalidate are the hot path.
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

    def sys_secret(self, keyid: int, consumer: str | None = None) -> SecretBuffer:
        """The plaintext for in-process use, under the rules of the kernel's in-kernel users.

        ``consumer`` names who takes it (``"fscrypt"``...): a key bound to one use
        goes only to that consumer, others get EKEYREJECTED (core/usage.py).

        dm-crypt, fscrypt and eCryptfs get a key's payload only through
        ``request_key`` with the caller's credentials: the key must be found from
        the caller's thread, process or session keyring, with SEARCH on it and on
        every keyring on the way (possessor bits count).  So here: the key must be
        possessed, READ alone is not enough; types without a read op (logon) still
        hand over their secret.  The type may check more with the caller's
        credentials (an encrypted key looks its master up as the caller).
        ENOKEY (no such key, invalidated), EACCES (not possessed), EKEYREVOKED,
        EKEYEXPIRED, EOPNOTSUPP (no secret), and the type's errors.
        """
        with self._scope:
            try:
                rec, possessed = self._lookup(keyid, DEFER_PERM_CHECK)
            except OSError as exc:
                raise error(errno.ENOKEY, f"no secret for key {keyid}: {exc.strerror}") from None
            if rec.upcall > 0:
                raise negative_error(rec)
            if not rec.instantiated:
                raise _uninstantiated(rec)
            if rec.invalidated or rec.revoked or rec.dead or rec.expiry:
                rec.validate(self._world.now())
            if not possessed:
                hint = user_ring_hint(self, rec)
                raise error(
                    errno.EACCES,
                    f"{rec.ktype.name} key {rec.serial} is not possessed by uid {self.cred.uid} (not found from its "
                    "thread, process or session keyring with SEARCH), so its plaintext is not handed over"
                    + (f"; {hint}" if hint else ""),
                )
            if rec.usage is not None:
                check_consumer(rec.serial, rec.usage, consumer)
            return rec.ktype.secret(rec)


def _uninstantiated(rec: KeyRecord) -> OSError:
    """EIO, as lookup_user_key answers for a key still uninstantiated after the wait: it has no payload."""
    return error(errno.EIO, f"key {rec.serial} was never instantiated: it has no payload")
