"""The key-type contract (the kernel's ``struct key_type``) and its registry.

A key type is one class with the operations below; the core calls them at the
same points the kernel does.  Types hold their payload on the record
(``key.payload``) and charge its size with ``key.payload_reserve(n)`` from
``instantiate``/``update``, as the kernel's types call ``key_payload_reserve``.
"""

from __future__ import annotations

import errno
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, ClassVar

from keyring_types.constants import KEY_TYPE_NAME_MAX
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.record import KeyRecord
    from keyring_types.secret import SecretBuffer

__all__ = [
    "KeyType",
    "Preparsed",
    "lookup_key_type",
    "on_unregister",
    "register_key_type",
    "register_key_type_lazily",
    "registered_key_types",
    "unregister_key_type",
]


class Preparsed:
    """What ``preparse`` makes of a payload before any key exists (``key_preparsed_payload``).

    The repr gives sizes and the payload's type, never the bytes: ``data`` is
    what the caller wrote, secrets included.  A plain slotted class, not attrs:
    this module is loaded by ``import keyring_types``, and a one-shot ``ktctl``
    command should not pay for attrs when it needs none of its classes.
    """

    __slots__ = ("data", "description", "payload", "quotalen")

    def __init__(self, data: bytes, payload: Any = None, quotalen: int = 0, description: str | None = None) -> None:
        self.data = data
        #: What instantiate/update install on the key (type-defined).
        self.payload = payload
        #: Bytes to charge to the owner's quota for the payload.
        self.quotalen = quotalen
        #: A description supplied by the type when the caller gave none.
        self.description = description

    def __repr__(self) -> str:
        payload = "None" if self.payload is None else f"<{type(self.payload).__name__}>"
        return f"Preparsed(data=<{len(self.data)} bytes>, payload={payload}, quotalen={self.quotalen})"


class KeyType:
    """Base class of every key type; subclasses set ``name`` and override operations.

    An operation left as inherited means the type lacks it, exactly as a NULL
    pointer in the kernel's ops table: no ``update`` → ``EOPNOTSUPP`` for
    ``keyctl update`` (and ``add_key`` over an existing key makes a new one);
    no ``read`` → ``EOPNOTSUPP``.
    """

    name: ClassVar[str]
    #: Default quota bytes charged at allocation (``def_datalen``).
    def_datalen: ClassVar[int] = 0

    # -- capability queries (derived from which ops the subclass overrides) --
    _has_update: ClassVar[bool] = False
    _has_read: ClassVar[bool] = False
    _has_vet: ClassVar[bool] = False
    _has_free_preparse: ClassVar[bool] = False
    #: The core's cache of the permission mask add_key gives this type's keys (0: not yet known).
    _add_key_perm: ClassVar[int] = 0
    #: Set by a type whose ``preparse`` may wait on I/O (a trust source sealing or
    #: unsealing): the core then runs it without the keyspace lock, as the kernel
    #: preparses before it takes any lock, so other threads' operations go on.
    #: Such a preparse must not touch the keyspace.
    preparse_blocks: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._has_update = cls.update is not KeyType.update
        cls._has_read = cls.read is not KeyType.read
        cls._has_vet = cls.vet_description is not KeyType.vet_description
        cls._has_free_preparse = cls.free_preparse is not KeyType.free_preparse

    # -- the ops table --------------------------------------------------------
    def vet_description(self, description: str) -> None:
        """Reject a description this type cannot use (``EINVAL``)."""

    def preparse(self, data: bytes) -> Preparsed:
        """Parse and validate ``data`` before a key exists; ``EINVAL`` on bad input."""
        return Preparsed(data=data, payload=None, quotalen=len(data))

    def free_preparse(self, prep: Preparsed) -> None:
        """Release whatever ``preparse`` made that instantiate/update did not consume."""
        if prep.payload is None:
            return
        wipe = getattr(prep.payload, "wipe", None)
        if callable(wipe):
            wipe()
        prep.payload = None

    def instantiate(self, key: KeyRecord, prep: Preparsed) -> None:
        """Give a new key its payload (takes ownership of ``prep.payload``)."""
        key.payload_reserve(prep.quotalen)
        key.payload, prep.payload = prep.payload, None

    def update(self, key: KeyRecord, prep: Preparsed) -> None:
        """Replace the payload of an existing key; absent → ``EOPNOTSUPP``."""
        raise error(errno.EOPNOTSUPP, f"key type '{self.name}' cannot be updated")

    def read(self, key: KeyRecord) -> bytes:
        """What ``keyctl read`` returns; absent → ``EOPNOTSUPP``."""
        raise error(errno.EOPNOTSUPP, f"key type '{self.name}' cannot be read")

    def describe(self, key: KeyRecord) -> str:
        """The type's column in ``/proc/keys``."""
        return key.description

    def revoke(self, key: KeyRecord) -> None:
        """Drop the payload early on revocation (the kernel frees it here)."""

    def destroy(self, key: KeyRecord) -> None:
        """Final free: wipe any secret the key holds."""
        wipe = getattr(key.payload, "wipe", None)
        if callable(wipe):
            wipe()
        key.payload = None

    def secret(self, key: KeyRecord) -> SecretBuffer:
        """Plaintext for in-process consumers, as a new SecretBuffer the caller wipes.

        Sealed types unseal here.  Absent → ``EOPNOTSUPP``.
        """
        raise error(errno.EOPNOTSUPP, f"key type '{self.name}' has no in-process secret")


_lock = threading.RLock()
# Held only briefly and never while waiting for another lock, so fork can take it:
# a child forked while another thread registered a type must not inherit it held.
os.register_at_fork(before=_lock.acquire, after_in_parent=_lock.release, after_in_child=_lock.release)
_registry: dict[str, KeyType] = {}
#: Types registered by where they live, not yet imported: name -> (module, class name).
#: The first lookup imports the module and moves the type into ``_registry``.
_lazy: dict[str, tuple[str, str]] = {}
_unregister_hooks: weakref.WeakSet[Any] = weakref.WeakSet()


def _check_name(name: str) -> None:
    if not name or len(name.encode()) >= KEY_TYPE_NAME_MAX:
        raise error(errno.EINVAL, f"key type name must be 1..{KEY_TYPE_NAME_MAX - 1} bytes: {name!r}")


def register_key_type(cls: type[KeyType]) -> type[KeyType]:
    """Register a key type class (usable as a decorator).

    ``EEXIST`` if a type of that name is registered; ``EINVAL`` for a bad name.
    """
    name = getattr(cls, "name", "")
    _check_name(name)
    with _lock:
        if name in _registry or name in _lazy:
            raise error(errno.EEXIST, f"key type '{name}' is already registered")
        _registry[name] = cls()
    return cls


def register_key_type_lazily(name: str, module: str, class_name: str) -> None:
    """Register the key type ``module.class_name`` as ``name`` without importing it yet.

    The module is imported, and the class instantiated, the first time
    :func:`lookup_key_type` asks for ``name``; until then the type costs nothing
    at import time but is listed by :func:`registered_key_types`.  ``EEXIST`` if
    a type of that name is registered; ``EINVAL`` for a bad name (and, at that
    first lookup, if the class's ``name`` is not ``name``).
    """
    _check_name(name)
    with _lock:
        if name in _registry or name in _lazy:
            raise error(errno.EEXIST, f"key type '{name}' is already registered")
        _lazy[name] = (module, class_name)


def _load_lazy(name: str) -> KeyType | None:
    """Import a lazily registered type and install it; None if ``name`` is not one.

    ``EINVAL`` if the class found there is not called ``name``.
    """
    entry = _lazy.get(name)
    if entry is None:
        return None
    from importlib import import_module

    # Import outside the lock: a module that registers things at import time takes
    # the lock itself, and another thread may be importing the same module.
    cls = getattr(import_module(entry[0]), entry[1])
    if getattr(cls, "name", None) != name:
        raise error(errno.EINVAL, f"{entry[0]}.{entry[1]} is not the key type '{name}' it was registered as")
    with _lock:
        ktype = _registry.get(name)
        if ktype is None and _lazy.get(name) == entry:  # not unregistered meanwhile
            ktype = _registry[name] = cls()
            del _lazy[name]
        return ktype


def unregister_key_type(name: str) -> None:
    """Remove a key type; its keys die (``EKEYREVOKED`` from then on) and are wiped.

    ``ENODEV`` if no such type is registered.
    """
    with _lock:
        ktype = _registry.pop(name, None)
        never_loaded = ktype is None and _lazy.pop(name, None) is not None
    if never_loaded:
        return  # never looked up, so no key of the type exists
    if ktype is None:
        raise error(errno.ENODEV, f"key type '{name}' is not registered")
    for hook in list(_unregister_hooks):
        hook.type_unregistered(ktype)


#: The registered type called ``name`` or None: a plain dict read, for hot paths
#: that fall back to :func:`lookup_key_type` for the error (or a first, lazy load).
registered_type = _registry.get


def lookup_key_type(name: str) -> KeyType:
    """The registered type called ``name`` (imported now if registered lazily); ``ENODEV`` if none."""
    ktype = _registry.get(name)  # a dict read is atomic; writers hold the lock
    if ktype is None:
        ktype = _load_lazy(name)
        if ktype is None:
            raise error(errno.ENODEV, f"unknown key type '{name}'")
    return ktype


def registered_key_types() -> list[str]:
    """Names of all registered key types, including those not imported yet."""
    with _lock:
        return sorted({*_registry, *_lazy})


def on_unregister(listener: Any) -> None:
    """Have ``listener.type_unregistered(ktype)`` called when a type goes (weakly held)."""
    _unregister_hooks.add(listener)
