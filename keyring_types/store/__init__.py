"""The store: keys that outlive the process, in one SQLite file shared by processes.

``kt.Keyspace(store=path)`` (or ``store=True`` for the default file) is a
Keyspace whose user keyrings, named session keyrings, persistent keyrings and
everything linked from them live in the file; thread, process and anonymous
session keyrings stay in the process.  See docs/store.md.

The default file is ``$KEYRING_TYPES_STORE`` if set, else ``keys.db`` in the
state directory (:func:`keyring_types.state.state_dir`).  A plain
``kt.Keyspace()`` never touches it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.handle import Keyring
    from keyring_types.core.keyspace import Keyspace
    from keyring_types.core.quota import QuotaLimits
    from keyring_types.core.world import Clock
    from keyring_types.store.world import StoreWorld

__all__ = ["ENV_STORE", "STORE_FILE", "default_store_path", "inherit_session", "open_store_world", "store_path"]

ENV_STORE = "KEYRING_TYPES_STORE"
STORE_FILE = "keys.db"


def default_store_path() -> Path:
    """``$KEYRING_TYPES_STORE``, else ``<state dir>/keys.db`` (the name only; nothing is opened)."""
    from keyring_types.state import state_dir

    env = os.environ.get(ENV_STORE)
    return Path(env) if env else state_dir(create=False) / STORE_FILE


def store_path(store: object) -> Path:
    """The file ``store`` names: ``True`` for the default, else a path; ``EINVAL`` otherwise."""
    if store is True:
        path = default_store_path()
    elif isinstance(store, (str, os.PathLike)) and not isinstance(store, bool):
        raw = os.fspath(store)
        if not raw or (isinstance(raw, str) and "\0" in raw) or (isinstance(raw, bytes) and b"\0" in raw):
            raise error(errno.EINVAL, "a store path must be a non-empty path without NUL")
        path = Path(os.fsdecode(raw))
    else:
        raise error(errno.EINVAL, f"store= takes a path or True, not {type(store).__name__}")
    return path.absolute()


def open_store_world(store: object, limits: QuotaLimits, clock: Clock, gc_delay: int) -> StoreWorld:
    """A world backed by the store file ``store`` names (see :func:`store_path`).

    ``EINVAL`` (bad path, not a store), ``EACCES`` (owner or mode checks),
    ``EBADMSG`` (damaged, or its key was sealed elsewhere), ``EBUSY`` (another
    process held it too long), the trust source's errors for a new store.
    """
    from keyring_types.store.world import StoreWorld

    return StoreWorld(store_path(store), limits, clock, gc_delay)


def inherit_session(ks: Keyspace, serial: int) -> Keyring:
    """Make the stored keyring ``serial`` the session keyring of ``ks``, as a forked child inherits it.

    This is how a session crosses ``exec``: the parent puts the serial of a named
    session keyring (a stored one; anonymous sessions do not outlive their
    process) in the child's environment, and the child takes it over with no
    permission check, exactly as fork copies the credentials that hold it.
    ``EINVAL`` if ``ks`` has no store, ``ENOKEY`` if no live key ``serial`` is
    stored, ``ENOTDIR`` if it is not a keyring.
    """
    from keyring_types.core.handle import Keyring as KeyringHandle
    from keyring_types.core.syscall_args import key_id

    world = ks._world
    if ks.store is None:
        raise error(errno.EINVAL, "inherit_session needs a store-backed Keyspace")
    serial = key_id(serial)
    with world.lock:
        rec = world.keys.get(serial)
        if rec is None or rec not in ks.store.pers or rec.dead or rec.invalidated:
            raise error(errno.ENOKEY, f"no stored key {serial} to inherit as the session keyring")
        if not rec.is_keyring:
            raise error(errno.ENOTDIR, f"key {serial} is a '{rec.ktype.name}' key, not a keyring")
        ks._install_session(rec)
    return KeyringHandle(ks, serial, "keyring", rec.description)
