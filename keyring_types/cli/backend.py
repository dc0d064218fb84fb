"""Which keyspace a ``ktctl`` command acts on, and the session it runs in.

Two backends, chosen by ``--kernel`` / ``--store PATH`` before the verb or by
``KTCTL_BACKEND`` (``kernel`` or ``store``, the default):

* ``kernel``: :class:`~keyring_types.KernelKeyspace`, the real kernel keyring of
  this process. Sessions are the kernel's own: ``ktctl session`` joins one and
  execs, and the child inherits it as it inherits keyctl's.
* ``store``: a :class:`~keyring_types.Keyspace` persisted in the store
  (``KEYRING_TYPES_STORE``, or the store's default under the state directory).
  A process cannot hand an in-process session to its children through the
  kernel, so ``ktctl session NAME PROG`` puts the session's name in the
  environment (:data:`ENV_SESSION`) and every ``ktctl`` started below it joins
  that named session first, which is what scripts that re-exec themselves in a
  new session (keyutils' own test suite does) rely on.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.api import KeyspaceAPI

__all__ = [
    "ENV_BACKEND",
    "ENV_SESSION",
    "ENV_STORE",
    "Backend",
]

ENV_BACKEND = "KTCTL_BACKEND"
#: The named session a store-backed ``ktctl`` joins before it acts (set by ``ktctl session``).
ENV_SESSION = "KTCTL_SESSION"
ENV_STORE = "KEYRING_TYPES_STORE"

BACKENDS = ("store", "kernel")


class Backend:
    """The keyspace of one ``ktctl`` run, opened on first use (usage errors never open it)."""

    def __init__(self, name: str | None = None, store: str | None = None) -> None:
        """``name`` ``"kernel"`` or ``"store"`` (default: ``KTCTL_BACKEND``, else store); ``EINVAL`` otherwise."""
        chosen = name or os.environ.get(ENV_BACKEND) or "store"
        if chosen not in BACKENDS:
            raise error(errno.EINVAL, f"unknown backend (expected one of {', '.join(BACKENDS)})")
        self.name = chosen
        self.store_path = store
        self._ks: KeyspaceAPI | None = None

    @classmethod
    def on(cls, keyspace: KeyspaceAPI) -> Backend:
        """A backend acting on an existing keyspace (a program embedding the verbs, tests)."""
        from keyring_types.integrations.kernel_keyspace import KernelKeyspace

        backend = cls("kernel" if isinstance(keyspace, KernelKeyspace) else "store")
        backend._ks = keyspace
        return backend

    @property
    def is_kernel(self) -> bool:
        return self.name == "kernel"

    @property
    def ks(self) -> KeyspaceAPI:
        """The keyspace (opening the store, and joining the carried session, the first time)."""
        if self._ks is None:
            self._ks = self._open()
        return self._ks

    def _open(self) -> KeyspaceAPI:
        if self.is_kernel:
            from keyring_types.integrations.kernel_keyspace import KernelKeyspace

            return KernelKeyspace()
        from keyring_types.core.keyspace import Keyspace

        path = self.store_path or os.environ.get(ENV_STORE)
        ks = _store_keyspace(Keyspace, path)
        session = os.environ.get(ENV_SESSION)
        if session:
            ks.sys_join_session_keyring(session)
        return ks

    def join_session(self, name: str | None) -> int:
        """``KEYCTL_JOIN_SESSION_KEYRING`` and, for the store, carry it to children.

        The store cannot carry an anonymous session across ``exec``: it is made,
        as in the kernel, but a child started below it joins none.
        """
        serial = self.ks.sys_join_session_keyring(name)
        if not self.is_kernel:
            if name is None:
                os.environ.pop(ENV_SESSION, None)
            else:
                os.environ[ENV_SESSION] = name
        return serial

    def proc_keys(self) -> list[str]:
        """The lines of ``/proc/keys`` as this caller sees them (the keyspace's view of them)."""
        if self.is_kernel:
            with open("/proc/keys", encoding="utf-8", errors="surrogateescape") as f:
                return f.read().splitlines()
        lines = getattr(self.ks, "proc_keys", None)
        if lines is None:
            raise error(errno.EOPNOTSUPP, "this keyspace has no /proc/keys view")
        result: list[str] = lines()
        return result


def _store_keyspace(cls: type, path: str | None) -> KeyspaceAPI:
    """A store-backed Keyspace, or ``EOPNOTSUPP`` when this build has no store."""
    import inspect

    if "store" not in inspect.signature(cls).parameters:
        raise error(errno.EOPNOTSUPP, "this build of keyring_types has no persistent store; use --kernel")
    ks: KeyspaceAPI = cls(store=path) if path else cls(store=_default_store())
    return ks


def _default_store() -> str:
    from keyring_types.state import state_dir

    return str(state_dir() / "keys.db")
