"""AMD SEV-SNP attestation reports: parse them and verify them against AMD's certificate chains.

``parse_report(blob)`` reads a 1184-byte ATTESTATION_REPORT (versions 2 to 5) into an
:class:`SnpReport`.  ``verify(blob, cert=..., ...)`` checks, in this order:

1. the endorsement certificate (VCEK or VLEK) and its chain: ASK/ASVK signed by the ARK, the
   ARK self-signed, the VCEK/VLEK signed by the ASK/ASVK (RSASSA-PSS), either against AMD's
   chains embedded in ``amd_roots/`` (picked by the certificate's issuer) or against the chain
   the caller gives;
2. the report's signature: ECDSA P-384 with SHA-384 over bytes 0x000..0x29F, with R and S
   stored little-endian in 72-byte fields;
3. that the report belongs to the certificate: SIGNING_KEY names its kind, the VCEK's hwID
   equals CHIP_ID (Turin: the first 8 bytes), its TCB extensions equal REPORTED_TCB, the
   product agrees with the report's CPUID fields;
4. validity of the three certificates at ``at`` (default now);
5. an optional CRL: signed by the ARK, current at ``at``, not listing the ASK/ASVK;
6. an optional :class:`Policy`.

Errors are ``OSError``: ``EBADMSG`` for malformed input, ``EKEYREJECTED`` for a bad signature,
chain, binding or policy, ``EKEYEXPIRED`` for a certificate or CRL outside its validity,
``EINVAL`` for bad arguments.  Messages name the field, never its value.

Chain checks (the RSA-PSS work) are cached by the certificate and chain bytes, so verifying
many reports of one chip costs one ECDSA verification each; validity, CRL, binding and policy
are checked on every call.
"""

from __future__ import annotations

import datetime as _dt
import errno
import functools
import hashlib
import hmac
import struct
import uuid
import warnings
from collections.abc import Callable
from importlib import resources
from typing import Final, Literal

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.utils import CryptographyDeprecationWarning

from keyring_types.errors import error

__all__ = [
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "PRODUCTS",
    "Tcb",
    "SnpReport",
    "Policy",
    "parse_report",
    "verify",
    "decode_tcb",
    "CertTable",
    "parse_cert_table",
    "pack_signed_part",
    "pack_signature",
    "pack_cert_table",
]

REPORT_SIZE: Final = 0x4A0
SIGNED_SIZE: Final = 0x2A0
#: Report versions this parser reads (4 has version 3's layout; 5 adds the mitigation vectors).
SUPPORTED_VERSIONS: Final = frozenset({2, 3, 4, 5})
PRODUCTS: Final = ("Milan", "Genoa", "Turin")

_SIG_ALGO_ECDSA_P384_SHA384: Final = 1
_SIGNING_KEYS: Final = {0: "vcek", 1: "vlek", 7: "none"}
_POLICY_RESERVED_ONE: Final = 1 << 17
_POLICY_MIGRATE_MA: Final = 1 << 18
_POLICY_DEBUG: Final = 1 << 19

# One unpack for the whole signed part: field widths as in AMD's ATTESTATION_REPORT table.
_LAYOUT: Final = struct.Struct("<IIQ16s16sIIQQII64s48s32s48s48s32s32sQ3B21s64sQ4B4BQQQ152s")
assert _LAYOUT.size == SIGNED_SIZE

_AMD_OID: Final = "1.3.6.1.4.1.3704.1."
_OID_PRODUCT_NAME: Final = _AMD_OID + "2"
_OID_HWID: Final = _AMD_OID + "4"
_OID_CSP_ID: Final = _AMD_OID + "5"
# TCB security patch levels as certificate extensions (KDS spec; fmcSPL appears on Turin).
_TCB_OIDS: Final = {
    "bl": _AMD_OID + "3.1",
    "tee": _AMD_OID + "3.2",
    "snp": _AMD_OID + "3.3",
    "spl4": _AMD_OID + "3.4",
    "spl5": _AMD_OID + "3.5",
    "spl6": _AMD_OID + "3.6",
    "spl7": _AMD_OID + "3.7",
    "ucode": _AMD_OID + "3.8",
    "fmc": _AMD_OID + "3.9",
}
_TCB_EXT_NAMES: Final = {"bl": "blSPL", "tee": "teeSPL", "snp": "snpSPL", "ucode": "ucodeSPL", "fmc": "fmcSPL"}

# The embedded AMD chain for each (ASK/ASVK common name): file under amd_roots/.
_AMD_CHAINS: Final = {
    "SEV-Milan": "ask_ark_milan.pem",
    "SEV-VLEK-Milan": "ask_ark_milan_vlek.pem",
    "SEV-Genoa": "ask_ark_genoa.pem",
    "SEV-VLEK-Genoa": "ask_ark_genoa_vlek.pem",
    "SEV-Turin": "ask_ark_turin_vcek.pem",
    "SEV-VLEK-Turin": "ask_ark_turin_vlek.pem",
}


def _bad(msg: str) -> OSError:
    return error(errno.EBADMSG, msg)


def _rejected(msg: str) -> OSError:
    return error(errno.EKEYREJECTED, msg)


# ---------------------------------------------------------------------------------------------
# TCB versions


@attrs.frozen
class Tcb:
    """The security patch levels of one TCB_VERSION.

    ``fmc`` exists on Turin only (``None`` elsewhere).  Compare a report's TCB with a minimum
    through :meth:`below`.
    """

    bl: int = 0
    tee: int = 0
    snp: int = 0
    ucode: int = 0
    fmc: int | None = None

    def below(self, minimum: Tcb) -> str | None:
        """The name of the first component lower than ``minimum``'s, or ``None`` if none is."""
        for name in ("bl", "tee", "snp", "ucode"):
            if getattr(self, name) < getattr(minimum, name):
                return name
        if minimum.fmc is not None and (self.fmc or 0) < minimum.fmc:
            return "fmc"
        return None


def decode_tcb(raw: int, product: str | None) -> Tcb:
    """Split a 64-bit TCB_VERSION into its levels, by the product's layout.

    Milan and Genoa (and an unknown product): byte 0 boot loader, 1 TEE, 6 SNP, 7 microcode.
    Turin: byte 0 FMC, 1 boot loader, 2 TEE, 3 SNP, 7 microcode.
    """
    b = raw.to_bytes(8, "little")
    if product == "Turin":
        return Tcb(bl=b[1], tee=b[2], snp=b[3], ucode=b[7], fmc=b[0])
    return Tcb(bl=b[0], tee=b[1], snp=b[6], ucode=b[7])


def _product_of_cpuid(family: int, model: int) -> str | None:
    # Family/model ranges of the SNP-capable EPYC generations.
    if family == 0x19:
        if model <= 0x0F:
            return "Milan"
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return "Genoa"
    if family == 0x1A and model <= 0x11:
        return "Turin"
    return None


# ---------------------------------------------------------------------------------------------
# The report


@attrs.frozen
class SnpReport:
    """One parsed ATTESTATION_REPORT.  Integers are as the report stores them (little-endian).

    ``product`` comes from the CPUID fields (versions 3 and later) or, after :func:`verify`,
    from the endorsement certificate.  ``signing_key`` is ``"vcek"``, ``"vlek"`` or ``"none"``.
    """

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid_fam_id: int | None
    cpuid_mod_id: int | None
    cpuid_step: int | None
    chip_id: bytes
    committed_tcb: int
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: int
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: int = attrs.field(repr=False)
    signature_s: int = attrs.field(repr=False)
    product: str | None
    raw: bytes = attrs.field(repr=False)

    @property
    def signing_key(self) -> str:
        """Which key signed the report: ``"vcek"``, ``"vlek"`` or ``"none"``."""
        return _SIGNING_KEYS[(self.signer_info >> 2) & 7]

    @property
    def author_key_en(self) -> bool:
        return bool(self.signer_info & 1)

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.signer_info & 2)

    @property
    def debug(self) -> bool:
        """Guest policy bit 19: the hypervisor may debug the guest."""
        return bool(self.policy & _POLICY_DEBUG)

    @property
    def migrate_ma(self) -> bool:
        """Guest policy bit 18: a migration agent may be associated."""
        return bool(self.policy & _POLICY_MIGRATE_MA)

    def tcb(self, which: Literal["current", "reported", "committed", "launch"] = "reported") -> Tcb:
        """One of the report's TCB versions, split by the product's layout."""
        raw = {"current": self.current_tcb, "reported": self.reported_tcb, "committed": self.committed_tcb, "launch": self.launch_tcb}
        return decode_tcb(raw[which], self.product)

    @property
    def signed_bytes(self) -> bytes:
        """The bytes the signature covers (report offsets 0x000..0x29F)."""
        return self.raw[:SIGNED_SIZE]


def _zero(b: bytes) -> bool:
    return not any(b)


def parse_report(blob: bytes) -> SnpReport:
    """Parse one SEV-SNP ATTESTATION_REPORT of exactly 1184 bytes (versions 2, 3, 4, 5).

    Checks the form only, not the signature.  Raises ``EBADMSG`` naming the field for a wrong
    size, an unknown VERSION, SIGNATURE_ALGO or SIGNING_KEY, a must-be-zero field that is not
    zero, or guest policy bit 17 (reserved, must be one) clear.
    """
    blob = bytes(blob)
    if len(blob) != REPORT_SIZE:
        raise _bad(f"SEV-SNP report: size is {len(blob)} bytes, not {REPORT_SIZE}")
    f = _LAYOUT.unpack_from(blob)
    (version, guest_svn, policy, family_id, image_id, vmpl, sig_algo, current_tcb, platform_info, signer_info, reserved0,
     report_data, measurement, host_data, id_key_digest, author_key_digest, report_id, report_id_ma, reported_tcb,
     cpuid_fam, cpuid_mod, cpuid_step, reserved1, chip_id, committed_tcb,
     cur_build, cur_minor, cur_major, reserved2, com_build, com_minor, com_major, reserved3,
     launch_tcb, launch_mit, current_mit, reserved4) = f  # fmt: skip
    if version not in SUPPORTED_VERSIONS:
        raise _bad(f"SEV-SNP report: VERSION {version} is not one of {sorted(SUPPORTED_VERSIONS)}")
    if sig_algo != _SIG_ALGO_ECDSA_P384_SHA384:
        raise _bad("SEV-SNP report: SIGNATURE_ALGO is not 1 (ECDSA P-384 with SHA-384)")
    if signer_info >> 5:
        raise _bad("SEV-SNP report: signer info bits 31:5 must be zero")
    if (signer_info >> 2) & 7 not in _SIGNING_KEYS:
        raise _bad("SEV-SNP report: SIGNING_KEY is a reserved value")
    if not policy & _POLICY_RESERVED_ONE:
        raise _bad("SEV-SNP report: POLICY bit 17 (reserved, must be one) is clear")
    if reserved0:
        raise _bad("SEV-SNP report: reserved field at 0x04C is not zero")
    if version < 3 and (cpuid_fam or cpuid_mod or cpuid_step):
        raise _bad("SEV-SNP report: reserved bytes at 0x188 are not zero in a version 2 report")
    if not _zero(reserved1):
        raise _bad("SEV-SNP report: reserved bytes at 0x18B are not zero")
    if reserved2 or reserved3:
        raise _bad("SEV-SNP report: reserved bytes after CURRENT_MAJOR or COMMITTED_MAJOR are not zero")
    if version < 5 and (launch_mit or current_mit):
        raise _bad(f"SEV-SNP report: reserved bytes at 0x1F8 are not zero in a version {version} report")
    if not _zero(reserved4):
        raise _bad("SEV-SNP report: reserved bytes at 0x208 are not zero")
    sig = blob[SIGNED_SIZE:]
    # R and S are 48-byte P-384 values zero-extended to 72 bytes; the rest of the area is reserved.
    if not _zero(sig[48:72]) or not _zero(sig[72 + 48 : 144]):
        raise _bad("SEV-SNP report: SIGNATURE R or S has bytes set above 48")
    if not _zero(sig[144:]):
        raise _bad("SEV-SNP report: reserved bytes of SIGNATURE are not zero")
    has_cpuid = version >= 3
    return SnpReport(
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        family_id=family_id,
        image_id=image_id,
        vmpl=vmpl,
        signature_algo=sig_algo,
        current_tcb=current_tcb,
        platform_info=platform_info,
        signer_info=signer_info,
        report_data=report_data,
        measurement=measurement,
        host_data=host_data,
        id_key_digest=id_key_digest,
        author_key_digest=author_key_digest,
        report_id=report_id,
        report_id_ma=report_id_ma,
        reported_tcb=reported_tcb,
        cpuid_fam_id=cpuid_fam if has_cpuid else None,
        cpuid_mod_id=cpuid_mod if has_cpuid else None,
        cpuid_step=cpuid_step if has_cpuid else None,
        chip_id=chip_id,
        committed_tcb=committed_tcb,
        current_build=cur_build,
        current_minor=cur_minor,
        current_major=cur_major,
        committed_build=com_build,
        committed_minor=com_minor,
        committed_major=com_major,
        launch_tcb=launch_tcb,
        launch_mit_vector=launch_mit if version >= 5 else None,
        current_mit_vector=current_mit if version >= 5 else None,
        signature_r=int.from_bytes(sig[0:72], "little"),
        signature_s=int.from_bytes(sig[72:144], "little"),
        product=_product_of_cpuid(cpuid_fam, cpuid_mod) if has_cpuid else None,
        raw=blob,
    )


# ---------------------------------------------------------------------------------------------
# Certificates


def _load_certs(data: bytes, what: str) -> list[x509.Certificate]:
    """Certificates from PEM (one or more) or DER bytes; ``EBADMSG`` naming ``what`` if neither."""
    # AMD's VCEK and VLEK certificates have serial number 0, which RFC 5280 forbids and for which
    # cryptography warns that a later release will refuse them.  They are what AMD issues, so the
    # warning is expected here, and only here: it is filtered around these loads alone.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*serial number", category=CryptographyDeprecationWarning)
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                certs = x509.load_pem_x509_certificates(data)
            else:
                certs = [x509.load_der_x509_certificate(data)]
        except (ValueError, x509.InvalidVersion):
            raise _bad(f"{what}: not a DER or PEM X.509 certificate") from None
        # cryptography parses names, extensions and times only when asked: ask now, so that a
        # malformed one is EBADMSG naming this input rather than a ValueError later.
        try:
            for c in certs:
                _ = (c.version, c.subject, c.issuer, c.extensions, c.not_valid_before_utc, c.not_valid_after_utc, c.serial_number)
        except (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
            raise _bad(f"{what}: malformed X.509 field") from None
    for c in certs:
        if not _strict_outer_shape(c.public_bytes(serialization.Encoding.DER)):
            raise _bad(f"{what}: signatureAlgorithm or signatureValue is not as signed (RFC 5280 4.1.1.2-3)")
    return certs


def _tlv_end(der: bytes, pos: int) -> tuple[int, int]:
    """(start of content, end) of the DER element at ``pos``; ``ValueError`` if it overruns."""
    if pos + 2 > len(der):
        raise ValueError("truncated")
    n = der[pos + 1]
    if n < 0x80:
        start = pos + 2
    else:
        width = n & 0x7F
        start = pos + 2 + width
        n = int.from_bytes(der[pos + 2 : start], "big")
    if start + n > len(der):
        raise ValueError("overrun")
    return start, start + n


def _strict_outer_shape(der: bytes) -> bool:
    """The unsigned parts of a certificate are as RFC 5280 4.1.1.2-3 demand.

    Only tbsCertificate is signed.  cryptography verifies with the outer signatureAlgorithm's
    parameters without comparing it to the signed tbsCertificate.signature, and reads the
    signature BIT STRING whatever its unused-bits count, so without this check a certificate's
    bytes could change (the PSS trailerField, the unused-bits byte) and still verify.
    """
    try:
        body, end = _tlv_end(der, 0)
        tbs_body, tbs_end = _tlv_end(der, body)
        _, alg_end = _tlv_end(der, tbs_end)
        sig_body, sig_end = _tlv_end(der, alg_end)
        outer = der[tbs_end:alg_end]
        pos = tbs_body
        if der[pos] == 0xA0:  # [0] version
            pos = _tlv_end(der, pos)[1]
        pos = _tlv_end(der, pos)[1]  # serialNumber
        inner = der[pos : _tlv_end(der, pos)[1]]
        return end == sig_end == len(der) and inner == outer and der[alg_end] == 0x03 and der[sig_body] == 0
    except (ValueError, IndexError):
        return False


def _serial(cert: x509.Certificate) -> int:
    # Reading a zero serial warns as loading one does (see _load_certs).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*serial number", category=CryptographyDeprecationWarning)
        return cert.serial_number


def _common_name(name: x509.Name) -> str:
    attrs_ = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = attrs_[0].value if attrs_ else ""
    return value if isinstance(value, str) else value.decode("ascii", "replace")


def _check_signed_by(cert: x509.Certificate, issuer: x509.Certificate, what: str, by: str) -> None:
    if cert.issuer != issuer.subject:
        raise _rejected(f"{what}: issuer is not the {by}'s subject")
    try:
        key = issuer.public_key()
        pad = cert.signature_algorithm_parameters
        algo = cert.signature_hash_algorithm
    except (UnsupportedAlgorithm, ValueError):
        raise _rejected(f"{what}: unsupported key or signature algorithm") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise _rejected(f"{by}: public key is not RSA")
    if not isinstance(pad, padding.PSS):
        raise _rejected(f"{what}: not signed with RSASSA-PSS")
    if not isinstance(algo, hashes.SHA384):
        raise _rejected(f"{what}: signature hash is not SHA-384")
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, pad, algo)
    except InvalidSignature:
        raise _rejected(f"{what}: signature does not verify under the {by}") from None


def _der_value(raw: bytes, tag: int, what: str) -> bytes:
    """The content of one short DER TLV of ``tag`` filling ``raw`` exactly."""
    if len(raw) < 2 or raw[0] != tag:
        raise _bad(f"{what}: wrong ASN.1 type")
    n = raw[1]
    if n & 0x80:
        width = n & 0x7F
        if width == 0 or width > 2 or len(raw) < 2 + width:
            raise _bad(f"{what}: bad ASN.1 length")
        n = int.from_bytes(raw[2 : 2 + width], "big")
        start = 2 + width
    else:
        start = 2
    if len(raw) != start + n:
        raise _bad(f"{what}: ASN.1 length does not match")
    return raw[start:]


def _ext_raw(cert: x509.Certificate, oid: str) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
    except x509.ExtensionNotFound:
        return None
    except ValueError:  # cryptography refuses malformed or duplicated extensions here
        raise _bad("cert: malformed X.509 extensions") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        return None
    return value.value


def _ext_int(cert: x509.Certificate, oid: str, what: str) -> int | None:
    raw = _ext_raw(cert, oid)
    if raw is None:
        return None
    content = _der_value(raw, 0x02, what)
    if not content or content[0] & 0x80:
        raise _bad(f"{what}: not a non-negative INTEGER")
    value = int.from_bytes(content, "big")
    if value > 255:
        raise _bad(f"{what}: larger than 255")
    return value


@attrs.frozen
class _Endorsement:
    """A VCEK or VLEK whose chain of signatures has been checked (the cached part of verify)."""

    kind: str  # "vcek" or "vlek"
    product: str
    public_key: ec.EllipticCurvePublicKey
    hwid: bytes | None
    tcb: dict[str, int]
    # (what, not before, not after) of the endorsement certificate, the ASK/ASVK and the ARK.
    windows: tuple[tuple[str, _dt.datetime, _dt.datetime], ...]
    ask_name: str
    ask_serial: int
    ark: x509.Certificate


def _embedded_chain(issuer_cn: str) -> bytes | None:
    name = _AMD_CHAINS.get(issuer_cn)
    if name is None:
        return None
    return _read_root(name)


@functools.cache
def _read_root(name: str) -> bytes:
    return resources.files(__package__ or "keyring_types.attest").joinpath("amd_roots", name).read_bytes()


def _split_chain(certs: list[x509.Certificate]) -> tuple[x509.Certificate, x509.Certificate]:
    if len(certs) != 2:
        raise _bad(f"chain: {len(certs)} certificates, not 2 (the ASK or ASVK, then the ARK)")
    a, b = certs
    # The ARK is the self-issued one; accept the two in either order.
    if a.subject == a.issuer and b.subject != b.issuer:
        a, b = b, a
    return a, b


@functools.lru_cache(maxsize=64)
def _endorsement(cert_bytes: bytes, chain_bytes: bytes | None) -> _Endorsement:
    certs = _load_certs(cert_bytes, "cert")
    if len(certs) != 1:
        raise _bad(f"cert: {len(certs)} certificates, not 1 (the VCEK or VLEK)")
    cert = certs[0]
    cn = _common_name(cert.subject)
    if cn == "SEV-VCEK":
        kind, label = "vcek", "VCEK"
    elif cn == "SEV-VLEK":
        kind, label = "vlek", "VLEK"
    else:
        raise _rejected("cert: subject common name is neither SEV-VCEK nor SEV-VLEK")
    if cert.version is not x509.Version.v3:
        raise _rejected(f"{label} certificate: not X.509 version 3")
    if chain_bytes is None:
        embedded = _embedded_chain(_common_name(cert.issuer))
        if embedded is None:
            raise _rejected(f"{label} certificate: issuer is none of AMD's ASK or ASVK; pass chain= to trust another")
        chain_bytes = embedded
    ask, ark = _split_chain(_load_certs(chain_bytes, "chain"))
    ask_label = "ASVK" if kind == "vlek" else "ASK"
    if ark.subject != ark.issuer:
        raise _rejected("chain: the ARK is not self-issued")
    _check_signed_by(ark, ark, "ARK", "ARK")
    _check_signed_by(ask, ark, ask_label, "ARK")
    _check_signed_by(cert, ask, f"{label} certificate", ask_label)
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):
        raise _rejected(f"{label} certificate: unsupported public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise _rejected(f"{label} certificate: public key is not ECDSA P-384")
    product_raw = _ext_raw(cert, _OID_PRODUCT_NAME)
    if product_raw is None:
        raise _rejected(f"{label} certificate: no productName extension")
    product = _der_value(product_raw, 0x16, f"{label} productName").decode("ascii", "replace").split("-")[0]
    if product not in PRODUCTS:
        raise _rejected(f"{label} certificate: productName is not one of {', '.join(PRODUCTS)}")
    hwid: bytes | None = None
    if kind == "vcek":
        raw = _ext_raw(cert, _OID_HWID)
        if raw is None:
            raise _rejected("VCEK certificate: no hwID extension")
        want = 8 if product == "Turin" else 64
        # AMD's KDS stores the hwID bare (no OCTET STRING tag); accept a tagged one as well.
        hwid = raw if len(raw) == want else _der_value(raw, 0x04, "VCEK hwID")
        if len(hwid) != want:
            raise _bad(f"VCEK hwID: {len(hwid)} bytes, not {want} for {product}")
    elif _ext_raw(cert, _OID_HWID) is not None:
        raise _rejected("VLEK certificate: carries a hwID extension")
    tcb: dict[str, int] = {}
    for name, oid in _TCB_OIDS.items():
        value = _ext_int(cert, oid, f"{label} {_TCB_EXT_NAMES.get(name, name)}")
        if value is not None:
            tcb[name] = value
    needed = ("fmc", "bl", "tee", "snp", "ucode") if product == "Turin" else ("bl", "tee", "snp", "ucode")
    for name in needed:
        if name not in tcb:
            raise _rejected(f"{label} certificate: no {_TCB_EXT_NAMES[name]} extension")
    windows = tuple(
        (what, c.not_valid_before_utc, c.not_valid_after_utc)
        for what, c in ((f"{label} certificate", cert), (ask_label, ask), ("ARK", ark))
    )
    return _Endorsement(
        kind=kind,
        product=product,
        public_key=key,
        hwid=hwid,
        tcb=tcb,
        windows=windows,
        ask_name=ask_label,
        ask_serial=_serial(ask),
        ark=ark,
    )


def _expected_tcb_bytes(e: _Endorsement) -> dict[int, tuple[str, int]]:
    """Byte offset in TCB_VERSION -> (extension name, level) the certificate vouches for."""
    t = e.tcb
    if e.product == "Turin":
        return {
            0: ("fmcSPL", t["fmc"]),
            1: ("blSPL", t["bl"]),
            2: ("teeSPL", t["tee"]),
            3: ("snpSPL", t["snp"]),
            7: ("ucodeSPL", t["ucode"]),
        }
    return {
        0: ("blSPL", t["bl"]),
        1: ("teeSPL", t["tee"]),
        2: ("spl4", t.get("spl4", 0)),
        3: ("spl5", t.get("spl5", 0)),
        4: ("spl6", t.get("spl6", 0)),
        5: ("spl7", t.get("spl7", 0)),
        6: ("snpSPL", t["snp"]),
        7: ("ucodeSPL", t["ucode"]),
    }


# ---------------------------------------------------------------------------------------------
# The certificate table of an extended report


#: GUIDs of the GHCB extended-guest-request certificate table (stored in RFC 4122 byte order).
CERT_TABLE_GUIDS: Final = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd").bytes: "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1").bytes: "vlek",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782").bytes: "ask",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae").bytes: "ark",
}
_TABLE_ENTRY: Final = struct.Struct("<16sII")


@attrs.frozen
class CertTable:
    """The certificates of an extended report's table (configfs ``auxblob``), as raw bytes.

    ``other`` holds entries with GUIDs this module does not know, as (GUID string, bytes).
    The table comes from the host: its ``ask`` and ``ark`` are not a trust anchor.
    """

    vcek: bytes | None = None
    vlek: bytes | None = None
    ask: bytes | None = None
    ark: bytes | None = None
    other: tuple[tuple[str, bytes], ...] = ()


def parse_cert_table(table: bytes) -> CertTable:
    """Read a GHCB certificate table: 24-byte entries (GUID, offset, length) up to an all-zero one.

    Offsets count from the start of the table.  Raises ``EBADMSG`` for a table without its
    terminating entry, an entry whose bytes lie outside the table, or a GUID given twice.
    """
    table = bytes(table)
    entries: list[tuple[bytes, int, int]] = []
    pos = 0
    while True:
        if pos + _TABLE_ENTRY.size > len(table):
            raise _bad("certificate table: no terminating all-zero entry")
        guid, offset, length = _TABLE_ENTRY.unpack_from(table, pos)
        pos += _TABLE_ENTRY.size
        if _zero(guid):
            break
        entries.append((guid, offset, length))
    found: dict[str, bytes] = {}
    other: list[tuple[str, bytes]] = []
    seen: set[bytes] = set()
    for guid, offset, length in entries:
        if guid in seen:
            raise _bad(f"certificate table: GUID {uuid.UUID(bytes=guid)} appears twice")
        seen.add(guid)
        # The certificates follow the entries; none may overlap the entries or run past the end.
        if offset < pos or offset + length > len(table):
            raise _bad(f"certificate table: entry {uuid.UUID(bytes=guid)} lies outside the table")
        data = table[offset : offset + length]
        name = CERT_TABLE_GUIDS.get(guid)
        if name is None:
            other.append((str(uuid.UUID(bytes=guid)), data))
        else:
            found[name] = data
    return CertTable(**found, other=tuple(other))


# ---------------------------------------------------------------------------------------------
# Serializing (the emulated guest builds its reports with these, through the parser's layout)


def pack_signed_part(
    *,
    version: int,
    policy: int,
    vmpl: int,
    report_data: bytes,
    measurement: bytes,
    chip_id: bytes,
    current_tcb: int,
    reported_tcb: int,
    committed_tcb: int,
    launch_tcb: int,
    guest_svn: int = 0,
    family_id: bytes = bytes(16),
    image_id: bytes = bytes(16),
    platform_info: int = 0,
    signer_info: int = 0,
    host_data: bytes = bytes(32),
    id_key_digest: bytes = bytes(48),
    author_key_digest: bytes = bytes(48),
    report_id: bytes = bytes(32),
    report_id_ma: bytes = bytes(32),
    cpuid: tuple[int, int, int] = (0, 0, 0),
    current_version: tuple[int, int, int] = (0, 0, 0),
    committed_version: tuple[int, int, int] = (0, 0, 0),
    launch_mit_vector: int = 0,
    current_mit_vector: int = 0,
) -> bytes:
    """Bytes 0x000..0x29F of an ATTESTATION_REPORT (what the signature covers), in the layout
    :func:`parse_report` reads.  Versions are (build, minor, major).  ``EINVAL`` for a field of
    the wrong size, or fields the version does not have (CPUID before 3, mitigation vectors
    before 5).
    """
    sizes = {"family_id": (family_id, 16), "image_id": (image_id, 16), "report_data": (report_data, 64),
             "measurement": (measurement, 48), "host_data": (host_data, 32), "id_key_digest": (id_key_digest, 48),
             "author_key_digest": (author_key_digest, 48), "report_id": (report_id, 32),
             "report_id_ma": (report_id_ma, 32), "chip_id": (chip_id, 64)}  # fmt: skip
    for field, (value, n) in sizes.items():
        if len(value) != n:
            raise error(errno.EINVAL, f"report {field} must be {n} bytes")
    if version < 3 and any(cpuid):
        raise error(errno.EINVAL, f"a version {version} report has no CPUID fields")
    if version < 5 and (launch_mit_vector or current_mit_vector):
        raise error(errno.EINVAL, f"a version {version} report has no mitigation vectors")
    try:
        return _LAYOUT.pack(
            version, guest_svn, policy, family_id, image_id, vmpl, _SIG_ALGO_ECDSA_P384_SHA384, current_tcb,
            platform_info, signer_info, 0, report_data, measurement, host_data, id_key_digest, author_key_digest,
            report_id, report_id_ma, reported_tcb, *cpuid, bytes(21), chip_id, committed_tcb,
            *current_version, 0, *committed_version, 0, launch_tcb, launch_mit_vector, current_mit_vector, bytes(152),
        )  # fmt: skip
    except struct.error:
        raise error(errno.EINVAL, "report: an integer field is out of its range") from None


def pack_signature(r: int, s: int) -> bytes:
    """The 512-byte SIGNATURE area: R and S little-endian in 72-byte fields, the rest zero."""
    return r.to_bytes(72, "little") + s.to_bytes(72, "little") + bytes(REPORT_SIZE - SIGNED_SIZE - 144)


def pack_cert_table(entries: list[tuple[str, bytes]]) -> bytes:
    """A GHCB certificate table (what :func:`parse_cert_table` reads) of ``(name, DER)`` entries,
    names from ``vcek``, ``vlek``, ``ask``, ``ark``; ``EINVAL`` for another name."""
    guids = {name: guid for guid, name in CERT_TABLE_GUIDS.items()}
    head = _TABLE_ENTRY.size * (len(entries) + 1)
    index, body = b"", b""
    for name, data in entries:
        if name not in guids:
            raise error(errno.EINVAL, f"certificate table: no GUID for an entry called {name!r}")
        index += _TABLE_ENTRY.pack(guids[name], head + len(body), len(data))
        body += data
    return index + bytes(_TABLE_ENTRY.size) + body


# ---------------------------------------------------------------------------------------------
# Policy


def _length(n: int) -> Callable[[object, attrs.Attribute[bytes | None], bytes | None], None]:
    def check(inst: object, attribute: attrs.Attribute[bytes | None], value: bytes | None) -> None:
        if value is not None and len(value) != n:
            raise error(errno.EINVAL, f"policy: {attribute.name} must be {n} bytes")

    return check


def _opt_bytes(value: bytes | bytearray | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)


def _u32_or_none(inst: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and not 0 <= value <= 0xFFFFFFFF:
        raise error(errno.EINVAL, f"policy: {attribute.name} must be a 32-bit unsigned integer")


@attrs.frozen(kw_only=True)
class Policy:
    """What a verified report must say, in the spirit of go-sev-guest's validation options.

    Every field left at ``None`` is not checked.  ``debug_allowed`` and ``migrate_ma_allowed``
    default to ``False``: a report whose guest policy permits debugging or a migration agent is
    refused unless the caller allows it.  ``nonce`` binds the report to a fresh challenge: the
    REPORT_DATA must be SHA-512(nonce ‖ user_data) (the ``tsm`` key type's ``nonce=``).
    ``minimum_tcb`` applies to the current, committed and reported TCB; ``minimum_launch_tcb``
    to the launch TCB.  ``platform_info_required`` bits must be set in PLATFORM_INFO,
    ``platform_info_forbidden`` bits must be clear.  Bad field sizes raise ``EINVAL``.
    """

    measurement: bytes | None = attrs.field(default=None, converter=_opt_bytes, validator=_length(48))
    host_data: bytes | None = attrs.field(default=None, converter=_opt_bytes, validator=_length(32))
    report_data: bytes | None = attrs.field(default=None, converter=_opt_bytes, validator=_length(64))
    nonce: bytes | None = attrs.field(default=None, converter=_opt_bytes)
    user_data: bytes = attrs.field(default=b"", converter=bytes)
    family_id: bytes | None = attrs.field(default=None, converter=_opt_bytes, validator=_length(16))
    image_id: bytes | None = attrs.field(default=None, converter=_opt_bytes, validator=_length(16))
    minimum_tcb: Tcb | None = None
    minimum_launch_tcb: Tcb | None = None
    minimum_guest_svn: int | None = attrs.field(default=None, validator=_u32_or_none)
    debug_allowed: bool = False
    migrate_ma_allowed: bool = False
    vmpl: int | None = attrs.field(default=None, validator=_u32_or_none)
    platform_info_required: int = 0
    platform_info_forbidden: int = 0

    def __attrs_post_init__(self) -> None:
        if self.nonce is not None and self.report_data is not None:
            raise error(errno.EINVAL, "policy: give report_data or nonce, not both")
        if self.nonce is None and self.user_data:
            raise error(errno.EINVAL, "policy: user_data is only used with nonce")
        if self.platform_info_required & self.platform_info_forbidden:
            raise error(errno.EINVAL, "policy: a platform_info bit is both required and forbidden")

    def expected_report_data(self) -> bytes | None:
        """The REPORT_DATA this policy demands, or ``None`` if it demands none."""
        if self.nonce is not None:
            return hashlib.sha512(self.nonce + self.user_data).digest()
        return self.report_data

    def check(self, report: SnpReport) -> None:
        """Raise ``EKEYREJECTED`` naming the first field of ``report`` this policy refuses."""

        def same(field: str, want: bytes | None, got: bytes) -> None:
            # Constant time: an expected value may be a secret binding.
            if want is not None and not hmac.compare_digest(want, got):
                raise _rejected(f"policy: {field} does not match")

        same("MEASUREMENT", self.measurement, report.measurement)
        same("HOST_DATA", self.host_data, report.host_data)
        same("REPORT_DATA", self.expected_report_data(), report.report_data)
        same("FAMILY_ID", self.family_id, report.family_id)
        same("IMAGE_ID", self.image_id, report.image_id)
        if self.vmpl is not None and report.vmpl != self.vmpl:
            raise _rejected(f"policy: VMPL is {report.vmpl}, not {self.vmpl}")
        if self.minimum_guest_svn is not None and report.guest_svn < self.minimum_guest_svn:
            raise _rejected(f"policy: GUEST_SVN {report.guest_svn} is below {self.minimum_guest_svn}")
        if report.debug and not self.debug_allowed:
            raise _rejected("policy: POLICY allows debugging (bit 19) and debug_allowed is False")
        if report.migrate_ma and not self.migrate_ma_allowed:
            raise _rejected("policy: POLICY allows a migration agent (bit 18) and migrate_ma_allowed is False")
        if self.minimum_tcb is not None:
            for which in ("current", "committed", "reported"):
                low = report.tcb(which).below(self.minimum_tcb)
                if low is not None:
                    raise _rejected(f"policy: {which.upper()}_TCB {low} level is below the minimum")
        if self.minimum_launch_tcb is not None:
            low = report.tcb("launch").below(self.minimum_launch_tcb)
            if low is not None:
                raise _rejected(f"policy: LAUNCH_TCB {low} level is below the minimum")
        missing = self.platform_info_required & ~report.platform_info
        if missing:
            raise _rejected(f"policy: PLATFORM_INFO lacks required bit(s) {missing:#x}")
        extra = self.platform_info_forbidden & report.platform_info
        if extra:
            raise _rejected(f"policy: PLATFORM_INFO has forbidden bit(s) {extra:#x}")


# ---------------------------------------------------------------------------------------------
# Verification


def _check_time(what: str, not_before: _dt.datetime, not_after: _dt.datetime, at: _dt.datetime) -> None:
    if not not_before <= at <= not_after:
        raise error(
            errno.EKEYEXPIRED,
            f"{what}: not valid at {at.isoformat()} (valid {not_before.isoformat()} .. {not_after.isoformat()})",
        )


def _check_crl(crl_bytes: bytes, e: _Endorsement, at: _dt.datetime) -> None:
    try:
        if crl_bytes.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(crl_bytes)
        else:
            crl = x509.load_der_x509_crl(crl_bytes)
        # Parsed lazily by cryptography: read every field used below while errors still mean "malformed".
        issuer, last_update, next_update = crl.issuer, crl.last_update_utc, crl.next_update_utc
        revoked = crl.get_revoked_certificate_by_serial_number(e.ask_serial) is not None
    except (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        raise _bad("crl: not a well-formed DER or PEM X.509 CRL") from None
    if issuer != e.ark.subject:
        raise _rejected("crl: issuer is not the ARK")
    try:
        ok = crl.is_signature_valid(e.ark.public_key())  # type: ignore[arg-type]
    except (UnsupportedAlgorithm, TypeError, ValueError):
        ok = False
    if not ok:
        raise _rejected("crl: signature does not verify under the ARK")
    if next_update is None:
        raise _bad("crl: no nextUpdate")
    _check_time("crl", last_update, next_update, at)
    if revoked:
        raise _rejected(f"crl: the {e.ask_name} is revoked")


def verify(
    blob: bytes,
    *,
    cert: bytes | None = None,
    chain: bytes | None = None,
    at: _dt.datetime | None = None,
    crl: bytes | None = None,
    policy: Policy | None = None,
) -> SnpReport:
    """Verify an SEV-SNP report and return it parsed, with ``product`` from the certificate.

    ``cert`` is the VCEK or VLEK (DER or PEM); ``chain`` the ASK/ASVK and ARK (PEM), or ``None``
    for AMD's embedded chain of the certificate's issuer; ``at`` an aware ``datetime`` (default
    now); ``crl`` the ARK-signed CRL (DER or PEM); ``policy`` a :class:`Policy`.

    Raises ``EBADMSG`` (malformed report, certificate, chain or CRL), ``EKEYREJECTED`` (chain,
    signature, certificate-to-report binding, revocation or policy), ``EKEYEXPIRED`` (a
    certificate or the CRL not valid at ``at``), ``EINVAL`` (no ``cert``, a naive ``at``).
    """
    if at is None:
        at = _dt.datetime.now(_dt.UTC)
    elif at.tzinfo is None or at.utcoffset() is None:
        raise error(errno.EINVAL, "at: must be an aware datetime")
    if policy is not None and not isinstance(policy, Policy):
        raise error(errno.EINVAL, "policy: must be a keyring_types.attest.snp.Policy")
    report = parse_report(blob)
    if cert is None:
        raise error(errno.EINVAL, "cert: the VCEK or VLEK certificate is required")
    e = _endorsement(bytes(cert), None if chain is None else bytes(chain))
    label = e.kind.upper()
    if report.signing_key != e.kind:
        raise _rejected(f"SIGNING_KEY: the report says {report.signing_key.upper()}, the certificate is a {label}")
    if report.product is not None and report.product != e.product:
        raise _rejected(f"CPUID_FAM_ID/CPUID_MOD_ID: a {report.product} report, a {e.product} certificate")
    der = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        e.public_key.verify(der, report.raw[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise _rejected(f"SIGNATURE: does not verify under the {label}") from None
    if e.hwid is not None:
        if _zero(report.chip_id):
            raise _rejected("CHIP_ID: masked (all zero); the report cannot be bound to the VCEK's hwID")
        if report.chip_id[: len(e.hwid)] != e.hwid:
            raise _rejected("CHIP_ID: does not match the VCEK's hwID extension")
    tcb = report.reported_tcb.to_bytes(8, "little")
    for offset, (name, level) in _expected_tcb_bytes(e).items():
        if tcb[offset] != level:
            raise _rejected(f"REPORTED_TCB: {name} {tcb[offset]} does not match the {label}'s {level}")
    for what, not_before, not_after in e.windows:
        _check_time(what, not_before, not_after, at)
    if crl is not None:
        _check_crl(bytes(crl), e, at)
    if report.product != e.product:
        report = attrs.evolve(report, product=e.product)
    if policy is not None:
        policy.check(report)
    return report
