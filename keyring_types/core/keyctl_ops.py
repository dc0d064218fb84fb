"""More system calls (security/keys/keyctl.c, keyring.c, persistent.c, dh.c), in process:
``KEYCTL_GET_PERSISTENT``, ``KEYCTL_MOVE``, ``KEYCTL_SESSION_TO_PARENT``,
``KEYCTL_GET_SECURITY``, ``KEYCTL_CAPABILITIES`` and ``KEYCTL_DH_COMPUTE``.

As in :mod:`keyring_types.core.keyctl`, each ``sys_*`` method follows its kernel
entry point: the same lookups with the same permissions in the same order, so
the errno that comes out is the kernel's.
"""

from __future__ import annotations

import errno
import weakref
from typing import TYPE_CHECKING

from keyring_types.constants import KEY_SPEC_SESSION_KEYRING, KEYQUOTA_LINK_BYTES
from keyring_types.core.capabilities import implemented
from keyring_types.core.keyring import detect_cycle
from keyring_types.core.perm import NEED_LINK, NEED_READ, NEED_VIEW, NEED_WRITE
from keyring_types.core.persistent import get_persistent
from keyring_types.core.process_keys import ProcessKeys
from keyring_types.core.record import KeyRecord
from keyring_types.core.restrict import check_restriction
from keyring_types.core.usage import check_consumer
from keyring_types.core.watch import NOTIFY_KEY_LINKED, NOTIFY_KEY_UNLINKED, WatchQueue, notify_key, watch_key
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.dh import DhKdf
    from keyring_types.core.keyspace import Keyspace

__all__ = ["KEYCTL_MOVE_EXCL", "KeyctlOps"]

KEYCTL_MOVE_EXCL = 0x00000001
_UID_SELF = 0xFFFFFFFF  # (uid_t)-1: the caller


class KeyctlOps(ProcessKeys):
    """The ``sys_*`` entry points of :mod:`keyring_types.core.keyctl_ops`, in process."""

    #: The view this one was made from by ``as_user`` (its parent process), if any.
    #: Weak: a child does not keep its parent alive; once it is gone the child is
    #: an orphan, as one reparented to init.
    _parent_ref: weakref.ref[Keyspace] | None = None

    # -- KEYCTL_GET_PERSISTENT ----------------------------------------------------
    @property
    def persistent_keyring_expiry(self) -> int:
        """Seconds a persistent keyring lives unasked for (``/proc/sys/kernel/keys/persistent_keyring_expiry``)."""
        return self._world.persistent_keyring_expiry

    @persistent_keyring_expiry.setter
    def persistent_keyring_expiry(self, seconds: int) -> None:
        if type(seconds) is not int or not 0 <= seconds <= 0xFFFFFFFF:
            raise error(errno.EINVAL, "persistent_keyring_expiry must be 0..2**32-1 seconds")
        with self._world.lock:
            self._world.persistent_keyring_expiry = seconds

    def sys_get_persistent(self, uid: int, destringid: int) -> int:
        """``KEYCTL_GET_PERSISTENT`` (``uid`` -1 is the caller).

        ``EPERM`` for another uid without CAP_SETUID (root here), then the
        destination's lookup errno (``ENOKEY``, ``EACCES`` without WRITE,
        ``EKEYREVOKED``), ``ENOTDIR``, ``EACCES`` (no LINK), ``EDQUOT``, ``EDEADLK``.
        """
        target = self.cred.uid if uid in (-1, _UID_SELF) else uid
        if target != self.cred.uid and self.cred.uid != 0:
            raise error(
                errno.EPERM, f"uid {self.cred.uid} may not get the persistent keyring of uid {target} (needs CAP_SETUID)"
            )
        with self._scope:
            dest, _ = self._lookup(destringid, NEED_WRITE, create=True)
            return get_persistent(self._world, self.cred, target, dest)

    # -- KEYCTL_MOVE ---------------------------------------------------------------
    def sys_move(self, keyid: int, from_ringid: int, to_ringid: int, flags: int) -> None:
        """``KEYCTL_MOVE``: unlink from one keyring and link into another, as one step.

        ``EINVAL`` (flags other than KEYCTL_MOVE_EXCL), the lookups' errno (the key
        needs LINK, both keyrings WRITE), ``ENOTDIR``, ``ENOENT`` (not in the source),
        ``EDQUOT``, ``EEXIST`` (exclusive, and the target holds a key of that type and
        description), ``EDEADLK``/``ELOOP`` for keyrings.  Moving within one keyring
        does nothing.
        """
        if flags & ~KEYCTL_MOVE_EXCL:
            raise error(errno.EINVAL, f"unknown move flags {flags:#x} (only KEYCTL_MOVE_EXCL is defined)")
        with self._scope:
            key, _ = self._lookup(keyid, NEED_LINK, create=True)
            src, _ = self._lookup(from_ringid, NEED_WRITE)
            dst, _ = self._lookup(to_ringid, NEED_WRITE, create=True)
            if src is dst:
                return
            key_move(self, key, src, dst, exclusive=bool(flags & KEYCTL_MOVE_EXCL))

    # -- KEYCTL_SESSION_TO_PARENT ---------------------------------------------------
    def sys_session_to_parent(self) -> None:
        """``KEYCTL_SESSION_TO_PARENT``: the parent (the view ``as_user`` was called on)
        takes this view's session keyring.

        ``EACCES`` without LINK on the session keyring; ``EPERM`` without a parent,
        when the parent has other credentials, or when either session keyring
        belongs to another user.  Nothing happens when both already share it.
        """
        with self._scope:
            ring, _ = self._lookup(KEY_SPEC_SESSION_KEYRING, NEED_LINK)
            parent = self._parent_ref() if self._parent_ref is not None else None
            if parent is None:
                raise error(errno.EPERM, "this keyspace view has no parent process to give its session keyring to")
            pses = parent._proc.session
            if pses is ring:
                return
            if parent.cred.uid != self.cred.uid or parent.cred.gid != self.cred.gid:
                raise error(
                    errno.EPERM,
                    f"the parent runs as {parent.cred.uid}:{parent.cred.gid}, not as {self.cred.uid}:{self.cred.gid}",
                )
            if (pses is not None and pses.uid != self.cred.uid) or ring.uid != self.cred.uid:
                raise error(errno.EPERM, f"both session keyrings must belong to uid {self.cred.uid}")
            parent._install_session(ring)

    # -- KEYCTL_GET_SECURITY ---------------------------------------------------------
    def sys_get_security(self, keyid: int) -> str:
        """``KEYCTL_GET_SECURITY``: the key's LSM label; a Keyspace has no LSM, so "".

        Without VIEW the kernel looks for the authorisation to instantiate the key
        and reports that search's failure: ``ENOKEY`` (or ``EKEYREVOKED``) rather than
        ``EACCES``.  Also ``ENOKEY``, ``EKEYREVOKED``, ``EKEYEXPIRED`` from the lookup.
        """
        with self._scope:
            try:
                self._lookup(keyid, NEED_VIEW)
            except OSError as exc:
                if exc.errno != errno.EACCES:
                    raise
                self._instantiation_authkey(keyid)
            return ""

    def _instantiation_authkey(self, keyid: int) -> KeyRecord:
        """``key_get_instantiation_authkey``: the caller's ``.request_key_auth`` key for ``keyid``.

        ENOKEY when there is none, EKEYREVOKED when it was revoked.
        """
        try:
            auth = self.lookup_key(".request_key_auth", f"{keyid:x}")
        except OSError as exc:
            raise error(
                exc.errno or errno.ENOKEY, f"no permission to view key {keyid} and no authority to instantiate it"
            ) from None
        if auth.revoked:
            raise error(errno.EKEYREVOKED, f"the authority to instantiate key {keyid} has been revoked")
        return auth

    # -- KEYCTL_CAPABILITIES -----------------------------------------------------------
    def sys_capabilities(self) -> frozenset[str]:
        """``KEYCTL_CAPABILITIES``: what this keyspace implements, named as ``keyctl supports`` prints.

        With a store, ``notify`` is left out: watches live in this process, and
        what other processes change in the shared store is posted to none of them.
        """
        caps = implemented(type(self))
        if getattr(self, "store", None) is not None:
            caps = caps - {"notify"}
        return caps

    # -- KEYCTL_WATCH_KEY --------------------------------------------------------------
    def sys_watch_key(self, keyid: int, queue: object, watch_id: int) -> None:
        """``KEYCTL_WATCH_KEY``: post ``keyid``'s changes to ``queue`` (a :class:`WatchQueue`).

        In the kernel's order: ``EINVAL`` (``watch_id`` outside -1..255), the
        lookup's errno (VIEW needed; special ids are created), ``EINVAL`` (not a
        watch queue), ``ENOENT`` (queue closed), ``EBUSY`` (already watched
        through this queue), ``EAGAIN`` (the caller's uid would hold more watches
        than its RLIMIT_NOFILE), ``EBADSLT`` (``watch_id`` -1 with no such watch).
        """
        if watch_id < -1 or watch_id > 0xFF:
            raise error(errno.EINVAL, f"watch id {watch_id} is outside -1..255")
        with self._scope:
            rec, _ = self._lookup(keyid, NEED_VIEW, create=True)
            if not isinstance(queue, WatchQueue):
                raise error(errno.EINVAL, f"{type(queue).__name__} is not a watch queue of this keyspace")
            watch_key(rec, queue, watch_id, self._world.nr_watches, self.cred.uid)

    # -- KEYCTL_DH_COMPUTE ------------------------------------------------------------
    def sys_dh_compute(self, private: int, prime: int, base: int, kdf: DhKdf | None) -> bytes:
        """``KEYCTL_DH_COMPUTE`` over three user keys, optionally through the SP800-56A KDF.

        ``EMSGSIZE``/``ENOENT`` for bad KDF parameters (checked first), ``ENOKEY`` when a
        key cannot be looked up with READ (whatever the reason), ``EOPNOTSUPP`` for a
        key that is not a ``user`` key, ``EINVAL`` for unusable numbers.
        """
        from keyring_types.core.dh import check_kdf, dh_compute_value, kdf_sp800_56a

        algorithm = check_kdf(kdf) if kdf is not None else None
        with self._scope:
            p = self._dh_data(prime)
            g = self._dh_data(base)
            x = self._dh_data(private)
        value = dh_compute_value(x, p, g)
        if kdf is None or algorithm is None:
            return value
        return kdf_sp800_56a(algorithm, value, kdf.otherinfo, kdf.length)

    def _dh_data(self, keyid: int) -> bytes:
        """``dh_data_from_key``: a user key's payload; ENOKEY for any lookup failure, EOPNOTSUPP."""
        try:
            rec, _ = self._lookup(keyid, NEED_READ)
        except OSError as exc:
            raise error(errno.ENOKEY, f"DH input key {keyid} cannot be read: {exc.strerror}") from None
        if rec.ktype.name != "user":
            raise error(errno.EOPNOTSUPP, f"DH inputs must be 'user' keys; key {keyid} is '{rec.ktype.name}'")
        if rec.usage is not None:
            # With a prime of the caller's choosing, DH hands the private value back.
            check_consumer(rec.serial, rec.usage, "dh")
        data = rec.ktype.read(rec)
        return data


def key_move(view: ProcessKeys, key: KeyRecord, src: KeyRecord, dst: KeyRecord, exclusive: bool) -> None:
    """``key_move`` (keyring.c): the checks in the kernel's order, then unlink and link at once.

    ENOTDIR, ENOENT (the source holds nothing of the key's type and description),
    EKEYREVOKED (target revoked), EDQUOT (a new link in the target), EEXIST
    (exclusive and the target has that slot filled), the target's restriction
    (EPERM, ENOKEY, ...), EDEADLK/ELOOP.
    """
    w = view._world
    if src.links is None or dst.links is None:
        bad = src if src.links is None else dst
        raise error(errno.ENOTDIR, f"key {bad.serial} is a '{bad.ktype.name}' key, not a keyring")
    # The kernel removes whichever key holds the slot in the source, as KEYCTL_UNLINK does.
    victim = src.links.get(key.index_key)
    if victim is None:
        raise error(errno.ENOENT, f"key {key.serial} is not linked in keyring {src.serial}")
    if dst.revoked:
        raise error(errno.EKEYREVOKED, f"keyring {dst.serial} has been revoked")
    occupant = dst.links.get(key.index_key)
    if occupant is None:
        dst.payload_reserve(dst.datalen + KEYQUOTA_LINK_BYTES)
    try:
        if occupant is not None and exclusive:
            raise error(
                errno.EEXIST, f"keyring {dst.serial} already holds a {key.ktype.name} key {key.description!r}"
            )
        if dst.restriction is not None:
            check_restriction(w, dst, key.ktype, key.payload)
        if key.is_keyring:
            detect_cycle(w, view.cred, dst, key)
    except BaseException:
        if occupant is None:
            dst.payload_reserve(dst.datalen - KEYQUOTA_LINK_BYTES)
        raise
    w.drop_link(src, victim)
    if src.watchers:
        notify_key(src, NOTIFY_KEY_UNLINKED, key.serial)
    displaced = w.add_link(dst, key)
    if dst.watchers:
        notify_key(dst, NOTIFY_KEY_LINKED, key.serial)
    if victim is not key:
        w.maybe_destroy(victim)
    if displaced is not None:
        w.maybe_destroy(displaced)
