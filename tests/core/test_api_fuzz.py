"""Property: whatever a caller passes to the public API, the answer is a result or an errno.

Every public method of ``KeyspaceAPI``, ``Key`` and ``Keyring`` gets wrong-typed and
out-of-range values (and, mixed in, ordinary ones so that calls also get past the
argument checks) on both backends.  The only exception allowed out is an
``OSError`` made by ``keyring_types.errors.error`` with an errno: never a
TypeError, ValueError, AttributeError, UnicodeEncodeError, OverflowError or
RecursionError.

On the kernel backend each example runs in a fresh anonymous session, and no key id
names the thread, process or user keyrings (-1, -2, -4, -5, "@t", "@p", "@u", "@us"):
keys linked into the caller's @u would stay in the kernel until reboot, and a thread
or process keyring would stay attached to the test process.  Nor is any positive
serial used there but the example's own key and keyring: another could be anyone's.
KernelKeyspace's ``sys_*`` methods are real system calls and get the same treatment.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from conftest import kernel_keyring_reachable, require
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keyring_types as kt
from keyring_types.errors import KeyringError


class _Huge(int):
    """An int with 5 001 digits: str() of it raises ValueError, so it must never be formatted."""

    def __repr__(self) -> str:  # hypothesis prints failing examples
        return "_Huge(10**5000)"


class _Nested(list):  # type: ignore[type-arg]
    """A list nested 100 000 deep: repr() of its contents raises RecursionError."""

    def __repr__(self) -> str:
        return "_Nested(depth=100000)"


def _nested_list(depth: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(depth):
        out = [out]
    return _Nested(out)


def _released_view() -> memoryview:
    view = memoryview(b"gone")
    view.release()
    return view


class _Index:
    """An object that is an integer through ``__index__`` (as numpy integers are)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __index__(self) -> int:
        return self.n


# Values placed where a key id, a number, a string or a payload goes.
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(
        [
            2**31,
            2**31 - 1,
            2**32 - 1,
            2**32 - 2,
            2**32,
            2**40,
            2**63,
            2**64,
            -(2**31),
            -(2**31) - 1,
            -3,
            -9,
            0,
            _Huge(10**5000),
        ]
    ),
    st.builds(_Index, st.sampled_from([0, 5, 2**40, -(2**31) - 1])),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(
        [
            "\udc80",
            "\ud800x",
            "a\0b",
            "@s",
            "@u",
            "@us",
            "@g",
            "@a",
            "@zz",
            "0x10",
            "1_0",
            " 3 ",
            "9" * 5000,
            "x" * 5000,
        ]
    ),
    st.binary(max_size=12),
    st.builds(bytearray, st.binary(max_size=8)),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.sampled_from([object(), complex(1, 2), Decimal("1.5"), Decimal("NaN"), float("inf"), frozenset({1}), ...]),
    st.builds(_released_view),
    st.binary(max_size=4).map(lambda b: memoryview(b)),
    st.builds(_nested_list, st.just(100_000)),
)

# Ordinary values, by the role of the argument.  "<k>"/"<r>" stand for the example's
# user key and keyring (their handles), "<k#>" for the key's serial.
SANE_ID = st.sampled_from(["<k>", "<r>", "<k#>", "@s", "@u", 0])
SANE_STR = st.sampled_from(["user", "keyring", "logon", "fz:key", "fz:ring", "fz:other"])
SANE_PAYLOAD = st.sampled_from([b"payload", "text", bytearray(b"ba"), None])
SANE_NUM = st.sampled_from([0, 1, 100, -1, 0x3F3F0000, 0x3F010000])

#: @t, @p, @u, @us: keyrings that outlive the example's session.
_LASTING_RINGS = (-1, -2, -4, -5)


def _kernel_safe_id(value: object) -> bool:
    """Whether ``value`` may be used as a key id on the real kernel.

    Not a keyring that outlives the example's session, and not a positive serial
    (which could be any key on this machine, someone else's included): only the
    example's own key and keyring are named, through the "<k>"/"<r>" stand-ins.
    """
    try:
        keyid = kt.KernelKeyspace.resolve(kt.KernelKeyspace.__new__(kt.KernelKeyspace), value)  # type: ignore[arg-type]
    except OSError:
        return True
    return keyid <= 0 and keyid not in _LASTING_RINGS


# request_key with callout info would start a /sbin/request-key upcall on the kernel:
# only values refused before the system call, or None.
_CALLOUT = st.one_of(st.none(), JUNK.filter(lambda v: not isinstance(v, (str, bytes, bytearray, memoryview))))


def _strategy(role: str, backend: str) -> st.SearchStrategy[Any]:
    """Values for an argument of ``role``: ordinary ones and junk."""
    if role == "id":
        ids = st.one_of(SANE_ID, JUNK)
        return ids.filter(_kernel_safe_id) if backend == "kernel" else ids
    if role == "str":
        return st.one_of(SANE_STR, JUNK)
    if role == "payload":
        return st.one_of(SANE_PAYLOAD, JUNK)
    if role == "num":
        return st.one_of(SANE_NUM, JUNK)
    if role == "callout":
        return _CALLOUT
    assert role == "junk"
    return JUNK


Call = Callable[..., Any]

# name -> (call(space, key, ring, *args), argument roles)
METHODS: dict[str, tuple[Call, tuple[str, ...]]] = {
    "KeyspaceAPI.add_key": (lambda s, k, r, t, d, p, ring: s.add_key(t, d, p, ring), ("str", "str", "payload", "id")),
    "KeyspaceAPI.request_key": (
        lambda s, k, r, t, d, c, ring: s.request_key(t, d, c, ring),
        ("str", "str", "callout", "id"),
    ),
    "KeyspaceAPI.key": (lambda s, k, r, x: s.key(x), ("id",)),
    "KeyspaceAPI.keyring": (lambda s, k, r, x, c: s.keyring(x, c), ("id", "num")),
    "KeyspaceAPI.resolve": (lambda s, k, r, x: s.resolve(x), ("id",)),
    "KeyspaceAPI.handle": (lambda s, k, r, x, t, d: s.handle(x, t, d), ("id", "str", "str")),
    "KeyspaceAPI.join_session_keyring": (lambda s, k, r, n: s.join_session_keyring(n), ("str",)),
    "KeyspaceAPI.as_user": (lambda s, k, r, u, g, gs: s.as_user(u, g, gs), ("num", "num", "junk")),
    "KeyspaceAPI.same_world": (lambda s, k, r, x: s.same_world(x), ("junk",)),
    "Key()": (lambda s, k, r, x, t, d: kt.Key(s, x, t, d).describe(), ("id", "str", "str")),
    "Key.update": (lambda s, k, r, p: k.update(p), ("payload",)),
    "Key.set_timeout": (lambda s, k, r, x: k.set_timeout(x), ("num",)),
    "Key.set_perm": (lambda s, k, r, x: k.set_perm(x), ("num",)),
    "Key.chown": (lambda s, k, r, u, g: k.chown(u, g), ("num", "num")),
    "Key.__eq__": (lambda s, k, r, x: k == x, ("junk",)),
    "Keyring.link": (lambda s, k, r, x: r.link(x), ("id",)),
    "Keyring.unlink": (lambda s, k, r, x: r.unlink(x), ("id",)),
    "Keyring.search": (lambda s, k, r, t, d, dest: r.search(t, d, dest), ("str", "str", "id")),
    "Keyring.__contains__": (lambda s, k, r, x: x in r, ("id",)),
    # The handler side of upcalls: outside one, every call ends in an errno.
    "KeyspaceAPI.instantiate": (lambda s, k, r, x, p, ring: s.instantiate(x, p, ring), ("id", "payload", "id")),
    "KeyspaceAPI.negate": (lambda s, k, r, x, t, ring: s.negate(x, t, ring), ("id", "num", "id")),
    "KeyspaceAPI.reject": (lambda s, k, r, x, t, e, ring: s.reject(x, t, e, ring), ("id", "num", "num", "id")),
    "KeyspaceAPI.assume_authority": (lambda s, k, r, x: s.assume_authority(x), ("id",)),
}

# The system-call layer of KernelKeyspace: each is one real syscall, so a value that
# does not fit its C type must be refused before it, not truncated by the kernel.
KERNEL_SYSCALLS: dict[str, tuple[Call, tuple[str, ...]]] = {
    "sys_add_key": (lambda s, t, d, p, ring: s.sys_add_key(t, d, p, ring), ("str", "str", "payload", "id")),
    "sys_request_key": (lambda s, t, d, c, ring: s.sys_request_key(t, d, c, ring), ("str", "str", "callout", "id")),
    "sys_get_keyring_id": (lambda s, x, c: s.sys_get_keyring_id(x, c), ("id", "num")),
    "sys_join_session_keyring": (lambda s, n: s.sys_join_session_keyring(n), ("str",)),
    "sys_update": (lambda s, x, p: s.sys_update(x, p), ("id", "payload")),
    "sys_revoke": (lambda s, x: s.sys_revoke(x), ("id",)),
    "sys_chown": (lambda s, x, u, g: s.sys_chown(x, u, g), ("id", "num", "num")),
    "sys_setperm": (lambda s, x, p: s.sys_setperm(x, p), ("id", "num")),
    "sys_describe": (lambda s, x: s.sys_describe(x), ("id",)),
    "sys_clear": (lambda s, x: s.sys_clear(x), ("id",)),
    "sys_link": (lambda s, x, ring: s.sys_link(x, ring), ("id", "id")),
    "sys_unlink": (lambda s, x, ring: s.sys_unlink(x, ring), ("id", "id")),
    "sys_search": (lambda s, ring, t, d, dest: s.sys_search(ring, t, d, dest), ("id", "str", "str", "id")),
    "sys_read": (lambda s, x: s.sys_read(x), ("id",)),
    "sys_set_timeout": (lambda s, x, t: s.sys_set_timeout(x, t), ("id", "num")),
    "sys_invalidate": (lambda s, x: s.sys_invalidate(x), ("id",)),
    "sys_secret": (lambda s, x: s.sys_secret(x).wipe(), ("id",)),
    "sys_instantiate": (lambda s, x, p, ring: s.sys_instantiate(x, p, ring), ("id", "payload", "id")),
    "sys_negate": (lambda s, x, t, ring: s.sys_negate(x, t, ring), ("id", "num", "id")),
    "sys_reject": (lambda s, x, t, e, ring: s.sys_reject(x, t, e, ring), ("id", "num", "num", "id")),
    "sys_assume_authority": (lambda s, x: s.sys_assume_authority(x), ("id",)),
}

_counter = itertools.count()


def _space(backend: str) -> kt.KeyspaceAPI:
    if backend == "keyspace":
        return kt.Keyspace()
    return kt.KernelKeyspace(new_session=True)


#: Serials of the kernel keys the fuzz made or was handed: none may end up in @u or @us.
_KERNEL_SERIALS: set[int] = set()


def _in_own_user_keyrings() -> set[int]:
    """The serials linked in this uid's @u and @us (shared by every process of the uid)."""
    out: set[int] = set()
    for spec in (-4, -5):
        raw = kt.KernelKeyspace().sys_read(spec)
        out.update(struct.unpack(f"={len(raw) // 4}i", raw))
    return out


def _substitute(value: object, key: kt.Key, ring: kt.Keyring, serials: bool = False) -> Any:
    """Put the example's key and keyring (handles, or serials for a syscall) for the stand-ins."""
    if isinstance(value, str):
        if serials:
            return {"<k>": key.serial, "<r>": ring.serial, "<k#>": key.serial}.get(value, value)
        return {"<k>": key, "<r>": ring, "<k#>": key.serial}.get(value, value)
    return value


def _assert_errno_only(what: str, fn: Callable[[], object], kernel: bool) -> None:
    try:
        result = fn()
    except OSError as exc:
        assert isinstance(exc, KeyringError), f"{what}: {type(exc).__name__} not made by errors.error: {exc}"
        assert isinstance(exc.errno, int) and exc.errno > 0, f"{what}: OSError without an errno: {exc}"
        return
    if kernel and isinstance(result, (kt.Key, int)) and not isinstance(result, bool):
        _KERNEL_SERIALS.add(int(result))


@pytest.fixture(params=["keyspace", "kernel"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "kernel":
        require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    return str(request.param)


@pytest.fixture(scope="module", autouse=True)
def _leave_nothing_behind() -> Any:
    if not kernel_keyring_reachable():
        yield
        return
    yield
    # The last example's session (and what it linked) is released with it ...
    kt.KernelKeyspace(new_session=True)
    # ... and nothing the fuzz made was linked where it would outlive the run.  (Only
    # its own keys are looked for: other processes of this uid share @u.)
    leaked = _KERNEL_SERIALS & _in_own_user_keyrings()
    assert not leaked, f"the fuzz linked keys {sorted(leaked)} into the caller's @u or @us"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_public_api_answers_only_with_an_errno(request: pytest.FixtureRequest, backend: str, method: str) -> None:
    call, roles = METHODS[method]

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(args=st.tuples(*(_strategy(role, backend) for role in roles)))
    def check(args: tuple[Any, ...]) -> None:
        space = _space(backend)
        n = next(_counter)
        key = space.add_key("user", f"fz:key{n}", b"x", "@s")
        ring = space.add_key("keyring", f"fz:ring{n}", None, "@s")
        assert isinstance(ring, kt.Keyring)
        real = tuple(_substitute(a, key, ring) for a in args)
        if backend == "kernel":
            _KERNEL_SERIALS.update((key.serial, ring.serial))
        _assert_errno_only(method, lambda: call(space, key, ring, *real), backend == "kernel")

    check()


@pytest.mark.parametrize("syscall", sorted(KERNEL_SYSCALLS))
def test_kernel_syscalls_answer_only_with_an_errno(syscall: str) -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    call, roles = KERNEL_SYSCALLS[syscall]

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(args=st.tuples(*(_strategy(role, "kernel") for role in roles)))
    def check(args: tuple[Any, ...]) -> None:
        space = kt.KernelKeyspace(new_session=True)
        n = next(_counter)
        key = space.add_key("user", f"fz:key{n}", b"x", "@s")
        ring = space.add_key("keyring", f"fz:ring{n}", None, "@s")
        assert isinstance(ring, kt.Keyring)
        real = tuple(_substitute(a, key, ring, serials=True) for a in args)
        _KERNEL_SERIALS.update((key.serial, ring.serial))
        _assert_errno_only(syscall, lambda: call(space, *real), True)

    check()


def test_the_fuzz_reaches_past_the_argument_checks() -> None:
    # The sane pools must make real calls succeed, or the property only tests the checks.
    space = kt.Keyspace()
    key = space.add_key("user", "fz:key", b"x", "@s")
    ring = space.add_key("keyring", "fz:ring", None, "@s")
    assert isinstance(ring, kt.Keyring)
    ring.link(_substitute("<k>", key, ring))
    assert ring.search("user", "fz:key", _substitute("<r>", key, ring)) == key
    key.chown(-1, 0)
    key.set_timeout(100)
    key.set_perm(0x3F3F0000)
    assert key.describe().split(";")[2:4] == ["0", "3f3f0000"]
