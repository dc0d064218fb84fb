"""``ring.restrict()`` (KEYCTL_RESTRICT_KEYRING) compared across the two keyspaces.

The same scenarios run on an in-process Keyspace and on the kernel; every step's
outcome (a serial's kind, or the errno) must agree.  The builtin trusted keyring
is empty in the kernel here, and per-Keyspace (fillable) in process.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from asym_certs import ca_cert, cert, corrupt_signature, leaf_cert, name, rsa_key
from conftest import errno_of, kernel_keyring_reachable, require

import keyring_types as kt
from keyring_types.constants import KEY_POS_ALL, KEY_POS_SETATTR
from keyring_types.types.asymmetric import (
    add_builtin_trusted_key,
    builtin_trusted_keyring,
    secondary_trusted_keyring,
)


def _outcome(fn: Callable[..., object], *args: object) -> str:
    try:
        fn(*args)
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]
    return "ok"


@pytest.fixture
def both() -> tuple[kt.Keyspace, kt.KernelKeyspace]:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    return kt.Keyspace(), kt.KernelKeyspace(new_session=True)


def _reject_all(ks: kt.KeyspaceAPI) -> list[str]:
    s = ks.session
    ring = ks.add_key("keyring", "r", None, s)
    inside = ks.add_key("user", "in", b"1", ring)
    outside = ks.add_key("user", "out", b"1", s)
    sub = ks.add_key("keyring", "sub", None, s)
    steps = [
        _outcome(ring.restrict),
        _outcome(ring.restrict),  # EEXIST
        _outcome(ring.restrict, "asymmetric", "builtin_trusted"),  # EEXIST too
        _outcome(ks.add_key, "user", "new", b"1", ring),  # EPERM
        _outcome(ks.add_key, "user", "in", b"2", ring),  # EPERM, before updating
        _outcome(ks.add_key, "keyring", "k", None, ring),
        _outcome(ring.link, outside),
        _outcome(ring.link, inside),  # even a key already there
        _outcome(ring.link, sub),
        _outcome(s.search, "user", "out", ring),  # search's destination
        _outcome(ks.request_key, "user", "out", None, ring),
        inside.read().decode(),  # the refused add_key did not update it
        _outcome(ring.unlink, inside),  # unlinking is not restricted
        _outcome(ring.clear),
    ]
    return steps


def test_reject_all(both: tuple[kt.Keyspace, kt.KernelKeyspace]) -> None:
    mine, kernel = (_reject_all(ks) for ks in both)
    assert mine == kernel
    assert mine[:4] == ["ok", "EEXIST", "EEXIST", "EPERM"] and mine[-3:] == ["1", "ok", "ok"]


def _arguments(ks: kt.KeyspaceAPI) -> list[str]:
    s = ks.session
    ring = ks.add_key("keyring", "args", None, s)
    user = ks.add_key("user", "u", b"x", s)
    trust = ks.add_key("keyring", "trust", None, s)
    r = ring.restrict
    out = [
        _outcome(r, "asymmetric", None),
        _outcome(r, None, "builtin_trusted"),
        _outcome(r, "no-such-type", "x"),
        _outcome(r, "user", "x"),
        _outcome(r, "keyring", "x"),
        _outcome(r, ".internal", "x"),
        _outcome(r, "", "x"),
        _outcome(r, "asymmetric", "x" * 5000),
    ]
    for spec in (
        "foo",
        "builtin",
        "key_or_keyring",
        "key_or_keyring:",
        "key_or_keyring:0",
        "key_or_keyring:2147483000",
        "key_or_keyring:-3",
        "key_or_keyring:abc",
        "key_or_keyring: 1",
        "key_or_keyring:99999999999",
        "key_or_keyring:0:chainx",
        "key_or_keyring:0:chain:x",
        f"key_or_keyring:{trust.serial}:",
    ):
        out.append(_outcome(r, "asymmetric", spec))
    out.append(_outcome(kt.Keyring(ks, user.serial).restrict))  # ENOTDIR
    closed = ks.add_key("keyring", "closed", None, s)
    closed.set_perm(KEY_POS_ALL & ~KEY_POS_SETATTR)
    out.append(_outcome(closed.restrict))  # EACCES
    # Accepted forms, one keyring each (a second restriction is EEXIST).
    for spec in (
        f"key_or_keyring:{trust.serial}",
        f"key_or_keyring:{trust.serial:#x}",
        f"key_or_keyring:+{trust.serial}\n",
        f"key_or_keyring:{trust.serial}:chain",
        f"key_or_keyring:{user.serial}",
        "key_or_keyring:0:chain",
        "builtin_trusted",
        "builtin_and_secondary_trusted",
    ):
        fresh = ks.add_key("keyring", f"ok{len(out)}", None, s)
        out.append(_outcome(fresh.restrict, "asymmetric", spec))
    return out


def test_argument_errors(both: tuple[kt.Keyspace, kt.KernelKeyspace]) -> None:
    mine, kernel = (_arguments(ks) for ks in both)
    assert mine == kernel
    assert mine[:4] == ["EINVAL", "EINVAL", "ENOKEY", "ENOENT"]
    assert mine[-8:] == ["ok"] * 8


def _cycle(ks: kt.KeyspaceAPI) -> list[str]:
    s = ks.session
    a, b, c = (ks.add_key("keyring", n, None, s) for n in "abc")
    return [
        _outcome(a.restrict, "asymmetric", f"key_or_keyring:{b.serial}"),
        _outcome(b.restrict, "asymmetric", f"key_or_keyring:{c.serial}:chain"),
        _outcome(c.restrict, "asymmetric", f"key_or_keyring:{a.serial}"),  # c -> a -> b -> c
        _outcome(c.restrict, "asymmetric", f"key_or_keyring:{c.serial}"),
    ]


def test_restriction_cycles(both: tuple[kt.Keyspace, kt.KernelKeyspace]) -> None:
    mine, kernel = (_cycle(ks) for ks in both)
    deadlock = errno.errorcode[errno.EDEADLK]
    assert mine == kernel == ["ok", "ok", deadlock, deadlock]


def _signatures(ks: kt.KeyspaceAPI) -> list[str]:
    s = ks.session
    ca = ks.add_key("asymmetric", None, ca_cert(), s)
    trust = ks.add_key("keyring", "trust", None, s)
    trust.link(ca)
    leaf, bad, stranger = leaf_cert(), corrupt_signature(leaf_cert()), leaf_cert("l2", "ca2")
    no_akid = cert(rsa_key("x"), name("x", "y"), issuer=name("ca root", "Example Org"), issuer_key=rsa_key("ca"), akid=False)
    sub = cert(rsa_key("sub"), name("sub", "S"), issuer=name("leaf signing key", "Leaf Ltd"), issuer_key=rsa_key("leaf"))
    out = []
    for spec in (
        f"key_or_keyring:{ca.serial}",
        f"key_or_keyring:{trust.serial}",
        "key_or_keyring:0:chain",
        f"key_or_keyring:{trust.serial}:chain",
        "builtin_trusted",
        "builtin_and_secondary_trusted",
    ):
        ring = ks.add_key("keyring", f"r{len(out)}", None, s)
        out.append(_outcome(ring.restrict, "asymmetric", spec))
        for der in (leaf, bad, stranger, no_akid, ca_cert(), sub):
            out.append(_outcome(ks.add_key, "asymmetric", None, der, ring))
        out.append(_outcome(ks.add_key, "user", "u", b"1", ring))  # EOPNOTSUPP
        out.append(_outcome(ring.link, trust))
        out.append(_outcome(ring.link, ks.add_key("asymmetric", None, leaf_cert("l3", "ca3"), s)))
    return out


def test_signature_restrictions(both: tuple[kt.Keyspace, kt.KernelKeyspace]) -> None:
    mine, kernel = (_signatures(ks) for ks in both)
    assert mine == kernel
    # key_or_keyring:<CA key>: the leaf goes in, a bad signature, a stranger and a user key do not.
    notsup = errno.errorcode[errno.EOPNOTSUPP]
    # key_or_keyring:<CA key>: the leaf and the CA's own certificate go in (found by key id, or
    # by issuer name without an AKID); a bad signature, a stranger, a user key, a keyring do not.
    assert mine[:10] == ["ok", "ok", "EINVAL", "ENOKEY", "ok", "ok", "ENOKEY", notsup, notsup, "ENOKEY"]
    # An empty keyring under key_or_keyring:0:chain accepts nothing, not even a self-signed root ...
    assert mine[20:30] == ["ok"] + ["ENOKEY"] * 6 + [notsup, notsup, "ENOKEY"]
    # ... while <trusted>:chain takes a certificate signed by one already in the keyring.
    assert mine[36] == "ok"


def test_builtin_trusted_keyring_in_process() -> None:
    ks = kt.Keyspace()
    ring = ks.add_key("keyring", "r", None, "@s")
    ring.restrict("asymmetric", "builtin_trusted")
    assert errno_of(ks.add_key, "asymmetric", None, leaf_cert(), ring) == errno.ENOKEY
    ca = add_builtin_trusted_key(ks, ca_cert())
    assert ca in builtin_trusted_keyring(ks).keys()
    assert builtin_trusted_keyring(ks).description == ".builtin_trusted_keys"
    assert ks.add_key("asymmetric", None, leaf_cert(), ring).description.startswith("Leaf Ltd: leaf signing key: ")
    assert errno_of(ks.add_key, "asymmetric", None, corrupt_signature(leaf_cert()), ring) == errno.EINVAL
    # The secondary keyring links the builtin one and is itself restricted to what they vouch for.
    other = ks.add_key("keyring", "o", None, "@s")
    other.restrict("asymmetric", "builtin_and_secondary_trusted")
    assert ks.add_key("asymmetric", None, leaf_cert(), other)
    secondary = secondary_trusted_keyring(ks)
    assert builtin_trusted_keyring(ks) in secondary.keys()
    assert errno_of(ks.add_key, "user", "u", b"1", secondary) == errno.EOPNOTSUPP  # certificates only
    # Another Keyspace has its own, empty, builtin keyring.
    ks2 = kt.Keyspace()
    r2 = ks2.add_key("keyring", "r", None, "@s")
    r2.restrict("asymmetric", "builtin_trusted")
    assert errno_of(ks2.add_key, "asymmetric", None, leaf_cert(), r2) == errno.ENOKEY
    assert errno_of(builtin_trusted_keyring, kt.KernelKeyspace()) == errno.EOPNOTSUPP


def test_the_restriction_holds_its_key() -> None:
    ks = kt.Keyspace()
    ca = ks.add_key("asymmetric", None, ca_cert(), "@s")
    ring = ks.add_key("keyring", "r", None, "@s")
    ring.restrict("asymmetric", f"key_or_keyring:{ca.serial}")
    ks.session.unlink(ca)  # no keyring links the CA key now: only the restriction holds it
    ks.gc()
    assert ks.add_key("asymmetric", None, leaf_cert(), ring)
    ca.describe()  # still there
    ks.session.unlink(ring)  # the keyring goes, and with it the hold
    ks.gc()
    assert ks.user_keyring  # any operation applies the released hold
    assert errno_of(ca.describe) == errno.ENOKEY


def test_revoked_trusted_key(both: tuple[kt.Keyspace, kt.KernelKeyspace]) -> None:
    out = []
    for ks in both:
        ca = ks.add_key("asymmetric", None, ca_cert(), "@s")
        ring = ks.add_key("keyring", "r", None, "@s")
        ring.restrict("asymmetric", f"key_or_keyring:{ca.serial}")
        ca.revoke()
        out.append(_outcome(ks.add_key, "asymmetric", None, leaf_cert(), ring))
    assert out == ["EKEYREVOKED", "EKEYREVOKED"]


def test_a_key_under_construction_is_linked_without_asking(both: tuple[kt.Keyspace, kt.KernelKeyspace]) -> None:
    """construct_alloc_key links the new, payload-less key into the destination without its
    restriction; the failed construction then leaves a negative key there, on both sides."""
    require(Path("/sbin/request-key").exists(), "/sbin/request-key (Debian package keyutils)")
    out = []
    for ks in both:
        ring = ks.add_key("keyring", "r", None, "@s")
        ring.restrict()
        got = _outcome(ks.request_key, "user", f"asym-restrict-{os.getpid()}", "callout", ring)
        out.append((got, [k.description for k in ring.keys()]))
    assert out[0] == out[1]
    assert out[0][0] == "ENOKEY" and len(out[0][1]) == 1


def test_instantiating_into_a_restricted_keyring_asks_it() -> None:
    """key_instantiate_and_link asks the destination's restriction about the new payload."""
    ks = kt.Keyspace()
    ring = ks.add_key("keyring", "r", None, "@s")
    ring.restrict()
    seen = []

    def handler(request: object) -> None:
        space = request.keyspace  # type: ignore[attr-defined]
        seen.append(_outcome(space.instantiate, request.key, b"payload", ring))  # type: ignore[attr-defined]
        space.instantiate(request.key, b"payload", 0)  # type: ignore[attr-defined]

    kt.register_request_key_handler("user", "asym-inst-*", handler)
    try:
        k = ks.request_key("user", "asym-inst-1", "callout")
    finally:
        kt.unregister_request_key_handler("user", "asym-inst-*")
    assert seen == ["EPERM"]
    assert k.read() == b"payload"
