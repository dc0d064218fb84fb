"""Entry-point plugin groups, for every backend family.

A family (trust sources today; TSM providers, derived-key roots and RPMB
transports later) makes one :class:`PluginGroup` with its entry-point group name
and its built-ins, and looks names up through it::

    TRUST_SOURCES = plugins.PluginGroup(
        "keyring_types.trust_sources",
        kind="trust source",
        builtins={"host": "keyring_types.trust.host:HostSource", ...},
    )
    cls = TRUST_SOURCES.load("host")

A name resolves, first match wins, to: an object registered in code
(:meth:`PluginGroup.register`), a built-in (imported from its ``module:attr``
target without looking at entry points at all), or an installed entry point.
Built-ins cannot be shadowed by a plugin of the same name.

``importlib.metadata`` scans every installed distribution, which costs about a
millisecond or two, so a group scans at most once and keeps the result; a name
it does not know triggers one fresh scan (a plugin installed since), and
:func:`refresh` forgets every scan.  Importing this module scans nothing.
"""

from __future__ import annotations

import errno
import importlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

from keyring_types.errors import error

__all__ = ["PluginGroup", "entry_points", "groups", "refresh"]

_groups_lock = threading.Lock()
_groups: dict[str, PluginGroup] = {}


def _scan(group: str) -> dict[str, Any]:
    """``name -> EntryPoint`` for ``group``; the first distribution found wins a name."""
    # Imported here: importlib.metadata is slow to import and most programs never need it.
    from importlib.metadata import entry_points as _entry_points

    found: dict[str, Any] = {}
    for ep in _entry_points(group=group):
        found.setdefault(ep.name, ep)
    return found


def _import_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class PluginGroup:
    """One entry-point group: built-ins, installed plugins and in-code registrations.

    Thread-safe.  Lookups of a known name after the first cost a dict access.
    """

    def __init__(
        self,
        group: str,
        *,
        kind: str,
        builtins: Mapping[str, str] | None = None,
        aliases: Mapping[str, str] | None = None,
        validate: Callable[[str, Any], Any] | None = None,
        missing_errno: int = errno.ENODEV,
    ) -> None:
        """``kind`` names a member in messages ("trust source"); ``builtins`` maps
        names to ``module:attr`` targets; ``validate(name, obj)`` returns the object
        to use or raises; ``missing_errno`` is raised for unknown or broken names."""
        self.group = group
        self.kind = kind
        self.builtins = dict(builtins or {})
        self.aliases = dict(aliases or {})
        self._validate = validate
        self._missing_errno = missing_errno
        self._lock = threading.RLock()
        self._registered: dict[str, Any] = {}
        self._loaded: dict[str, Any] = {}
        self._scanned: dict[str, Any] | None = None
        with _groups_lock:
            _groups[group] = self

    def canonical(self, name: str) -> str:
        """``name`` with this group's aliases resolved."""
        return self.aliases.get(name, name)

    # -- entry points -----------------------------------------------------------
    def entry_points(self, rescan: bool = False) -> dict[str, Any]:
        """Installed entry points of the group, ``name -> EntryPoint`` (scanned once, cached)."""
        with self._lock:
            scanned = self._scanned
        if scanned is None or rescan:
            scanned = _scan(self.group)
            with self._lock:
                self._scanned = scanned
        return scanned

    def refresh(self) -> None:
        """Forget the scan and every object loaded from an entry point or built-in."""
        with self._lock:
            self._scanned = None
            self._loaded.clear()

    # -- lookup ------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every known name (built-in, installed or registered), loadable or not."""
        eps = self.entry_points()
        with self._lock:
            return sorted(set(self.builtins) | set(eps) | set(self._registered))

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a member (registered, built-in or installed).

        Built-in and registered names answer without scanning entry points; any
        other name is looked up in the cached scan, rescanning once if absent.
        """
        name = self.canonical(name)
        with self._lock:
            if name in self._registered or name in self.builtins:
                return True
        return name in self.entry_points() or name in self.entry_points(rescan=True)

    def registered(self) -> dict[str, Any]:
        """A copy of the in-code registrations."""
        with self._lock:
            return dict(self._registered)

    def load(self, name: str) -> Any:
        """The object called ``name``.

        ``missing_errno`` (``ENODEV`` unless the family chose otherwise) when no
        member has that name, or when its module cannot be imported or the
        family's check refuses it; the message says which.
        """
        name = self.canonical(name)
        with self._lock:
            obj = self._registered.get(name)
            if obj is None:
                obj = self._loaded.get(name)
        if obj is not None:
            return obj
        target: Any
        if name in self.builtins:
            target = self.builtins[name]
        else:
            eps = self.entry_points()
            if name not in eps:
                eps = self.entry_points(rescan=True)  # installed since the last scan?
            if name not in eps:
                raise error(
                    self._missing_errno, f"no {self.kind} named '{name}' (known: {', '.join(self.names())})"
                )
            target = eps[name]
        try:
            obj = _import_target(target) if isinstance(target, str) else target.load()
        except Exception as exc:  # a broken plugin must not take the others down with it
            raise error(self._missing_errno, f"{self.kind} '{name}' cannot be loaded: {exc!r}") from exc
        if self._validate is not None:
            obj = self._validate(name, obj)
        with self._lock:
            return self._loaded.setdefault(name, obj)

    # -- in-code registration ----------------------------------------------------------
    def register(self, name: str, obj: Any) -> None:
        """Register ``obj`` as ``name``; ``EEXIST`` if code already registered that name."""
        name = self.canonical(name)
        with self._lock:
            if name in self._registered:
                raise error(errno.EEXIST, f"{self.kind} '{name}' is already registered")
            self._registered[name] = obj

    def unregister(self, name: str) -> Any:
        """Undo :meth:`register` and return what was registered; ``ENODEV`` if nothing was."""
        name = self.canonical(name)
        with self._lock:
            obj = self._registered.pop(name, None)
        if obj is None:
            raise error(errno.ENODEV, f"{self.kind} '{name}' was not registered in code")
        return obj


def groups() -> dict[str, PluginGroup]:
    """Every group made so far, by entry-point group name."""
    with _groups_lock:
        return dict(_groups)


def entry_points(group: str) -> dict[str, Any]:
    """Installed entry points of ``group`` (cached when a :class:`PluginGroup` owns it)."""
    owner = groups().get(group)
    return owner.entry_points() if owner is not None else _scan(group)


def refresh(group: str | None = None) -> None:
    """Forget cached scans (of ``group``, or of every group): after installing a plugin."""
    for name, owner in groups().items():
        if group is None or name == group:
            owner.refresh()
