"""``pkey_query/encrypt/decrypt/sign/verify`` compared across the two keyspaces.

The kernel here loads the certificate (public key) only, so private-key work is
done in process (the same key as PKCS#8) and checked by the kernel: signatures
made in process verify in the kernel, ciphertexts made by the kernel decrypt in
process, and every error is the kernel's.
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Callable

import pytest
from asym_certs import ca_cert, cert, ec_key, name, pkcs8, rsa_key
from conftest import errno_of, kernel_keyring_reachable, require
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keyring_types as kt
from keyring_types.core.pkey import PkeyQuery

_KEY = "pkey"


def _cert() -> bytes:
    return cert(rsa_key(_KEY), name("pkey test", "Example Org"))


@pytest.fixture
def keys() -> tuple[kt.Key, kt.Key, kt.Key]:
    """(in-process certificate key, in-process PKCS#8 private key, kernel certificate key): one RSA key."""
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    ks, kk = kt.Keyspace(), kt.KernelKeyspace(new_session=True)
    return (
        ks.add_key("asymmetric", None, _cert(), "@s"),
        ks.add_key("asymmetric", "private", pkcs8(rsa_key(_KEY)), "@s"),
        kk.add_key("asymmetric", None, _cert(), "@s"),
    )


def _outcome(fn: Callable[..., object], *args: object) -> object:
    try:
        return fn(*args)
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]


INFOS = [
    "",
    "enc=raw",
    "enc=pkcs1",
    "enc=pkcs1 hash=sha256",
    "  enc=pkcs1\thash=sha512  ",
    "enc=pkcs1 hash=sha1",
    "enc=pkcs1 hash=md5",
    "enc=pkcs1 hash=rmd160",
    "enc=pkcs1 hash=sha224",
    "enc=pkcs1 hash=sha3-256",
    "enc=pkcs1 hash=sha3-512",
    "enc=pkcs1 hash=md4",
    "enc=pkcs1 hash=sha3-224",
    "enc=pkcs1 hash=sm3",
    "enc=raw hash=sha256",
    "hash=sha256",
    "enc=oaep",
    "enc=pss hash=sha256",
    "enc=x962 hash=sha256",
    "enc=",
    "enc=pkcs1 enc=pkcs1",
    "foo=bar",
    "enc",
    "enc=pkcs1,hash=sha256",
    "enc=pkcs1 hash=sha512 x",
]


@pytest.mark.parametrize("info", INFOS)
def test_query_is_the_kernels(keys: tuple[kt.Key, kt.Key, kt.Key], info: str) -> None:
    mine, _priv, kernel = keys
    assert _outcome(mine.pkey_query, info) == _outcome(kernel.pkey_query, info)


def test_query_numbers() -> None:
    ks = kt.Keyspace()
    pub = ks.add_key("asymmetric", None, _cert(), "@s")
    priv = ks.add_key("asymmetric", "p", pkcs8(rsa_key(_KEY)), "@s")
    assert pub.pkey_query("enc=pkcs1 hash=sha256") == PkeyQuery(0x9, 2048, 256, 256, 256, 256)
    assert pub.pkey_query() == PkeyQuery(0x1, 2048, 256, 256, 256, 256)
    assert priv.pkey_query("enc=pkcs1").ops == {"encrypt", "decrypt", "sign", "verify"}
    assert priv.pkey_query("enc=raw").ops == {"encrypt", "decrypt"}


@pytest.mark.parametrize("hash_name", ["sha256", "sha1", "sha384", "sha512", "sha224", "md5", "sha3-256", "rmd160", None])
def test_signatures_made_in_process_verify_in_the_kernel(keys: tuple[kt.Key, kt.Key, kt.Key], hash_name: str | None) -> None:
    mine, priv, kernel = keys
    # Only the digest's length matters to the signature scheme (rmd160's is sha1's).
    algo = {None: "sha256", "rmd160": "sha1"}.get(hash_name, hash_name or "").replace("-", "_")
    digest = hashlib.new(algo, b"message").digest()
    info = "enc=pkcs1" + (f" hash={hash_name}" if hash_name else "")
    sig = priv.pkey_sign(info, digest)
    assert len(sig) == 256
    kernel.pkey_verify(info, digest, sig)
    mine.pkey_verify(info, digest, sig)
    if hash_name in ("sha256", "sha384", "sha512", "sha224"):
        # The same bytes any PKCS#1 v1.5 signer makes (deterministic).
        hash_cls = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512, "sha224": hashes.SHA224}
        h = hash_cls[hash_name]()
        assert sig == rsa_key(_KEY).sign(digest, padding.PKCS1v15(), utils.Prehashed(h))


def test_kernel_ciphertexts_decrypt_in_process(keys: tuple[kt.Key, kt.Key, kt.Key]) -> None:
    mine, priv, kernel = keys
    for msg in (b"hello", b"", b"x" * 245):
        ct = kernel.pkey_encrypt("enc=pkcs1", msg)
        assert len(ct) == 256
        assert priv.pkey_decrypt("enc=pkcs1", ct) == msg
        assert priv.pkey_decrypt("enc=pkcs1", mine.pkey_encrypt("enc=pkcs1", msg)) == msg
    # enc=raw is deterministic: both sides give the same bytes, and the private key undoes them.
    m = b"\x02" + b"raw block"
    assert mine.pkey_encrypt("enc=raw", m) == kernel.pkey_encrypt("enc=raw", m)
    assert priv.pkey_decrypt("enc=raw", kernel.pkey_encrypt("enc=raw", m)) == m


def _no_prefix_signature(digest: bytes) -> bytes:
    key = rsa_key(_KEY).private_numbers()
    block = b"\x00\x01" + b"\xff" * (256 - 3 - len(digest)) + b"\x00" + digest
    return pow(int.from_bytes(block, "big"), key.d, key.public_numbers.n).to_bytes(256, "big")


def test_verify_errors_are_the_kernels(keys: tuple[kt.Key, kt.Key, kt.Key]) -> None:
    mine, priv, kernel = keys
    d = hashlib.sha256(b"message").digest()
    sig = priv.pkey_sign("enc=pkcs1 hash=sha256", d)
    flipped = sig[:-1] + bytes([sig[-1] ^ 1])
    cases = [
        ("enc=pkcs1 hash=sha256", hashlib.sha256(b"other").digest(), sig),  # EKEYREJECTED
        ("enc=pkcs1 hash=sha256", d, flipped),  # EINVAL: no leading zero after RSA
        ("enc=pkcs1 hash=sha1", d, sig),  # EINVAL: a sha1 digest is 20 bytes
        ("enc=pkcs1 hash=sha256", d, _no_prefix_signature(d)),  # EBADMSG: no DigestInfo
        ("enc=pkcs1", d, sig),  # EKEYREJECTED: prefix left in what is compared
        ("enc=pkcs1", d, _no_prefix_signature(d)),  # good without a hash
        ("enc=raw", d, sig),  # ENOENT: raw is no signature scheme
        ("", d, sig),
        ("enc=pkcs1 hash=sha256", d, sig[1:]),  # EINVAL: length
        ("enc=pkcs1 hash=sha256", d, sig + b"\0"),  # EINVAL: over max_sig_size
        ("enc=pkcs1 hash=sha256", b"\0" * 257, sig),
        ("enc=pkcs1 hash=sha256", d, b"\xff" * 256),  # EINVAL: not below n
        ("enc=pkcs1 hash=sha256", d, b"\0" * 256),
        ("enc=pkcs1 hash=md4", d, sig),
    ]
    got = [_outcome(mine.pkey_verify, *c) for c in cases]
    assert got == [_outcome(kernel.pkey_verify, *c) for c in cases]
    assert got[0] == "EKEYREJECTED" and got[3] == "EBADMSG" and got[5] is None and got[6] == "ENOENT"


def test_encrypt_sign_decrypt_errors_are_the_kernels(keys: tuple[kt.Key, kt.Key, kt.Key]) -> None:
    mine, _priv, kernel = keys
    n = rsa_key(_KEY).public_key().public_numbers().n
    d = hashlib.sha256(b"m").digest()
    cases: list[tuple[str, str, bytes]] = [
        ("encrypt", "enc=pkcs1", b"x" * 246),  # EOVERFLOW: over k-11
        ("encrypt", "enc=pkcs1", b"x" * 257),  # EINVAL: over max_dec_size
        ("encrypt", "enc=pkcs1 hash=sha256", b"x"),
        ("encrypt", "enc=raw", b""),  # EINVAL: 0 is out of range
        ("encrypt", "enc=raw", b"\x01"),
        ("encrypt", "enc=raw", (n - 1).to_bytes(256, "big")),
        ("encrypt", "enc=raw", n.to_bytes(256, "big")),
        ("encrypt", "enc=md4", b"x"),
        ("sign", "enc=pkcs1 hash=sha256", d),  # EINVAL: a certificate has no private key
        ("sign", "enc=raw", d),
        ("decrypt", "enc=pkcs1", b"\1" * 256),
        ("decrypt", "enc=raw", b"\1" * 256),
    ]
    ops = {"encrypt": "pkey_encrypt", "sign": "pkey_sign", "decrypt": "pkey_decrypt"}
    for op, info, data in cases:
        a = _outcome(getattr(mine, ops[op]), info, data)
        b = _outcome(getattr(kernel, ops[op]), info, data)
        assert a == b or (isinstance(a, bytes) and isinstance(b, bytes)), (op, info, len(data), a, b)


def test_private_key_errors() -> None:
    ks = kt.Keyspace()
    priv = ks.add_key("asymmetric", "p", pkcs8(rsa_key(_KEY)), "@s")
    d = hashlib.sha256(b"m").digest()
    assert errno_of(priv.pkey_sign, "enc=pkcs1 hash=sha256", d[:31]) == errno.EINVAL
    assert errno_of(priv.pkey_decrypt, "enc=pkcs1", b"\1" * 255) == errno.EINVAL  # not k bytes
    assert errno_of(priv.pkey_decrypt, "enc=pkcs1", b"\0" + b"\1" * 255) == errno.EINVAL  # bad padding
    assert errno_of(priv.pkey_sign, "enc=pkcs1", b"x" * 246) == errno.EOVERFLOW
    assert errno_of(priv.pkey_sign, "enc=raw", d) == errno.EINVAL


def test_non_asymmetric_keys_and_bad_arguments(space: kt.KeyspaceAPI) -> None:
    user = space.add_key("user", "u", b"x", "@s")
    assert errno_of(user.pkey_query, "") == errno.EOPNOTSUPP
    assert errno_of(user.pkey_encrypt, "enc=pkcs1", b"x") == errno.EOPNOTSUPP
    assert errno_of(space.session.pkey_query, "") == errno.EOPNOTSUPP
    # The info string is parsed before the key is looked up.
    missing = kt.Key(space, 0x7FFFFFF0)
    assert errno_of(missing.pkey_query, "foo=bar") == errno.EINVAL
    assert errno_of(missing.pkey_query, "") == errno.ENOKEY
    k = space.add_key("asymmetric", None, ca_cert(), "@s")
    assert errno_of(k.pkey_query, "enc=pkcs1 " * 1000) == errno.EINVAL
    assert errno_of(k.pkey_query, None) == errno.EFAULT
    assert errno_of(k.pkey_encrypt, "enc=pkcs1", 5) == errno.EINVAL
    k.revoke()
    assert errno_of(k.pkey_query, "") == errno.EKEYREVOKED


def test_ecdsa_keys_have_no_algorithm_here(space: kt.KeyspaceAPI) -> None:
    der = cert(ec_key("e"), name("EC key", "Org"), issuer=name("ca root", "Example Org"), issuer_key=rsa_key("ca"))
    k = space.add_key("asymmetric", None, der, "@s")
    assert errno_of(k.pkey_query, "enc=x962 hash=sha256") == errno.ENOENT
    assert errno_of(k.pkey_query, "enc=p1363 hash=sha3-256") == errno.ENOENT
    for info in ("", "enc=pkcs1", "enc=x962", "enc=x962 hash=md5"):
        assert errno_of(k.pkey_query, info) == errno.EINVAL


def test_other_users_view_and_search_permission(space: kt.KeyspaceAPI, need_root: None) -> None:
    k = space.add_key("asymmetric", None, _cert(), "@s")
    other = space.as_user(4242, 4242)  # same session: possesses the key, so may SEARCH it
    theirs = kt.Key(other, k.serial)
    assert theirs.pkey_query("enc=pkcs1 hash=sha256") == k.pkey_query("enc=pkcs1 hash=sha256")
    d = hashlib.sha256(b"m").digest()
    sig = kt.Keyspace().add_key("asymmetric", "p", pkcs8(rsa_key(_KEY)), "@s").pkey_sign("enc=pkcs1 hash=sha256", d)
    theirs.pkey_verify("enc=pkcs1 hash=sha256", d, sig)
    assert len(theirs.pkey_encrypt("enc=pkcs1", b"x")) == 256
    assert errno_of(theirs.pkey_verify, "enc=pkcs1 hash=sha256", hashlib.sha256(b"n").digest(), sig) == errno.EKEYREJECTED
    from keyring_types.constants import KEY_POS_VIEW, KEY_USR_VIEW

    k.set_perm(KEY_POS_VIEW | KEY_USR_VIEW)  # nobody may SEARCH it now
    assert errno_of(k.pkey_query, "") == errno.EACCES
    assert errno_of(theirs.pkey_query, "") == errno.EACCES


def test_the_fast_paths_give_the_kernels_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Signing and verifying through ``cryptography`` (for speed) is byte for byte the RSA path."""
    from keyring_types.types import asymmetric_rsa

    ks = kt.Keyspace()
    priv = ks.add_key("asymmetric", "p", pkcs8(rsa_key(_KEY)), "@s")
    pub = ks.add_key("asymmetric", None, _cert(), "@s")
    d = hashlib.sha384(b"m").digest()
    fast = priv.pkey_sign("enc=pkcs1 hash=sha384", d)
    monkeypatch.setattr(asymmetric_rsa, "_fast_sign", lambda *a: None)
    monkeypatch.setattr(asymmetric_rsa, "_fast_verify", lambda *a: False)
    assert priv.pkey_sign("enc=pkcs1 hash=sha384", d) == fast
    pub.pkey_verify("enc=pkcs1 hash=sha384", d, fast)
    assert errno_of(pub.pkey_verify, "enc=pkcs1 hash=sha384", hashlib.sha384(b"n").digest(), fast) == errno.EKEYREJECTED


_PIECES = st.sampled_from(
    ["enc=", "hash=", "pkcs1", "raw", "sha256", "sha1", "md4", "sha3-512", "x962", " ", "\t", "=", "enc", "hash", ",", "foo"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(_PIECES, max_size=8), data=st.binary(max_size=300))
def test_random_info_strings_and_inputs_agree(keys: tuple[kt.Key, kt.Key, kt.Key], pieces: list[str], data: bytes) -> None:
    mine, _priv, kernel = keys
    info = "".join(pieces)
    assert _outcome(mine.pkey_query, info) == _outcome(kernel.pkey_query, info)
    a, b = _outcome(mine.pkey_encrypt, info, data), _outcome(kernel.pkey_encrypt, info, data)
    # pkcs1 pads with random bytes: equal outcomes means the same errno, or both made a block.
    assert a == b or (isinstance(a, bytes) and isinstance(b, bytes) and len(a) == len(b) == 256)
    sig = data[:256].rjust(256, b"\0")
    assert _outcome(mine.pkey_verify, info, data[:64], sig) == _outcome(kernel.pkey_verify, info, data[:64], sig)
