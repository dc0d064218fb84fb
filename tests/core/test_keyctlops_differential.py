"""Differential test, second machine: the in-process Keyspace against the real kernel where the
first one (test_differential.py) rarely or never goes.

The same random operations run on a ``Keyspace`` and a ``KernelKeyspace`` (as root and
as two fresh users sharing the session keyring) and must give the same outcome.
Rules aim at: successful updates and searches (keys that exist are looked for),
expiry with one- and two-second timeouts (and a rule that waits for them), ELOOP
(chains of nested keyrings), quotas (large keys until EDQUOT), ``@t``/``@p``/``@us``,
``join_session_keyring`` (anonymous and named), ``move``, ``get_persistent``,
``get_security`` and ``session_to_parent``.  After every step ``/proc/keys`` and
``/proc/key-users`` are compared through the model's procfs formatting.

Every example starts with a tour (the ``@initialize`` rules, in random order) that
walks each of those paths once: hypothesis favours the rules it lists first, so a
path left to chance may not be reached in a short run.

The kernel's side of an ``as_user`` actor is a new child for every call, so the
model's side is a new view for every call too (a child has no thread or process
keyring of its parent's, and what it makes there dies with it).  The session
keyring is kept alive: rules never revoke, invalidate, chown, time out or re-permit
it.  Nor do they revoke, re-permit, re-own or time out the fresh users' user and
persistent keyrings, which the kernel would otherwise keep (for gc_delay) after the
example; root's own persistent keyring is never used (it outlives the run).

How much each run reaches is counted (``REACHED``) and, for the bounded run of the
normal suite (derandomized, so repeatable; about 25 s), required; ``-m slow`` runs
many more random examples.  ``KT_KEYCTLOPS_DIFF_EXAMPLES`` overrides the count.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import random
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from conftest import IN_CI, kernel_keyring_reachable, require
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, multiple, rule
from test_differential import (
    _assert_users_released,
    _invalidate_packed,
    _outcome,
    _own_user_keyrings,
    _walk_order,
)

import keyring_types as kt
from keyring_types.core.keyspace import Keyspace
from keyring_types.core.process_keys import _release_pins
from keyring_types.core.procfs import proc_keys_line

pytestmark = [pytest.mark.kernel]

Outcome = tuple[str, Any]
BOUNDED_EXAMPLES = int(os.environ.get("KT_KEYCTLOPS_DIFF_EXAMPLES", "25"))
SLOW_EXAMPLES = int(os.environ.get("KT_KEYCTLOPS_DIFF_EXAMPLES", "600" if IN_CI else "300"))

DESCS = ["a", "b", "c:d"]
SIZES = [1, 16, 300, 1000]
PERMS = [0x3F010000, 0x3F3F0000, 0x3F3F3F3F, 0x1F010000, 0x3B3B0000, 0x0B0B0B0B, 0x3F000000, 0x2F2F2F2F]
#: Waiting for timeouts costs real seconds: at most this many per run, for the
#: expiry tour (which always follows a one-second timeout) and for the random rule;
#: the slow run waits ten times as long.
TOUR_TICK_BUDGET_S = float(os.environ.get("KT_KEYCTLOPS_DIFF_TICKS", "4"))
TICK_BUDGET_S = TOUR_TICK_BUDGET_S / 2

#: What the runs reached: (rule, outcome) -> count, over the whole run.
REACHED: collections.Counter[str] = collections.Counter()


def _errname(o: Outcome) -> str:
    if o[0] == "ok":
        return "ok"
    return errno.errorcode.get(o[1], str(o[1]))


def _quiet_second() -> None:
    """Wait until the wall clock is between 0.06 and 0.85 s into a second.

    Expiry is decided in whole seconds on both sides; a step that straddles a second
    boundary could see a key expire on one side only.  Just after a boundary the
    kernel's seconds (``ktime_get_real_seconds``, updated on timer ticks) may still
    show the old second for a moment.
    """
    frac = time.time() % 1.0
    if frac > 0.85:
        time.sleep(1.0 - frac + 0.06)
    elif frac < 0.06:
        time.sleep(0.06 - frac)


def _in_child_outcomes(steps: list[Callable[[kt.KeyspaceAPI], Any]]) -> Callable[[kt.KeyspaceAPI], bytes]:
    """One call that runs ``steps`` in order on one keyspace; their outcomes as JSON bytes."""

    def run(ks: kt.KeyspaceAPI) -> bytes:
        return json.dumps([list(_outcome(lambda step=step: step(ks))) for step in steps]).encode()

    return run


class KeyctlOpsDifferential(RuleBasedStateMachine):
    """One example: a fresh session, two fresh users, and keyctl traffic aimed at the rare paths."""

    keys = Bundle("keys")
    rings = Bundle("rings")
    uids_used: ClassVar[list[int]] = []
    ticks_left: ClassVar[float] = TICK_BUDGET_S
    tour_ticks_left: ClassVar[float] = TOUR_TICK_BUDGET_S

    def __init__(self) -> None:
        super().__init__()
        self.model = kt.Keyspace()
        self.kern = kt.KernelKeyspace()
        self.kern.sys_join_session_keyring(None)
        rnd = random.SystemRandom()
        base = 300000 + rnd.randrange(1 << 29)
        self.token = f"kt{rnd.randrange(1 << 40):x}"
        self.u1, self.u2 = base, base + 1
        self.g1, self.g2 = base + 10, base + 11
        self.creds: list[tuple[int, int, tuple[int, ...]]] = [
            (0, 0, ()),
            (self.u1, self.g1, (self.g2,)),
            (self.u2, self.g2, ()),
        ]
        self.kviews = [self.kern] + [self.kern.as_user(*c) for c in self.creds[1:]]
        self.m2k: dict[int, int] = {}
        self.k2m: dict[int, int] = {}
        self._pair(self.model.sys_get_keyring_id(-3, False), self.kern.sys_get_keyring_id(-3, False))
        self.user_rings: list[tuple[kt.KernelKeyspace, bytes]] = []
        self.protected: set[int] = set()  # model serials rules must not revoke/re-permit/time out
        #: The fresh users' persistent keyrings.  No keyring is put into one: a deep chain
        #: there would make linking it anywhere ELOOP, so teardown could not reach it to
        #: invalidate it, and the kernel would keep it for three days.
        self.persistent: set[int] = set()
        KeyctlOpsDifferential.uids_used.extend((self.u1, self.u2))
        for actor in (1, 2):
            kview = self.kviews[actor]
            assert isinstance(kview, kt.KernelKeyspace)
            both = kview._call(_own_user_keyrings)
            self.user_rings.append((kview, both))
            for spec, kserial in zip((-4, -5), struct.unpack("=ii", both), strict=True):
                view = self._mview(actor)
                mserial = view.sys_get_keyring_id(spec, True)
                _retire(view)
                self._pair(mserial, kserial)
                self.protected.add(mserial)
        self.uids = [-1, 0, self.u1, self.u2]
        self.log: list[str] = []

    def teardown(self) -> None:
        """Invalidate what the kernel would otherwise keep for the fresh users: their user
        keyrings (as in test_differential) and their persistent keyrings (three days)."""
        for view, both in self.user_rings:
            try:
                view._call(_invalidate_packed, both)
            except OSError:
                pass
        # Into a new keyring: a rule may have linked the session inside a persistent
        # keyring, and linking that back into the session would be a cycle (EDEADLK).
        try:
            dest = self.kern.sys_add_key("keyring", f"{self.token}-teardown", None, -3)
        except OSError:
            dest = -3
        for uid in (self.u1, self.u2):
            try:
                serial = self.kern.sys_get_persistent(uid, dest)
                self.kern.sys_invalidate(serial)
            except OSError:
                pass
        if dest != -3:
            self.kern.sys_invalidate(dest)

    # -- bookkeeping -----------------------------------------------------------
    def _mview(self, actor: int) -> kt.KeyspaceAPI:
        """The model's actor: root itself, or (like the kernel's fork per call) a new view."""
        if actor == 0:
            return self.model
        return self.model.as_user(*self.creds[actor])

    def _pair(self, m: int, k: int) -> None:
        assert self.m2k.get(m, k) == k and self.k2m.get(k, m) == m, f"serial map conflict {m} <-> {k}"
        self.m2k[m] = k
        self.k2m[k] = m

    def _tr(self, s: int) -> int:
        return self.m2k.get(s, s) if s > 0 else s

    def _same(
        self, what: str, mo: Outcome, ko: Outcome, accept: list[Outcome] | None = None, count: bool = True
    ) -> None:
        self.log.append(f"{what}: model={mo} kernel={ko}")
        if count:
            REACHED[f"{what.split('[')[0]}:{_errname(mo)}"] += 1
        if mo == ko or (accept is not None and ko in accept):
            return
        raise AssertionError("model and kernel disagree\n" + "\n".join(self.log[-30:]))

    def _map(self, mo: Outcome, ko: Outcome) -> tuple[Outcome, Outcome]:
        if mo[0] == "ok" and ko[0] == "ok" and isinstance(mo[1], int) and isinstance(ko[1], int):
            if mo[1] not in self.m2k and ko[1] not in self.k2m:
                self._pair(mo[1], ko[1])
            return mo, ("ok", self.k2m.get(ko[1], ("kernel-only", ko[1])))
        return mo, ko

    def _both(self, actor: int, fn: Callable[[kt.KeyspaceAPI, Callable[[int], int]], Any]) -> tuple[Outcome, Outcome]:
        _quiet_second()
        before = dict(self.model._world.keys)
        view = self._mview(actor)
        mo = _outcome(lambda: fn(view, lambda s: s))
        if view is not self.model:
            _retire(view)
        ko = _outcome(lambda: fn(self.kviews[actor], self._tr))
        self._settle(before)
        return mo, ko

    def _settle(self, before: dict[int, Any]) -> None:
        """Wait until the kernel has freed what the model freed (its GC runs later)."""
        world = self.model._world.keys
        dead = [self.m2k[s] for s in before if s not in world and s in self.m2k]
        deadline = time.monotonic() + 5.0
        while dead and time.monotonic() < deadline:
            dead = [k for k in dead if not self._gone(k)]
            if dead:
                time.sleep(0.002)

    def _gone(self, kserial: int) -> bool:
        try:
            self.kern.sys_unlink(kserial, -4)
        except OSError as exc:
            return exc.errno == errno.ENOKEY
        return False

    def _session(self) -> int:
        return self.model.sys_get_keyring_id(-3, False)

    def _mutable(self, serial: int) -> bool:
        """Whether a rule may revoke, re-permit, re-own or time out this key."""
        return serial not in self.protected and serial != self._session()

    def _rec(self, serial: int) -> Any:
        return self.model._world.keys.get(serial)

    def _keyring_into_persistent(self, key: int, ring: int) -> bool:
        rec = self._rec(key)
        return ring in self.persistent and (rec is None or rec.is_keyring)

    # -- the tour: every example first walks each rare path once --------------------
    #
    # Hypothesis favours the rules it lists first, so a rule reached only by chance may
    # never run in a short run.  These run once per example, in random order, before the
    # random rules, and are compared like every other step.
    @initialize(target=rings)
    def session(self) -> int:
        return self._session()

    def _step(self, what: str, actor: int, fn: Callable[[kt.KeyspaceAPI, Callable[[int], int]], Any]) -> Outcome:
        mo, ko = self._map(*self._both(actor, fn))
        self._same(what, mo, ko)
        return mo

    def _serial_of(self, o: Outcome) -> int:
        return o[1] if o[0] == "ok" else 2  # type: ignore[no-any-return]

    @initialize(target=keys, actor=st.integers(0, 2), desc=st.sampled_from(DESCS), nested=st.booleans())
    def tour_update_and_search(self, actor: int, desc: str, nested: bool) -> Any:
        """A user key (in the session or a keyring there), updated, then searched for and requested."""
        dest = -3
        if nested:
            dest = self._serial_of(self._step(f"add_keyring[{actor}]", actor, lambda ks, tr: ks.sys_add_key("keyring", "t", None, -3)))
        key = self._serial_of(
            self._step(f"add_key[{actor}]", actor, lambda ks, tr: ks.sys_add_key("user", desc, b"v", tr(dest)))
        )
        self._step(f"update[{actor}]", actor, lambda ks, tr: ks.sys_update(tr(key), b"updated"))
        self._step(f"read[{actor}]", actor, lambda ks, tr: ks.sys_read(tr(key)))
        self._step(f"search[{actor}]", actor, lambda ks, tr: ks.sys_search(-3, "user", desc, 0))
        self._step(f"request_key[{actor}]", actor, lambda ks, tr: ks.sys_request_key("user", desc, None, 0))
        logon = self._step(f"add_key[{actor}]", actor, lambda ks, tr: ks.sys_add_key("logon", desc, b"l", -3))
        return multiple(key, self._serial_of(logon))

    @initialize(target=rings, actor=st.integers(0, 2), exclusive=st.booleans())
    def tour_move(self, actor: int, exclusive: bool) -> Any:
        """Two keyrings, a key moved between them, then a same-named key moved after it."""
        a = self._serial_of(self._step(f"add_keyring[{actor}]", actor, lambda ks, tr: ks.sys_add_key("keyring", "ma", None, -3)))
        b = self._serial_of(self._step(f"add_keyring[{actor}]", actor, lambda ks, tr: ks.sys_add_key("keyring", "mb", None, -3)))
        k1 = self._serial_of(self._step(f"add_key[{actor}]", actor, lambda ks, tr: ks.sys_add_key("user", "m", b"1", tr(a))))
        self._step(f"move[{actor}]", actor, lambda ks, tr: ks.sys_move(tr(k1), tr(a), tr(b), 0))
        self._step(f"add_key[{actor}]", actor, lambda ks, tr: ks.sys_add_key("user", "m", b"2", tr(a)))
        k2 = self._serial_of(self._step(f"search[{actor}]", actor, lambda ks, tr: ks.sys_search(tr(a), "user", "m", 0)))
        flags = 1 if exclusive else 0
        self._step(f"move[{actor}]", actor, lambda ks, tr: ks.sys_move(tr(k2), tr(a), tr(b), flags))
        self._step(f"move[{actor}]", actor, lambda ks, tr: ks.sys_move(tr(k1), tr(b), tr(a), 1))
        return multiple(a, b)

    @initialize(target=rings, actor=st.integers(0, 2))
    def tour_persistent(self, actor: int) -> Any:
        """The persistent keyrings of the fresh users: got by root, by their owner, refused to the other."""
        got = []
        # Root asks for the users' keyrings (its own outlives the example); a user for its own,
        # then for the other's (EPERM).
        for uid in (self.u1, self.u2) if actor == 0 else (-1, self.u1, self.u2):
            o = self._step(f"get_persistent[{actor}]", actor, lambda ks, tr, uid=uid: ks.sys_get_persistent(uid, -3))
            if o[0] == "ok":
                self.protected.add(o[1])
                self.persistent.add(o[1])
                got.append(o[1])
        for serial in got:
            self._step(f"get_security[{actor}]", actor, lambda ks, tr, serial=serial: ks.sys_get_security(tr(serial)))
            self._step(f"describe[{actor}]", actor, lambda ks, tr, serial=serial: ks.sys_describe(tr(serial)))
        return multiple(*got)

    @initialize(target=rings, depth=st.integers(6, 9))
    def tour_too_deep(self, depth: int) -> int:
        """A chain of nested keyrings, then its top linked and moved elsewhere: ELOOP when too deep."""
        top = self._serial_of(self._step("add_keyring[0]", 0, lambda ks, tr: ks.sys_add_key("keyring", "deep", None, -3)))
        parent = top
        for n in range(depth - 1):
            parent = self._serial_of(
                self._step("add_keyring[0]", 0, lambda ks, tr, p=parent, n=n: ks.sys_add_key("keyring", f"d{n}", None, tr(p)))
            )
        other = self._serial_of(self._step("add_keyring[0]", 0, lambda ks, tr: ks.sys_add_key("keyring", "other", None, -3)))
        self._step("link[0]", 0, lambda ks, tr: ks.sys_link(tr(top), tr(other)))
        self._step("move[0]", 0, lambda ks, tr: ks.sys_move(tr(top), -3, tr(other), 0))
        self._step("link[0]", 0, lambda ks, tr: ks.sys_link(tr(other), tr(parent)))
        return top

    @initialize(actor=st.integers(1, 2), size=st.sampled_from([6000, 9000]))
    def tour_quota(self, actor: int, size: int) -> None:
        self.fill_quota(actor, size)

    @initialize(actor=st.integers(0, 2))
    def tour_expiry(self, actor: int) -> None:
        """A key with a one-second timeout, read before and (within the run's budget) after it runs out."""
        key = self._serial_of(self._step(f"add_key[{actor}]", actor, lambda ks, tr: ks.sys_add_key("user", "soon", b"s", -3)))
        self._step(f"set_timeout[{actor}]", actor, lambda ks, tr: ks.sys_set_timeout(tr(key), 1))
        self._step(f"read[{actor}]", actor, lambda ks, tr: ks.sys_read(tr(key)))
        if KeyctlOpsDifferential.tour_ticks_left > 0:
            KeyctlOpsDifferential.tour_ticks_left -= _next_second()
            REACHED["tour tick"] += 1
        self._step(f"read[{actor}]", actor, lambda ks, tr: ks.sys_read(tr(key)))
        self._step(f"search[{actor}]", actor, lambda ks, tr: ks.sys_search(-3, "user", "soon", 0))
        self._step(f"request_key[{actor}]", actor, lambda ks, tr: ks.sys_request_key("user", "soon", None, 0))
        self._step(f"update[{actor}]", actor, lambda ks, tr: ks.sys_update(tr(key), b"late"))

    @initialize(target=rings, actor=st.integers(0, 2), which=st.sampled_from([-1, -2]), name=st.sampled_from([None, "s1"]))
    def tour_process_and_session(self, actor: int, which: int, name: str | None) -> Any:
        kept = self.process_keyrings(actor, which, "a", True)
        self.thread_keyring("b")
        self.session_to_parent(1 + actor % 2)
        joined = self.join_session(name)
        return multiple(kept, joined)

    # -- making keys -------------------------------------------------------------

    @rule(
        target=keys,
        actor=st.integers(0, 2),
        type_name=st.sampled_from(["user", "user", "logon"]),
        desc=st.sampled_from(DESCS),
        size=st.sampled_from(SIZES),
        dest=st.one_of(rings, st.sampled_from([-3, -4, -5])),
    )
    def add_key(self, actor: int, type_name: str, desc: str, size: int, dest: int) -> int:
        if dest in (-4, -5) and actor == 0:
            dest = -3  # root's own user keyrings outlive the example in the kernel
        payload = bytes([actor + 1]) * size
        mo, ko = self._map(*self._both(actor, lambda ks, tr: ks.sys_add_key(type_name, desc, payload, tr(dest))))
        self._same(f"add_key[{actor}]({type_name},{desc!r},{size},{dest})", mo, ko)
        return mo[1] if mo[0] == "ok" else 2

    @rule(target=rings, actor=st.integers(0, 2), desc=st.sampled_from([*DESCS, "s1", "s2"]), dest=rings)
    def add_keyring(self, actor: int, desc: str, dest: int) -> int:
        if dest in self.persistent:
            return 2
        if desc in ("s1", "s2"):
            desc = f"{self.token}-{desc}"  # names a session join can find
        mo, ko = self._map(*self._both(actor, lambda ks, tr: ks.sys_add_key("keyring", desc, None, tr(dest))))
        self._same(f"add_keyring[{actor}]({desc!r},{dest})", mo, ko)
        return mo[1] if mo[0] == "ok" else 2

    @rule(target=rings, ring=rings, depth=st.integers(5, 8))
    def add_chain(self, ring: int, depth: int) -> int:
        """Nest ``depth`` keyrings below ``ring`` (as root); the top one."""
        top = 2
        if ring in self.persistent:
            return top
        parent = ring
        for n in range(depth):
            mo, ko = self._map(
                *self._both(0, lambda ks, tr, parent=parent, n=n: ks.sys_add_key("keyring", f"n{n}", None, tr(parent)))
            )
            self._same(f"add_chain[0]({ring},{n})", mo, ko)
            if mo[0] != "ok":
                break
            parent = mo[1]
            top = mo[1] if n == 0 else top
        return top

    @rule(actor=st.integers(1, 2), size=st.sampled_from([6000, 9000]))
    def fill_quota(self, actor: int, size: int) -> None:
        """Large keys until the user's byte quota (20000) refuses one."""
        payload = bytes([actor]) * size
        for n in range(5):
            mo, ko = self._map(*self._both(actor, lambda ks, tr, n=n: ks.sys_add_key("user", f"big{n}", payload, -3)))
            self._same(f"fill_quota[{actor}]({size},{n})", mo, ko)
            if mo[0] != "ok":
                break

    # -- the paths test_differential rarely reaches ---------------------------------
    @rule(actor=st.integers(0, 2), key=keys, size=st.sampled_from([1, 32, 500]))
    def update(self, actor: int, key: int, size: int) -> None:
        payload = b"u" * size
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_update(tr(key), payload))
        self._same(f"update[{actor}]({key},{size})", mo, ko)

    def _index(self, key: int) -> tuple[str, str] | None:
        rec = self._rec(key)
        return None if rec is None else rec.index_key  # type: ignore[no-any-return]

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings), ring=rings)
    def search_existing(self, actor: int, key: int, ring: int) -> None:
        index = self._index(key)
        if index is None:
            return
        type_name, desc = index
        for start in (ring, -3):
            self._searchlike(
                f"search[{actor}]({start},{type_name},{desc!r})",
                actor,
                lambda ks, tr, start=start: ks.sys_search(tr(start), type_name, desc, 0),
            )

    @rule(actor=st.integers(0, 2), key=keys)
    def request_existing(self, actor: int, key: int) -> None:
        index = self._index(key)
        if index is None:
            return
        type_name, desc = index
        self._searchlike(
            f"request_key[{actor}]({type_name},{desc!r})", actor, lambda ks, tr: ks.sys_request_key(type_name, desc, None, 0)
        )

    def _searchlike(self, what: str, actor: int, op: Callable[[kt.KeyspaceAPI, Callable[[int], int]], Any]) -> None:
        mo, ko = self._map(*self._both(actor, op))
        accept = None
        if mo != ko:
            # Only the kernel's nested-keyring walk order may excuse a difference.
            accept = []
            rnd = random.Random(4321)
            for _ in range(16):
                seed = rnd.random()
                with _walk_order(lambda xs, seed=seed: random.Random(seed).sample(xs, len(xs))):
                    o = _outcome(lambda: op(self._mview(actor), lambda s: s))
                accept.append(self._map(o, o)[0])
        self._same(what, mo, ko, accept)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings), timeout=st.sampled_from([1, 2, 0]))
    def set_short_timeout(self, actor: int, key: int, timeout: int) -> None:
        if not self._mutable(key):
            return
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_set_timeout(tr(key), timeout))
        self._same(f"set_timeout[{actor}]({key},{timeout})", mo, ko)

    @rule()
    def tick(self) -> None:
        """Let the wall clock pass the next second boundary, so short timeouts run out.

        Within a budget per run (a precondition on it would make replays flaky).
        """
        if KeyctlOpsDifferential.ticks_left > 0:
            KeyctlOpsDifferential.ticks_left -= _next_second()
            REACHED["tick"] += 1

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings))
    def read(self, actor: int, key: int) -> None:
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_read(tr(key)))
        if mo[0] == ko[0] == "ok" and (rec := self._rec(key)) is not None and rec.is_keyring:
            mo = ("ok", sorted(struct.unpack(f"={len(mo[1]) // 4}i", mo[1])))
            ko = ("ok", sorted(self.k2m.get(s, s) for s in struct.unpack(f"={len(ko[1]) // 4}i", ko[1])))
        self._same(f"read[{actor}]({key})", mo, ko)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings))
    def describe(self, actor: int, key: int) -> None:
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_describe(tr(key)))
        self._same(f"describe[{actor}]({key})", mo, ko)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings), ring=rings)
    def link(self, actor: int, key: int, ring: int) -> None:
        if self._keyring_into_persistent(key, ring):
            return
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_link(tr(key), tr(ring)))
        self._same(f"link[{actor}]({key},{ring})", mo, ko)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings), ring=rings)
    def unlink(self, actor: int, key: int, ring: int) -> None:
        if key == self._session():
            return
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_unlink(tr(key), tr(ring)))
        self._same(f"unlink[{actor}]({key},{ring})", mo, ko)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings))
    def revoke(self, actor: int, key: int) -> None:
        if not self._mutable(key):
            return
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_revoke(tr(key)))
        self._same(f"revoke[{actor}]({key})", mo, ko)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings))
    def invalidate(self, actor: int, key: int) -> None:
        if key == self._session():
            return
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_invalidate(tr(key)))
        self._same(f"invalidate[{actor}]({key})", mo, ko)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings), perm=st.sampled_from(PERMS))
    def setperm(self, actor: int, key: int, perm: int) -> None:
        if not self._mutable(key):
            return
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_setperm(tr(key), perm))
        self._same(f"setperm[{actor}]({key},{perm:#x})", mo, ko)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings), ui=st.integers(0, 3))
    def chown(self, actor: int, key: int, ui: int) -> None:
        if not self._mutable(key):
            return
        uid = self.uids[ui]
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_chown(tr(key), uid, -1))
        self._same(f"chown[{actor}]({key},{uid})", mo, ko)

    @rule(actor=st.integers(0, 2), ring=rings)
    def clear(self, actor: int, ring: int) -> None:
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_clear(tr(ring)))
        self._same(f"clear[{actor}]({ring})", mo, ko)

    # -- the new operations ------------------------------------------------------
    @rule(
        actor=st.integers(0, 2),
        key=st.one_of(keys, rings),
        src=st.one_of(rings, st.just(-3)),
        dst=st.one_of(rings, st.sampled_from([-3, -4])),
        exclusive=st.booleans(),
    )
    def move(self, actor: int, key: int, src: int, dst: int, exclusive: bool) -> None:
        if dst == -4 and actor == 0:
            dst = -3
        if self._keyring_into_persistent(key, dst):
            return
        flags = 1 if exclusive else 0
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_move(tr(key), tr(src), tr(dst), flags))
        self._same(f"move[{actor}]({key},{src},{dst},{flags})", mo, ko)

    @rule(target=rings, actor=st.integers(0, 2), ui=st.integers(0, 3), dest=st.one_of(rings, st.just(-3)))
    def get_persistent(self, actor: int, ui: int, dest: int) -> int:
        uid = self.uids[ui]
        if actor == 0 and uid in (-1, 0):
            uid = self.u1  # root's own persistent keyring outlives the example
        mo, ko = self._map(*self._both(actor, lambda ks, tr: ks.sys_get_persistent(uid, tr(dest))))
        self._same(f"get_persistent[{actor}]({uid},{dest})", mo, ko)
        if mo[0] == "ok":
            self.protected.add(mo[1])  # revoked or timed out, the kernel would keep it for gc_delay
            self.persistent.add(mo[1])
            return mo[1]  # type: ignore[no-any-return]
        return 2

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings))
    def get_security(self, actor: int, key: int) -> None:
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_get_security(tr(key)))
        self._same(f"get_security[{actor}]({key})", mo, ko)

    @rule(actor=st.integers(1, 2))
    def session_to_parent(self, actor: int) -> None:
        """A child in the same session: nothing to hand up, unless LINK is denied (EACCES).

        The kernel refuses (EPERM) while the parent, this process, has other threads.
        """
        if _threads() != 1:
            return
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_session_to_parent())
        self._same(f"session_to_parent[{actor}]()", mo, ko)

    @rule(target=rings, name=st.sampled_from([None, "s1", "s2"]))
    def join_session(self, name: str | None) -> int:
        """Root joins a new anonymous session or a named one (names unique to the example)."""
        full = None if name is None else f"{self.token}-{name}"
        mo, ko = self._map(*self._both(0, lambda ks, tr: ks.sys_join_session_keyring(full)))
        self._same(f"join_session[0]({name})", mo, ko)
        return mo[1] if mo[0] == "ok" else 2

    @rule(
        target=rings,
        actor=st.integers(0, 2),
        which=st.sampled_from([-1, -2]),
        desc=st.sampled_from(DESCS),
        keep=st.booleans(),
    )
    def process_keyrings(self, actor: int, which: int, desc: str, keep: bool) -> int:
        """In one call (one child on the kernel): make @t or @p, add a key there, find it,
        list it, and perhaps link the keyring into the session so it outlives the call."""
        steps: list[Callable[[kt.KeyspaceAPI], Any]] = [
            lambda ks: ks.sys_get_keyring_id(which, False),
            lambda ks: ks.sys_add_key("user", desc, b"p", which),
            lambda ks: ks.sys_request_key("user", desc, None, 0) == ks.sys_search(which, "user", desc, 0),
            lambda ks: len(ks.sys_read(which)) // 4,
            lambda ks: ks.sys_search(which, "user", desc, 0) > 0,
            lambda ks: ks.sys_get_keyring_id(which, False),
        ]
        if keep:
            steps.append(lambda ks: ks.sys_link(which, -3))
        run = _in_child_outcomes(steps)
        _quiet_second()
        before = dict(self.model._world.keys)
        view = self.model.as_user(*self.creds[actor])
        mo = json.loads(run(view))
        _retire(view)
        kview = self.kern.as_user(*self.creds[actor])
        ko = json.loads(kview._call(lambda: run(kt.KernelKeyspace())))
        self._settle(before)
        # The keyring's serial (last-but-one step) pairs the two sides when it was kept,
        # and so does the key's (step 1).
        kept = 2
        if keep and mo[-1][0] == ko[-1][0] == "ok":
            self._pair(mo[-2][1], ko[-2][1])
            kept = mo[-2][1]
            if mo[1][0] == ko[1][0] == "ok":
                self._pair(mo[1][1], ko[1][1])  # the key made there lives on with it
        mo = [o if i not in (1, 5) or o[0] != "ok" else ["ok", "serial"] for i, o in enumerate(mo)]
        ko = [o if i not in (1, 5) or o[0] != "ok" else ["ok", "serial"] for i, o in enumerate(ko)]
        self._same(f"process_keyrings[{actor}]({which},{desc!r},{keep})", ("ok", mo), ("ok", ko))
        return kept

    @rule(desc=st.sampled_from(DESCS))
    def thread_keyring(self, desc: str) -> None:
        """Root's @t in a new thread on both sides: made, used, gone when the thread ends."""
        steps: list[Callable[[kt.KeyspaceAPI], Any]] = [
            lambda ks: ks.sys_get_keyring_id(-1, False),
            lambda ks: ks.sys_add_key("user", desc, b"t", -1) > 0,
            lambda ks: len(ks.sys_read(-1)) // 4,
            lambda ks: ks.sys_search(-1, "user", desc, 0) > 0,
            lambda ks: ks.sys_request_key("user", desc, None, 0) > 0,
        ]
        run = _in_child_outcomes(steps)
        out: dict[str, Any] = {}

        def in_thread(name: str, ks: kt.KeyspaceAPI) -> None:
            out[name] = json.loads(run(ks))

        _quiet_second()
        before = dict(self.model._world.keys)
        threads = _threads()
        for name, ks in (("model", self.model), ("kernel", self.kern)):
            t = threading.Thread(target=in_thread, args=(name, ks))
            t.start()
            t.join()
        deadline = time.monotonic() + 2.0
        while _threads() > threads and time.monotonic() < deadline:
            time.sleep(0.001)  # the task outlives the Python thread by a moment
        self._settle(before)
        self._same(f"thread_keyring[0]({desc!r})", ("ok", out["model"]), ("ok", out["kernel"]))

    # -- invariants: the session and the /proc views ---------------------------------
    @invariant()
    def session_agrees(self) -> None:
        mo = _outcome(lambda: sorted(_serials(self.model.sys_read(-3))))
        ko = _outcome(lambda: sorted(self.k2m.get(s, s) for s in _serials(self.kern.sys_read(-3))))
        self._same("session contents", mo, ko, count=False)

    @invariant()
    def proc_keys_agree(self) -> None:
        """Every key alive in the model shows the same /proc/keys line as its kernel twin.

        The usage column counts references; the kernel's keyrings have more (credentials
        hold session keyrings), so it is compared for keys that are not keyrings.
        """
        _quiet_second()
        deadline = time.monotonic() + 0.5
        while True:
            # A key's usage count can be one higher for a moment (a reference that a
            # finished call's cleanup has not dropped yet): look again before judging.
            kernel = _kernel_proc_keys()
            if self._usage_settled(kernel) or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        world = self.model._world
        now = world.now()
        viewable = {int(line[:8], 16) for line in self.model.proc_keys()}
        for mserial, kserial in self.m2k.items():
            rec = world.keys.get(mserial)
            if rec is None:
                continue
            mine = proc_keys_line(rec, now).split(None, 8)
            theirs = kernel.get(kserial)
            shown_here = mserial in viewable
            self._same(f"/proc/keys shows {mserial}", ("ok", shown_here), ("ok", theirs is not None), count=False)
            if theirs is None or not shown_here:
                continue
            if rec.is_keyring:
                mine[2] = theirs[2] = "-"
            mine[0] = theirs[0] = "-"
            self._same(f"/proc/keys line of {mserial}", ("ok", mine), ("ok", theirs), count=False)
        REACHED["proc_keys compared"] += 1

    def _usage_settled(self, kernel: dict[int, list[str]]) -> bool:
        keys = self.model._world.keys
        for mserial, kserial in self.m2k.items():
            rec = keys.get(mserial)
            theirs = kernel.get(kserial)
            if rec is not None and theirs is not None and not rec.is_keyring:
                if int(theirs[2]) != len(rec.parents) + rec.pins:
                    return False
        return True

    @invariant()
    def key_users_agree(self) -> None:
        """The fresh users' /proc/key-users counts (the kernel frees keys in its GC: allow it time)."""
        deadline = time.monotonic() + 2.0
        while True:
            mine = {uid: self._model_users(uid) for uid in (self.u1, self.u2)}
            theirs = _kernel_users()
            theirs = {uid: theirs.get(uid, "absent") for uid in (self.u1, self.u2)}
            if mine == theirs or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self._same("/proc/key-users", ("ok", mine), ("ok", theirs), count=False)
        REACHED["key_users compared"] += 1

    def _model_users(self, uid: int) -> str:
        user = self.model._world.users.get(uid)
        if user is None or user.nkeys == 0:
            return "absent"
        return f"{user.nkeys}/{user.nikeys} {user.qnkeys}/{user.maxkeys} {user.qnbytes}/{user.maxbytes}"


def _kernel_users() -> dict[int, str]:
    """/proc/key-users without the usage column: nkeys/nikeys qnkeys/maxkeys qnbytes/maxbytes."""
    out = {}
    with open("/proc/key-users") as f:
        for line in f:
            uid, _, rest = line.partition(":")
            fields = rest.split()
            if fields[1].startswith("0/"):
                continue  # a key user with no keys left, about to go
            out[int(uid)] = " ".join(fields[1:4])
    return out


def _kernel_proc_keys() -> dict[int, list[str]]:
    with open("/proc/keys") as f:
        return {int(line[:8], 16): line.rstrip("\n").split(None, 8) for line in f}


def _next_second() -> float:
    """Sleep until just past the next wall-clock second; how long that took."""
    wait = 1.0 - time.time() % 1.0 + 0.06
    time.sleep(wait)
    return wait


def _threads() -> int:
    """This process's tasks (threads) as the kernel counts them."""
    return len(os.listdir("/proc/self/task"))


def _serials(raw: bytes) -> list[int]:
    return list(struct.unpack(f"={len(raw) // 4}i", raw))


def _retire(view: kt.KeyspaceAPI) -> None:
    """Release what a model view made for one call holds, as the kernel's child does at exit.

    A view is part of a reference cycle, so its finalisers would wait for Python's
    cyclic GC; the kernel's child drops its keyrings when it exits.
    """
    assert isinstance(view, Keyspace)
    held = getattr(view._proc.threads, "t", None)
    if held is not None:
        del view._proc.threads.t  # its finaliser releases the thread keyring
    _release_pins(view._world, view._proc._pinned)


def _run(examples: int, derandomize: bool, shrink: bool, wait_scale: float = 1.0) -> collections.Counter[str]:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    require(os.geteuid() == 0, "root (as_user steps change credentials in a child)")
    run = KeyctlOpsDifferential.TestCase
    run.settings = settings(
        max_examples=examples,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=derandomize,
        # The bounded run reports a failure as found: shrinking replays it against the
        # kernel for minutes.
        phases=list(Phase) if shrink else [Phase.explicit, Phase.reuse, Phase.generate],
    )
    used = KeyctlOpsDifferential.uids_used
    used.clear()
    REACHED.clear()
    KeyctlOpsDifferential.ticks_left = TICK_BUDGET_S * wait_scale
    KeyctlOpsDifferential.tour_ticks_left = TOUR_TICK_BUDGET_S * wait_scale
    run().runTest()
    kt.KernelKeyspace().sys_join_session_keyring(None)
    _assert_users_released(set(used))
    print("\nreached:", ", ".join(f"{k}={v}" for k, v in sorted(REACHED.items())))
    return REACHED.copy()


def _count(reached: collections.Counter[str], prefix: str, outcome: str) -> int:
    return sum(v for k, v in reached.items() if k.startswith(prefix) and k.endswith(f":{outcome}"))


def test_keyctlops_differential_bounded() -> None:
    """A bounded, repeatable run for the normal suite, which must reach the rare paths."""
    reached = _run(BOUNDED_EXAMPLES, derandomize=True, shrink=False)
    for prefix, outcome in [
        ("update", "ok"),
        ("search", "ok"),
        ("request_key", "ok"),
        ("move", "ok"),
        ("move", "EEXIST"),
        ("get_persistent", "ok"),
        ("get_persistent", "EPERM"),
        ("join_session", "ok"),
        ("process_keyrings", "ok"),
        ("thread_keyring", "ok"),
        ("fill_quota", "EDQUOT"),
        ("get_security", "ok"),
    ]:
        assert _count(reached, prefix, outcome), f"the bounded run never reached {prefix} -> {outcome}"
    expired = sum(v for k, v in reached.items() if k.endswith(":EKEYEXPIRED"))
    loops = sum(v for k, v in reached.items() if k.endswith(":ELOOP"))
    assert expired and loops, f"no EKEYEXPIRED ({expired}) or no ELOOP ({loops}) in the bounded run"


@pytest.mark.slow
def test_keyctlops_differential_many() -> None:
    _run(SLOW_EXAMPLES, derandomize=False, shrink=True, wait_scale=10.0)
