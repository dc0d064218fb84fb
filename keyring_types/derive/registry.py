"""Finding and choosing derived-key roots.

Roots are found through :mod:`keyring_types.plugins` in the entry-point group
``keyring_types.derive_roots``: the built-ins ``tpm2`` and ``host`` by their
module path without an entry-point scan, third parties from one cached scan,
plus any class handed to :func:`register_root`.

Choice, first match wins, as for the trust sources:

1. an explicit name (:func:`get_root` with ``name``);
2. ``$KEYRING_TYPES_DERIVE_ROOT`` (``tpm2`` or ``host``, or a plugin's name);
3. ``tpm2`` when a TPM is reachable through ``$KEYRING_TYPES_TPM2_TCTI``, else ``host``.

The choice in 3 is probed once per configuration, so a TPM that answers slowly
once does not move later keys of the process to the host seed.  An instance is
shared while the environment it depends on holds.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

from keyring_types.derive.base import DeriveRoot
from keyring_types.errors import error
from keyring_types.plugins import PluginGroup

__all__ = [
    "DERIVE_ROOTS",
    "ENTRY_POINT_GROUP",
    "ENV_ROOT",
    "clear_cache",
    "default_root_name",
    "get_root",
    "register_root",
    "root_class",
    "root_names",
    "unregister_root",
]

ENTRY_POINT_GROUP = "keyring_types.derive_roots"
ENV_ROOT = "KEYRING_TYPES_DERIVE_ROOT"
#: Resolved without scanning entry points (a plugin cannot shadow these names).
BUILTINS = {
    "tpm2": "keyring_types.derive.tpm2:Tpm2Root",
    "host": "keyring_types.derive.host:HostRoot",
}
#: Environment an instance depends on: a change makes a fresh instance.
_CONFIG_ENV = ("KEYRING_TYPES_HOME", "XDG_STATE_HOME", "HOME", "KEYRING_TYPES_TPM2_TCTI")


def _check_root_class(name: str, cls: Any) -> type[DeriveRoot]:
    if not (isinstance(cls, type) and issubclass(cls, DeriveRoot)):
        raise error(errno.ENODEV, f"entry point '{name}' does not name a DeriveRoot subclass")
    if getattr(cls, "name", None) != name:
        raise error(errno.ENODEV, f"entry point '{name}' names a root that calls itself '{getattr(cls, 'name', '')}'")
    return cls


#: The derived-key root family in the shared plugin machinery.
DERIVE_ROOTS = PluginGroup(ENTRY_POINT_GROUP, kind="derived-key root", builtins=BUILTINS, validate=_check_root_class)

_lock = threading.Lock()
_instances: dict[tuple[Any, ...], DeriveRoot] = {}
#: (``$KEYRING_TYPES_DERIVE_ROOT``, the configuration) -> the default instance: the key type's fast path.
_by_env: dict[tuple[str | None, ...], DeriveRoot] = {}
_auto_default: dict[tuple[str | None, ...], str] = {}


def _config_key() -> tuple[str | None, ...]:
    return tuple(os.environ.get(v) for v in _CONFIG_ENV)


def root_names() -> list[str]:
    """Every known root name (built-in, installed or registered)."""
    return DERIVE_ROOTS.names()


def root_class(name: str) -> type[DeriveRoot]:
    """The class of root ``name``; ``ENODEV`` when there is none or it cannot be imported."""
    cls: type[DeriveRoot] = DERIVE_ROOTS.load(name)
    return cls


def default_root_name() -> str:
    """The root used when none is named (see the module docstring); no ``ENODEV`` here, at use."""
    chosen = os.environ.get(ENV_ROOT)
    if chosen:
        return chosen
    key = _config_key()
    with _lock:
        cached = _auto_default.get(key)
    if cached is not None:
        return cached
    try:
        probe = root_class("tpm2").available()
    except OSError:
        probe = False
    with _lock:
        return _auto_default.setdefault(key, "tpm2" if probe else "host")


def get_root(name: str | None = None) -> DeriveRoot:
    """The shared instance of root ``name`` (or the default).

    ``ENODEV`` if no root has that name or it cannot be loaded.  A root that is
    named but not reachable (a ``tpm2`` with no TPM) fails at its first
    derivation with the TPM's error.
    """
    if name is None:
        env_key = (os.environ.get(ENV_ROOT), *_config_key())
        found = _by_env.get(env_key)
        if found is not None:
            return found
        default = get_root(default_root_name())
        with _lock:
            return _by_env.setdefault(env_key, default)
    cls = root_class(name)
    key = (name, cls, _config_key())
    existing = _instances.get(key)
    if existing is not None:
        return existing
    fresh = cls()
    with _lock:
        inst = _instances.setdefault(key, fresh)
    if inst is not fresh:
        fresh.close()
    return inst


def register_root(cls: type[DeriveRoot]) -> type[DeriveRoot]:
    """Register a root class in code (usable as a decorator); ``EEXIST`` if the name is taken."""
    DERIVE_ROOTS.register(cls.name, cls)
    return cls


def unregister_root(name: str) -> None:
    """Undo :func:`register_root` and close its instances; ``ENODEV`` if it was not registered in code."""
    DERIVE_ROOTS.unregister(name)
    with _lock:
        dropped = [_instances.pop(k) for k in [k for k in _instances if k[0] == name]]
        _by_env.clear()
    for inst in dropped:
        inst.close()


def clear_cache() -> None:
    """Close and forget every root instance, the probed default and the plugin scan."""
    DERIVE_ROOTS.refresh()
    with _lock:
        dropped = list(_instances.values())
        _instances.clear()
        _by_env.clear()
        _auto_default.clear()
    for inst in dropped:
        inst.close()
