"""Small immutable classes of the core, without attrs.

The core's records that every command makes are plain slotted classes, not
attrs: importing attrs is about a fifth of a one-shot ``ktctl`` command's
start-up (docs/performance.md, "ktctl start-up").  These two bases give them
what ``attrs.frozen`` gave: no attribute can be set or deleted after
``__init__`` (which sets them with ``object.__setattr__``), and for values,
equality, hashing, repr and pickling over ``_fields``.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["FrozenValue", "Immutable"]

class Immutable:
    """Refuses attribute writes and deletions after construction; compared by identity."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{self.__class__.__name__} is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{self.__class__.__name__} is immutable: cannot delete {name}")


class FrozenValue(Immutable):
    """An immutable value: equal, hashed, shown and pickled by ``_fields`` (the constructor's order)."""

    __slots__ = ()

    _fields: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, FrozenValue)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((self.__class__.__name__, *self._values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{self.__class__.__name__}({shown})"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.__class__, self._values())
