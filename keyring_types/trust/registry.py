"""Finding and choosing trust sources (the kernel's ``trusted.source=``).

Sources are found through :mod:`keyring_types.plugins` in the entry-point group
``keyring_types.trust_sources``: the built-ins by their module path without any
entry-point scan (they are listed in the group too, for tools that look), third
parties from one cached scan of the group, plus any class handed to
:func:`register_trust_source`.  After installing a plugin at run time,
:func:`clear_cache` (or :func:`keyring_types.plugins.refresh`) rescans; a name not
found also rescans once.

Choice, first match wins:

1. an explicit name (``source=`` in a payload, or ``get_trust_source(name)``);
2. :func:`set_default_trust_source` in code, else ``$KEYRING_TYPES_TRUST_SOURCE``;
3. ``tpm2`` when a TPM is reachable, else ``host``.

The kernel spells its TPM back end ``tpm``; that is accepted as an alias of ``tpm2``.
Unlike the kernel's ``strncmp`` prefix test, names must match exactly, so a typo
is reported instead of silently selecting something else.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any

from keyring_types.errors import error
from keyring_types.plugins import PluginGroup
from keyring_types.trust.base import TrustSource

__all__ = [
    "ENTRY_POINT_GROUP",
    "ENV_SOURCE",
    "TRUST_SOURCES",
    "available_sources",
    "canonical_name",
    "clear_cache",
    "default_source_name",
    "get_trust_source",
    "is_source_name",
    "register_trust_source",
    "set_default_trust_source",
    "source_class",
    "source_names",
    "unregister_trust_source",
]

ENTRY_POINT_GROUP = "keyring_types.trust_sources"
ENV_SOURCE = "KEYRING_TYPES_TRUST_SOURCE"
ALIASES = {"tpm": "tpm2"}
#: Resolved without scanning entry points (a plugin cannot shadow these names).
BUILTINS = {
    "tpm2": "keyring_types.trust.tpm2:Tpm2Source",
    "tee": "keyring_types.trust.tee:TeeSource",
    "caam": "keyring_types.trust.caam:CaamSource",
    "host": "keyring_types.trust.host:HostSource",
    "tsm": "keyring_types.trust.tsm:TsmSource",
}
#: Environment a source instance depends on: a change makes a fresh instance.
_CONFIG_ENV = (
    "KEYRING_TYPES_HOME",
    "XDG_STATE_HOME",
    "HOME",
    "KEYRING_TYPES_TPM2_TCTI",
    "KEYRING_TYPES_TEE_TRANSPORT",
    "KEYRING_TYPES_TSM_FIRMWARE",
    "KEYRING_TYPES_TSM_FIELDS",
    "KEYRING_TYPES_TSM_ROOT",
)


def _check_source_class(name: str, cls: Any) -> type[TrustSource]:
    if not (isinstance(cls, type) and issubclass(cls, TrustSource)):
        raise error(errno.ENODEV, f"entry point '{name}' does not name a TrustSource subclass")
    if ALIASES.get(cls.name, cls.name) != name:
        raise error(errno.ENODEV, f"entry point '{name}' names a source that calls itself '{cls.name}'")
    return cls


#: The trust-source family in the shared plugin machinery.
TRUST_SOURCES = PluginGroup(
    ENTRY_POINT_GROUP, kind="trust source", builtins=BUILTINS, aliases=ALIASES, validate=_check_source_class
)

_lock = threading.RLock()
_instances: dict[tuple[Any, ...], TrustSource] = {}
_default: str | None = None
#: The tpm2-else-host decision, per configuration.
_auto_default: dict[tuple[str | None, ...], str] = {}


def canonical_name(name: str) -> str:
    """``name`` with the kernel's aliases resolved (``tpm`` → ``tpm2``)."""
    return ALIASES.get(name, name)


def _entry_point_targets() -> dict[str, Any]:
    """Installed entry points of the group (one cached scan)."""
    return TRUST_SOURCES.entry_points()


def source_names() -> list[str]:
    """Every known source name (built-in, entry point or registered), loadable or not."""
    return TRUST_SOURCES.names()


def is_source_name(name: str) -> bool:
    """Whether ``name`` (or its alias) names a source; built-ins answer without an entry-point scan."""
    return TRUST_SOURCES.knows(name)


def source_class(name: str) -> type[TrustSource]:
    """The class of source ``name``.

    ``ENODEV`` when no source has that name or its module cannot be imported
    (say, tpm2-pytss is not installed); the message says which.
    """
    cls: type[TrustSource] = TRUST_SOURCES.load(name)
    return cls


def _is_available(name: str) -> bool:
    try:
        return bool(source_class(name).available())
    except Exception:  # noqa: BLE001  (a probe that fails means "not here", whatever the plugin raised)
        return False


def available_sources() -> list[str]:
    """Names of the sources that can be used on this machine now."""
    return [n for n in source_names() if _is_available(n)]


def default_source_name() -> str:
    """The source used when none is named (see the module docstring).

    ``ENODEV`` when the configured default is unknown.
    """
    with _lock:
        chosen = _default
    if chosen is None:
        chosen = os.environ.get(ENV_SOURCE) or None
    if chosen is not None:
        return canonical_name(chosen)
    # Probe once per configuration: a TPM that answers slowly once must not make
    # later keys of this process silently land on another source.
    key = _config_key()
    with _lock:
        cached = _auto_default.get(key)
    if cached is None:
        cached = "tpm2" if _is_available("tpm2") else "host"
        with _lock:
            cached = _auto_default.setdefault(key, cached)
    return cached


def _config_key() -> tuple[str | None, ...]:
    return tuple(os.environ.get(v) for v in _CONFIG_ENV)


def get_trust_source(name: str | None = None) -> TrustSource:
    """An instance of trust source ``name`` (or the default), shared while its configuration holds.

    ``ENODEV`` if no such source exists or it is not available on this machine
    (the kernel's answer when no trusted-key back end initialised).
    """
    probed = not name and default_source_name() == "tpm2"
    name = canonical_name(name) if name else default_source_name()
    cls = source_class(name)
    key = (name, cls, _config_key())
    with _lock:
        inst = _instances.get(key)
        if inst is not None:
            return inst
    if not probed and not cls.available():
        raise error(errno.ENODEV, f"trust source '{name}' is not available on this machine")
    inst = cls()
    with _lock:
        existing = _instances.setdefault(key, inst)
    if existing is not inst:
        inst.close()
    return existing


def register_trust_source(cls: type[TrustSource]) -> type[TrustSource]:
    """Register a source class in code (usable as a decorator); ``EEXIST`` if the name is taken."""
    TRUST_SOURCES.register(cls.name, cls)
    return cls


def unregister_trust_source(name: str) -> None:
    """Undo :func:`register_trust_source`; ``ENODEV`` if it was not registered in code."""
    name = canonical_name(name)
    TRUST_SOURCES.unregister(name)
    with _lock:
        stale = [k for k in _instances if k[0] == name]
        dropped = [_instances.pop(k) for k in stale]
    for inst in dropped:
        inst.close()


def set_default_trust_source(name: str | None) -> None:
    """Choose the default source in code (``None``: back to env / tpm2-else-host)."""
    global _default
    with _lock:
        _default = canonical_name(name) if name else None


def clear_cache() -> None:
    """Close and forget every source instance, the probed default and the plugin scan
    (tests, reconfiguration, a plugin installed at run time)."""
    TRUST_SOURCES.refresh()
    with _lock:
        dropped = list(_instances.values())
        _instances.clear()
        _auto_default.clear()
    for inst in dropped:
        inst.close()
