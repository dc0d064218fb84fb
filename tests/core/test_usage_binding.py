"""Keys bound to one use (core/usage.py): the binding, who may have the plaintext, and the helpers."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from conftest import errno_of, kernel_keyring_reachable, require
from vector_data import load_vectors

import keyring_types as kt
from keyring_types.hmac import HmacSha256
from keyring_types.integrations import dmcrypt, fscrypt, luks
from keyring_types.rpmb import frames

KEY32 = bytes(range(32))


@pytest.fixture
def ks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> kt.Keyspace:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("KEYRING_TYPES_TRUST_SOURCE", "host")
    return kt.Keyspace()


def test_a_bound_key_goes_only_to_its_consumer(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "disk", KEY32, "@s", usage="fscrypt")
    assert k.usage == "fscrypt"
    with k.secret(consumer="fscrypt") as mv:
        assert bytes(mv) == KEY32
    assert errno_of(lambda: k.secret().__enter__()) == errno.EKEYREJECTED
    assert errno_of(lambda: k.secret(consumer="luks").__enter__()) == errno.EKEYREJECTED
    assert errno_of(k.read) == errno.EKEYREJECTED  # a user key's read is its plaintext
    assert k.describe().endswith(";disk")  # the kernel's format: no binding in it
    unbound = ks.add_key("user", "other", KEY32, "@s")
    assert unbound.usage is None and unbound.read() == KEY32
    with unbound.secret(consumer="luks") as mv:  # an unbound key goes to anyone allowed
        assert bytes(mv) == KEY32


def test_message_names_the_binding_not_the_key(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "disk", KEY32, "@s", usage="dm-crypt")
    with pytest.raises(OSError) as info:
        k.secret(consumer="fscrypt").__enter__()
    assert "bound to use 'dm-crypt'" in str(info.value) and "'fscrypt'" in str(info.value)
    assert KEY32.hex() not in str(info.value)


def test_a_sealed_key_is_not_read_out_either(ks: kt.Keyspace) -> None:
    # Its blob would load again as an unbound copy of the same secret.
    t = ks.add_key("trusted", "vk", "new 32", "@s", usage="luks")
    assert errno_of(t.read) == errno.EKEYREJECTED
    assert errno_of(lambda: t.secret().__enter__()) == errno.EKEYREJECTED
    with t.secret(consumer="luks") as mv:
        assert len(mv) == 32
    ks.add_key("user", "kmk", KEY32, "@s")
    e = ks.add_key("encrypted", "ek", "new user:kmk 32", "@s", usage="fscrypt")
    assert errno_of(e.read) == errno.EKEYREJECTED
    assert ks.add_key("encrypted", "free", "new user:kmk 32", "@s").read()  # unbound: the blob as ever


def test_binding_is_made_only_at_creation(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "disk", KEY32, "@s", usage="fscrypt")
    # add_key over it with another binding, or none where there was none: refused, nothing changes
    assert errno_of(ks.add_key, "user", "disk", b"x" * 32, "@s", usage="luks") == errno.EKEYREJECTED
    with k.secret(consumer="fscrypt") as mv:
        assert bytes(mv) == KEY32
    plain = ks.add_key("user", "plain", KEY32, "@s")
    assert errno_of(ks.add_key, "user", "plain", KEY32, "@s", usage="fscrypt") == errno.EKEYREJECTED
    assert plain.usage is None
    # updating without naming a use keeps the binding
    again = ks.add_key("user", "disk", b"y" * 32, "@s")
    assert again.serial == k.serial and k.usage == "fscrypt"
    k.update(b"z" * 32)
    assert k.usage == "fscrypt"
    with k.secret(consumer="fscrypt") as mv:
        assert bytes(mv) == b"z" * 32


@pytest.mark.parametrize("bad", ["", "FS", "has space", "x" * 33, 7])
def test_a_bad_usage_name_is_einval_and_makes_no_key(ks: kt.Keyspace, bad: object) -> None:
    assert errno_of(ks.add_key, "user", "k", KEY32, "@s", usage=bad) == errno.EINVAL
    assert errno_of(ks.request_key, "user", "k") == errno.ENOKEY


def test_the_kernel_keyring_cannot_bind() -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    kk = kt.KernelKeyspace(new_session=True)
    assert errno_of(kk.add_key, "user", "bound", KEY32, "@s", usage="fscrypt") == errno.EOPNOTSUPP
    assert errno_of(kk.request_key, "user", "bound") == errno.ENOKEY
    k = kk.add_key("user", "free", KEY32, "@s")
    assert k.usage is None
    with k.secret(consumer="fscrypt") as mv:
        assert bytes(mv) == KEY32
    k.invalidate()


def test_the_helpers_refuse_keys_bound_elsewhere(ks: kt.Keyspace, tmp_path: Path) -> None:
    for_luks = ks.add_key("user", "vk", KEY32 * 2, "@s", usage="luks")
    # fscrypt and dm-crypt refuse it before touching a filesystem or the kernel
    assert errno_of(fscrypt.add_key, tmp_path / "no-such-mount", for_luks) == errno.EKEYREJECTED
    assert errno_of(dmcrypt.table_key, for_luks) == errno.EKEYREJECTED
    assert errno_of(dmcrypt.load_volume_key, for_luks, "6f1e2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b") == errno.EKEYREJECTED
    assert errno_of(frames.sign, for_luks, bytearray(512)) == errno.EKEYREJECTED
    # and the helpers that match take it
    for_dm = ks.add_key("user", "dm", KEY32, "@s", usage="dm-crypt")
    assert dmcrypt.table_key(for_dm) == ":32:user:dm"
    assert errno_of(luks.format, tmp_path / "img", for_dm, b"pass") == errno.EKEYREJECTED


def test_rpmb_frames_and_hmac_take_an_rpmb_key(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "rpmb", KEY32, "@s", usage="rpmb")
    buf = bytearray(512)
    frames.sign(k, buf)
    assert frames.verify(k, buf)
    assert frames.verify(HmacSha256(KEY32), buf)
    h = HmacSha256.from_key(k, consumer="rpmb")
    assert h.mac(b"x") == HmacSha256(KEY32).mac(b"x")
    assert errno_of(HmacSha256.from_key, k) == errno.EKEYREJECTED


def test_an_encrypted_key_takes_a_master_bound_to_encrypted_only(ks: kt.Keyspace) -> None:
    ks.add_key("user", "kmk", KEY32, "@s", usage="encrypted")
    e = ks.add_key("encrypted", "ek", "new user:kmk 32", "@s")
    blob = e.read()
    assert ks.add_key("encrypted", "ek-again", b"load " + blob, "@s").read()
    # a blob under kmk2, made where kmk2 is an ordinary key
    elsewhere = kt.Keyspace()
    elsewhere.add_key("user", "kmk2", KEY32, "@s")
    blob2 = elsewhere.add_key("encrypted", "ek2", "new user:kmk2 32", "@s").read()
    ks.add_key("user", "kmk2", KEY32, "@s", usage="fscrypt")
    assert errno_of(ks.add_key, "encrypted", "ek2", b"load " + blob2, "@s") == errno.EKEYREJECTED
    # "new" needs no master until the blob is made, as in the kernel: read() is refused
    fresh = ks.add_key("encrypted", "ek3", "new user:kmk2 32", "@s")
    assert errno_of(fresh.read) == errno.EKEYREJECTED
    ks.add_key("trusted", "tkmk", "new 32", "@s", usage="dm-crypt")
    assert errno_of(ks.add_key("encrypted", "ek4", "new trusted:tkmk 32", "@s").read) == errno.EKEYREJECTED


def test_dh_compute_refuses_bound_keys(ks: kt.Keyspace) -> None:
    # DH with a prime the caller picks would hand the private value back.
    v = load_vectors("dh_compute")[0]
    prime = ks.add_key("user", "p", bytes.fromhex(v["prime"]), "@s")
    base = ks.add_key("user", "g", bytes.fromhex(v["base"]), "@s")
    free = ks.add_key("user", "x", bytes.fromhex(v["private"]), "@s")
    assert ks.dh_compute(free, prime, base) == bytes.fromhex(v["expected"])
    bound = ks.add_key("user", "xb", bytes.fromhex(v["private"]), "@s", usage="rpmb")
    assert errno_of(ks.dh_compute, bound, prime, base) == errno.EKEYREJECTED
