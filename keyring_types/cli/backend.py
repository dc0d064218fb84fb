"""Which keyspace a ``ktctl`` command acts on, and the session it runs in.

Two backends, chosen by ``--kernel`` / ``--store PATH`` before the verb or by
``KTCTL_BACKEND`` (``kernel`` or ``store``, the default):

* ``kernel``: :class:`~keyring_types.KernelKeyspace`, the real kernel keyring of
  this process. Sessions are the kernel's own: ``ktctl session`` joins one and
  execs, and the child inherits it as it inherits keyctl's.
* ``store``: a :class:`~keyring_types.Keyspace` persisted in the store
  (``--store PATH``, else ``KEYRING_TYPES_STORE``, else ``keys.db`` in the
  state directory). A process cannot hand an in-process session to its
  children through the kernel, so ``ktctl session NAME PROG`` puts the named
  session keyring's serial in the environment (:data:`ENV_SESSION`) and every
  store-backed ``ktctl`` started below it takes that session over
  (:func:`keyring_types.store.inherit_session`), as a forked child holds its
  parent's: scripts that re-exec themselves in a new session (keyutils' own
  test suite does) work unchanged. Outside a session, a command runs in the
  user default session keyring (``@us``, which links ``@u``), as a kernel
  process without a session keyring does.

  A program that request-key.conf runs for a store-backed request
  (:mod:`keyring_types.core.request_key_conf`) gets the handler's session
  this way, and the serial of the key under construction in
  :data:`ENV_REQKEY_AUTH`: ``ktctl`` then holds the authority over it, as a
  program started by ``/sbin/request-key`` inherits the authority request-key
  assumed, so its ``instantiate``/``negate``/``reject`` build the key for the
  requester waiting in another process.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from keyring_types.constants import KEY_SPEC_USER_SESSION_KEYRING
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.api import KeyspaceAPI

__all__ = [
    "ENV_BACKEND",
    "ENV_REQKEY_AUTH",
    "ENV_SESSION",
    "Backend",
]

ENV_BACKEND = "KTCTL_BACKEND"
#: The named session a store-backed ``ktctl`` joins before it acts (set by ``ktctl session``).
ENV_SESSION = "KTCTL_SESSION"
#: The key under construction whose authority a request-key program's ``ktctl`` holds.
ENV_REQKEY_AUTH = "KTCTL_REQKEY_AUTH"

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
        backend = cls("kernel" if type(keyspace).__name__ == "KernelKeyspace" else "store")
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
            return _KernelCalls()  # type: ignore[return-value]
        from keyring_types.core.keyspace import Keyspace
        from keyring_types.store import inherit_session

        ks = Keyspace(store=self.store_path or True)
        authority = os.environ.get(ENV_REQKEY_AUTH)
        handler = None
        if authority:
            from keyring_types.core.upcall_view import HandlerKeyspace

            # The handler's view: it also searches (and possesses) its requester's keyrings.
            ks = handler = HandlerKeyspace(_world=ks._world, _proc=ks._proc)
        carried = os.environ.get(ENV_SESSION)
        if carried:
            try:
                serial = int(carried)
            except ValueError:
                raise error(errno.EINVAL, f"{ENV_SESSION} must be a session keyring's serial") from None
        else:
            # A process outside any session uses the user default session keyring,
            # as the kernel gives one (it links @u, so the user's keys are possessed).
            serial = ks.sys_get_keyring_id(KEY_SPEC_USER_SESSION_KEYRING, True)
        inherit_session(ks, serial)
        if handler is not None and authority:
            try:
                target = int(authority)
            except ValueError:
                raise error(errno.EINVAL, f"{ENV_REQKEY_AUTH} must be a key serial") from None
            try:
                handler.inherit_authority(target)
            except OSError as exc:
                # No such key any more: without an authority the handler-side calls say EPERM.
                if exc.errno != errno.ENOKEY:
                    raise
        return ks

    def join_session(self, name: str | None) -> int:
        """``KEYCTL_JOIN_SESSION_KEYRING`` and, for the store, carry it to children by serial.

        An anonymous session is not stored (it dies with its process, as the
        kernel's does once nothing holds it), so a child started below one
        carries none and starts in an anonymous session of its own.
        """
        serial = self.ks.sys_join_session_keyring(name)
        if not self.is_kernel:
            if name is None:
                os.environ.pop(ENV_SESSION, None)
            else:
                os.environ[ENV_SESSION] = str(serial)
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




class _KernelCalls:
    """The kernel's system calls as the verbs use them, without building a KernelKeyspace.

    The basic ``sys_*`` calls go straight to :mod:`keyring_types.integrations.kernel_syscalls`
    (a one-shot command then loads neither the public API nor attrs, and
    ``session`` prints what the kernel returned, as keyctl does); anything else
    (``move``, ``capabilities``, handles' ``get_security`` ...) is the same
    attribute of a :class:`~keyring_types.KernelKeyspace`, made on first use.
    """

    def __init__(self) -> None:
        from keyring_types.integrations import kernel_syscalls as sc

        self.sys_add_key = sc.add_key
        self.sys_request_key = sc.request_key
        self.sys_get_keyring_id = sc.keyctl_get_keyring_id
        self.sys_join_session_keyring = sc.keyctl_join_session_keyring
        self.sys_update = sc.keyctl_update
        self.sys_revoke = sc.keyctl_revoke
        self.sys_chown = sc.keyctl_chown
        self.sys_setperm = sc.keyctl_setperm
        self.sys_describe = sc.keyctl_describe
        self.sys_clear = sc.keyctl_clear
        self.sys_link = sc.keyctl_link
        self.sys_unlink = sc.keyctl_unlink
        self.sys_search = sc.keyctl_search
        self.sys_read = sc.keyctl_read
        self.sys_set_timeout = sc.keyctl_set_timeout
        self.sys_invalidate = sc.keyctl_invalidate
        self._full: KeyspaceAPI | None = None

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        if self._full is None:
            from keyring_types.integrations.kernel_keyspace import KernelKeyspace

            self._full = KernelKeyspace()
        return getattr(self._full, name)
