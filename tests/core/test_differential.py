"""Differential test: the in-process Keyspace against the real kernel keyring.

A hypothesis state machine applies the same random operations to a
``Keyspace`` and a ``KernelKeyspace`` (as root and as two fresh unprivileged
users who share the session keyring) and requires the same outcome at every
step: the same payload, description or (mapped) serial, or the same errno.

The kernel walks nested keyrings in the order of its hash table, which depends
on kernel pointers and cannot be reproduced; where a search's outcome depends
on that order, the model's outcome under other walk orders is accepted too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

import keyring_types as kt
import keyring_types.core.search as search_mod
import keyring_types.integrations.kernel_syscalls as kt_sys
from conftest import IN_CI, kernel_keyring_reachable, require

pytestmark = [pytest.mark.kernel]

EXAMPLES = int(os.environ.get("KT_DIFF_EXAMPLES", "2000" if IN_CI else "300"))
ENCRYPTED_EXAMPLES = int(os.environ.get("KT_DIFF_ENCRYPTED_EXAMPLES", "300" if IN_CI else "100"))

Outcome = tuple[str, Any]

DESCS = ["a", "b", "x:y", ":z", "c:"]
TYPES = ["user", "logon", "keyring"]
PAYLOAD_SIZES = [0, 1, 7, 100, 4096, 4097, 9000, 32767, 32768]
PERMS = [
    0x3F010000,
    0x3F3F0000,
    0x3F3F3F3F,
    0x1F010000,
    0x3D010000,
    0x3F030000,
    0x01010101,
    0x08080808,
    0x0B0B0B0B,
    0x00000000,
    0x3F000000,
    0x003F3F00,
    0x40000000,
]


def _outcome(fn: Callable[[], Any]) -> Outcome:
    try:
        return ("ok", fn())
    except OSError as exc:
        return ("err", exc.errno)


@contextlib.contextmanager
def _walk_order(order: Callable[[list[Any]], list[Any]]) -> Iterator[None]:
    original = search_mod._sub_keyrings
    search_mod._sub_keyrings = lambda ring: order(list(original(ring)))  # type: ignore[assignment]
    try:
        yield
    finally:
        search_mod._sub_keyrings = original  # type: ignore[assignment]


def _own_user_keyrings() -> bytes:
    """The caller's @u and @us serials (made if missing), packed: an as_user child returns bytes."""
    return struct.pack("=ii", *(kt_sys.keyctl_get_keyring_id(spec, True) for spec in (-4, -5)))


def _invalidate_packed(serials: bytes) -> None:
    """KEYCTL_INVALIDATE each serial of a ``_own_user_keyrings`` reply, as the caller."""
    for (serial,) in struct.iter_unpack("=i", serials):
        kt_sys.keyctl_invalidate(serial)


def _blob_shape(blob: bytes) -> tuple[bytes, int]:
    """An encrypted key's blob without its random part: the words before the hex, and its length."""
    head, _, hexpart = blob.rpartition(b" ")
    return head, len(hexpart)


class KeyringDifferential(RuleBasedStateMachine):
    """One example: a fresh session, two fresh users, and random keyctl traffic."""

    keys = Bundle("keys")
    rings = Bundle("rings")
    # Every fresh user of the run, so that _run can check that none is left behind.
    uids_used: ClassVar[list[int]] = []

    def __init__(self) -> None:
        super().__init__()
        self.model = kt.Keyspace()
        self.kern = kt.KernelKeyspace()
        self.kern.sys_join_session_keyring(None)
        base = 100000 + random.SystemRandom().randrange(1 << 30)
        self.u1, self.u2 = base, base + 1
        self.g1, self.g2 = base + 10, base + 11
        # Actor 0 is root; U1 is also in U2's group so GRP bits matter.
        self.actors: list[tuple[kt.KeyspaceAPI, kt.KeyspaceAPI]] = [
            (self.model, self.kern),
            (self.model.as_user(self.u1, self.g1, [self.g2]), self.kern.as_user(self.u1, self.g1, [self.g2])),
            (self.model.as_user(self.u2, self.g2), self.kern.as_user(self.u2, self.g2)),
        ]
        self.m2k: dict[int, int] = {}
        self.k2m: dict[int, int] = {}
        self.session_serial = self.model.sys_get_keyring_id(-3, False)
        self._pair(self.session_serial, self.kern.sys_get_keyring_id(-3, False))
        self.user_rings: list[tuple[kt.KernelKeyspace, bytes]] = []
        KeyringDifferential.uids_used.extend((self.u1, self.u2))
        for m, k in self.actors[1:]:
            assert isinstance(k, kt.KernelKeyspace)
            # One child per user for both lookups (and one for teardown's invalidations):
            # forks are most of this test's time.
            both = k._call(_own_user_keyrings)
            self.user_rings.append((k, both))
            for spec, kserial in zip((-4, -5), struct.unpack("=ii", both)):
                self._pair(m.sys_get_keyring_id(spec, True), kserial)
        self.uids = [-1, 0, self.u1, self.u2]
        self.gids = [-1, 0, self.g1, self.g2]
        self.log: list[str] = []

    def teardown(self) -> None:
        """Have each user invalidate its own @u and @us.

        The kernel registers a uid's user keyrings in its user namespace and never
        frees them by itself, so without this every example would leave two keyrings
        and a /proc/key-users row per fresh user until reboot.  The rules never touch
        these keyrings' permissions, so their owners can always do it; anything that
        stays is reported by _run's check, not here, so that a failing example's own
        error is what hypothesis shows.
        """
        for view, both in self.user_rings:
            with contextlib.suppress(OSError):
                view._call(_invalidate_packed, both)

    # -- bookkeeping ---------------------------------------------------------
    def _pair(self, m: int, k: int) -> None:
        assert self.m2k.get(m, k) == k and self.k2m.get(k, m) == m, f"serial map conflict {m} <-> {k}"
        self.m2k[m] = k
        self.k2m[k] = m

    def _same(self, what: str, mo: Outcome, ko: Outcome, accept: list[Outcome] | None = None) -> None:
        self.log.append(f"{what}: model={mo} kernel={ko}")
        if mo == ko or (accept is not None and ko in accept):
            return
        raise AssertionError("model and kernel disagree\n" + "\n".join(self.log[-25:]))

    def _map_serial(self, mo: Outcome, ko: Outcome) -> tuple[Outcome, Outcome]:
        """Replace serials by model serials so outcomes compare; record new pairs."""
        if mo[0] == "ok" and ko[0] == "ok":
            if mo[1] not in self.m2k and ko[1] not in self.k2m:
                self._pair(mo[1], ko[1])
            return mo, ("ok", self.k2m.get(ko[1], ("kernel-only", ko[1])))
        return mo, ko

    def _both(self, actor: int, fn: Callable[[kt.KeyspaceAPI, Callable[[int], int]], Any]) -> tuple[Outcome, Outcome]:
        m, k = self.actors[actor]
        before = dict(self.model._world.keys)
        mo = _outcome(lambda: fn(m, lambda s: s))
        ko = _outcome(lambda: fn(k, lambda s: self.m2k.get(s, s) if s > 0 else s))
        self._settle(before)
        return mo, ko

    def _settle(self, before: dict[int, Any]) -> None:
        """Wait until the kernel has freed what the model freed synchronously.

        The kernel drops unlinked keys after an RCU grace period and reaps invalidated
        ones in its GC worker (which walks every key on the system); the model does both
        at once.  KEYCTL_UNLINK looks its key up without validating it, so unlinking a
        serial from root's own user keyring answers ENOKEY only once the key is freed,
        whatever its state or permissions.  (/proc/keys and /proc/key-users are not read
        per step: they list every key and key user on the machine.)
        """
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

    # -- rules -----------------------------------------------------------------
    @initialize(target=rings)
    def session(self) -> int:
        return self.session_serial

    @rule(
        target=keys,
        actor=st.integers(0, 2),
        type_name=st.sampled_from(TYPES),
        desc=st.sampled_from(DESCS),
        size=st.sampled_from(PAYLOAD_SIZES),
        dest=st.one_of(rings, st.sampled_from([-3, -4, 0, 123])),
    )
    def add_key(self, actor: int, type_name: str, desc: str, size: int, dest: int) -> int:
        if dest == -4 and actor == 0:
            dest = -3  # root's own @u outlives the example in the kernel
        payload = None if type_name == "keyring" and size < 7 else bytes([actor + 1]) * size

        def op(ks: kt.KeyspaceAPI, tr: Callable[[int], int]) -> int:
            return ks.sys_add_key(type_name, desc, payload, tr(dest))

        mo, ko = self._map_serial(*self._both(actor, op))
        self._same(f"add_key[{actor}]({type_name},{desc!r},{size},{dest})", mo, ko)
        return mo[1] if mo[0] == "ok" else 2  # serials start at 3: 2 names no key

    @rule(target=rings, actor=st.integers(0, 2), desc=st.sampled_from(DESCS), dest=rings)
    def add_keyring(self, actor: int, desc: str, dest: int) -> int:
        def op(ks: kt.KeyspaceAPI, tr: Callable[[int], int]) -> int:
            return ks.sys_add_key("keyring", desc, None, tr(dest))

        mo, ko = self._map_serial(*self._both(actor, op))
        self._same(f"add_keyring[{actor}]({desc!r},{dest})", mo, ko)
        return mo[1] if mo[0] == "ok" else 2  # serials start at 3: 2 names no key

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings))
    def read(self, actor: int, key: int) -> None:
        def op(ks: kt.KeyspaceAPI, tr: Callable[[int], int]) -> Any:
            data = ks.sys_read(tr(key))
            return data

        mo, ko = self._both(actor, op)
        if mo[0] == ko[0] == "ok" and self._is_encrypted(key):
            # Random data and IV differ between the two; the header and the length must not.
            mo = ("ok", _blob_shape(mo[1]))
            ko = ("ok", _blob_shape(ko[1]))
        if mo[0] == ko[0] == "ok" and self._is_ring(key):
            mo = ("ok", sorted(self._serials(mo[1], model=True)))
            ko = ("ok", sorted(self._serials(ko[1], model=False)))
        self._same(f"read[{actor}]({key})", mo, ko)

    def _is_encrypted(self, key: int) -> bool:
        rec = self.model._world.keys.get(key)
        return rec is not None and rec.ktype.name == "encrypted"

    def _is_ring(self, key: int) -> bool:
        rec = self.model._world.keys.get(key)
        return rec is not None and rec.is_keyring

    def _serials(self, raw: bytes, model: bool) -> list[Any]:
        got = struct.unpack(f"={len(raw) // 4}i", raw)
        if model:
            return list(got)
        return [self.k2m.get(s, ("kernel-only", s)) for s in got]

    @rule(actor=st.integers(0, 2), key=keys, size=st.sampled_from(PAYLOAD_SIZES))
    def update(self, actor: int, key: int, size: int) -> None:
        payload = b"u" * size
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_update(tr(key), payload))
        self._same(f"update[{actor}]({key},{size})", mo, ko)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings))
    def describe(self, actor: int, key: int) -> None:
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_describe(tr(key)))
        self._same(f"describe[{actor}]({key})", mo, ko)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings))
    def revoke(self, actor: int, key: int) -> None:
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_revoke(tr(key)))
        self._same(f"revoke[{actor}]({key})", mo, ko)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings))
    def invalidate(self, actor: int, key: int) -> None:
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_invalidate(tr(key)))
        self._same(f"invalidate[{actor}]({key})", mo, ko)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings), ring=rings)
    def link(self, actor: int, key: int, ring: int) -> None:
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_link(tr(key), tr(ring)))
        self._same(f"link[{actor}]({key},{ring})", mo, ko)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings), ring=rings)
    def unlink(self, actor: int, key: int, ring: int) -> None:
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_unlink(tr(key), tr(ring)))
        self._same(f"unlink[{actor}]({key},{ring})", mo, ko)

    @rule(actor=st.integers(0, 2), ring=rings)
    def clear(self, actor: int, ring: int) -> None:
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_clear(tr(ring)))
        self._same(f"clear[{actor}]({ring})", mo, ko)

    def _order_tolerant(self, actor: int, op: Callable[[kt.KeyspaceAPI, Callable[[int], int]], Any]) -> list[Outcome]:
        """The model's outcomes under other nested-keyring walk orders."""
        m, _ = self.actors[actor]
        rnd = random.Random(1234)
        orders: list[Callable[[list[Any]], list[Any]]] = [lambda xs: xs[::-1]]
        for _ in range(24):
            seed = rnd.random()
            orders.append(lambda xs, seed=seed: random.Random(seed).sample(xs, len(xs)))
        outs = []
        for order in orders:
            with _walk_order(order):
                outs.append(_outcome(lambda: op(m, lambda s: s)))
        return outs

    @rule(
        actor=st.integers(0, 2),
        ring=rings,
        type_name=st.sampled_from([*TYPES, "nosuchtype"]),
        desc=st.sampled_from(DESCS),
        dest=st.sampled_from([0, -3]),
    )
    def search(self, actor: int, ring: int, type_name: str, desc: str, dest: int) -> None:
        def op(ks: kt.KeyspaceAPI, tr: Callable[[int], int]) -> int:
            return ks.sys_search(tr(ring), type_name, desc, dest)

        self._searchlike(f"search[{actor}]({ring},{type_name},{desc!r},{dest})", actor, op)

    @rule(actor=st.integers(0, 2), type_name=st.sampled_from([*TYPES, "nosuchtype"]), desc=st.sampled_from(DESCS))
    def request_key(self, actor: int, type_name: str, desc: str) -> None:
        def op(ks: kt.KeyspaceAPI, tr: Callable[[int], int]) -> int:
            return ks.sys_request_key(type_name, desc, None, 0)

        self._searchlike(f"request_key[{actor}]({type_name},{desc!r})", actor, op)

    def _searchlike(self, what: str, actor: int, op: Callable[[kt.KeyspaceAPI, Callable[[int], int]], Any]) -> None:
        mo, ko = self._map_serial(*self._both(actor, op))
        accept = None
        if mo != ko:
            # Only a walk-order difference may excuse a mismatch; side effects (dest links) are
            # identical whichever key is found first, since the model re-runs read-only here.
            accept = [self._map_serial(o, o)[0] for o in self._order_tolerant(actor, op)]
        self._same(what, mo, ko, accept)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings), perm=st.sampled_from(PERMS))
    def setperm(self, actor: int, key: int, perm: int) -> None:
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_setperm(tr(key), perm))
        self._same(f"setperm[{actor}]({key},{perm:#x})", mo, ko)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings), ui=st.integers(0, 3), gi=st.integers(0, 3))
    def chown(self, actor: int, key: int, ui: int, gi: int) -> None:
        uid, gid = self.uids[ui], self.gids[gi]
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_chown(tr(key), uid, gid))
        self._same(f"chown[{actor}]({key},{uid},{gid})", mo, ko)

    @rule(actor=st.integers(0, 2), key=st.one_of(keys, rings), timeout=st.sampled_from([0, 3600]))
    def set_timeout(self, actor: int, key: int, timeout: int) -> None:
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_set_timeout(tr(key), timeout))
        self._same(f"set_timeout[{actor}]({key},{timeout})", mo, ko)

    @invariant()
    def session_listing_agrees(self) -> None:
        ses = self.session_serial
        mo = _outcome(lambda: sorted(self._serials(self.model.sys_read(ses), model=True)))
        ko = _outcome(lambda: sorted(self._serials(self.kern.sys_read(self.m2k[ses]), model=False)))
        self._same("session contents", mo, ko)


class EncryptedDifferential(KeyringDifferential):
    """The same traffic plus encrypted keys under user masters (heavier: run with fewer examples)."""

    keys = KeyringDifferential.keys
    rings = KeyringDifferential.rings

    @rule(
        target=keys,
        actor=st.integers(0, 2),
        desc=st.sampled_from(DESCS),
        master=st.sampled_from(DESCS),
        length=st.sampled_from(["32", "19", "+32", "64"]),
        fmt=st.sampled_from(["", "default ", "enc32 "]),
        dest=rings,
    )
    def add_encrypted(self, actor: int, desc: str, master: str, length: str, fmt: str, dest: int) -> int:
        """An encrypted key under a user master: the master is looked up later, on every read."""
        payload = f"new {fmt}user:{master} {length}".encode()

        def op(ks: kt.KeyspaceAPI, tr: Callable[[int], int]) -> int:
            return ks.sys_add_key("encrypted", desc, payload, tr(dest))

        mo, ko = self._map_serial(*self._both(actor, op))
        self._same(f"add_encrypted[{actor}]({desc!r},{payload!r},{dest})", mo, ko)
        return mo[1] if mo[0] == "ok" else 2

    @rule(target=keys, actor=st.integers(0, 2), master=st.sampled_from(DESCS))
    def add_master(self, actor: int, master: str) -> int:
        """A 32-byte user key in the session, so encrypted keys find masters often."""

        def op(ks: kt.KeyspaceAPI, tr: Callable[[int], int]) -> int:
            return ks.sys_add_key("user", master, bytes(range(32)), -3)

        mo, ko = self._map_serial(*self._both(actor, op))
        self._same(f"add_master[{actor}]({master!r})", mo, ko)
        return mo[1] if mo[0] == "ok" else 2

    @rule(
        target=keys,
        actor=st.integers(0, 2),
        master=st.sampled_from(DESCS),
        desc=st.sampled_from(DESCS),
        fmt=st.sampled_from(["", "default ", "enc32 "]),
        dest=rings,
    )
    def encrypted_roundtrip(self, actor: int, master: str, desc: str, fmt: str, dest: int) -> int:
        """Master, encrypted key, read, and load of that blob: each side reloads its own blob."""
        reloaded = f"{desc}.reloaded"
        what = f"encrypted_roundtrip[{actor}]({master!r},{desc!r},{fmt!r},{dest})"
        steps: list[Callable[[kt.KeyspaceAPI, Callable[[int], int], Any], Any]] = [
            lambda ks, tr, _: ks.sys_add_key("user", master, bytes(range(32)), -3),
            lambda ks, tr, _: ks.sys_add_key("encrypted", desc, f"new {fmt}user:{master} 32".encode(), tr(dest)),
            lambda ks, tr, serial: ks.sys_read(serial),
            lambda ks, tr, blob: (ks.sys_add_key("encrypted", reloaded, b"load " + blob, tr(dest)), blob),
            lambda ks, tr, made: ks.sys_read(made[0]) == made[1],
        ]
        m_prev: Any = None
        k_prev: Any = None
        made = 2
        for n, step in enumerate(steps):
            mo, ko = self._both(actor, lambda ks, tr, step=step: step(ks, tr, m_prev if ks is self.actors[actor][0] else k_prev))
            if mo[0] == ko[0] == "ok" and n in (0, 1):
                self._map_serial(mo, ko)
                made = mo[1] if n == 1 else made
                self._same(f"{what} step {n}", mo, ("ok", self.k2m.get(ko[1], ko[1])))
            elif mo[0] == ko[0] == "ok" and n == 2:
                self._same(f"{what} read", ("ok", _blob_shape(mo[1])), ("ok", _blob_shape(ko[1])))
            elif mo[0] == ko[0] == "ok" and n == 3:
                self._map_serial(("ok", mo[1][0]), ("ok", ko[1][0]))
                self._same(f"{what} load", ("ok", mo[1][0]), ("ok", self.k2m.get(ko[1][0], ko[1][0])))
            else:
                self._same(f"{what} step {n}", mo, ko)
            if mo[0] != "ok":
                break
            m_prev, k_prev = mo[1], ko[1]
        return made

    @rule(actor=st.integers(0, 2), key=keys, master=st.sampled_from(DESCS))
    def update_encrypted_master(self, actor: int, key: int, master: str) -> None:
        payload = f"update user:{master}".encode()
        mo, ko = self._both(actor, lambda ks, tr: ks.sys_update(tr(key), payload))
        self._same(f"update_encrypted[{actor}]({key},{payload!r})", mo, ko)


def _users_with_keys() -> set[int]:
    """The uids /proc/key-users lists, i.e. that still own at least one key."""
    with open("/proc/key-users") as f:
        return {int(line.split(":", 1)[0]) for line in f if ":" in line}


def _assert_users_released(uids: set[int], within: float = 60.0) -> None:
    """Wait for the kernel's GC to free every key the run's fresh users owned."""
    deadline = time.monotonic() + within
    left = uids & _users_with_keys()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left &= _users_with_keys()
    assert not left, (
        f"{len(left)} of the run's {len(uids)} fresh users still own kernel keys after {within:.0f} s "
        f"(e.g. uid {min(left)}); their user keyrings would stay until reboot"
    )


def _run(machine: type[KeyringDifferential], examples: int) -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    require(os.geteuid() == 0, "root (as_user steps change credentials in a child)")
    run = machine.TestCase
    run.settings = settings(
        max_examples=examples,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    used = KeyringDifferential.uids_used
    used.clear()
    run().runTest()
    # The last example's session (and the users' keys linked there) goes with a new one.
    kt.KernelKeyspace().sys_join_session_keyring(None)
    _assert_users_released(set(used))


def test_keyspace_matches_kernel() -> None:
    _run(KeyringDifferential, EXAMPLES)


def test_keyspace_matches_kernel_with_encrypted_keys() -> None:
    _run(EncryptedDifferential, ENCRYPTED_EXAMPLES)
