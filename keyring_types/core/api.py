"""The public keyspace API, shared by the in-process and the kernel-backed keyspace.

Subclasses implement the ``sys_*`` methods, one per system call, with the
kernel's semantics and errno; everything a user calls is written once here on
top of them, so the two keyspaces cannot drift apart.  The user-facing methods
convert every argument to what the system call's C type can carry
(:mod:`keyring_types.core.syscall_args`) before a ``sys_*`` method sees it.
"""

from __future__ import annotations

import abc
import errno
from typing import TYPE_CHECKING

from keyring_types.constants import KEY_SPEC_ALIASES, KEY_SPEC_REQKEY_AUTH_KEY
from keyring_types.core.handle import Key, Keyring
from keyring_types.core.syscall_args import c_int_flag, c_string, key_id, owner_id, payload_bytes, u32
from keyring_types.core.usage import check_usage
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.dh import DhKdf
    from keyring_types.core.pkey import PkeyQuery
    from keyring_types.secret import SecretBuffer

__all__ = ["KeyTarget", "KeyspaceAPI"]

#: Anything that names a key or keyring: a handle, a serial or KEY_SPEC_* id, or "@s" etc.
KeyTarget = Key | int | str


class KeyspaceAPI(abc.ABC):
    """``add_key``/``request_key``/``keyctl`` on some keyspace, through handles."""

    # -- the system calls (each mirrors one kernel entry point) --------------
    @abc.abstractmethod
    def sys_add_key(
        self, type_name: str, description: str | None, payload: bytes | None, ringid: int, *, usage: str | None = None
    ) -> int: ...

    @abc.abstractmethod
    def sys_request_key(self, type_name: str, description: str, callout: bytes | None, destringid: int) -> int: ...

    @abc.abstractmethod
    def sys_get_keyring_id(self, keyid: int, create: bool) -> int: ...

    @abc.abstractmethod
    def sys_join_session_keyring(self, name: str | None) -> int: ...

    @abc.abstractmethod
    def sys_update(self, keyid: int, payload: bytes) -> None: ...

    @abc.abstractmethod
    def sys_revoke(self, keyid: int) -> None: ...

    @abc.abstractmethod
    def sys_chown(self, keyid: int, uid: int, gid: int) -> None: ...

    @abc.abstractmethod
    def sys_setperm(self, keyid: int, perm: int) -> None: ...

    @abc.abstractmethod
    def sys_describe(self, keyid: int) -> str: ...

    @abc.abstractmethod
    def sys_clear(self, ringid: int) -> None: ...

    @abc.abstractmethod
    def sys_link(self, keyid: int, ringid: int) -> None: ...

    @abc.abstractmethod
    def sys_unlink(self, keyid: int, ringid: int) -> None: ...

    @abc.abstractmethod
    def sys_search(self, ringid: int, type_name: str, description: str, destringid: int) -> int: ...

    @abc.abstractmethod
    def sys_read(self, keyid: int) -> bytes: ...

    @abc.abstractmethod
    def sys_set_timeout(self, keyid: int, timeout: int) -> None: ...

    @abc.abstractmethod
    def sys_invalidate(self, keyid: int) -> None: ...

    # The handler side of construction by upcall (core.request_key).
    @abc.abstractmethod
    def sys_instantiate(self, keyid: int, payload: bytes | None, ringid: int) -> None: ...

    @abc.abstractmethod
    def sys_instantiate_iov(self, keyid: int, parts: list[bytes], ringid: int) -> None: ...

    @abc.abstractmethod
    def sys_negate(self, keyid: int, timeout: int, ringid: int) -> None: ...

    @abc.abstractmethod
    def sys_reject(self, keyid: int, timeout: int, err: int, ringid: int) -> None: ...

    @abc.abstractmethod
    def sys_assume_authority(self, keyid: int) -> int: ...

    @abc.abstractmethod
    def sys_set_reqkey_keyring(self, which: int) -> int: ...

    @abc.abstractmethod
    def sys_get_persistent(self, uid: int, destringid: int) -> int: ...

    @abc.abstractmethod
    def sys_move(self, keyid: int, from_ringid: int, to_ringid: int, flags: int) -> None: ...

    @abc.abstractmethod
    def sys_session_to_parent(self) -> None: ...

    @abc.abstractmethod
    def sys_get_security(self, keyid: int) -> str: ...

    @abc.abstractmethod
    def sys_capabilities(self) -> frozenset[str]: ...

    @abc.abstractmethod
    def sys_dh_compute(self, private: int, prime: int, base: int, kdf: DhKdf | None) -> bytes: ...

    @abc.abstractmethod
    def sys_watch_key(self, keyid: int, queue: object, watch_id: int) -> None: ...

    @abc.abstractmethod
    def sys_secret(self, keyid: int, consumer: str | None = None) -> SecretBuffer:
        """The key's plaintext for in-process use, in a new SecretBuffer the caller wipes.

        ``consumer`` names who takes it; a key bound to another use raises
        ``EKEYREJECTED`` (core/usage.py).
        """

    def sys_key_usage(self, keyid: int) -> str | None:
        """The use ``keyid`` is bound to, or None (a keyspace without bindings: always None)."""
        return None

    @abc.abstractmethod
    def as_user(self, uid: int, gid: int, groups: tuple[int, ...] | list[int] = ()) -> KeyspaceAPI:
        """A view of the same keyspace acting with other credentials (same session)."""

    @abc.abstractmethod
    def same_world(self, other: KeyspaceAPI) -> bool:
        """Whether ``other`` is a view of the same set of keys."""

    @abc.abstractmethod
    def sys_restrict_keyring(self, ringid: int, type_name: str | None, restriction: str | None) -> None: ...

    @abc.abstractmethod
    def sys_pkey_query(self, keyid: int, info: str) -> PkeyQuery: ...

    @abc.abstractmethod
    def sys_pkey_encrypt(self, keyid: int, info: str, data: bytes) -> bytes: ...

    @abc.abstractmethod
    def sys_pkey_decrypt(self, keyid: int, info: str, data: bytes) -> bytes: ...

    @abc.abstractmethod
    def sys_pkey_sign(self, keyid: int, info: str, digest: bytes) -> bytes: ...

    @abc.abstractmethod
    def sys_pkey_verify(self, keyid: int, info: str, digest: bytes, signature: bytes) -> None: ...

    # -- the user-facing API -------------------------------------------------
    #
    # Every argument is converted to what the system call's C type can carry
    # (core.syscall_args) before any sys_* call, so both keyspaces refuse the same
    # values with the same errno and the kernel never sees a truncated number.

    def resolve(self, target: KeyTarget) -> int:
        """Turn a handle, serial, KEY_SPEC_* id or ``@x`` alias into an id for a syscall.

        ``EINVAL`` for anything else: a number outside ``key_serial_t`` (int32), a
        string that is neither an alias nor a number, a bool, a handle of another
        keyspace (its serial would name an unrelated key here).
        """
        if isinstance(target, Key):
            if target._ks is not self and not self.same_world(target._ks):
                raise error(errno.EINVAL, f"key {target._serial} is a handle of another keyspace")
            return target._serial
        if isinstance(target, str):
            alias = KEY_SPEC_ALIASES.get(target)
            if alias is not None:
                return alias
            try:
                number = int(target, 0)
            except ValueError:
                raise error(errno.EINVAL, "not a key id or keyring alias (@t @p @s @u @us @g @a)") from None
            return key_id(number)
        return key_id(target)

    def handle(self, serial: int, type_name: str | None = None, description: str | None = None) -> Key:
        """A handle on ``serial`` in this view, a :class:`Keyring` for keyrings.

        ``EINVAL`` if ``serial`` is not a ``key_serial_t`` or the names are not str.
        """
        serial = key_id(serial)
        type_name = c_string(type_name, "key type", None)
        description = c_string(description, "description", None)
        if type_name is None:
            try:
                type_name, _u, _g, _p, description = self.sys_describe(serial).split(";", 4)
            except OSError:
                return Key(self, serial)
        cls = Keyring if type_name == "keyring" else Key
        return cls(self, serial, type_name, description)

    def add_key(
        self,
        type_name: str,
        description: str | None,
        payload: bytes | bytearray | memoryview | str | None,
        keyring: KeyTarget,
        *,
        usage: str | None = None,
    ) -> Key:
        """``add_key(2)``: create a key, or update the same type+description in ``keyring``.

        ``usage`` binds a new key to one consumer (``"fscrypt"``, ``"dm-crypt"``,
        ``"luks"``, ``"rpmb"``...; see :mod:`keyring_types.core.usage`): its
        plaintext then goes only to that consumer.  ``EINVAL`` for a name that is
        not a consumer name, ``EKEYREJECTED`` when the key exists already with
        another binding or none, ``EOPNOTSUPP`` on the kernel keyring.

        Raises ``EINVAL`` (bad type name, description, payload or keyring id),
        ``EFAULT`` (type None), ``EPERM`` (type or keyring name starting with '.'),
        ``ENODEV`` (unknown type), ``ENOKEY``/``ENOTDIR`` (bad destination),
        ``EACCES`` (no WRITE on it), ``EDQUOT`` (over quota).
        """
        # The common argument types are checked inline: this is the hot path.  Type
        # names come from a handful, remembered once checked; a printable str has no
        # NUL and no lone surrogate, so it is a good C string.
        try:
            known_type = type_name in _CHECKED_TYPE_NAMES
        except (TypeError, ValueError):  # unhashable (a released memoryview: ValueError): not a str
            known_type = False
        if not known_type:
            type_name = _checked_type_name(type_name)
        if description is not None and not (description.__class__ is str and description.isprintable()):
            description = c_string(description, "description", None)
        data = payload if type(payload) is bytes else payload_bytes(payload)
        if type(keyring) is str:
            ringid = KEY_SPEC_ALIASES.get(keyring)
        else:
            ringid = keyring._serial if isinstance(keyring, Key) and keyring._ks is self else None
        if usage is None:
            serial = self.sys_add_key(type_name, description, data, self.resolve(keyring) if ringid is None else ringid)
        else:
            serial = self.sys_add_key(
                type_name, description, data, self.resolve(keyring) if ringid is None else ringid, usage=check_usage(usage)
            )
        # Built without Key.__init__, whose serial check a syscall's answer does not need.
        handle = _new_handle(Keyring if type_name == "keyring" else Key)
        handle._ks = self
        handle._serial = serial
        handle._type = type_name
        handle._description = description
        return handle

    def request_key(
        self,
        type_name: str,
        description: str,
        callout_info: bytes | str | None = None,
        keyring: KeyTarget = 0,
    ) -> Key:
        """``request_key(2)``: find a key through the caller's keyrings.

        Links it into ``keyring`` if given.  Raises ``ENOKEY`` (none, or only expired
        ones), ``EKEYREVOKED``/``EACCES`` when only unusable ones exist, ``EFAULT``
        (type or description None), ``EINVAL`` (arguments of the wrong kind).
        """
        type_name = c_string(type_name, "key type")  # type: ignore[assignment]
        description = c_string(description, "description")  # type: ignore[assignment]
        callout = _callout_bytes(callout_info)
        destringid = 0 if keyring is None else self.resolve(keyring)
        serial = self.sys_request_key(type_name, description, callout, destringid)
        return self.handle(serial, type_name, description)

    def key(self, target: KeyTarget) -> Key:
        """A handle on an existing key; ``ENOKEY`` if there is none (special ids resolve)."""
        keyid = self.resolve(target)
        if keyid == KEY_SPEC_REQKEY_AUTH_KEY:
            # @a is the one special id that names a key, not a keyring.
            return self.handle(self.sys_get_keyring_id(keyid, False))
        if keyid < 0:
            return self.keyring(keyid)
        return self.handle(self._checked_serial(keyid))

    def _checked_serial(self, keyid: int) -> int:
        try:
            self.sys_describe(keyid)
        except OSError as exc:
            if exc.errno == errno.ENOKEY:
                raise
        return keyid

    def keyring(self, target: KeyTarget, create: bool = False) -> Keyring:
        """The keyring named by a special id or alias (``@s``, ``@u`` ...) or serial.

        ``ENOTDIR`` if it is another type of key, ``EINVAL`` for a bad id or flag.
        """
        keyid = self.resolve(target)
        make = c_int_flag(create, "create flag")
        serial = self.sys_get_keyring_id(keyid, make) if keyid < 0 else keyid
        h = self.handle(serial)
        if not isinstance(h, Keyring):
            if h._type is None:
                return Keyring(self, serial)
            raise error(errno.ENOTDIR, f"key {serial} is a '{h.type}' key, not a keyring")
        return h

    def join_session_keyring(self, name: str | None = None) -> Keyring:
        """``keyctl session``: join (or make) a named session keyring, or a new anonymous one.

        ``EPERM`` for names starting with '.', ``EINVAL`` for a name that is not text.
        """
        name = c_string(name, "session keyring name", None)
        serial = self.sys_join_session_keyring(name)
        return Keyring(self, serial, "keyring", name if name is not None else "_ses")

    # -- keyctl operations past the basic set (both keyspaces) -----------------
    def get_persistent(self, uid: int = -1, dest: KeyTarget = "@s") -> Keyring:
        """``keyctl get_persistent``: link ``_persistent.<uid>`` into ``dest`` and renew its expiry.

        ``uid`` -1 means the caller.  ``EPERM`` for another uid without CAP_SETUID,
        ``ENOTDIR`` (``dest`` not a keyring), ``EACCES`` (no WRITE on ``dest``),
        ``EDQUOT``, ``EINVAL`` (a uid outside ``uid_t``).
        """
        uid = owner_id(uid, "uid")
        serial = self.sys_get_persistent(uid, self.resolve(dest))
        return Keyring(self, serial, "keyring", None)

    def move(self, key: KeyTarget, from_ring: KeyTarget, to_ring: KeyTarget, exclusive: bool = False) -> None:
        """``keyctl move``: unlink ``key`` from ``from_ring`` and link it into ``to_ring`` at once.

        ``exclusive`` (``KEYCTL_MOVE_EXCL``) refuses to displace a key of the same type
        and description from ``to_ring`` with ``EEXIST``.  Also ``ENOENT`` (not linked
        in ``from_ring``), ``EACCES`` (LINK on the key, WRITE on both keyrings),
        ``ENOTDIR``, ``EDEADLK``/``ELOOP`` (keyring cycles and depth), ``EDQUOT``.
        """
        flags = 1 if c_int_flag(exclusive, "exclusive flag") else 0
        self.sys_move(self.resolve(key), self.resolve(from_ring), self.resolve(to_ring), flags)

    def session_to_parent(self) -> None:
        """``keyctl session_to_parent``: give the parent process this session keyring.

        For a ``Keyspace`` view the parent is the view ``as_user`` was called on; for
        ``KernelKeyspace`` it is this process's parent (or, for an ``as_user`` view, this
        process).  ``EPERM`` (no parent, other credentials), ``EACCES`` (no LINK).
        """
        self.sys_session_to_parent()

    def capabilities(self) -> frozenset[str]:
        """What this keyspace supports, named as ``keyctl supports`` prints (without ``have_``)."""
        return self.sys_capabilities()

    def watch_key(self, key: KeyTarget, queue: object, watch_id: int = 0) -> None:
        """``keyctl watch``: post ``key``'s changes to ``queue``; ``watch_id`` -1 removes the watch.

        ``queue`` is a :class:`~keyring_types.core.watch.WatchQueue` for a ``Keyspace``,
        a notification pipe's file descriptor for ``KernelKeyspace``.  ``EINVAL``
        (``watch_id`` outside -1..255, not a watch queue), ``EACCES`` (no VIEW),
        ``ENOKEY``, ``ENOENT`` (queue closed), ``EBUSY`` (already watched through
        ``queue``), ``EAGAIN`` (more watches than RLIMIT_NOFILE for the uid),
        ``EBADSLT`` (no such watch to remove), ``EOPNOTSUPP`` from a
        kernel built without key notifications.
        """
        watch_id = key_id(watch_id, "watch id")  # a C int, as key_serial_t
        self.sys_watch_key(self.resolve(key), queue, watch_id)

    def dh_compute(
        self, private: KeyTarget, prime: KeyTarget, base: KeyTarget, kdf: DhKdf | None = None
    ) -> bytes:
        """``keyctl dh_compute``: ``base ** private mod prime`` over three ``user`` keys.

        With ``kdf`` (:class:`keyring_types.DhKdf`) the result goes through the
        SP800-56A KDF.  ``ENOKEY`` (a key missing or unreadable), ``EOPNOTSUPP``
        (not a user key, or a kernel without DH), ``EINVAL`` (prime under 1536 bits,
        private key or base longer than the prime), ``EMSGSIZE``, ``ENOENT`` (KDF hash).
        """
        from keyring_types.core.dh import DhKdf

        if kdf is not None:
            if not isinstance(kdf, DhKdf):
                raise error(errno.EINVAL, f"kdf must be a DhKdf, not {type(kdf).__name__}")
            c_string(kdf.hashname, "KDF hash name")
            # A size_t in the kernel; the C helper passes it in a signed long.
            if type(kdf.length) is not int or not 0 <= kdf.length < 1 << 63:
                raise error(errno.EINVAL, "KDF output length must be an integer in 0..2**63-1")
        return self.sys_dh_compute(self.resolve(private), self.resolve(prime), self.resolve(base), kdf)

    # -- the request-key handler's side ------------------------------------------
    #
    # A handler (core.request_key_handlers) builds the key it was asked for with
    # these; outside an upcall, without the authority over that key, they fail
    # with EPERM.  Each ends the authority when it succeeds.

    def assume_authority(self, key: KeyTarget | None) -> Key | None:
        """``keyctl assume_authority``: take the authority to build ``key`` (None or 0 gives it up).

        Returns the authorisation key (``@a``), or None when giving up.  ``ENOKEY``
        if no authorisation key for ``key`` is reachable from the caller's keyrings,
        ``EKEYREVOKED`` if it is spent, ``EINVAL`` for a special id.
        """
        keyid = 0 if key is None else self.resolve(key)
        serial = self.sys_assume_authority(keyid)
        return None if serial == 0 else self.handle(serial, ".request_key_auth", f"{keyid:x}")

    def instantiate(
        self, key: KeyTarget, payload: bytes | bytearray | memoryview | str | None, dest: KeyTarget = 0
    ) -> None:
        """``keyctl instantiate``: give the key under construction its payload, link it into ``dest``.

        ``dest`` 0 links nowhere more; a special id (``@s``...) means the requester's
        destination keyring.  ``EPERM`` (no authority over ``key``), ``EBUSY``
        (already built), ``EINVAL`` (payload refused by the type, over 1 MiB - 1),
        ``EACCES``/``ENOKEY`` (``dest``), ``EDQUOT``.
        """
        keyid = self.resolve(key)
        data = payload_bytes(payload)
        self.sys_instantiate(keyid, data if data else None, 0 if dest is None else self.resolve(dest))

    def instantiate_iov(
        self, key: KeyTarget, parts: list[bytes] | tuple[bytes, ...], dest: KeyTarget = 0
    ) -> None:
        """``KEYCTL_INSTANTIATE_IOV``: as :meth:`instantiate` with the payload in pieces (at most 1024)."""
        keyid = self.resolve(key)
        pieces = [payload_bytes(p, "payload piece") or b"" for p in parts]
        self.sys_instantiate_iov(keyid, pieces, 0 if dest is None else self.resolve(dest))

    def negate(self, key: KeyTarget, timeout: int, dest: KeyTarget = 0) -> None:
        """``keyctl negate``: ``key`` answers ENOKEY to requests for ``timeout`` seconds.

        ``EPERM`` (no authority over ``key``), ``EBUSY``, ``EINVAL`` (timeout not a
        u32), ``EACCES``/``ENOKEY`` (``dest``).
        """
        keyid = self.resolve(key)
        self.sys_negate(keyid, u32(timeout, "timeout"), 0 if dest is None else self.resolve(dest))

    def reject(self, key: KeyTarget, timeout: int, error: int, dest: KeyTarget = 0) -> None:
        """``keyctl reject``: ``key`` answers ``error`` (e.g. EKEYREJECTED) for ``timeout`` seconds.

        ``EINVAL`` for an ``error`` outside 1..4094 or a kernel-internal restart
        code; otherwise as :meth:`negate`.
        """
        keyid = self.resolve(key)
        err = u32(error, "error number")
        self.sys_reject(keyid, u32(timeout, "timeout"), err, 0 if dest is None else self.resolve(dest))

    def set_reqkey_keyring(self, which: int) -> int:
        """``keyctl reqkey_default``: where constructed keys go by default; returns the previous setting.

        ``which`` is a ``KEY_REQKEY_DEFL_*`` value (``-1`` reads without changing);
        ``EINVAL`` for the group keyring or an unknown value.
        """
        return self.sys_set_reqkey_keyring(key_id(which, "request-key default keyring"))

    @property
    def session(self) -> Keyring:
        return self.keyring("@s", create=True)

    @property
    def user_keyring(self) -> Keyring:
        return self.keyring("@u", create=True)


_new_handle = object.__new__

#: Key type names add_key has seen pass c_string (bounded: names are few, junk is not kept).
_CHECKED_TYPE_NAMES: set[str] = set()


def _checked_type_name(type_name: object) -> str:
    checked = c_string(type_name, "key type")
    assert checked is not None
    if checked.isprintable() and len(_CHECKED_TYPE_NAMES) < 64:
        _CHECKED_TYPE_NAMES.add(checked)
    return checked


def _callout_bytes(callout: object) -> bytes | None:
    """request_key's callout info: a C string, so str or bytes without NUL (``EINVAL``)."""
    data = payload_bytes(callout, "callout info")
    if data is not None and b"\0" in data:
        raise error(errno.EINVAL, "callout info contains a NUL byte, which ends a C string")
    return data
