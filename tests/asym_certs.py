"""Certificates and keys for the asymmetric tests, made at test time with ``cryptography``.

Keys are cached per process (RSA key generation is the slow part); every
certificate is built fresh from them, so each test sees the same bytes.
"""

from __future__ import annotations

import datetime
import functools

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

_EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
_END = datetime.datetime(2044, 1, 1, tzinfo=datetime.UTC)


@functools.cache
def rsa_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """A private RSA key, the same one for the same ``name`` within a run."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_key(name: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def name(cn: str | None = None, o: str | None = None, email: str | None = None) -> x509.Name:
    attrs = []
    if o is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    if email is not None:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attrs)


def cert(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    *,
    issuer: x509.Name | None = None,
    issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
    serial: int = 0x1234ABCD,
    skid: bool = True,
    akid: bool = True,
    ca: bool = False,
    hash_alg: hashes.HashAlgorithm | None = None,
) -> bytes:
    """A DER certificate for ``key``; self-signed unless ``issuer``/``issuer_key`` are given."""
    signer = issuer_key or key
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_EPOCH)
        .not_valid_after(_END)
    )
    if skid:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if akid:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return b.sign(signer, hash_alg or hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def pkcs8(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def corrupt_signature(der: bytes) -> bytes:
    """``der`` with the last byte of its signature flipped (still a well-formed certificate)."""
    return der[:-1] + bytes([der[-1] ^ 0x01])


def ca_cert(tag: str = "ca") -> bytes:
    return cert(rsa_key(tag), name(f"{tag} root", "Example Org"), ca=True, serial=1)


def leaf_cert(tag: str = "leaf", ca: str = "ca", serial: int = 7) -> bytes:
    """A certificate for ``rsa_key(tag)`` signed by ``ca_cert(ca)``'s key."""
    return cert(
        rsa_key(tag),
        name(f"{tag} signing key", "Leaf Ltd"),
        issuer=name(f"{ca} root", "Example Org"),
        issuer_key=rsa_key(ca),
        serial=serial,
    )
