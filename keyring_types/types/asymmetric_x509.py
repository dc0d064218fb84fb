"""Parsing ``asymmetric`` key payloads as the kernel's parsers do (crypto/asymmetric_keys/
x509_cert_parser.c, x509_public_key.c, pkcs8_parser.c).

``cryptography`` checks that a blob is a well-formed certificate or PKCS#8 key and
provides the key; a small DER walk takes the raw fields the kernel builds its
description and key identifiers from (serial, issuer and subject bytes, the
subject and authority key identifiers), so they match byte for byte.
"""

from __future__ import annotations

import errno
import hashlib
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keyring_types.errors import error

__all__ = ["AsymmetricPayload", "CertSignature", "parse_asymmetric"]

_SEQ, _SET, _INT, _OCTETS, _OID, _BITS = 0x30, 0x31, 0x02, 0x04, 0x06, 0x03

_OID_CN = bytes.fromhex("550403")
_OID_O = bytes.fromhex("55040a")
_OID_EMAIL = bytes.fromhex("2a864886f70d010901")
_OID_SKID = bytes.fromhex("551d0e")
_OID_AKID = bytes.fromhex("551d23")
_OID_RSA = bytes.fromhex("2a864886f70d010101")
_OID_EC = bytes.fromhex("2a8648ce3d0201")
_CURVES = {
    bytes.fromhex("2a8648ce3d030101"): "ecdsa-nist-p192",
    bytes.fromhex("2a8648ce3d030107"): "ecdsa-nist-p256",
    bytes.fromhex("2b81040022"): "ecdsa-nist-p384",
    bytes.fromhex("2b81040023"): "ecdsa-nist-p521",
}
#: Signature algorithm OID -> (pkey_algo, hash_algo, encoding), as x509_note_sig_algo names them.
_SIG_ALGOS = {
    bytes.fromhex("2a864886f70d010104"): ("rsa", "md5", "pkcs1"),
    bytes.fromhex("2a864886f70d010105"): ("rsa", "sha1", "pkcs1"),
    bytes.fromhex("2a864886f70d01010b"): ("rsa", "sha256", "pkcs1"),
    bytes.fromhex("2a864886f70d01010c"): ("rsa", "sha384", "pkcs1"),
    bytes.fromhex("2a864886f70d01010d"): ("rsa", "sha512", "pkcs1"),
    bytes.fromhex("2a864886f70d01010e"): ("rsa", "sha224", "pkcs1"),
    bytes.fromhex("60864801650304030e"): ("rsa", "sha3-256", "pkcs1"),
    bytes.fromhex("60864801650304030f"): ("rsa", "sha3-384", "pkcs1"),
    bytes.fromhex("6086480165030403" "10"): ("rsa", "sha3-512", "pkcs1"),
    bytes.fromhex("2a8648ce3d0401"): ("ecdsa", "sha1", "x962"),
    bytes.fromhex("2a8648ce3d040301"): ("ecdsa", "sha224", "x962"),
    bytes.fromhex("2a8648ce3d040302"): ("ecdsa", "sha256", "x962"),
    bytes.fromhex("2a8648ce3d040303"): ("ecdsa", "sha384", "x962"),
    bytes.fromhex("2a8648ce3d040304"): ("ecdsa", "sha512", "x962"),
}
_HASHES = {
    "md5": "md5",
    "sha1": "sha1",
    "sha224": "sha224",
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
    "sha3-256": "sha3_256",
    "sha3-384": "sha3_384",
    "sha3-512": "sha3_512",
}


@attrs.frozen
class CertSignature:
    """``struct public_key_signature`` of a certificate: who signed it and over what."""

    #: (issuer+serial id, key id) from the authority key identifier, None where absent,
    #: and the issuer's name (matched against a signer's subject when both are absent).
    auth_ids: tuple[bytes | None, bytes | None, bytes | None]
    digest: bytes
    s: bytes
    pkey_algo: str
    hash_algo: str
    encoding: str


@attrs.define(eq=False)
class AsymmetricPayload:
    """An asymmetric key's payload: the key, its identifiers and its certificate's signature."""

    id_type: str
    pkey_algo: str
    #: kids id[0] (serial + issuer), id[1] (subject key id), id[2] (subject); None where absent.
    kids: tuple[bytes | None, bytes | None, bytes | None]
    public_key: Any
    private_key: Any = None
    auth: CertSignature | None = None
    #: The certificate verified its own signature (the kernel's self_signed flag).
    self_signed: bool = False
    #: The certificate's DER (what a store writes for the key); empty for PKCS#8.
    der: bytes = b""

    def wipe(self) -> None:
        self.private_key = None


def _tlv(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """(tag, content start, content end, header length) of the element at ``pos``; EBADMSG if malformed."""
    if pos + 2 > len(data):
        raise error(errno.EBADMSG, "truncated ASN.1 element")
    tag, first = data[pos], data[pos + 1]
    hdr = 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + 2 + n > len(data):
            raise error(errno.EBADMSG, "bad ASN.1 length")
        length = int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
        hdr += n
    start = pos + hdr
    if start + length > len(data):
        raise error(errno.EBADMSG, "ASN.1 element overruns its container")
    return tag, start, start + length, hdr


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, s, e, hdr = _tlv(data, pos)
        out.append((tag, s, e, hdr))
        pos = e
    return out


def _fabricate_name(data: bytes, start: int, end: int) -> str:
    """``x509_fabricate_name``: "<O>: <CN>", or the CN alone when it starts with the O (or
    shares its first 7 bytes), else CN, O or email alone; the last of each kind wins."""
    cn = o = email = None
    for _t, s, e, _h in _children(data, start, end):  # SET OF
        for _t2, s2, e2, _h2 in _children(data, s, e):  # AttributeTypeAndValue
            parts = _children(data, s2, e2)
            if len(parts) < 2 or parts[0][0] != _OID:
                raise error(errno.EBADMSG, "bad name attribute")
            oid = data[parts[0][1] : parts[0][2]]
            value = data[parts[1][1] : parts[1][2]]
            if oid == _OID_CN:
                cn = value
            elif oid == _OID_O:
                o = value
            elif oid == _OID_EMAIL:
                email = value
    if cn and o:
        if len(cn) >= len(o) and cn[: len(o)] == o:
            name = cn
        elif len(cn) >= 7 and len(o) >= 7 and cn[:7] == o[:7]:
            name = cn
        else:
            name = o + b": " + cn
    else:
        name = cn or o or email or b""
    # The name is a C string to the kernel: a NUL (a BMPString's first byte) ends it.
    return name.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _parse_x509(data: bytes) -> tuple[str, AsymmetricPayload]:
    tag, s, e, _h = _tlv(data, 0)
    try:
        # The kernel's decoder stops at the end of the certificate: what follows is ignored.
        cert = x509.load_der_x509_certificate(data[:e])
    except ValueError:
        raise error(errno.EBADMSG, "not a DER X.509 certificate") from None
    top = _children(data, s, e)
    if tag != _SEQ or len(top) != 3:
        raise error(errno.EBADMSG, "not a DER X.509 certificate")
    _tbs_tag, tbs_s, tbs_e, tbs_h = top[0]
    tbs = data[tbs_s - tbs_h : tbs_e]
    fields = _children(data, tbs_s, tbs_e)
    i = 1 if fields and fields[0][0] == 0xA0 else 0
    serial = data[fields[i][1] : fields[i][2]]
    issuer = data[fields[i + 2][1] : fields[i + 2][2]]
    subject_el = fields[i + 4]
    subject = data[subject_el[1] : subject_el[2]]
    if not subject:
        # The reference kernel refuses a certificate whose subject has no name at all
        # (an empty issuer passes), subjectAltName or not.
        raise error(errno.EBADMSG, "certificate has an empty subject")
    spki = fields[i + 5]
    alg_el = _children(data, spki[1], spki[2])[0]
    alg = _children(data, alg_el[1], alg_el[2])
    key_oid = data[alg[0][1] : alg[0][2]]
    if key_oid == _OID_RSA:
        pkey_algo = "rsa"
    elif key_oid == _OID_EC and len(alg) > 1 and data[alg[1][1] : alg[1][2]] in _CURVES:
        pkey_algo = _CURVES[data[alg[1][1] : alg[1][2]]]
    else:
        raise error(errno.ENOPKG, "certificate's public key algorithm is not supported")
    skid = akid_kid = akid_serial = akid_issuer = None
    for tag_x, xs, xe, _hx in fields[i + 6 :]:
        if tag_x != 0xA3:
            continue
        for _t, es, ee, _eh in _children(data, *_children(data, xs, xe)[0][1:3]):
            ext = _children(data, es, ee)
            oid = data[ext[0][1] : ext[0][2]]
            value = data[ext[-1][1] : ext[-1][2]]
            if oid == _OID_SKID:
                if len(value) < 2 or value[0] != _OCTETS or value[1] != len(value) - 2:
                    raise error(errno.EBADMSG, "bad subject key identifier")
                skid = value[2:]
            elif oid == _OID_AKID:
                _vt, vs, ve, _vh = _tlv(value, 0)
                for t3, s3, e3, _h3 in _children(value, vs, ve):
                    if t3 == 0x80:
                        akid_kid = value[s3:e3]
                    elif t3 == 0xA1:
                        for t4, s4, e4, _h4 in _children(value, s3, e3):
                            if t4 == 0xA4:
                                name = _children(value, s4, e4)[0]
                                akid_issuer = value[name[1] : name[2]]
                    elif t3 == 0x82:
                        akid_serial = value[s3:e3]
    sig_alg_el = top[1]
    sig_oid_el = _children(data, sig_alg_el[1], sig_alg_el[2])[0]
    sig_algo = _SIG_ALGOS.get(data[sig_oid_el[1] : sig_oid_el[2]])
    if sig_algo is None:
        raise error(errno.ENOPKG, "certificate's signature algorithm is not supported")
    sig_bits = data[top[2][1] : top[2][2]]
    auth0 = akid_serial + akid_issuer if akid_serial is not None and akid_issuer is not None else None
    sig = CertSignature(
        (auth0, akid_kid, issuer),
        hashlib.new(_HASHES[sig_algo[1]], tbs).digest(),
        sig_bits[1:],
        *sig_algo,
    )
    cert_id = serial + issuer
    payload = AsymmetricPayload("X509", pkey_algo, (cert_id, skid, subject), cert.public_key(), None, sig, der=data[:e])
    if subject == issuer:
        _check_self_signed(payload, skid, cert_id)
    subject_name = _fabricate_name(data, subject_el[1], subject_el[2])
    return f"{subject_name}: {(skid if skid is not None else serial).hex()}", payload


def _check_self_signed(payload: AsymmetricPayload, skid: bytes | None, cert_id: bytes) -> None:
    """``x509_check_for_self_signed``: a certificate naming itself as issuer must verify itself."""
    from keyring_types.types.asymmetric_rsa import verify_cert_signature

    sig = payload.auth
    assert sig is not None
    if sig.auth_ids[0] is not None or sig.auth_ids[1] is not None:
        a = skid is not None and skid == sig.auth_ids[1]
        b = cert_id == sig.auth_ids[0]
        if not a and not b:
            return
        if a != b and sig.auth_ids[0] is not None and sig.auth_ids[1] is not None:
            raise error(errno.EKEYREJECTED, "self-signed certificate's authority key identifier is inconsistent")
    if payload.pkey_algo != sig.pkey_algo and not (payload.pkey_algo.startswith("ecdsa-") and sig.pkey_algo == "ecdsa"):
        raise error(errno.EKEYREJECTED, "self-signed certificate's signature algorithm does not match its key")
    verify_cert_signature(payload, sig)
    payload.self_signed = True


def _parse_pkcs8(data: bytes) -> tuple[str | None, AsymmetricPayload]:
    try:
        key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError):
        raise error(errno.EBADMSG, "neither an X.509 certificate nor a PKCS#8 private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise error(errno.ENOPKG, "PKCS#8 keys other than RSA are not supported")
    # pkcs8_key_preparse proposes no description and no key identifiers.
    return None, AsymmetricPayload("PKCS8", "rsa", (None, None, None), key.public_key(), key)


def parse_asymmetric(data: bytes) -> tuple[str | None, AsymmetricPayload]:
    """``asymmetric_key_preparse``: try each parser until one recognises ``data``.

    Returns the proposed description (None for PKCS#8) and the payload.  ``EINVAL``
    for an empty payload, ``EBADMSG`` for one no parser recognises, ``ENOPKG`` for
    unsupported algorithms, ``EKEYREJECTED`` for a self-signed certificate whose
    signature does not verify, ``ENOENT`` for ECDSA (no ECDSA here, as on this
    project's reference kernel).
    """
    if not data:
        raise error(errno.EINVAL, "an asymmetric key needs a payload")
    try:
        return _parse_x509(data)
    except OSError as exc:
        if exc.errno != errno.EBADMSG:
            raise
    return _parse_pkcs8(data)

