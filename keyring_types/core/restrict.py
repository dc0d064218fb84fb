"""Keyring restrictions (``keyring_restrict`` and ``__key_link_check_restriction`` in
security/keys/keyring.c).

A restricted keyring asks its restriction before anything new is linked into it,
by ``add_key`` (with the preparsed payload, before an existing key is updated),
``keyctl link``, the destination of ``search``/``request_key``, or a move: the
check raises to refuse.  Reject-all (no type) refuses everything with ``EPERM``;
a key type supplies other restrictions through its ``lookup_restriction``
operation (``asymmetric``: signature checks).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from keyring_types.core.immutable import Immutable
from keyring_types.core.keytype import KeyType, lookup_key_type
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.record import KeyRecord
    from keyring_types.core.world import World

__all__ = [
    "KeyRestriction",
    "RestrictCheck",
    "check_restriction",
    "keyring_restrict",
    "rebuild_restriction",
    "release_restriction",
    "restrict_link_reject",
    "restrict_link_unavailable",
]

#: ``check(world, dest_keyring, key_type, payload, restriction_key)``: returns to allow, raises to refuse.
RestrictCheck = Callable[["World", "KeyRecord", KeyType, Any, "KeyRecord | None"], None]


class KeyRestriction(Immutable):
    """``struct key_restriction``: the check, the key it consults (held), and the type it came from.

    ``type_name`` and ``spec`` are what ``keyctl restrict_keyring`` was given
    (both None for reject-all): a persistent world keeps them and rebuilds the
    check from them (:func:`rebuild_restriction`), since a check function
    cannot be stored.

    Immutable, compared by identity; not attrs, as every command loads this
    module (:mod:`keyring_types.core.immutable` says why).
    """

    __slots__ = ("check", "key", "keytype", "spec", "type_name")

    check: RestrictCheck
    key: KeyRecord | None
    keytype: KeyType | None
    type_name: str | None
    spec: str | None

    def __init__(
        self,
        check: RestrictCheck,
        key: KeyRecord | None = None,
        keytype: KeyType | None = None,
        type_name: str | None = None,
        spec: str | None = None,
    ) -> None:
        setter = object.__setattr__
        setter(self, "check", check)
        setter(self, "key", key)
        setter(self, "keytype", keytype)
        setter(self, "type_name", type_name)
        setter(self, "spec", spec)

    def named(self, type_name: str, spec: str) -> KeyRestriction:
        """This restriction, recording the type name and string it was made from."""
        return KeyRestriction(self.check, self.key, self.keytype, type_name, spec)

    def __repr__(self) -> str:
        key = None if self.key is None else self.key.serial
        keytype = None if self.keytype is None else self.keytype.name
        return (
            f"KeyRestriction(check={getattr(self.check, '__name__', self.check)}, key={key}, keytype={keytype}, "
            f"type_name={self.type_name!r})"
        )


def restrict_link_reject(world: World, dest: KeyRecord, ktype: KeyType, payload: Any, key: KeyRecord | None) -> None:
    """The reject-all restriction: ``EPERM`` for every link."""
    raise error(errno.EPERM, f"keyring {dest.serial} is restricted: it accepts no new links")


def check_restriction(world: World, ring: KeyRecord, ktype: KeyType, payload: Any) -> None:
    """Ask ``ring``'s restriction (if any) whether a key of ``ktype`` with ``payload`` may be linked."""
    res: KeyRestriction | None = ring.restriction
    if res is not None:
        res.check(world, ring, ktype, payload, res.key)


def keyring_restrict(world: World, ring: KeyRecord, type_name: str | None, restriction: str | None) -> None:
    """``keyring_restrict``: install a restriction on ``ring``.

    ``ENOTDIR`` (not a keyring), ``ENOKEY`` (no such key type), ``ENOENT`` (the
    type offers no restrictions), the type's own errors for ``restriction``
    (``EINVAL``, ``ENOKEY``), ``EEXIST`` (already restricted), ``EDEADLK`` (the
    restriction's keyring chain leads back to ``ring``).
    """
    if not ring.is_keyring:
        raise error(errno.ENOTDIR, f"key {ring.serial} is a '{ring.ktype.name}' key, not a keyring")
    if type_name is None:
        res = KeyRestriction(restrict_link_reject)
    else:
        try:
            ktype = lookup_key_type(type_name)
        except OSError:
            raise error(errno.ENOKEY, f"key type '{type_name}' is not registered") from None
        lookup = getattr(ktype, "lookup_restriction", None)
        if lookup is None:
            raise error(errno.ENOENT, f"key type '{type_name}' offers no keyring restrictions")
        assert restriction is not None
        res = lookup(world, restriction).named(type_name, restriction)
    if ring.restriction is not None:
        raise error(errno.EEXIST, f"keyring {ring.serial} is already restricted")
    # keyring_detect_restriction_cycle: follow keyring -> its restriction's keyring ...
    cur: KeyRestriction | None = res
    while cur is not None and cur.key is not None and cur.key.is_keyring:
        if cur.key is ring:
            raise error(errno.EDEADLK, f"restricting keyring {ring.serial} by itself would make a cycle")
        cur = cur.key.restriction
    if res.key is not None:
        res.key.pins += 1  # the restriction holds its key, as key_lookup's reference does
    ring.restriction = res


def rebuild_restriction(world: World, type_name: str | None, spec: str | None) -> KeyRestriction:
    """The restriction ``keyring_restrict(world, ring, type_name, spec)`` installed, made again in ``world``.

    For a restriction kept outside the process (a store) and read back.  The key
    it names is looked up by serial again; it is not pinned here (the caller
    installs the result and takes the hold).  Raises nothing: a restriction
    that cannot be rebuilt here (its key type is not registered in this
    process, or the key it names is gone) still guards the keyring, refusing
    every link with ``EPERM``, as the kernel's restriction of an unregistered
    key type does (``keyring_restriction_gc``).
    """
    if type_name is None:
        return KeyRestriction(restrict_link_reject)
    try:
        lookup = getattr(lookup_key_type(type_name), "lookup_restriction", None)
        if lookup is not None and spec is not None:
            res: KeyRestriction = lookup(world, spec).named(type_name, spec)
            return res
    except OSError:
        pass
    return KeyRestriction(restrict_link_unavailable, None, None, type_name, spec)


def restrict_link_unavailable(
    world: World, dest: KeyRecord, ktype: KeyType, payload: Any, key: KeyRecord | None
) -> None:
    """A stored restriction this process cannot evaluate: refuse every link (``EPERM``)."""
    raise error(errno.EPERM, f"keyring {dest.serial} is restricted by a restriction that cannot be checked here")


def release_restriction(world: World, ring: KeyRecord) -> None:
    """Drop the hold a destroyed keyring's restriction had on its key (applied at the next operation)."""
    res: KeyRestriction | None = ring.restriction
    ring.restriction = None
    if res is not None and res.key is not None:
        world._unpins.append(res.key)
