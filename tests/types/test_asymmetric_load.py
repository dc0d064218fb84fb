"""The ``asymmetric`` key type: payloads, descriptions and errno, on both keyspaces.

Certificates are made at test time (tests/asym_certs.py); the kernel on the
reference machine loads RSA X.509 certificates but has neither the PKCS#8 parser
nor ECDSA, and the in-process type follows it except that it parses PKCS#8.
"""

from __future__ import annotations

import errno

import pytest
from asym_certs import ca_cert, cert, corrupt_signature, ec_key, leaf_cert, name, pkcs8, rsa_key
from conftest import errno_of, kernel_keyring_reachable, require
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

import keyring_types as kt
from keyring_types.constants import KEY_POS_ALL, KEY_POS_SETATTR


def _skid(der: bytes) -> str:
    ext = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    return ext.value.digest.hex()


def _desc(space: kt.KeyspaceAPI, der: bytes) -> str:
    return space.add_key("asymmetric", None, der, "@s").description


@pytest.mark.parametrize(
    ("subject", "shown"),
    [
        (name("Test Cert", "Example Org"), "Example Org: Test Cert"),
        # The CN alone when it starts with the O ...
        (name("Example Org signing key", "Example Org"), "Example Org signing key"),
        # ... or shares its first 7 bytes with it (both at least 7 long).
        (name("Example Corp key", "Example Org"), "Example Corp key"),
        (name("Exampl key", "Exampl"), "Exampl key"),
        (name("Short", "Shor"), "Short"),
        (name("CN only"), "CN only"),
        (name(o="O only"), "O only"),
        (name(email="who@example.org"), "who@example.org"),
        (name("x", "Org", "who@example.org"), "Org: x"),
        # The last CN wins; attribute order does not matter; nothing known: empty.
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "first"), x509.NameAttribute(NameOID.COMMON_NAME, "second")]), "second"),
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cn"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "org")]), "org: cn"),
        (x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "unit")]), ""),
        (name("Grüße", "Ünïcode Org"), "Ünïcode Org: Grüße"),
        # A BMPString's raw bytes start with NUL, which ends the C string.
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AB", _type=_ASN1Type.BMPString)]), ""),
    ],
)
def test_description_is_the_one_the_kernel_proposes(space: kt.KeyspaceAPI, subject: x509.Name, shown: str) -> None:
    der = cert(rsa_key("desc"), subject)
    assert _desc(space, der) == f"{shown}: {_skid(der)}"


def test_description_without_skid_uses_the_raw_serial(space: kt.KeyspaceAPI) -> None:
    # 0x80000001 has its top bit set: DER gives it a leading zero byte, which the hex keeps.
    der = cert(rsa_key("desc"), name("No Skid"), skid=False, serial=0x80000001)
    assert _desc(space, der) == "No Skid: 0080000001"


def test_a_given_description_wins_and_the_key_is_not_readable(space: kt.KeyspaceAPI) -> None:
    k = space.add_key("asymmetric", "mine", ca_cert(), "@s")
    assert k.describe() == f"asymmetric;{_uid()};{_gid()};39010000;mine"
    assert errno_of(k.read) == errno.EOPNOTSUPP
    assert errno_of(k.update, ca_cert()) == errno.EACCES  # no WRITE in the default mask
    k.set_perm(KEY_POS_ALL & ~KEY_POS_SETATTR)
    assert errno_of(k.update, ca_cert()) == errno.EOPNOTSUPP


def _uid() -> int:
    import os

    return os.getuid()


def _gid() -> int:
    import os

    return os.getgid()


def _ed25519_cert() -> bytes:
    import datetime

    from cryptography.hazmat.primitives import serialization

    key = ed25519.Ed25519PrivateKey.generate()
    when = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name("ed"))
        .issuer_name(name("ed"))
        .public_key(key.public_key())
        .serial_number(5)
        .not_valid_before(when)
        .not_valid_after(when.replace(year=2034))
        .sign(key, None)
        .public_bytes(serialization.Encoding.DER)
    )


@pytest.mark.parametrize(
    ("what", "make", "err"),
    [
        ("empty", lambda: b"", errno.EINVAL),
        ("garbage", lambda: b"hello world", errno.EBADMSG),
        ("truncated", lambda: ca_cert()[:-20], errno.EBADMSG),
        ("bad self-signature", lambda: corrupt_signature(ca_cert("selfbad")), errno.EINVAL),
        ("empty subject", lambda: cert(rsa_key("desc"), x509.Name([]), issuer=name("ca"), issuer_key=rsa_key("ca")), errno.EBADMSG),
        ("self-signed ECDSA (no ECDSA here)", lambda: cert(ec_key("e"), name("EC", "Org")), errno.ENOENT),
        ("Ed25519 (unknown algorithm)", _ed25519_cert, errno.ENOPKG),
    ],
)
def test_bad_payloads_get_the_kernels_errno(space: kt.KeyspaceAPI, what: str, make: object, err: int) -> None:
    assert callable(make)
    assert errno_of(space.add_key, "asymmetric", "x", make(), "@s") == err, what


def test_trailing_bytes_after_a_certificate_are_ignored(space: kt.KeyspaceAPI) -> None:
    der = ca_cert()
    assert _desc(space, der + b"\0\0") == _desc(space, der)


def test_pkcs8_loads_in_process_but_not_in_this_kernel(space: kt.KeyspaceAPI) -> None:
    blob = pkcs8(rsa_key("p8"))
    if isinstance(space, kt.KernelKeyspace):
        # This kernel is built without CONFIG_PKCS8_PRIVATE_KEY_PARSER: no parser knows the blob.
        assert errno_of(space.add_key, "asymmetric", "p8", blob, "@s") == errno.EBADMSG
        return
    assert errno_of(space.add_key, "asymmetric", None, blob, "@s") == errno.EINVAL  # no proposed description
    k = space.add_key("asymmetric", "p8", blob, "@s")
    assert k.description == "p8"
    assert isinstance(space, kt.Keyspace)
    assert any(line.endswith(" p8: PKCS8.rsa []") for line in space.proc_keys())
    assert errno_of(space.add_key, "asymmetric", "p8ec", pkcs8(ec_key("p8")), "@s") == errno.ENOPKG


def _proc_line(space: kt.KeyspaceAPI, serial: int) -> str:
    lines = space.proc_keys() if isinstance(space, kt.Keyspace) else open("/proc/keys").read().splitlines()
    (line,) = [ln for ln in lines if ln.startswith(f"{serial:08x} ")]
    return line[line.index("asymmetri") + 10 :]


@pytest.fixture
def both() -> tuple[kt.Keyspace, kt.KernelKeyspace]:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    return kt.Keyspace(), kt.KernelKeyspace(new_session=True)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ca_cert(),
        lambda: leaf_cert(),
        lambda: cert(rsa_key("small", 1024), name("Small", "Tiny Org")),
        lambda: cert(rsa_key("noskid"), name("No Skid", "Org"), skid=False),
        # An ECDSA key certified by an RSA CA: loads (not self-signed), key algorithm shown.
        lambda: cert(ec_key("e"), name("EC key", "Org"), issuer=name("ca root", "Example Org"), issuer_key=rsa_key("ca")),
    ],
)
def test_same_certificate_same_key_on_both_sides(both: tuple[kt.Keyspace, kt.KernelKeyspace], make: object) -> None:
    assert callable(make)
    der = make()
    ks, kk = both
    a = ks.add_key("asymmetric", None, der, "@s")
    b = kk.add_key("asymmetric", None, der, "@s")
    assert a.describe() == b.describe()
    assert _proc_line(ks, a.serial) == _proc_line(kk, b.serial)
