"""An emulated Intel TDX guest: a ``tsm`` provider making TDX quotes v4, runtime measurement
registers that extend, and Intel PCS-format collateral for its own platform.

The quotes have Intel's layout and are signed as Intel's quoting enclave signs them: ECDSA P-256
by an attestation key (AK) over the header and TD report body; the QE's SGX report binds the AK
(SHA-256 of AK ‖ QE authentication data) and is signed by a PCK key whose certificate carries
Intel's SGX extension (FMSPC, PCE-ID, CPU SVN, PCE SVN), issued by a "PCK Platform CA" under a
self-signed root.  Every key and certificate is made here: the chain is **emulated** (its
organization says so), its root is never Intel's, and :func:`keyring_types.attest.tdx.verify`
rejects its quotes unless given ``roots=`` :meth:`EmulatedTdx.root_pem`.

The RTMRs start at zero and change only by :meth:`EmulatedTdx.extend`, which appends the extend
to a TCG crypto-agile event log (SHA-384 bank, MR index i+1 for RTMR i, as a TDX guest's CCEL);
the RTMRs of every quote are the replay of that log, so a log of the extends always explains
them.  State (``<state dir>/emulated-tdx/``): ``pki.secret`` (keys and certificates, created on
first use) and ``rtmr-events.log`` (the extends; shared by every process using the directory).
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from keyring_types import state
from keyring_types.attest import eventlog, tdx
from keyring_types.attest.tsm import TsmRequest
from keyring_types.errors import error

__all__ = ["EmulatedTdx", "TdConfig", "RTMR_COUNT"]

RTMR_COUNT: Final = 4
_PKI: Final = "pki.secret"
_PKI_SIZE: Final = 16384
_LOG: Final = "rtmr-events.log"
_ORG: Final = "Emulated TDX guest (not Intel)"
_INTEL_OID: Final = "1.2.840.113741.1.13.1"
_SHA384: Final = 0x000C
_QE_ATTRIBUTES: Final = bytes.fromhex("11000000000000000000000000000000")
_QE_ATTRIBUTES_MASK: Final = bytes.fromhex("FBFFFFFFFFFFFFFF0000000000000000")
_QE_PROD_ID: Final = 2
_AUTH_DATA: Final = bytes(range(32))


def _exact(size: int) -> Callable[[object, attrs.Attribute[bytes], bytes], None]:
    def check(inst: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
        if len(value) != size:
            raise error(errno.EINVAL, f"emulated TDX: {attribute.name} must be {size} bytes")

    return check


def _u64(inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value < 1 << 64:
        raise error(errno.EINVAL, f"emulated TDX: {attribute.name} must be a 64-bit unsigned integer")


@attrs.frozen(kw_only=True)
class TdConfig:
    """What the emulated TD and platform report.  The defaults describe a production TD
    (SEPT_VE_DISABLE set, not debuggable) on a TDX 1.5 module; bad values raise ``EINVAL``."""

    mrtd: bytes = attrs.field(default=bytes(48), validator=_exact(48))
    mrconfigid: bytes = attrs.field(default=bytes(48), validator=_exact(48))
    mrowner: bytes = attrs.field(default=bytes(48), validator=_exact(48))
    mrownerconfig: bytes = attrs.field(default=bytes(48), validator=_exact(48))
    td_attributes: int = attrs.field(default=0x10000000, validator=_u64)
    xfam: int = attrs.field(default=0x602E7, validator=_u64)
    tee_tcb_svn: bytes = attrs.field(default=bytes.fromhex("03010400000000000000000000000000"), validator=_exact(16))
    mrseam: bytes = attrs.field(default=hashlib.sha384(b"emulated TDX module").digest(), validator=_exact(48))
    fmspc: bytes = attrs.field(default=bytes.fromhex("e0c06f000000"), validator=_exact(6))
    cpu_svn: bytes = attrs.field(default=bytes.fromhex("04040202040100050000000000000000"), validator=_exact(16))
    pce_svn: int = 13
    qe_isv_svn: int = 8


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    width = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | width]) + n.to_bytes(width, "big") + content


def _der_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, bytes(body))


def _der_uint(v: int) -> bytes:
    return _der(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big"))


def _pair(oid: str, value: bytes) -> bytes:
    return _der(0x30, _der_oid(oid) + value)


def _sgx_extension(cfg: TdConfig, ppid: bytes) -> bytes:
    o = _INTEL_OID
    tcb = b"".join(_pair(f"{o}.2.{i + 1}", _der_uint(cfg.cpu_svn[i])) for i in range(16))
    tcb += _pair(f"{o}.2.17", _der_uint(cfg.pce_svn)) + _pair(f"{o}.2.18", _der(0x04, cfg.cpu_svn))
    body = (
        _pair(f"{o}.1", _der(0x04, ppid))
        + _pair(f"{o}.2", _der(0x30, tcb))
        + _pair(f"{o}.3", _der(0x04, bytes(2)))
        + _pair(f"{o}.4", _der(0x04, cfg.fmspc))
        + _pair(f"{o}.5", _der(0x0A, b"\x00"))
    )
    return _der(0x30, body)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn), x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, _ORG)])


def _cert(subject: str, issuer: x509.Name, key: ec.EllipticCurvePublicKey, signer: ec.EllipticCurvePrivateKey, *,
          ca: bool, years: int, sgx: bytes | None = None) -> bytes:  # fmt: skip
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sgx is not None:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(_INTEL_OID), sgx), critical=False)
    return b.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _key_der(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _raw_sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


@attrs.frozen
class _Pki:
    root_key: ec.EllipticCurvePrivateKey
    root: bytes
    ca_key: ec.EllipticCurvePrivateKey
    ca: bytes
    signing_key: ec.EllipticCurvePrivateKey
    signing: bytes
    pck_key: ec.EllipticCurvePrivateKey
    pck: bytes
    ak: ec.EllipticCurvePrivateKey


class EmulatedTdx:
    """An emulated TDX guest as a ``tsm`` provider (``name`` ``"emulated-tdx"``).

    ``state_dir`` overrides ``<state dir>/emulated-tdx``; keyword arguments (or ``config=``) are
    a :class:`TdConfig`.  Thread-safe; processes sharing a state directory share its RTMRs.
    Not a real guest: its quotes prove nothing about any hardware, and only its own root
    (:meth:`root_pem`) verifies them.
    """

    name = "emulated-tdx"

    def __init__(self, state_dir: str | Path | None = None, *, config: TdConfig | None = None, **fields: object) -> None:
        """``EINVAL`` for a bad configuration.  Nothing is read or created until first use."""
        if config is not None and fields:
            raise error(errno.EINVAL, "emulated TDX: give config= or fields, not both")
        self.config = config if config is not None else TdConfig(**fields)  # type: ignore[arg-type]
        self.state_dir = Path(state_dir) if state_dir is not None else state.state_dir(create=False) / "emulated-tdx"
        self._lock = threading.Lock()
        self._pki: _Pki | None = None
        self._cert_data: tuple[bytes, bytes, bytes] | None = None
        self._rtmr_cache: tuple[tuple[int, int, int], tuple[bytes, bytes, bytes, bytes]] | None = None

    # -- PKI -----------------------------------------------------------------------------------
    def _load_pki(self) -> _Pki:
        if self._pki is not None:
            return self._pki
        path = self.state_dir / _PKI
        buf = state.load_or_create_secret(path, _PKI_SIZE, "emulated TDX keys", self._make_pki)
        try:
            data = buf.tobytes()
        finally:
            buf.wipe()
        items, pos = [], 0
        for _ in range(9):
            (n,) = struct.unpack_from("<I", data, pos)
            if pos + 4 + n > len(data):
                raise error(errno.EBADMSG, f"{path}: not an emulated TDX keys file")
            items.append(data[pos + 4 : pos + 4 + n])
            pos += 4 + n
        keys = []
        for der in (items[0], items[2], items[4], items[6], items[8]):
            k = serialization.load_der_private_key(der, password=None)
            if not isinstance(k, ec.EllipticCurvePrivateKey):
                raise error(errno.EBADMSG, f"{path}: a key is not ECDSA")
            keys.append(k)
        self._pki = _Pki(keys[0], items[1], keys[1], items[3], keys[2], items[5], keys[3], items[7], keys[4])
        return self._pki

    def _make_pki(self) -> bytes:
        root_key, ca_key, signing_key, pck_key, ak = (ec.generate_private_key(ec.SECP256R1()) for _ in range(5))
        root_name = _name("Emulated SGX Root CA")
        root = _cert("Emulated SGX Root CA", root_name, root_key.public_key(), root_key, ca=True, years=25)
        ca = _cert("Intel SGX PCK Platform CA", root_name, ca_key.public_key(), root_key, ca=True, years=15)
        signing = _cert("Intel SGX TCB Signing", root_name, signing_key.public_key(), root_key, ca=False, years=7)
        ppid = hashlib.sha256(_key_der(pck_key)).digest()[:16]
        pck = _cert("Intel SGX PCK Certificate", _name("Intel SGX PCK Platform CA"), pck_key.public_key(), ca_key, ca=False,
                    years=7, sgx=_sgx_extension(self.config, ppid))  # fmt: skip
        items = [_key_der(root_key), root, _key_der(ca_key), ca, _key_der(signing_key), signing, _key_der(pck_key), pck, _key_der(ak)]
        out = b"".join(struct.pack("<I", len(i)) + i for i in items)
        if len(out) > _PKI_SIZE:
            raise error(errno.EOVERFLOW, "emulated TDX: keys do not fit their file")
        return out + bytes(_PKI_SIZE - len(out))

    def root_pem(self) -> bytes:
        """The emulated root certificate (PEM): the ``roots=`` that makes its quotes verify."""
        with self._lock:
            return _pem(self._load_pki().root)

    def pck_chain_pem(self) -> bytes:
        """The PCK leaf, PCK CA and root (PEM), as every quote carries them."""
        with self._lock:
            p = self._load_pki()
        return _pem(p.pck) + _pem(p.ca) + _pem(p.root)

    def _qe(self) -> tuple[bytes, bytes, bytes]:
        """(attestation key, QE report, QE report signature): fixed for the platform."""
        if self._cert_data is None:
            p = self._load_pki()
            point = p.ak.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            ak = point[1:]
            qe = tdx.pack_qe_report(
                report_data=hashlib.sha256(ak + _AUTH_DATA).digest() + bytes(32),
                cpusvn=self.config.cpu_svn,
                attributes=_QE_ATTRIBUTES,
                mrenclave=hashlib.sha256(b"emulated TD QE enclave").digest(),
                mrsigner=self._qe_mrsigner(),
                isv_prod_id=_QE_PROD_ID,
                isv_svn=self.config.qe_isv_svn,
            )
            self._cert_data = (ak, qe, _raw_sig(p.pck_key, qe))
        return self._cert_data

    @staticmethod
    def _qe_mrsigner() -> bytes:
        return hashlib.sha256(b"emulated TD QE signer").digest()

    # -- runtime measurement registers --------------------------------------------------------
    @property
    def log_path(self) -> Path:
        """The event log of the extends (a TCG crypto-agile log, SHA-384)."""
        return self.state_dir / _LOG

    def event_log(self) -> bytes:
        """The log of every extend so far: a Spec ID event, then one event per extend."""
        try:
            with open(self.log_path, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_SH)
                return f.read()
        except FileNotFoundError:
            return eventlog.pack_spec_id_event((_SHA384,))

    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        """RTMR0..3 now: the replay of :meth:`event_log`."""
        try:
            st = os.stat(self.log_path)
        except FileNotFoundError:
            return (bytes(48), bytes(48), bytes(48), bytes(48))
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._rtmr_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        values = eventlog.rtmrs_of(eventlog.replay(self.event_log(), algorithm="sha384"))
        self._rtmr_cache = (key, values)
        return values

    def extend(self, index: int, digest: bytes, event: bytes = b"") -> bytes:
        """Extend RTMR ``index`` (0..3) with a 48-byte ``digest`` (new = SHA-384(old ‖ digest)),
        logging ``event`` as its data; returns the new value.  ``EINVAL`` for another index or
        digest size (what TDG.MR.RTMR.EXTEND refuses)."""
        if not isinstance(index, int) or not 0 <= index < RTMR_COUNT:
            raise error(errno.EINVAL, f"emulated TDX: RTMR index must be 0..{RTMR_COUNT - 1}")
        digest = bytes(digest)
        if len(digest) != 48:
            raise error(errno.EINVAL, "emulated TDX: an RTMR extend takes exactly 48 bytes (SHA-384)")
        record = eventlog.pack_event(index + 1, eventlog.EV_EVENT_TAG, {_SHA384: digest}, bytes(event))
        state.private_dir(self.state_dir)
        fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "r+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            if os.fstat(f.fileno()).st_size == 0:
                f.write(eventlog.pack_spec_id_event((_SHA384,)))
            f.write(record)
            f.flush()
            f.seek(0)
            log = f.read()
        return eventlog.replay(log, algorithm="sha384")[index + 1]

    # -- quotes --------------------------------------------------------------------------------
    def quote(self, report_data: bytes) -> bytes:
        """One signed TDX quote v4 for ``report_data`` (64 bytes), with the RTMRs of now.
        ``EINVAL`` for another size (what TDG.MR.REPORT refuses)."""
        if len(report_data) != 64:
            raise error(errno.EINVAL, f"emulated TDX: REPORTDATA must be 64 bytes, got {len(report_data)}")
        c = self.config
        rtmrs = self.rtmrs()
        with self._lock:
            p = self._load_pki()
            ak, qe, qe_sig = self._qe()
        header = tdx.pack_header(version=4, user_data=hashlib.sha256(ak).digest()[:16] + bytes(4))
        body = tdx.pack_body(report_data=bytes(report_data), mrtd=c.mrtd, rtmrs=rtmrs, tee_tcb_svn=c.tee_tcb_svn, mrseam=c.mrseam,
                             td_attributes=c.td_attributes, xfam=c.xfam, mrconfigid=c.mrconfigid, mrowner=c.mrowner,
                             mrownerconfig=c.mrownerconfig)  # fmt: skip
        signature = _raw_sig(p.ak, header + body)
        chain = _pem(p.pck) + _pem(p.ca) + _pem(p.root)
        return header + body + tdx.pack_signed_data(signature=signature, attestation_key=ak, qe_report=qe, qe_report_signature=qe_sig,
                                                    qe_auth_data=_AUTH_DATA, pck_chain=chain)  # fmt: skip

    def report(self, report_data: bytes, privlevel: int = 0) -> bytes:
        """What configfs-tsm's ``outblob`` holds for ``inblob`` = ``report_data``: a quote.
        ``EINVAL`` for an inblob that is not 64 bytes or a privlevel other than 0 (the
        ``tdx_guest`` provider hides ``privlevel``)."""
        if privlevel != 0:
            raise error(errno.EINVAL, "emulated TDX: TDX has no privilege levels (privlevel must be 0)")
        return self.quote(report_data)

    def auth_new(self, request: TsmRequest) -> bytes:
        """The ``tsm`` key's blob: a quote.  ``EINVAL`` for user data that is not 64 bytes
        without ``nonce=`` (as the TDX guest driver's inblob), a privlevel other than 0 (TDX
        has none), or any format."""
        if request.format != "":
            raise error(errno.EINVAL, "emulated TDX: no format is supported")
        if request.privlevel != 0:
            raise error(errno.EINVAL, "emulated TDX: TDX has no privilege levels (privlevel must be 0)")
        if request.nonce is None and len(request.pubkey) != 64:
            raise error(errno.EINVAL, "emulated TDX: the user data must be 64 bytes (or use nonce=)")
        return self.quote(request.report_data)

    # -- collateral ----------------------------------------------------------------------------
    def collateral(self, *, tcb_status: str = "UpToDate", qe_tcb_status: str = "UpToDate", revoked: bool = False,
                   days: int = 30) -> tdx.Collateral:  # fmt: skip
        """Intel PCS-format collateral for this platform, issued now and valid ``days``: PCK and
        root CRLs (the PCK certificate listed when ``revoked``), TCB info and QE identity whose
        matching levels have the given statuses, and their issuer chains."""
        if tcb_status not in tdx.TCB_STATUSES or qe_tcb_status not in tdx.TCB_STATUSES:
            raise error(errno.EINVAL, "emulated TDX: a TCB status Intel does not define")
        c = self.config
        with self._lock:
            p = self._load_pki()
        now = _dt.datetime.now(_dt.UTC).replace(microsecond=0)
        issue, until = now - _dt.timedelta(hours=1), now + _dt.timedelta(days=days)
        fmt = "%Y-%m-%dT%H:%M:%SZ"

        def crl(issuer_der: bytes, key: ec.EllipticCurvePrivateKey, serials: list[int]) -> bytes:
            b = (x509.CertificateRevocationListBuilder().issuer_name(x509.load_der_x509_certificate(issuer_der).subject)
                 .last_update(issue).next_update(until))  # fmt: skip
            for s in serials:
                b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s).revocation_date(issue).build())
            return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

        def signed(member: str, obj: dict[str, object]) -> bytes:
            text = json.dumps(obj, separators=(",", ":")).encode()
            return b'{"' + member.encode() + b'":' + text + b',"signature":"' + _raw_sig(p.signing_key, text).hex().encode() + b'"}'

        def comps(svns: bytes) -> list[dict[str, int]]:
            return [{"svn": v} for v in svns]

        pck_serial = x509.load_der_x509_certificate(p.pck).serial_number
        level = {"sgxtcbcomponents": comps(c.cpu_svn), "pcesvn": c.pce_svn, "tdxtcbcomponents": comps(bytes(2) + c.tee_tcb_svn[2:])}
        old = {"sgxtcbcomponents": comps(bytes(16)), "pcesvn": 0, "tdxtcbcomponents": comps(bytes(16))}
        tcb_info = {
            "id": "TDX", "version": 3, "issueDate": issue.strftime(fmt), "nextUpdate": until.strftime(fmt),
            "fmspc": c.fmspc.hex(), "pceId": "0000", "tcbType": 0, "tcbEvaluationDataNumber": 17,
            "tdxModule": {"mrsigner": bytes(48).hex(), "attributes": "0000000000000000", "attributesMask": "FFFFFFFFFFFFFFFF"},
            "tdxModuleIdentities": [{
                "id": f"TDX_{c.tee_tcb_svn[1]:02X}", "mrsigner": bytes(48).hex(), "attributes": "0000000000000000",
                "attributesMask": "FFFFFFFFFFFFFFFF",
                "tcbLevels": [{"tcb": {"isvsvn": c.tee_tcb_svn[0]}, "tcbDate": issue.strftime(fmt), "tcbStatus": "UpToDate"}],
            }],
            "tcbLevels": [
                {"tcb": level, "tcbDate": issue.strftime(fmt), "tcbStatus": tcb_status},
                {"tcb": old, "tcbDate": "2020-01-01T00:00:00Z", "tcbStatus": "OutOfDate", "advisoryIDs": ["INTEL-SA-00000"]},
            ],
        }  # fmt: skip
        qe_identity = {
            "id": "TD_QE", "version": 2, "issueDate": issue.strftime(fmt), "nextUpdate": until.strftime(fmt),
            "tcbEvaluationDataNumber": 17, "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
            "attributes": _QE_ATTRIBUTES.hex(), "attributesMask": _QE_ATTRIBUTES_MASK.hex(),
            "mrsigner": self._qe_mrsigner().hex(), "isvprodid": _QE_PROD_ID,
            "tcbLevels": [{"tcb": {"isvsvn": c.qe_isv_svn}, "tcbDate": issue.strftime(fmt), "tcbStatus": qe_tcb_status}],
        }  # fmt: skip
        chain = _pem(p.signing) + _pem(p.root)
        return tdx.Collateral(
            pck_crl=crl(p.ca, p.ca_key, [pck_serial] if revoked else []),
            root_crl=crl(p.root, p.root_key, []),
            tcb_info=signed("tcbInfo", tcb_info),
            tcb_info_issuer_chain=chain,
            qe_identity=signed("enclaveIdentity", qe_identity),
            qe_identity_issuer_chain=chain,
        )
