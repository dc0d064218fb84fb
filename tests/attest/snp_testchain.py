"""A made-up SEV-SNP certificate chain and reports signed under it, for the verifier's tests.

The chain has AMD's shape (an RSA ARK that signs itself and an ASK with RSASSA-PSS/SHA-384,
an ECDSA P-384 VCEK or VLEK carrying AMD's extensions) but keys made here, so tests can sign
reports with any field values, which real data cannot give.  RSA-2048 keeps key generation
quick; the verifier does not care about the modulus size.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
from collections.abc import Iterable

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
AMD = "1.3.6.1.4.1.3704.1."
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
T1 = dt.datetime(2044, 1, 1, tzinfo=dt.UTC)
INSIDE = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn), x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "test")])


def der_int(v: int) -> bytes:
    body = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def der_ia5(s: str) -> bytes:
    return bytes([0x16, len(s)]) + s.encode()


def cert(
    subject: str,
    issuer: x509.Name,
    public_key: object,
    signing_key: rsa.RSAPrivateKey,
    *,
    extensions: Iterable[tuple[str, bytes]] = (),
    not_before: dt.datetime = T0,
    not_after: dt.datetime = T1,
    serial: int = 1,
    pss: bool = True,
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for oid, value in extensions:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
    return b.sign(signing_key, hashes.SHA384(), rsa_padding=PSS if pss else padding.PKCS1v15())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def der(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)


@attrs.define
class Chain:
    """An ARK, an ASK (or ASVK) and their keys."""

    ark_key: rsa.RSAPrivateKey
    ark: x509.Certificate
    ask_key: rsa.RSAPrivateKey
    ask: x509.Certificate

    @property
    def pem(self) -> bytes:
        return pem(self.ask, self.ark)

    def endorsement(
        self,
        key: ec.EllipticCurvePrivateKey,
        *,
        kind: str = "vcek",
        product: str = "Milan-B0",
        hwid: bytes | None = None,
        tcb: dict[str, int] | None = None,
        not_before: dt.datetime = T0,
        not_after: dt.datetime = T1,
        drop: Iterable[str] = (),
    ) -> bytes:
        """A VCEK/VLEK certificate (DER) for ``key`` with AMD's extensions; ``drop`` leaves some out."""
        levels = {"bl": 2, "tee": 0, "snp": 5, "ucode": 0x44} if tcb is None else tcb
        oids = {
            "bl": "3.1",
            "tee": "3.2",
            "snp": "3.3",
            "spl4": "3.4",
            "spl5": "3.5",
            "spl6": "3.6",
            "spl7": "3.7",
            "ucode": "3.8",
            "fmc": "3.9",
        }
        exts: list[tuple[str, bytes]] = [(AMD + "1", der_int(1)), (AMD + "2", der_ia5(product))]
        for n, v in levels.items():
            exts.append((AMD + oids[n], der_int(v)))
        if kind == "vcek":
            exts.append((AMD + "4", hwid if hwid is not None else bytes(range(64))))
        else:
            exts.append((AMD + "5", der_ia5("CN=test-csp")))
        dropped = {AMD + oids.get(d, d) for d in drop}
        exts = [e for e in exts if e[0] not in dropped]
        subject = "SEV-VCEK" if kind == "vcek" else "SEV-VLEK"
        c = cert(
            subject,
            self.ask.subject,
            key.public_key(),
            self.ask_key,
            extensions=exts,
            not_before=not_before,
            not_after=not_after,
            serial=0x3000,
        )
        return der(c)

    def crl(
        self,
        *,
        revoked: Iterable[int] = (),
        last: dt.datetime = T0,
        next_: dt.datetime = T1,
        signer: rsa.RSAPrivateKey | None = None,
    ) -> bytes:
        b = x509.CertificateRevocationListBuilder().issuer_name(self.ark.subject).last_update(last).next_update(next_)
        for serial in revoked:
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last).build())
        return b.sign(signer or self.ark_key, hashes.SHA384(), rsa_padding=PSS).public_bytes(serialization.Encoding.DER)


def make_chain(product: str = "Milan", *, vlek: bool = False, ask_window: tuple[dt.datetime, dt.datetime] = (T0, T1)) -> Chain:
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ark_name = name(f"ARK-{product}")
    ark = cert(f"ARK-{product}", ark_name, ark_key.public_key(), ark_key, serial=0x1000)
    ask_cn = f"SEV-VLEK-{product}" if vlek else f"SEV-{product}"
    ask = cert(ask_cn, ark.subject, ask_key.public_key(), ark_key, not_before=ask_window[0], not_after=ask_window[1], serial=0x2000)
    return Chain(ark_key=ark_key, ark=ark, ask_key=ask_key, ask=ask)


def tcb_bytes(product: str, bl: int = 2, tee: int = 0, snp: int = 5, ucode: int = 0x44, fmc: int = 0) -> int:
    if product == "Turin":
        return int.from_bytes(bytes([fmc, bl, tee, snp, 0, 0, 0, ucode]), "little")
    return int.from_bytes(bytes([bl, tee, 0, 0, 0, 0, snp, ucode]), "little")


def report(
    key: ec.EllipticCurvePrivateKey,
    *,
    version: int = 3,
    guest_svn: int = 0,
    policy: int = 0x30000,
    family_id: bytes = bytes(16),
    image_id: bytes = bytes(16),
    vmpl: int = 0,
    current_tcb: int | None = None,
    platform_info: int = 0,
    signing_key: int = 0,
    report_data: bytes = bytes(64),
    measurement: bytes = bytes(48),
    host_data: bytes = bytes(32),
    reported_tcb: int | None = None,
    committed_tcb: int | None = None,
    launch_tcb: int | None = None,
    cpuid: tuple[int, int, int] = (0x19, 0x01, 0x01),
    chip_id: bytes = bytes(range(64)),
) -> bytes:
    """A signed ATTESTATION_REPORT with these fields (TCBs default to the Milan 0x4405000000000002)."""
    default = tcb_bytes("Milan")
    r = bytearray(0x4A0)
    struct.pack_into("<IIQ16s16sII", r, 0, version, guest_svn, policy, family_id, image_id, vmpl, 1)
    struct.pack_into("<QQI", r, 0x38, current_tcb if current_tcb is not None else default, platform_info, signing_key << 2)
    r[0x50:0x90] = report_data
    r[0x90:0xC0] = measurement
    r[0xC0:0xE0] = host_data
    struct.pack_into("<Q", r, 0x180, reported_tcb if reported_tcb is not None else default)
    if version >= 3:
        r[0x188:0x18B] = bytes(cpuid)
    r[0x1A0:0x1E0] = chip_id
    struct.pack_into("<Q", r, 0x1E0, committed_tcb if committed_tcb is not None else default)
    struct.pack_into("<Q", r, 0x1F0, launch_tcb if launch_tcb is not None else default)
    sig = key.sign(bytes(r[:0x2A0]), ec.ECDSA(hashes.SHA384()))
    rr, ss = decode_dss_signature(sig)
    r[0x2A0 : 0x2A0 + 72] = rr.to_bytes(72, "little")
    r[0x2A0 + 72 : 0x2A0 + 144] = ss.to_bytes(72, "little")
    return bytes(r)


def nonce_binding(nonce: bytes, user_data: bytes = b"") -> bytes:
    return hashlib.sha512(nonce + user_data).digest()
