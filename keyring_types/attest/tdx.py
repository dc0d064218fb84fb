"""Intel TDX quotes: parse them and verify them against Intel's SGX root.

``parse_quote(blob)`` reads a quote of version 4 or 5 (TD report body 1.0 or 1.5; bytes after
the signed data, such as the padding of a fixed-size GetQuote buffer, are ignored) into a
:class:`TdxQuote`.  ``verify(blob, ...)`` checks, in this order:

1. the PCK certificate chain inside the quote (PCK leaf, PCK Platform or Processor CA, root):
   canonical PEM, ECDSA P-256 with SHA-256 signatures, the root byte for byte one of the trusted
   roots (Intel's SGX Root CA, embedded in ``intel_roots/``, unless ``roots=`` says otherwise);
2. the QE report's signature by the PCK leaf, and its REPORTDATA binding the attestation key
   and the QE authentication data (SHA-256 of both, then 32 zero bytes);
3. the quote's signature by the attestation key, over the header and the TD report body;
4. validity of the three certificates at ``at`` (default now);
5. with a :class:`Collateral`: the PCK CRL (signed by the leaf's CA) and the root CRL, current at
   ``at`` and revoking neither certificate; the TCB info and QE identity (Intel PCS JSON, signed
   by a TCB Signing certificate of the same root), current at ``at``, giving the TCB status of
   the quote's FMSPC, CPU SVNs, PCE SVN and TEE TCB SVN, and of its QE's ISV SVN;
6. an optional :class:`Policy` (measurements, report data, attributes, minimum SVNs, and which
   TCB statuses to accept: statuses are reported in :attr:`TdxQuote.tcb`, refused only there).

Errors are ``OSError``: ``EBADMSG`` for malformed input, ``EKEYREJECTED`` for a bad signature,
chain, binding, revocation or policy, ``EKEYEXPIRED`` for a certificate, CRL or collateral
outside its validity, ``EINVAL`` for bad arguments.  Messages name the field, never its value.

Steps 1 and 2 depend only on the certification data and the attestation key, so they are cached
by those bytes: verifying another quote of a platform seen before costs one ECDSA P-256
verification.  Validity, CRLs, TCB and policy are checked on every call.
"""

from __future__ import annotations

import datetime as _dt
import errno
import functools
import hashlib
import hmac
import json
import struct
import warnings
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, Final

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.utils import CryptographyDeprecationWarning

from keyring_types.attest.snp import _strict_outer_shape
from keyring_types.errors import error

try:
    # The system libcrypto's P-256 is the assembler one, several times faster than the build
    # cryptography ships; without the extension, cryptography verifies the quote signature.
    from keyring_types.bindings.p256 import P256PublicKey as _NativeP256
except ImportError:  # pragma: no cover - the extension is built with the package
    _NativeP256 = None  # type: ignore[assignment,misc]

__all__ = [
    "HEADER_SIZE",
    "BODY_SIZES",
    "INTEL_QE_VENDOR_ID",
    "TCB_STATUSES",
    "TdxQuote",
    "QeReport",
    "PckInfo",
    "TcbResult",
    "Collateral",
    "TcbInfo",
    "QeIdentity",
    "Policy",
    "parse_quote",
    "parse_qe_report",
    "parse_tcb_info",
    "parse_qe_identity",
    "evaluate_tcb",
    "evaluate_qe_tcb",
    "pck_info",
    "intel_root_pem",
    "verify",
    "pack_header",
    "pack_body",
    "pack_qe_report",
    "pack_signed_data",
]

HEADER_SIZE: Final = 48
#: TD report body sizes by v5 body type: 2 = TDX 1.0 (also the only v4 body), 3 = TDX 1.5.
BODY_SIZES: Final = {2: 584, 3: 648}
QE_REPORT_SIZE: Final = 384
INTEL_QE_VENDOR_ID: Final = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
_AK_ECDSA_P256: Final = 2
_TEE_TDX: Final = 0x81
_CERT_QE_REPORT: Final = 6
_CERT_PCK_CHAIN: Final = 5
_TD_ATTR_DEBUG: Final = 1
#: Intel PCS TCB statuses, best first.
TCB_STATUSES: Final = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)

_HEADER: Final = struct.Struct("<HHIHH16s20s")
# TD report body 1.0: TEE_TCB_SVN, MRSEAM, MRSIGNERSEAM, SEAMATTRIBUTES, TDATTRIBUTES, XFAM, MRTD,
# MRCONFIGID, MROWNER, MROWNERCONFIG, RTMR0..3, REPORTDATA.  1.5 appends TEE_TCB_SVN2, MRSERVICETD.
_BODY10: Final = struct.Struct("<16s48s48sQQQ48s48s48s48s48s48s48s48s64s")
_BODY15_TAIL: Final = struct.Struct("<16s48s")
_QE_REPORT: Final = struct.Struct("<16sI28s16s32s32s32s96sHH60s64s")
assert _HEADER.size == HEADER_SIZE and _BODY10.size == 584 and _QE_REPORT.size == QE_REPORT_SIZE

_INTEL_OID: Final = "1.2.840.113741.1.13.1"
_LEAF_CN: Final = "Intel SGX PCK Certificate"
_CA_CNS: Final = {"Intel SGX PCK Platform CA": "platform", "Intel SGX PCK Processor CA": "processor"}
_SIGNING_CN: Final = "Intel SGX TCB Signing"
_ECDSA_SHA256_OID: Final = x509.ObjectIdentifier("1.2.840.10045.4.3.2")


def _bad(msg: str) -> OSError:
    return error(errno.EBADMSG, msg)


def _rejected(msg: str) -> OSError:
    return error(errno.EKEYREJECTED, msg)


# ---------------------------------------------------------------------------------------------
# The quote


@attrs.frozen
class QeReport:
    """The SGX report of the quoting enclave (384 bytes) inside a quote's certification data."""

    cpusvn: bytes
    miscselect: int
    attributes: bytes
    mrenclave: bytes
    mrsigner: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes
    raw: bytes = attrs.field(repr=False)


@attrs.frozen
class PckInfo:
    """What the PCK leaf certificate's SGX extensions say about the platform."""

    fmspc: bytes
    pce_id: bytes
    pce_svn: int
    cpu_svn: bytes
    #: The 16 TCB component SVNs (``sgxtcbcomponents`` order).
    components: tuple[int, ...]
    ca: str  # "platform" or "processor"


@attrs.frozen
class TcbResult:
    """TCB statuses from Intel PCS collateral, as :func:`verify` found them (``None``: not given)."""

    fmspc: bytes
    tcb_status: str | None = None
    tcb_date: str | None = None
    advisory_ids: tuple[str, ...] = ()
    qe_tcb_status: str | None = None
    tcb_evaluation_data_number: int | None = None


@attrs.frozen
class TdxQuote:
    """One parsed TDX quote.  Integers are as the quote stores them (little-endian).

    ``body_type`` is 2 (TD report 1.0) or 3 (1.5, with ``tee_tcb_svn2`` and ``mrservicetd``).
    ``pck`` and ``tcb`` are filled in by :func:`verify`.
    """

    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes
    body_type: int
    tee_tcb_svn: bytes
    mrseam: bytes
    mrsignerseam: bytes
    seam_attributes: int
    td_attributes: int
    xfam: int
    mrtd: bytes
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None
    mrservicetd: bytes | None
    signature: bytes = attrs.field(repr=False)
    attestation_key: bytes = attrs.field(repr=False)
    qe_report: QeReport = attrs.field(repr=False)
    qe_report_signature: bytes = attrs.field(repr=False)
    qe_auth_data: bytes = attrs.field(repr=False)
    pck_chain: bytes = attrs.field(repr=False)
    signed_size: int = attrs.field(repr=False)
    raw: bytes = attrs.field(repr=False)
    pck: PckInfo | None = None
    tcb: TcbResult | None = None

    @property
    def debug(self) -> bool:
        """TDATTRIBUTES bit 0: the TD is debuggable (its state is visible to the host)."""
        return bool(self.td_attributes & _TD_ATTR_DEBUG)

    @property
    def signed_bytes(self) -> bytes:
        """The bytes the attestation key signs: the header and the body (with its v5 descriptor)."""
        return self.raw[: self.signed_size]

    @property
    def end(self) -> int:
        """Where the quote's signed data ends; bytes after it are padding."""
        return self.signed_size + 4 + 128 + 6 + QE_REPORT_SIZE + 64 + 2 + len(self.qe_auth_data) + 6 + len(self.pck_chain)


def parse_qe_report(raw: bytes) -> QeReport:
    """Read a 384-byte SGX report body.  ``EBADMSG`` for another size or reserved bytes set."""
    if len(raw) != QE_REPORT_SIZE:
        raise _bad(f"QE report: {len(raw)} bytes, not {QE_REPORT_SIZE}")
    cpusvn, misc, r0, attributes, mrenclave, r1, mrsigner, r2, prod, svn, r3, report_data = _QE_REPORT.unpack(raw)
    # The reserved areas are signed, so they are not checked for zero: a future QE may use them.
    del r0, r1, r2, r3
    return QeReport(cpusvn, misc, attributes, mrenclave, mrsigner, prod, svn, report_data, bytes(raw))


def _u16(b: bytes, pos: int, what: str) -> int:
    if pos + 2 > len(b):
        raise _bad(f"TDX quote: truncated at {what}")
    return int.from_bytes(b[pos : pos + 2], "little")


def _u32(b: bytes, pos: int, what: str) -> int:
    if pos + 4 > len(b):
        raise _bad(f"TDX quote: truncated at {what}")
    return int.from_bytes(b[pos : pos + 4], "little")


def parse_quote(blob: bytes) -> TdxQuote:
    """Parse a TDX quote of version 4 or 5 (TD report body 1.0 or 1.5).

    Checks the form only, not the signatures.  Bytes after the signed data are ignored (GetQuote
    returns the quote in a larger buffer).  Raises ``EBADMSG`` naming the field for a short
    quote, an unknown version, attestation key type, TEE type, body type or certification data
    type, or sizes that do not add up.
    """
    b = bytes(blob)
    if len(b) < HEADER_SIZE:
        raise _bad(f"TDX quote: {len(b)} bytes, shorter than the {HEADER_SIZE}-byte header")
    version, ak_type, tee, qe_svn, pce_svn, vendor, user = _HEADER.unpack_from(b)
    if version not in (4, 5):
        raise _bad(f"TDX quote: version {version} is not 4 or 5")
    if ak_type != _AK_ECDSA_P256:
        raise _bad("TDX quote: attestation key type is not 2 (ECDSA P-256)")
    if tee != _TEE_TDX:
        raise _bad("TDX quote: TEE type is not 0x81 (TDX)")
    pos = HEADER_SIZE
    if version == 4:
        body_type = 2
    else:
        body_type = _u16(b, pos, "body type")
        size = _u32(b, pos + 2, "body size")
        if body_type not in BODY_SIZES:
            raise _bad(f"TDX quote: body type {body_type} is not 2 (TDX 1.0) or 3 (TDX 1.5)")
        if size != BODY_SIZES[body_type]:
            raise _bad(f"TDX quote: body size {size} does not match body type {body_type}")
        pos += 6
    body_size = BODY_SIZES[body_type]
    if pos + body_size + 4 > len(b):
        raise _bad("TDX quote: truncated in the TD report body")
    f = _BODY10.unpack_from(b, pos)
    svn2 = servicetd = None
    if body_type == 3:
        svn2, servicetd = _BODY15_TAIL.unpack_from(b, pos + _BODY10.size)
    signed_size = pos + body_size
    sig_len = _u32(b, signed_size, "signed data size")
    start = signed_size + 4
    end = start + sig_len
    if end > len(b):
        raise _bad("TDX quote: signed data size runs past the end of the quote")
    if sig_len < 128 + 6:
        raise _bad("TDX quote: signed data too short for a signature and an attestation key")
    signature, ak = b[start : start + 64], b[start + 64 : start + 128]
    cert_type = _u16(b, start + 128, "certification data type")
    cert_size = _u32(b, start + 130, "certification data size")
    if cert_type != _CERT_QE_REPORT:
        raise _bad(f"TDX quote: certification data type {cert_type} is not 6 (QE report)")
    cd_start = start + 134
    if cd_start + cert_size != end:
        raise _bad("TDX quote: certification data size does not match the signed data size")
    if cert_size < QE_REPORT_SIZE + 64 + 2 + 6:
        raise _bad("TDX quote: QE report certification data too short")
    qe_raw = b[cd_start : cd_start + QE_REPORT_SIZE]
    qe_sig = b[cd_start + QE_REPORT_SIZE : cd_start + QE_REPORT_SIZE + 64]
    p = cd_start + QE_REPORT_SIZE + 64
    auth_len = _u16(b, p, "QE authentication data size")
    auth = b[p + 2 : p + 2 + auth_len]
    p += 2 + auth_len
    if p + 6 > end:
        raise _bad("TDX quote: QE authentication data size runs past the certification data")
    inner_type = _u16(b, p, "PCK certification data type")
    inner_size = _u32(b, p + 2, "PCK certification data size")
    if inner_type != _CERT_PCK_CHAIN:
        raise _bad(f"TDX quote: inner certification data type {inner_type} is not 5 (PCK certificate chain)")
    if p + 6 + inner_size != end:
        raise _bad("TDX quote: PCK certification data size does not match the certification data size")
    chain = b[p + 6 : end]
    return TdxQuote(
        version=version,
        att_key_type=ak_type,
        tee_type=tee,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=vendor,
        user_data=user,
        body_type=body_type,
        tee_tcb_svn=f[0],
        mrseam=f[1],
        mrsignerseam=f[2],
        seam_attributes=f[3],
        td_attributes=f[4],
        xfam=f[5],
        mrtd=f[6],
        mrconfigid=f[7],
        mrowner=f[8],
        mrownerconfig=f[9],
        rtmrs=(f[10], f[11], f[12], f[13]),
        report_data=f[14],
        tee_tcb_svn2=svn2,
        mrservicetd=servicetd,
        signature=signature,
        attestation_key=ak,
        qe_report=parse_qe_report(qe_raw),
        qe_report_signature=qe_sig,
        qe_auth_data=auth,
        pck_chain=chain,
        signed_size=signed_size,
        raw=b,
    )


# ---------------------------------------------------------------------------------------------
# Serializing (the emulated guest builds its quotes with these, in the layout the parser reads)


def pack_header(*, version: int = 4, qe_vendor_id: bytes = INTEL_QE_VENDOR_ID, user_data: bytes = bytes(20),
                qe_svn: int = 0, pce_svn: int = 0) -> bytes:  # fmt: skip
    """A 48-byte quote header for an ECDSA P-256 TDX quote.  ``EINVAL`` for wrong field sizes."""
    if len(qe_vendor_id) != 16 or len(user_data) != 20:
        raise error(errno.EINVAL, "quote header: qe_vendor_id must be 16 bytes and user_data 20")
    return _HEADER.pack(version, _AK_ECDSA_P256, _TEE_TDX, qe_svn, pce_svn, qe_vendor_id, user_data)


def pack_body(
    *,
    report_data: bytes,
    mrtd: bytes = bytes(48),
    rtmrs: Sequence[bytes] = (bytes(48),) * 4,
    tee_tcb_svn: bytes = bytes(16),
    mrseam: bytes = bytes(48),
    mrsignerseam: bytes = bytes(48),
    seam_attributes: int = 0,
    td_attributes: int = 0,
    xfam: int = 0,
    mrconfigid: bytes = bytes(48),
    mrowner: bytes = bytes(48),
    mrownerconfig: bytes = bytes(48),
) -> bytes:
    """A TD report body 1.0 (584 bytes).  ``EINVAL`` for a field of the wrong size."""
    fields = {"report_data": (report_data, 64), "mrtd": (mrtd, 48), "tee_tcb_svn": (tee_tcb_svn, 16), "mrseam": (mrseam, 48),
              "mrsignerseam": (mrsignerseam, 48), "mrconfigid": (mrconfigid, 48), "mrowner": (mrowner, 48),
              "mrownerconfig": (mrownerconfig, 48)}  # fmt: skip
    for name, (value, n) in fields.items():
        if len(value) != n:
            raise error(errno.EINVAL, f"TD report body: {name} must be {n} bytes")
    if len(rtmrs) != 4 or any(len(r) != 48 for r in rtmrs):
        raise error(errno.EINVAL, "TD report body: rtmrs must be four 48-byte values")
    try:
        return _BODY10.pack(tee_tcb_svn, mrseam, mrsignerseam, seam_attributes, td_attributes, xfam, mrtd, mrconfigid,
                            mrowner, mrownerconfig, *rtmrs, report_data)  # fmt: skip
    except struct.error:
        raise error(errno.EINVAL, "TD report body: an integer field is out of its range") from None


def pack_qe_report(*, report_data: bytes, cpusvn: bytes = bytes(16), miscselect: int = 0, attributes: bytes = bytes(16),
                   mrenclave: bytes = bytes(32), mrsigner: bytes = bytes(32), isv_prod_id: int = 2,
                   isv_svn: int = 0) -> bytes:  # fmt: skip
    """A 384-byte SGX report body for the QE.  ``EINVAL`` for a field of the wrong size."""
    if len(report_data) != 64 or len(cpusvn) != 16 or len(attributes) != 16 or len(mrenclave) != 32 or len(mrsigner) != 32:
        raise error(errno.EINVAL, "QE report: a field has the wrong size")
    return _QE_REPORT.pack(cpusvn, miscselect, bytes(28), attributes, mrenclave, bytes(32), mrsigner, bytes(96),
                           isv_prod_id, isv_svn, bytes(60), report_data)  # fmt: skip


def pack_signed_data(*, signature: bytes, attestation_key: bytes, qe_report: bytes, qe_report_signature: bytes,
                     qe_auth_data: bytes, pck_chain: bytes) -> bytes:  # fmt: skip
    """The quote's signed-data size and signed data (signature, key, QE report certification
    data with its nested PCK chain).  ``EINVAL`` for wrong sizes."""
    if len(signature) != 64 or len(attestation_key) != 64 or len(qe_report) != QE_REPORT_SIZE or len(qe_report_signature) != 64:
        raise error(errno.EINVAL, "signed data: a signature, key or report has the wrong size")
    if len(qe_auth_data) > 0xFFFF:
        raise error(errno.EINVAL, "signed data: QE authentication data longer than 65535 bytes")
    inner = struct.pack("<HI", _CERT_PCK_CHAIN, len(pck_chain)) + pck_chain
    cert = qe_report + qe_report_signature + struct.pack("<H", len(qe_auth_data)) + qe_auth_data + inner
    data = signature + attestation_key + struct.pack("<HI", _CERT_QE_REPORT, len(cert)) + cert
    return struct.pack("<I", len(data)) + data


# ---------------------------------------------------------------------------------------------
# DER: just enough to read Intel's SGX extension


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end) of the DER element at ``pos``; ``ValueError`` if malformed."""
    if pos + 2 > len(der):
        raise ValueError("truncated")
    tag, n = der[pos], der[pos + 1]
    start = pos + 2
    if n & 0x80:
        width = n & 0x7F
        if width == 0 or width > 3:
            raise ValueError("length")
        n = int.from_bytes(der[start : start + width], "big")
        start += width
    if start + n > len(der):
        raise ValueError("overrun")
    return tag, start, start + n


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        t = _tlv(der, start)
        if t[2] > end:
            raise ValueError("overrun")
        out.append(t)
        start = t[2]
    return out


def _oid(raw: bytes) -> str:
    if not raw:
        raise ValueError("empty OID")
    parts: list[int] = []
    value = 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    first = min(parts[0] // 40, 2)
    return ".".join(str(p) for p in (first, parts[0] - 40 * first, *parts[1:]))


def _sgx_extension(der: bytes) -> dict[str, bytes | dict[str, bytes]]:
    """Intel's SGX extension as {sub-OID suffix: value content}, the TCB one nested."""

    def pairs(start: int, end: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for tag, s, e in _children(der, start, end):
            if tag != 0x30:
                raise ValueError("not a SEQUENCE")
            kids = _children(der, s, e)
            if len(kids) != 2 or kids[0][0] != 0x06:
                raise ValueError("not an (OID, value) pair")
            name = _oid(der[kids[0][1] : kids[0][2]])
            vtag, vs, ve = kids[1]
            out[name] = pairs(vs, ve) if vtag == 0x30 else der[vs:ve]
        return out

    tag, s, e = _tlv(der, 0)
    if tag != 0x30 or e != len(der):
        raise ValueError("not one SEQUENCE")
    return pairs(s, e)


def _der_uint(raw: Any, what: str) -> int:
    if not isinstance(raw, bytes) or not raw or raw[0] & 0x80:
        raise _bad(f"PCK certificate: {what} is not a non-negative INTEGER")
    return int.from_bytes(raw, "big")


def _pck_info(leaf: x509.Certificate, ca: str) -> PckInfo:
    try:
        ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(_INTEL_OID)).value
    except x509.ExtensionNotFound:
        raise _rejected("PCK certificate: no SGX extension (1.2.840.113741.1.13.1)") from None
    if not isinstance(ext, x509.UnrecognizedExtension):
        raise _bad("PCK certificate: SGX extension not readable")
    try:
        sgx = _sgx_extension(ext.value)
    except (ValueError, IndexError):
        raise _bad("PCK certificate: SGX extension is not well-formed DER") from None
    o = _INTEL_OID
    tcb = sgx.get(o + ".2")
    fmspc, pce_id = sgx.get(o + ".4"), sgx.get(o + ".3")
    if not isinstance(tcb, dict) or not isinstance(fmspc, bytes) or not isinstance(pce_id, bytes):
        raise _rejected("PCK certificate: SGX extension lacks TCB, FMSPC or PCE-ID")
    if len(fmspc) != 6 or len(pce_id) != 2:
        raise _bad("PCK certificate: FMSPC is not 6 bytes or PCE-ID not 2")
    components = tuple(_der_uint(tcb.get(f"{o}.2.{i}"), f"TCB component {i}") for i in range(1, 17))
    cpusvn = tcb.get(o + ".2.18")
    if not isinstance(cpusvn, bytes) or len(cpusvn) != 16:
        raise _bad("PCK certificate: CPUSVN is not 16 bytes")
    return PckInfo(fmspc=fmspc, pce_id=pce_id, pce_svn=_der_uint(tcb.get(o + ".2.17"), "PCESVN"), cpu_svn=cpusvn,
                   components=components, ca=ca)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Certificates


@functools.cache
def intel_root_pem() -> bytes:
    """Intel's SGX Root CA certificate (PEM), the default trust anchor."""
    return resources.files(__package__ or "keyring_types.attest").joinpath("intel_roots", "intel_sgx_root_ca.pem").read_bytes()


def _load_pem_certs(data: bytes, what: str) -> list[x509.Certificate]:
    # Intel never issues a certificate with a non-positive serial or a malformed name attribute,
    # which cryptography only warns about today: here they are malformed input, never a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        warnings.simplefilter("error", UserWarning)
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                certs = x509.load_pem_x509_certificates(data)
            else:
                certs = [x509.load_der_x509_certificate(data)]
            for c in certs:
                _ = (c.version, c.subject, c.issuer, c.extensions, c.not_valid_before_utc, c.not_valid_after_utc, c.serial_number)
        except (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension, x509.UnsupportedGeneralNameType, UserWarning):
            raise _bad(f"{what}: not well-formed X.509 certificates") from None
    for c in certs:
        if not _strict_outer_shape(c.public_bytes(serialization.Encoding.DER)):
            raise _bad(f"{what}: signatureAlgorithm or signatureValue is not as signed (RFC 5280 4.1.1.2-3)")
    return certs


def _cn(name: x509.Name) -> str:
    a = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    v = a[0].value if a else ""
    return v if isinstance(v, str) else v.decode("ascii", "replace")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_signed_by(cert: x509.Certificate, issuer: x509.Certificate, what: str, by: str) -> None:
    if cert.issuer != issuer.subject:
        raise _rejected(f"{what}: issuer is not the {by}'s subject")
    if cert.signature_algorithm_oid != _ECDSA_SHA256_OID:
        raise _rejected(f"{what}: not signed with ECDSA and SHA-256")
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise _rejected(f"{by}: public key is not ECDSA P-256")
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise _rejected(f"{what}: signature does not verify under the {by}") from None


def _window(what: str, c: x509.Certificate) -> tuple[str, _dt.datetime, _dt.datetime]:
    return (what, c.not_valid_before_utc, c.not_valid_after_utc)


@attrs.frozen
class _Roots:
    certs: tuple[x509.Certificate, ...]
    ders: frozenset[bytes]


@functools.lru_cache(maxsize=16)
def _roots(data: tuple[bytes, ...] | None) -> _Roots:
    blobs = (intel_root_pem(),) if data is None else data
    certs: list[x509.Certificate] = []
    for blob in blobs:
        certs.extend(_load_pem_certs(blob, "roots"))
    if not certs:
        raise error(errno.EINVAL, "roots: no certificate given")
    for c in certs:
        if c.subject != c.issuer:
            raise error(errno.EINVAL, "roots: a root certificate is not self-issued")
        _check_signed_by(c, c, "root", "root")
    return _Roots(tuple(certs), frozenset(c.public_bytes(serialization.Encoding.DER) for c in certs))


def _roots_key(roots: bytes | Sequence[bytes] | None) -> tuple[bytes, ...] | None:
    if roots is None:
        return None
    if isinstance(roots, bytes | bytearray | memoryview):
        return (bytes(roots),)
    return tuple(bytes(r) for r in roots)


@attrs.frozen
class _Chain:
    """A PCK chain whose signatures and anchoring have been checked."""

    leaf: x509.Certificate
    ca: x509.Certificate
    root: x509.Certificate
    pck: PckInfo
    windows: tuple[tuple[str, _dt.datetime, _dt.datetime], ...]


def _check_pck_chain(chain: bytes, roots: _Roots) -> _Chain:
    certs = _load_pem_certs(chain.removesuffix(b"\x00"), "PCK certificate chain")
    # Only a canonical PEM encoding is accepted, so that no byte of the chain can change
    # (whitespace, base64 padding bits) without changing what is verified.
    canonical = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    if chain not in (canonical, canonical + b"\x00"):
        raise _bad("PCK certificate chain: not canonical PEM (one certificate after another, 64-column base64)")
    if len(certs) != 3:
        raise _bad(f"PCK certificate chain: {len(certs)} certificates, not 3 (PCK, CA, root)")
    leaf, ca, root = certs
    if root.public_bytes(serialization.Encoding.DER) not in roots.ders:
        raise _rejected("PCK certificate chain: the root is not a trusted root")
    if _cn(leaf.subject) != _LEAF_CN:
        raise _rejected(f"PCK certificate: subject common name is not '{_LEAF_CN}'")
    kind = _CA_CNS.get(_cn(ca.subject))
    if kind is None:
        raise _rejected("PCK CA: subject common name is neither 'Intel SGX PCK Platform CA' nor '... Processor CA'")
    if not _is_ca(ca) or _is_ca(leaf):
        raise _rejected("PCK certificate chain: basicConstraints do not make the CA a CA and the leaf a leaf")
    _check_signed_by(ca, root, "PCK CA", "root")
    _check_signed_by(leaf, ca, "PCK certificate", "PCK CA")
    pck = _pck_info(leaf, kind)
    windows = (_window("PCK certificate", leaf), _window("PCK CA", ca), _window("root", root))
    return _Chain(leaf, ca, root, pck, windows)


def _raw_sig(sig: bytes) -> bytes:
    return encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))


@functools.lru_cache(maxsize=256)
def _endorse(
    chain: bytes, qe_raw: bytes, qe_sig: bytes, ak: bytes, auth: bytes, roots_key: tuple[bytes, ...] | None
) -> tuple[_Chain, Callable[[bytes, bytes], bool]]:
    """Steps 1-2 of :func:`verify`: the chain, the QE report's signature and its binding of the AK."""
    c = _check_pck_chain(chain, _roots(roots_key))
    leaf_key = c.leaf.public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or not isinstance(leaf_key.curve, ec.SECP256R1):
        raise _rejected("PCK certificate: public key is not ECDSA P-256")
    try:
        leaf_key.verify(_raw_sig(qe_sig), qe_raw, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise _rejected("QE report signature: does not verify under the PCK certificate") from None
    want = hashlib.sha256(ak + auth).digest() + bytes(32)
    if not hmac.compare_digest(want, qe_raw[320:384]):
        raise _rejected("QE report REPORTDATA: does not bind the attestation key and QE authentication data")
    return c, _ak_verifier(ak)


def _ak_verifier(ak: bytes) -> Callable[[bytes, bytes], bool]:
    """``verify(raw signature, message)`` under the attestation key (64 bytes X ‖ Y);
    ``EKEYREJECTED`` if it is not a point on P-256."""
    if _NativeP256 is not None:
        native = _NativeP256.from_point(ak)
        if native is None:
            raise _rejected("attestation key: not a point on P-256")
        return native.verify
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + ak)
    except ValueError:
        raise _rejected("attestation key: not a point on P-256") from None

    def verify(sig: bytes, message: bytes) -> bool:
        try:
            key.verify(_raw_sig(sig), message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    return verify


# ---------------------------------------------------------------------------------------------
# Collateral (Intel PCS formats)


@attrs.frozen(kw_only=True)
class Collateral:
    """Intel PCS collateral for a quote, as PCS serves it.

    ``pck_crl`` (``/sgx/certification/v4/pckcrl``) and ``root_crl`` are DER or PEM CRLs.
    ``tcb_info`` (``/tdx/certification/v4/tcb?fmspc=``) and ``qe_identity``
    (``/tdx/certification/v4/qe/identity``) are the JSON bodies, byte for byte (their signatures
    cover the exact bytes), each with the PEM issuer chain from its response header
    (``TCB-Info-Issuer-Chain``, ``SGX-Enclave-Identity-Issuer-Chain``, URL-decoded): the TCB
    Signing certificate, then the root.  Every field is optional.  ``EINVAL`` for a body
    without its chain.
    """

    pck_crl: bytes | None = None
    root_crl: bytes | None = None
    tcb_info: bytes | None = None
    tcb_info_issuer_chain: bytes | None = None
    qe_identity: bytes | None = None
    qe_identity_issuer_chain: bytes | None = None

    def __attrs_post_init__(self) -> None:
        if self.tcb_info is not None and self.tcb_info_issuer_chain is None:
            raise error(errno.EINVAL, "collateral: tcb_info needs its tcb_info_issuer_chain")
        if self.qe_identity is not None and self.qe_identity_issuer_chain is None:
            raise error(errno.EINVAL, "collateral: qe_identity needs its qe_identity_issuer_chain")


def _signed_member(body: bytes, member: str, what: str) -> tuple[dict[str, Any], bytes, bytes]:
    """(the member object, its exact bytes, the signature) of a PCS ``{member: {...}, "signature": hex}`` body."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(f"{what}: not UTF-8") from None
    dec = json.JSONDecoder()
    spans: dict[str, tuple[Any, int, int]] = {}
    try:
        i = len(text) - len(text.lstrip())
        if text[i : i + 1] != "{":
            raise ValueError
        i += 1
        while True:
            while text[i].isspace():
                i += 1
            if text[i] == "}":
                break
            key, i = dec.raw_decode(text, i)
            while text[i].isspace():
                i += 1
            if text[i] != ":":
                raise ValueError
            i += 1
            while text[i].isspace():
                i += 1
            value, end = dec.raw_decode(text, i)
            if not isinstance(key, str) or key in spans:
                raise ValueError
            spans[key] = (value, i, end)
            i = end
            while text[i].isspace():
                i += 1
            if text[i] == ",":
                i += 1
            elif text[i] != "}":
                raise ValueError
        if text[i + 1 :].strip():
            raise ValueError
    except (ValueError, IndexError):
        raise _bad(f"{what}: not a JSON object") from None
    if member not in spans or "signature" not in spans:
        raise _bad(f"{what}: no '{member}' or 'signature'")
    obj, s, e = spans[member]
    sig_hex = spans["signature"][0]
    if not isinstance(obj, dict) or not isinstance(sig_hex, str):
        raise _bad(f"{what}: '{member}' is not an object or 'signature' not a string")
    try:
        sig = bytes.fromhex(sig_hex)
    except ValueError:
        raise _bad(f"{what}: signature is not hex") from None
    if len(sig) != 64:
        raise _bad(f"{what}: signature is not 64 bytes")
    return obj, text[s:e].encode("utf-8"), sig


def _time(value: Any, what: str) -> _dt.datetime:
    if not isinstance(value, str):
        raise _bad(f"{what}: not a date string")
    try:
        t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"{what}: not an ISO 8601 date") from None
    return t if t.tzinfo else t.replace(tzinfo=_dt.UTC)


def _hexfield(obj: dict[str, Any], key: str, n: int, what: str) -> bytes:
    v = obj.get(key)
    try:
        raw = bytes.fromhex(v) if isinstance(v, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != n:
        raise _bad(f"{what}: '{key}' is not {n} bytes of hex")
    return raw


def _int(obj: dict[str, Any], key: str, what: str) -> int:
    v = obj.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise _bad(f"{what}: '{key}' is not a non-negative integer")
    return v


@attrs.frozen
class _Level:
    sgx: tuple[int, ...]
    pcesvn: int
    tdx: tuple[int, ...]
    status: str
    date: str
    advisories: tuple[str, ...]


@attrs.frozen
class TcbInfo:
    """A parsed PCS TDX TCB info (version 3).  ``signed`` and ``signature`` are what the TCB
    Signing key signed (the exact bytes of the ``tcbInfo`` object) and its raw r‖s."""

    fmspc: bytes
    pce_id: bytes
    issue_date: _dt.datetime
    next_update: _dt.datetime
    evaluation_data_number: int
    module_mrsigner: bytes
    module_attributes: int
    module_attributes_mask: int
    levels: tuple[_Level, ...] = attrs.field(repr=False)
    #: TDX module identities: id ("TDX_01") -> ((isvsvn, status, date, advisories), ...)
    module_identities: dict[str, tuple[tuple[int, str, str, tuple[str, ...]], ...]] = attrs.field(repr=False)
    signed: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)


@attrs.frozen
class QeIdentity:
    """A parsed PCS TD_QE enclave identity (version 2)."""

    issue_date: _dt.datetime
    next_update: _dt.datetime
    evaluation_data_number: int
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isv_prod_id: int
    levels: tuple[tuple[int, str, str, tuple[str, ...]], ...] = attrs.field(repr=False)
    signed: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)


def _status(v: Any, what: str) -> str:
    if v not in TCB_STATUSES:
        raise _bad(f"{what}: tcbStatus is not one of Intel's statuses")
    return str(v)


def _advisories(level: dict[str, Any]) -> tuple[str, ...]:
    ids = level.get("advisoryIDs", [])
    return tuple(str(i) for i in ids) if isinstance(ids, list) else ()


def parse_tcb_info(body: bytes) -> TcbInfo:
    """Read a PCS TDX TCB info response body.  ``EBADMSG`` naming the field for malformed JSON,
    an id other than ``TDX``, a version other than 3, or a missing or ill-typed field."""
    obj, signed, sig = _signed_member(bytes(body), "tcbInfo", "TCB info")
    what = "TCB info"
    if obj.get("id") != "TDX" or obj.get("version") != 3:
        raise _bad(f"{what}: not a TDX TCB info of version 3")
    module = obj.get("tdxModule")
    if not isinstance(module, dict):
        raise _bad(f"{what}: no 'tdxModule'")
    levels = []
    raw_levels = obj.get("tcbLevels")
    if not isinstance(raw_levels, list) or not raw_levels:
        raise _bad(f"{what}: no 'tcbLevels'")
    try:
        for lv in raw_levels:
            tcb = lv["tcb"]
            sgx = tuple(int(c["svn"]) for c in tcb["sgxtcbcomponents"])
            tdx = tuple(int(c["svn"]) for c in tcb["tdxtcbcomponents"])
            if len(sgx) != 16 or len(tdx) != 16:
                raise ValueError
            levels.append(_Level(sgx, int(tcb["pcesvn"]), tdx, _status(lv["tcbStatus"], what), str(lv.get("tcbDate", "")),
                                 _advisories(lv)))  # fmt: skip
        identities: dict[str, tuple[tuple[int, str, str, tuple[str, ...]], ...]] = {}
        for ident in obj.get("tdxModuleIdentities", []):
            identities[str(ident["id"]).upper()] = tuple(
                (int(lv["tcb"]["isvsvn"]), _status(lv["tcbStatus"], what), str(lv.get("tcbDate", "")), _advisories(lv))
                for lv in ident["tcbLevels"]
            )
    except (KeyError, TypeError, ValueError):
        raise _bad(f"{what}: a TCB level is malformed") from None
    return TcbInfo(
        fmspc=_hexfield(obj, "fmspc", 6, what),
        pce_id=_hexfield(obj, "pceId", 2, what),
        issue_date=_time(obj.get("issueDate"), f"{what} issueDate"),
        next_update=_time(obj.get("nextUpdate"), f"{what} nextUpdate"),
        evaluation_data_number=_int(obj, "tcbEvaluationDataNumber", what),
        module_mrsigner=_hexfield(module, "mrsigner", 48, f"{what} tdxModule"),
        module_attributes=int.from_bytes(_hexfield(module, "attributes", 8, f"{what} tdxModule"), "little"),
        module_attributes_mask=int.from_bytes(_hexfield(module, "attributesMask", 8, f"{what} tdxModule"), "little"),
        levels=tuple(levels),
        module_identities=identities,
        signed=signed,
        signature=sig,
    )


def parse_qe_identity(body: bytes) -> QeIdentity:
    """Read a PCS QE identity response body (``TD_QE``, version 2).  ``EBADMSG`` as
    :func:`parse_tcb_info`."""
    obj, signed, sig = _signed_member(bytes(body), "enclaveIdentity", "QE identity")
    what = "QE identity"
    if obj.get("id") != "TD_QE" or obj.get("version") != 2:
        raise _bad(f"{what}: not a TD_QE identity of version 2")
    try:
        levels = tuple(
            (int(lv["tcb"]["isvsvn"]), _status(lv["tcbStatus"], what), str(lv.get("tcbDate", "")), _advisories(lv))
            for lv in obj["tcbLevels"]
        )
    except (KeyError, TypeError, ValueError):
        raise _bad(f"{what}: a TCB level is malformed") from None
    return QeIdentity(
        issue_date=_time(obj.get("issueDate"), f"{what} issueDate"),
        next_update=_time(obj.get("nextUpdate"), f"{what} nextUpdate"),
        evaluation_data_number=_int(obj, "tcbEvaluationDataNumber", what),
        miscselect=int.from_bytes(_hexfield(obj, "miscselect", 4, what), "little"),
        miscselect_mask=int.from_bytes(_hexfield(obj, "miscselectMask", 4, what), "little"),
        attributes=_hexfield(obj, "attributes", 16, what),
        attributes_mask=_hexfield(obj, "attributesMask", 16, what),
        mrsigner=_hexfield(obj, "mrsigner", 32, what),
        isv_prod_id=_int(obj, "isvprodid", what),
        levels=levels,
        signed=signed,
        signature=sig,
    )


def evaluate_tcb(quote: TdxQuote, pck: PckInfo, info: TcbInfo) -> tuple[str, str, tuple[str, ...]]:
    """(status, TCB date, advisory ids) of the platform for ``info``, as Intel's QVL finds it.

    The first TCB level whose 16 SGX component SVNs and PCESVN the PCK certificate meets and
    whose 16 TDX component SVNs TEE_TCB_SVN meets (bytes 0-1, the TDX module's own SVN and major
    version, are then judged by the module identity ``TDX_<major>`` when the major version is
    not 0).  ``EKEYREJECTED`` if the FMSPC, PCE-ID, MRSIGNERSEAM or SEAMATTRIBUTES do not match
    the TCB info; status ``"NotSupported"`` when no level matches.
    """
    if not hmac.compare_digest(pck.fmspc, info.fmspc):
        raise _rejected("TCB info: FMSPC is not the PCK certificate's")
    if pck.pce_id != info.pce_id:
        raise _rejected("TCB info: PCE-ID is not the PCK certificate's")
    if quote.mrsignerseam != info.module_mrsigner:
        raise _rejected("TCB info: tdxModule mrsigner is not the quote's MRSIGNERSEAM")
    if quote.seam_attributes & info.module_attributes_mask != info.module_attributes:
        raise _rejected("TCB info: the quote's SEAMATTRIBUTES do not match tdxModule attributes")
    svn = quote.tee_tcb_svn
    first = 2 if svn[1] > 0 else 0
    for lv in info.levels:
        if (all(a >= b for a, b in zip(pck.components, lv.sgx, strict=True)) and pck.pce_svn >= lv.pcesvn
                and all(svn[i] >= lv.tdx[i] for i in range(first, 16))):  # fmt: skip
            if svn[1] > 0:
                ident = info.module_identities.get(f"TDX_{svn[1]:02X}")
                if ident is None:
                    return "NotSupported", "", ()
                for isvsvn, status, date, adv in ident:
                    if svn[0] >= isvsvn:
                        return _worse(lv.status, status), max(lv.date, date), lv.advisories + adv
                return "NotSupported", "", ()
            return lv.status, lv.date, lv.advisories
    return "NotSupported", "", ()


def _worse(a: str, b: str) -> str:
    # The module's own status can only lower the platform's (e.g. a revoked module).
    return a if TCB_STATUSES.index(a) >= TCB_STATUSES.index(b) else b


def evaluate_qe_tcb(qe: QeReport, ident: QeIdentity) -> str:
    """The QE's TCB status for ``ident``.  ``EKEYREJECTED`` if the QE report's MISCSELECT,
    ATTRIBUTES (under their masks), MRSIGNER or ISVPRODID do not match; ``"NotSupported"`` when
    its ISVSVN is below every level."""
    if qe.miscselect & ident.miscselect_mask != ident.miscselect:
        raise _rejected("QE identity: the QE report's MISCSELECT does not match")
    if bytes(a & m for a, m in zip(qe.attributes, ident.attributes_mask, strict=True)) != ident.attributes:
        raise _rejected("QE identity: the QE report's ATTRIBUTES do not match")
    if not hmac.compare_digest(qe.mrsigner, ident.mrsigner):
        raise _rejected("QE identity: the QE report's MRSIGNER does not match")
    if qe.isv_prod_id != ident.isv_prod_id:
        raise _rejected("QE identity: the QE report's ISVPRODID does not match")
    for isvsvn, status, _date, _adv in ident.levels:
        if qe.isv_svn >= isvsvn:
            return status
    return "NotSupported"


def pck_info(blob: bytes) -> PckInfo:
    """The platform facts (FMSPC, SVNs, CA kind) of a quote's PCK certificate, without verifying
    anything: what a caller needs to fetch the TCB info.  ``EBADMSG`` as :func:`parse_quote`."""
    q = parse_quote(blob)
    certs = _load_pem_certs(q.pck_chain.removesuffix(b"\x00"), "PCK certificate chain")
    if len(certs) < 2:
        raise _bad("PCK certificate chain: fewer than 2 certificates")
    kind = _CA_CNS.get(_cn(certs[1].subject))
    if kind is None:
        raise _rejected("PCK CA: subject common name is neither 'Intel SGX PCK Platform CA' nor '... Processor CA'")
    return _pck_info(certs[0], kind)


def _check_time(what: str, not_before: _dt.datetime, not_after: _dt.datetime, at: _dt.datetime) -> None:
    if not not_before <= at <= not_after:
        raise error(
            errno.EKEYEXPIRED,
            f"{what}: not valid at {at.isoformat()} (valid {not_before.isoformat()} .. {not_after.isoformat()})",
        )


def _load_crl(data: bytes, what: str) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----BEGIN") else x509.load_der_x509_crl(data)
        _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, list(crl))
    except (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        raise _bad(f"{what}: not a well-formed DER or PEM X.509 CRL") from None
    return crl


def _check_crl(data: bytes, issuer: x509.Certificate, at: _dt.datetime, what: str, by: str,
               subjects: Sequence[tuple[str, x509.Certificate]]) -> None:  # fmt: skip
    crl = _load_crl(data, what)
    if crl.issuer != issuer.subject:
        raise _rejected(f"{what}: issuer is not the {by}")
    key = issuer.public_key()
    try:
        ok = crl.is_signature_valid(key)  # type: ignore[arg-type]
    except (UnsupportedAlgorithm, TypeError, ValueError):
        ok = False
    if not ok:
        raise _rejected(f"{what}: signature does not verify under the {by}")
    if crl.next_update_utc is None:
        raise _bad(f"{what}: no nextUpdate")
    _check_time(what, crl.last_update_utc, crl.next_update_utc, at)
    for name, cert in subjects:
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise _rejected(f"{what}: the {name} is revoked")


@functools.lru_cache(maxsize=32)
def _signing_chain(chain: bytes, root_der: bytes, what: str) -> tuple[x509.Certificate, x509.Certificate]:
    certs = _load_pem_certs(chain, what)
    if len(certs) != 2:
        raise _bad(f"{what}: {len(certs)} certificates, not 2 (TCB Signing, root)")
    signing, root = certs
    if root.public_bytes(serialization.Encoding.DER) != root_der:
        raise _rejected(f"{what}: the root is not the PCK chain's root")
    if _cn(signing.subject) != _SIGNING_CN or _is_ca(signing):
        raise _rejected(f"{what}: the signer is not an '{_SIGNING_CN}' leaf")
    _check_signed_by(signing, root, "TCB Signing certificate", "root")
    return signing, root


def _check_signed_doc(signed: bytes, sig: bytes, chain: bytes, c: _Chain, at: _dt.datetime, what: str) -> x509.Certificate:
    signing, _root = _signing_chain(chain, c.root.public_bytes(serialization.Encoding.DER), f"{what} issuer chain")
    _check_time(f"{what} TCB Signing certificate", signing.not_valid_before_utc, signing.not_valid_after_utc, at)
    key = signing.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise _rejected(f"{what}: the TCB Signing certificate's key is not ECDSA P-256")
    try:
        key.verify(_raw_sig(sig), signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise _rejected(f"{what}: signature does not verify under the TCB Signing certificate") from None
    return signing


def _apply_collateral(q: TdxQuote, c: _Chain, col: Collateral, at: _dt.datetime) -> TcbResult:
    signers: list[tuple[str, x509.Certificate]] = []
    if col.pck_crl is not None:
        _check_crl(col.pck_crl, c.ca, at, "PCK CRL", "PCK CA", [("PCK certificate", c.leaf)])
    status = date = qe_status = None
    advisories: tuple[str, ...] = ()
    number = None
    if col.tcb_info is not None and col.tcb_info_issuer_chain is not None:
        info = parse_tcb_info(col.tcb_info)
        signers.append(("TCB info signer", _check_signed_doc(info.signed, info.signature, col.tcb_info_issuer_chain, c, at, "TCB info")))
        _check_time("TCB info", info.issue_date, info.next_update, at)
        status, date, advisories = evaluate_tcb(q, c.pck, info)
        number = info.evaluation_data_number
    if col.qe_identity is not None and col.qe_identity_issuer_chain is not None:
        ident = parse_qe_identity(col.qe_identity)
        signers.append(("QE identity signer", _check_signed_doc(ident.signed, ident.signature, col.qe_identity_issuer_chain, c, at,
                                                                 "QE identity")))  # fmt: skip
        _check_time("QE identity", ident.issue_date, ident.next_update, at)
        qe_status = evaluate_qe_tcb(q.qe_report, ident)
    if col.root_crl is not None:
        _check_crl(col.root_crl, c.root, at, "root CRL", "root", [("PCK CA", c.ca), *signers])
    return TcbResult(fmspc=c.pck.fmspc, tcb_status=status, tcb_date=date, advisory_ids=advisories, qe_tcb_status=qe_status,
                     tcb_evaluation_data_number=number)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Policy


def _length(n: int) -> Callable[[object, attrs.Attribute[bytes | None], bytes | None], None]:
    def check(inst: object, attribute: attrs.Attribute[bytes | None], value: bytes | None) -> None:
        if value is not None and len(value) != n:
            raise error(errno.EINVAL, f"policy: {attribute.name} must be {n} bytes")

    return check


def _opt_bytes(value: bytes | bytearray | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)


def _rtmrs(value: Sequence[bytes | None] | None) -> tuple[bytes | None, ...] | None:
    if value is None:
        return None
    out = tuple(None if v is None else bytes(v) for v in value)
    if len(out) != 4 or any(v is not None and len(v) != 48 for v in out):
        raise error(errno.EINVAL, "policy: rtmrs must be four entries, each None or 48 bytes")
    return out


def _statuses(value: Sequence[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    out = frozenset(value)
    unknown = out - set(TCB_STATUSES) - {"NotSupported"}
    if unknown:
        raise error(errno.EINVAL, "policy: accepted_tcb_statuses names a status Intel does not define")
    return out


def _u64_or_none(inst: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and not 0 <= value < 1 << 64:
        raise error(errno.EINVAL, f"policy: {attribute.name} must be a 64-bit unsigned integer")


@attrs.frozen(kw_only=True)
class Policy:
    """What a verified quote must say, in the spirit of go-tdx-guest's validation options.

    Every field left at ``None`` is not checked.  ``debug_allowed`` defaults to ``False``: a quote
    of a debuggable TD (TDATTRIBUTES bit 0) is refused unless the caller allows it.  ``nonce``
    binds the quote to a challenge as the ``tsm`` key type does: REPORTDATA must be
    SHA-512(nonce ‖ user_data).  ``rtmrs`` is four entries, ``None`` for one not checked.
    ``minimum_tee_tcb_svn`` is compared byte by byte.  ``accepted_tcb_statuses`` lists the PCS
    statuses (``"UpToDate"``, ...) accepted for both the platform and the QE; when set, the
    collateral must give both.  Bad sizes raise ``EINVAL``.
    """

    mrtd: bytes | None = attrs.field(default=None, converter=_opt_bytes, validator=_length(48))
    rtmrs: tuple[bytes | None, ...] | None = attrs.field(default=None, converter=_rtmrs)
    report_data: bytes | None = attrs.field(default=None, converter=_opt_bytes, validator=_length(64))
    nonce: bytes | None = attrs.field(default=None, converter=_opt_bytes)
    user_data: bytes = attrs.field(default=b"", converter=bytes)
    mrconfigid: bytes | None = attrs.field(default=None, converter=_opt_bytes, validator=_length(48))
    mrowner: bytes | None = attrs.field(default=None, converter=_opt_bytes, validator=_length(48))
    mrownerconfig: bytes | None = attrs.field(default=None, converter=_opt_bytes, validator=_length(48))
    mrseam: bytes | None = attrs.field(default=None, converter=_opt_bytes, validator=_length(48))
    mrsignerseam: bytes | None = attrs.field(default=None, converter=_opt_bytes, validator=_length(48))
    xfam: int | None = attrs.field(default=None, validator=_u64_or_none)
    td_attributes: int | None = attrs.field(default=None, validator=_u64_or_none)
    debug_allowed: bool = False
    minimum_tee_tcb_svn: bytes | None = attrs.field(default=None, converter=_opt_bytes, validator=_length(16))
    minimum_qe_isv_svn: int | None = None
    accepted_tcb_statuses: frozenset[str] | None = attrs.field(default=None, converter=_statuses)

    def __attrs_post_init__(self) -> None:
        if self.nonce is not None and self.report_data is not None:
            raise error(errno.EINVAL, "policy: give report_data or nonce, not both")
        if self.nonce is None and self.user_data:
            raise error(errno.EINVAL, "policy: user_data is only used with nonce")

    def expected_report_data(self) -> bytes | None:
        """The REPORTDATA this policy demands, or ``None`` if it demands none."""
        if self.nonce is not None:
            return hashlib.sha512(self.nonce + self.user_data).digest()
        return self.report_data

    def check(self, q: TdxQuote) -> None:
        """Raise ``EKEYREJECTED`` naming the first field of ``q`` this policy refuses."""

        def same(field: str, want: bytes | None, got: bytes | None) -> None:
            # Constant time: an expected value may be a secret binding.
            if want is not None and (got is None or not hmac.compare_digest(want, got)):
                raise _rejected(f"policy: {field} does not match")

        same("MRTD", self.mrtd, q.mrtd)
        if self.rtmrs is not None:
            for i, want in enumerate(self.rtmrs):
                same(f"RTMR{i}", want, q.rtmrs[i])
        same("REPORTDATA", self.expected_report_data(), q.report_data)
        same("MRCONFIGID", self.mrconfigid, q.mrconfigid)
        same("MROWNER", self.mrowner, q.mrowner)
        same("MROWNERCONFIG", self.mrownerconfig, q.mrownerconfig)
        same("MRSEAM", self.mrseam, q.mrseam)
        same("MRSIGNERSEAM", self.mrsignerseam, q.mrsignerseam)
        if self.xfam is not None and q.xfam != self.xfam:
            raise _rejected("policy: XFAM does not match")
        if self.td_attributes is not None and q.td_attributes != self.td_attributes:
            raise _rejected("policy: TDATTRIBUTES do not match")
        if q.debug and not self.debug_allowed:
            raise _rejected("policy: TDATTRIBUTES allow debugging (bit 0) and debug_allowed is False")
        if self.minimum_tee_tcb_svn is not None:
            for i, (got, low) in enumerate(zip(q.tee_tcb_svn, self.minimum_tee_tcb_svn, strict=True)):
                if got < low:
                    raise _rejected(f"policy: TEE_TCB_SVN byte {i} is below the minimum")
        if self.minimum_qe_isv_svn is not None and q.qe_report.isv_svn < self.minimum_qe_isv_svn:
            raise _rejected("policy: the QE's ISVSVN is below the minimum")
        if self.accepted_tcb_statuses is not None:
            tcb = q.tcb
            if tcb is None or tcb.tcb_status is None or tcb.qe_tcb_status is None:
                raise _rejected("policy: TCB statuses are required and the collateral has no TCB info or QE identity")
            if tcb.tcb_status not in self.accepted_tcb_statuses:
                raise _rejected(f"policy: platform TCB status {tcb.tcb_status} is not accepted")
            if tcb.qe_tcb_status not in self.accepted_tcb_statuses:
                raise _rejected(f"policy: QE TCB status {tcb.qe_tcb_status} is not accepted")


# ---------------------------------------------------------------------------------------------
# Verification


def verify(
    blob: bytes,
    *,
    at: _dt.datetime | None = None,
    collateral: Collateral | None = None,
    policy: Policy | None = None,
    roots: bytes | Sequence[bytes] | None = None,
) -> TdxQuote:
    """Verify a TDX quote and return it parsed, with ``pck`` (and, given collateral, ``tcb``).

    ``at`` is an aware ``datetime`` (default now); ``collateral`` a :class:`Collateral`;
    ``policy`` a :class:`Policy`; ``roots`` the trusted root certificates (PEM or DER, one blob
    or several), default Intel's SGX Root CA.

    Raises ``EBADMSG`` (malformed quote, chain or collateral), ``EKEYREJECTED`` (a signature,
    the chain, the QE binding, a revocation, a TCB info or QE identity mismatch, or the policy),
    ``EKEYEXPIRED`` (a certificate, CRL, TCB info or QE identity not valid at ``at``), ``EINVAL``
    (a naive ``at``, a wrong argument type).
    """
    if at is None:
        at = _dt.datetime.now(_dt.UTC)
    elif at.tzinfo is None or at.utcoffset() is None:
        raise error(errno.EINVAL, "at: must be an aware datetime")
    if policy is not None and not isinstance(policy, Policy):
        raise error(errno.EINVAL, "policy: must be a keyring_types.attest.tdx.Policy")
    if collateral is not None and not isinstance(collateral, Collateral):
        raise error(errno.EINVAL, "collateral: must be a keyring_types.attest.tdx.Collateral")
    q = parse_quote(blob)
    c, ak = _endorse(q.pck_chain, q.qe_report.raw, q.qe_report_signature, q.attestation_key, q.qe_auth_data, _roots_key(roots))
    if not ak(q.signature, q.signed_bytes):
        raise _rejected("quote signature: does not verify under the attestation key")
    for what, not_before, not_after in c.windows:
        _check_time(what, not_before, not_after, at)
    tcb = _apply_collateral(q, c, collateral, at) if collateral is not None else TcbResult(fmspc=c.pck.fmspc)
    q = attrs.evolve(q, pck=c.pck, tcb=tcb)
    if policy is not None:
        policy.check(q)
    return q
