"""The in-process keyspace: the kernel's key management, emulated.

A :class:`Keyspace` is a view (credentials plus thread/process/session
keyrings) onto a shared world of keys with its own serial numbers, per-user
keyrings, quotas, clock and garbage collector.  It is put together from the
kernel's own parts:

* :mod:`~keyring_types.core.process_keys` — the view's keyrings, special ids,
  possession, ``lookup_user_key`` and the search of the caller's keyrings;
* :mod:`~keyring_types.core.keyctl` — the ``sys_*`` system calls;
* :mod:`~keyring_types.core.request_key` — construction by upcall and the
  handler-side calls;
* :mod:`~keyring_types.core.key` and :mod:`~keyring_types.core.keyring` — what
  the calls do to a key and to a keyring;
* :mod:`~keyring_types.core.hints` — the messages of failed calls.

This module adds construction, the views of other users, the ``/proc`` views
and the operation scope every call runs in.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from keyring_types.constants import KEY_GC_DELAY
from keyring_types.core.api import KeyspaceAPI
from keyring_types.core.context import Caller
from keyring_types.core.cred import Cred
from keyring_types.core.keyctl_asym import AsymKeyctl
from keyring_types.core.keyctl_ops import KeyctlOps
from keyring_types.core.perm import NEED_VIEW, permitted
from keyring_types.core.process_keys import SES_PERM, ProcessKeyrings
from keyring_types.core.quota import KeyUser, QuotaLimits
from keyring_types.core.request_key import Upcalls
from keyring_types.core.syscall_args import check_creds
from keyring_types.core.world import Clock, World

if TYPE_CHECKING:
    from keyring_types.store.world import StoreWorld

__all__ = ["Keyspace", "OpScope"]


class Keyspace(KeyctlOps, AsymKeyctl, Upcalls, KeyspaceAPI):
    """An isolated in-process world of keys with the kernel's semantics.

    ``Keyspace()`` starts like a fresh login session: the caller (this process's
    credentials unless ``uid``/``gid`` are given) holds a new anonymous session
    keyring.  ``clock`` (seconds) drives expiry and GC; ``limits`` the quotas.
    ``store`` (a path, or ``True`` for ``$KEYRING_TYPES_STORE`` / ``<state
    dir>/keys.db``) keeps user, named-session and persistent keyrings and all
    they link in that file, shared with other processes (:mod:`keyring_types.store`);
    without it nothing is written anywhere.
    """

    def __init__(
        self,
        *,
        uid: int | None = None,
        gid: int | None = None,
        groups: Iterable[int] | None = None,
        limits: QuotaLimits | None = None,
        clock: Clock = time.time,
        gc_delay: int = KEY_GC_DELAY,
        store: str | os.PathLike[str] | bool | None = None,
        _world: World | None = None,
        _proc: ProcessKeyrings | None = None,
    ) -> None:
        cur = Cred.current()
        if uid is not None or gid is not None or groups is not None:
            # As setresuid/setgroups would take them: EINVAL before anything is made.
            uid, gid, checked = check_creds(
                cur.uid if uid is None else uid, cur.gid if gid is None else gid, () if groups is None else groups
            )
            if groups is not None:
                groups = checked
        self.cred = Cred(
            cur.uid if uid is None else uid,
            cur.gid if gid is None else gid,
            (cur.groups if uid is None else ()) if groups is None else groups,
        )
        if _world is None:
            if store is None or store is False:
                _world = World(limits or QuotaLimits(), clock, gc_delay)
            else:
                from keyring_types.store import open_store_world

                _world = open_store_world(store, limits or QuotaLimits(), clock, gc_delay)
            _proc = ProcessKeyrings(_world)
            with _world.lock:
                _proc.set_session(_world.new_keyring("_ses", self.cred.uid, self.cred.gid, SES_PERM))
        assert _proc is not None
        self._world = _world
        self._proc = _proc
        self._scope = OpScope(self)

    def __repr__(self) -> str:
        return f"<Keyspace uid={self.cred.uid} gid={self.cred.gid} keys={len(self._world.keys)}>"

    # -- views ---------------------------------------------------------------
    def as_user(self, uid: int, gid: int, groups: tuple[int, ...] | list[int] = ()) -> Keyspace:
        """A process of another user in this session: same keys and session keyring.

        It has its own thread and process keyrings and its own user keyrings, and
        its own hold on the session keyring: joining another session (either side)
        leaves the other's session as it is, as after fork and setuid.
        """
        uid, gid, groups = check_creds(uid, gid, groups)
        proc = ProcessKeyrings(self._world)
        with self._world.lock:
            if self._proc.session is not None:
                proc.set_session(self._proc.session)
        view = Keyspace(uid=uid, gid=gid, groups=groups, _world=self._world, _proc=proc)
        view._parent_ref = weakref.ref(self)  # its parent process, for session_to_parent
        return view

    @property
    def store(self) -> StoreWorld | None:
        """The store this keyspace persists to (``path``, ``close()``, ``integrity_check()``), or None."""
        w = self._world
        return None if type(w) is World else w  # type: ignore[return-value]

    def same_world(self, other: KeyspaceAPI) -> bool:
        return isinstance(other, Keyspace) and other._world is self._world

    # -- introspection (the /proc/keys and /proc/key-users views) ---------------
    def proc_keys(self) -> list[str]:
        """Lines as ``/proc/keys`` shows them, for keys the caller may VIEW."""
        from keyring_types.core.procfs import proc_keys_line

        with self._scope:
            now = self._world.now()
            out = []
            for rec in sorted(self._world.keys.values(), key=lambda r: r.serial):
                if permitted(rec, self.cred, self._possessed(rec), NEED_VIEW):
                    out.append(proc_keys_line(rec, now))
            return out

    def quota(self, uid: int | None = None) -> KeyUser:
        """The quota record of ``uid`` (default: the caller), as ``/proc/key-users`` shows it."""
        with self._world.lock:
            return self._world.key_user(self.cred.uid if uid is None else uid)

    def gc(self) -> None:
        """Run the garbage collector now (it also runs before every operation)."""
        with self._world.lock:
            self._world.gc()


class OpScope:
    """Hold the world lock, run due GC, and make the view the world's current caller.

    One per view, reused: the world lock serialises operations, so the world has
    one caller at a time; re-entry (a key type calling the API from inside an
    operation) stacks the callers it replaced.  The hottest system calls do the
    same inline (see ``Keyctl.sys_read``).
    """

    __slots__ = ("_ks", "_lock", "_saved", "_world")

    def __init__(self, ks: Keyspace) -> None:
        self._ks = ks
        self._world = ks._world
        self._lock = ks._world.lock
        self._saved: list[Caller | None] = []

    def __enter__(self) -> None:
        self._lock.acquire()
        w = self._world
        self._saved.append(w.caller)
        w.caller = self._ks
        if w.gc_heap or w._unpins:
            try:
                if w._unpins:
                    w.release_pending()
                w.gc_due()
            except BaseException:
                self.__exit__(None, None, None)
                raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._world.caller = self._saved.pop()
        self._lock.release()
