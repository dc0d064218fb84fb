"""Random sequences of restrict / add / link / search / revoke on asymmetric keys and
keyrings, run on an in-process Keyspace and on the kernel side by side: every
step's outcome (which slot a new key fills, or the errno) must agree.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable

import pytest
from asym_certs import ca_cert, cert, corrupt_signature, leaf_cert, name, rsa_key
from conftest import kernel_keyring_reachable, require
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keyring_types as kt


@functools.cache
def _certs() -> tuple[bytes, ...]:
    return (
        ca_cert(),
        leaf_cert(),
        corrupt_signature(leaf_cert()),
        leaf_cert("l2", "ca2"),
        ca_cert("ca2"),
        cert(rsa_key("sub"), name("sub", "S"), issuer=name("leaf signing key", "Leaf Ltd"), issuer_key=rsa_key("leaf")),
        cert(rsa_key("x"), name("x", "y"), issuer=name("ca root", "Example Org"), issuer_key=rsa_key("ca"), akid=False),
    )


SLOT = st.integers(0, 7)
OPS = st.one_of(
    st.tuples(st.just("ring"), st.integers(0, 3), SLOT),
    st.tuples(st.just("user"), st.integers(0, 2), SLOT),
    st.tuples(st.just("cert"), st.integers(0, 6), SLOT),
    st.tuples(st.just("link"), SLOT, SLOT),
    st.tuples(st.just("unlink"), SLOT, SLOT),
    st.tuples(st.just("restrict"), SLOT, st.integers(0, 6), SLOT),
    st.tuples(st.just("search"), SLOT, st.integers(0, 6), SLOT),
    st.tuples(st.just("revoke"), SLOT),
)


def _run(ks: kt.KeyspaceAPI, ops: list[tuple[object, ...]]) -> list[str]:
    """Each op's outcome; new keys fill slots (slot 0 is the session keyring)."""
    slots: list[kt.Key] = [ks.session]
    holders = ks.add_key("keyring", "holders", None, ks.session)

    def slot(i: object) -> kt.Key:
        assert isinstance(i, int)
        return slots[i % len(slots)]

    def ring(i: object) -> kt.Keyring:
        k = slot(i)
        return k if isinstance(k, kt.Keyring) else kt.Keyring(ks, k.serial)

    def new(k: kt.Key) -> str:
        if k in slots:
            return f"slot{slots.index(k)}"
        # A holder keyring of its own keeps the key alive when a same-named key displaces
        # it elsewhere: the kernel frees a displaced key later (GC), a Keyspace at once,
        # and that difference is not what this test is about.
        ks.add_key("keyring", f"holder{len(slots)}", None, holders).link(k)
        slots.append(k)
        return f"new{len(slots) - 1}"

    out = []
    for op in ops:
        kind = op[0]
        step: Callable[[], str]
        if kind == "ring":
            step = lambda op=op: new(ks.add_key("keyring", f"r{op[1]}", None, ring(op[2])))  # noqa: E731
        elif kind == "user":
            step = lambda op=op: new(ks.add_key("user", f"u{op[1]}", b"x", ring(op[2])))  # noqa: E731
        elif kind == "cert":
            step = lambda op=op: new(ks.add_key("asymmetric", None, _certs()[op[1]], ring(op[2])))  # noqa: E731
        elif kind == "link":
            step = lambda op=op: str(ring(op[2]).link(slot(op[1])))  # noqa: E731
        elif kind == "unlink":
            step = lambda op=op: str(ring(op[2]).unlink(slot(op[1])))  # noqa: E731
        elif kind == "restrict":
            specs = [
                None,
                "builtin_trusted",
                "builtin_and_secondary_trusted",
                "key_or_keyring:{}",
                "key_or_keyring:{}:chain",
                "key_or_keyring:0:chain",
                "key_or_keyring:{}:x",
            ]

            def step(op: tuple[object, ...] = op, specs: list[str | None] = specs) -> str:
                spec = specs[op[2]]  # type: ignore[index]
                if spec is None:
                    return str(ring(op[1]).restrict())
                return str(ring(op[1]).restrict("asymmetric", spec.format(slot(op[3]).serial)))
        elif kind == "search":
            descs = [f"r{i}" for i in range(4)] + ["u0", "u1", "u2"]

            def step(op: tuple[object, ...] = op, descs: list[str] = descs) -> str:
                d = descs[op[2]]  # type: ignore[index]
                return new(ring(op[1]).search("keyring" if d[0] == "r" else "user", d, ring(op[3])))
        else:
            # Not the session keyring (slot 0): what a revoked session does is another test's.
            step = lambda op=op: str(slots[1 + op[1] % (len(slots) - 1)].revoke()) if len(slots) > 1 else "-"  # noqa: E731
        try:
            out.append(step())
        except OSError as exc:
            out.append(errno.errorcode[exc.errno or 0])
    return out


@pytest.fixture(scope="module")
def kernel_ok() -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=25))
def test_restricted_keyrings_agree_with_the_kernel(kernel_ok: None, ops: list[tuple[object, ...]]) -> None:
    mine = _run(kt.Keyspace(), ops)
    kernel = _run(kt.KernelKeyspace(new_session=True), ops)
    assert mine == kernel, list(zip(ops, mine, kernel, strict=True))
