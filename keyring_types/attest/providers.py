"""Providers of the ``tsm`` key type: :class:`EmulatedSevSnp`, an emulated SEV-SNP guest, and
:class:`EmulatedTdx`, an emulated TDX guest (in :mod:`keyring_types.attest.emulated_tdx`).

The emulated guest makes ATTESTATION_REPORTs of AMD's layout (versions 3 and 5) and signs them
as AMD firmware does: ECDSA P-384 with SHA-384 by a VCEK whose certificate carries AMD's
extensions (productName, TCB SPLs, hwID = CHIP_ID) and is signed RSASSA-PSS/SHA-384 by an ASK,
itself signed by a self-signed ARK, both RSA-4096.  Every one of these keys is made here: the
chain is **emulated**, its roots are never AMD's, and :func:`keyring_types.attest.snp.verify`
rejects its reports unless given its chain (:meth:`EmulatedSevSnp.chain_pem`).

State (``<state dir>/emulated-sev-snp/``, files checked by :mod:`keyring_types.state`, created
on first use): ``chip.secret``, 64 random bytes from which the chip id, the report id and the
VCEK of each TCB are derived (AMD derives a VCEK from the chip's secret and its TCB, too), and
``roots.secret``, the ARK and ASK keys and certificates.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import hmac
import struct
import threading
from pathlib import Path
from typing import Final

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyring_types import state
from keyring_types.attest import snp
from keyring_types.attest.emulated_tdx import EmulatedTdx
from keyring_types.attest.tsm import TsmRequest
from keyring_types.errors import error
from keyring_types.secret import SecretBuffer

__all__ = ["EXTENDED_OFFSET", "EmulatedSevSnp", "EmulatedTdx", "GuestConfig"]

#: Where the certificate table starts in a ``format=extended`` blob (the RFC's SEV provider
#: put the report area in the first 16 KiB and the table after it).
EXTENDED_OFFSET: Final = 16384
#: The RFC's room for the table: page-aligned 32767 - 16384 - sizeof(payload).
_EXTENDED_MAX: Final = 12288
_USER_DATA: Final = 64
_VMPL_MAX: Final = 3
_P384_ORDER: Final = int("ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973", 16)
_CHIP_SECRET: Final = "chip.secret"
_ROOTS: Final = "roots.secret"
_ROOTS_SIZE: Final = 16384
_PSS: Final = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_AMD_OID: Final = "1.3.6.1.4.1.3704.1."
_ORG: Final = "Emulated SEV-SNP guest (not AMD)"
#: CPUID family, model, stepping and the VCEK productName of each emulated product.
_DEFAULT_TCB: Final = snp.Tcb(bl=3, tee=0, snp=8, ucode=115)
_PRODUCTS: Final = {"Milan": ((0x19, 0x01, 0x01), "Milan-B0"), "Genoa": ((0x19, 0x11, 0x01), "Genoa-B1")}


def _positive(inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value < 1 << 64:
        raise error(errno.EINVAL, f"emulated guest: {attribute.name} must be a 64-bit unsigned integer")


@attrs.frozen(kw_only=True)
class GuestConfig:
    """What the emulated guest reports about itself.  ``chip_id`` ``None``: derived from the
    chip secret.  ``tcb`` is used as current, reported, committed and launch TCB.  Bad values
    raise ``EINVAL``."""

    version: int = 5
    product: str = "Milan"
    measurement: bytes = bytes(48)
    policy: int = attrs.field(default=0x30000, validator=_positive)
    host_data: bytes = bytes(32)
    family_id: bytes = bytes(16)
    image_id: bytes = bytes(16)
    guest_svn: int = 0
    platform_info: int = attrs.field(default=0x1, validator=_positive)
    chip_id: bytes | None = None
    tcb: snp.Tcb = attrs.field(factory=lambda: _DEFAULT_TCB)
    firmware_version: tuple[int, int, int] = (2, 55, 1)  # (build, minor, major)

    def __attrs_post_init__(self) -> None:
        if self.version not in (3, 5):
            raise error(errno.EINVAL, "emulated guest: version must be 3 or 5")
        if self.product not in _PRODUCTS:
            raise error(errno.EINVAL, f"emulated guest: product must be one of {', '.join(_PRODUCTS)}")
        if self.chip_id is not None and len(self.chip_id) != 64:
            raise error(errno.EINVAL, "emulated guest: chip_id must be 64 bytes")
        if self.chip_id is not None and not any(self.chip_id):
            raise error(errno.EINVAL, "emulated guest: chip_id must not be all zero (that means masked)")
        if self.tcb.fmc is not None or not all(0 <= v <= 255 for v in (self.tcb.bl, self.tcb.tee, self.tcb.snp, self.tcb.ucode)):
            raise error(errno.EINVAL, "emulated guest: tcb levels must be 0..255 (no fmc: not Turin)")

    @property
    def tcb_raw(self) -> int:
        """The TCB_VERSION of :attr:`tcb` in the Milan/Genoa layout."""
        t = self.tcb
        return int.from_bytes(bytes([t.bl, t.tee, 0, 0, 0, 0, t.snp, t.ucode]), "little")


@attrs.frozen
class _Roots:
    ark_cert: bytes
    ask_cert: bytes
    ask_key: rsa.RSAPrivateKey


@attrs.frozen
class _Vcek:
    key: ec.EllipticCurvePrivateKey
    cert: bytes


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn), x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, _ORG)])


def _der_int(v: int) -> bytes:
    body = v.to_bytes(v.bit_length() // 8 + 1, "big")
    return bytes([0x02, len(body)]) + body


def _der_ia5(s: str) -> bytes:
    return bytes([0x16, len(s)]) + s.encode("ascii")


def _cert(subject: x509.Name, issuer: x509.Name, public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
          signer: rsa.RSAPrivateKey, years: int, extensions: tuple[tuple[str, bytes], ...] = ()) -> bytes:  # fmt: skip
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=365 * years))
    )
    for oid, value in extensions:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
    return b.sign(signer, hashes.SHA384(), rsa_padding=_PSS).public_bytes(serialization.Encoding.DER)


def _pack(items: list[bytes]) -> bytes:
    out = b"".join(struct.pack("<I", len(i)) + i for i in items)
    if len(out) > _ROOTS_SIZE:
        raise error(errno.EOVERFLOW, "emulated guest: roots do not fit their file")
    return out + bytes(_ROOTS_SIZE - len(out))


def _unpack(data: bytes, count: int, path: Path) -> list[bytes]:
    items, pos = [], 0
    for _ in range(count):
        (n,) = struct.unpack_from("<I", data, pos)
        if pos + 4 + n > len(data):
            raise error(errno.EBADMSG, f"{path}: not an emulated roots file")
        items.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return items


class EmulatedSevSnp:
    """An emulated SEV-SNP guest as a ``tsm`` provider (``name`` ``"emulated-sev-snp"``).

    ``state_dir`` overrides ``<state dir>/emulated-sev-snp``; keyword arguments (or ``config=``)
    are a :class:`GuestConfig`.  Thread-safe.  Not a real guest: its reports prove nothing
    about any hardware, and only its own chain (:meth:`chain_pem`) verifies them.
    """

    name = "emulated-sev-snp"

    def __init__(self, state_dir: str | Path | None = None, *, config: GuestConfig | None = None, **fields: object) -> None:
        """``EINVAL`` for a bad configuration.  Nothing is read or created until first use."""
        if config is not None and fields:
            raise error(errno.EINVAL, "emulated guest: give config= or fields, not both")
        self.config = config if config is not None else GuestConfig(**fields)  # type: ignore[arg-type]
        self.state_dir = Path(state_dir) if state_dir is not None else state.state_dir(create=False) / "emulated-sev-snp"
        self._lock = threading.Lock()
        self._chip: bytes | None = None
        self._derived: dict[bytes, bytes] = {}
        self._roots: _Roots | None = None
        self._vceks: dict[tuple[bytes, int, str], _Vcek] = {}

    # -- state -------------------------------------------------------------------------------
    def _chip_secret(self) -> bytes:
        if self._chip is None:
            buf = state.load_or_create_secret(self.state_dir / _CHIP_SECRET, 64, "emulated SEV-SNP chip secret")
            try:
                self._chip = buf.tobytes()
            finally:
                buf.wipe()
        return self._chip

    def _derive(self, label: bytes, n: int) -> bytes:
        # Fixed for the chip: computed once (a report needs the chip id twice and the report id).
        value = self._derived.get(label)
        if value is None:
            value = hmac.new(self._chip_secret(), b"emulated-sev-snp " + label, hashlib.sha512).digest()[:n]
            self._derived[label] = value
        return value

    def _load_roots(self) -> _Roots:
        if self._roots is not None:
            return self._roots
        path = self.state_dir / _ROOTS
        try:
            buf = state.load_secret_file(path, _ROOTS_SIZE, "emulated SEV-SNP roots")
        except OSError as exc:
            if exc.errno != errno.ENOKEY:
                raise
            fresh = SecretBuffer.from_bytes(self._make_roots())
            try:
                state.create_secret_file(path, fresh)  # a racing process's file wins; read it back
            finally:
                fresh.wipe()
            buf = state.load_secret_file(path, _ROOTS_SIZE, "emulated SEV-SNP roots")
        try:
            ark_cert, ask_cert, ask_key_der = _unpack(buf.tobytes(), 3, path)
        finally:
            buf.wipe()
        key = serialization.load_der_private_key(ask_key_der, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise error(errno.EBADMSG, f"{path}: the ASK key is not RSA")
        self._roots = _Roots(ark_cert=ark_cert, ask_cert=ask_cert, ask_key=key)
        return self._roots

    def _make_roots(self) -> bytes:
        product = self.config.product
        ark_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        ask_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        ark_name, ask_name = _name(f"ARK-{product}"), _name(f"SEV-{product}")
        ark = _cert(ark_name, ark_name, ark_key.public_key(), ark_key, 25)
        ask = _cert(ask_name, ark_name, ask_key.public_key(), ark_key, 25)
        ask_der = ask_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        # The ARK key signs nothing more: it is not kept.
        return _pack([ark, ask, ask_der])

    def _vcek(self) -> _Vcek:
        chip_id = self.chip_id
        tcb = self.config.tcb_raw
        product = self.config.product
        cached = self._vceks.get((chip_id, tcb, product))
        if cached is not None:
            return cached
        # As AMD's firmware does, one VCEK per chip and TCB: derived, never stored.
        okm = HKDF(hashes.SHA384(), 64, salt=None, info=b"emulated-sev-snp VCEK" + tcb.to_bytes(8, "little") + chip_id).derive(
            self._chip_secret()
        )
        key = ec.derive_private_key(int.from_bytes(okm, "big") % (_P384_ORDER - 1) + 1, ec.SECP384R1())
        roots = self._load_roots()
        t = self.config.tcb
        exts = (
            (_AMD_OID + "1", _der_int(1)),
            (_AMD_OID + "2", _der_ia5(_PRODUCTS[product][1])),
            (_AMD_OID + "3.1", _der_int(t.bl)),
            (_AMD_OID + "3.2", _der_int(t.tee)),
            (_AMD_OID + "3.3", _der_int(t.snp)),
            *((_AMD_OID + f"3.{i}", _der_int(0)) for i in (4, 5, 6, 7)),
            (_AMD_OID + "3.8", _der_int(t.ucode)),
            (_AMD_OID + "4", chip_id),  # bare, as AMD's KDS stores it
        )
        ask = x509.load_der_x509_certificate(roots.ask_cert)
        cert = _cert(_name("SEV-VCEK"), ask.subject, key.public_key(), roots.ask_key, 7, exts)
        vcek = _Vcek(key=key, cert=cert)
        self._vceks[(chip_id, tcb, product)] = vcek
        return vcek

    # -- what a verifier needs --------------------------------------------------------------
    @property
    def chip_id(self) -> bytes:
        """CHIP_ID (64 bytes): the configured one, or one derived from the chip secret."""
        if self.config.chip_id is not None:
            return self.config.chip_id
        return self._derive(b"chip id", 64)

    def vcek_der(self) -> bytes:
        """The emulated VCEK certificate (DER) for the configured chip and TCB."""
        with self._lock:
            return self._vcek().cert

    def chain_pem(self) -> bytes:
        """The emulated ASK then ARK (PEM): the ``chain=`` that makes its reports verify."""
        with self._lock:
            roots = self._load_roots()
        return b"".join(
            x509.load_der_x509_certificate(c).public_bytes(serialization.Encoding.PEM) for c in (roots.ask_cert, roots.ark_cert)
        )

    def cert_table(self) -> bytes:
        """The GHCB certificate table (VCEK, ASK, ARK; DER), as ``auxblob`` holds it."""
        with self._lock:
            vcek, roots = self._vcek(), self._load_roots()
        return snp.pack_cert_table([("vcek", vcek.cert), ("ask", roots.ask_cert), ("ark", roots.ark_cert)])

    # -- reports -----------------------------------------------------------------------------
    def report(self, report_data: bytes, vmpl: int = 0) -> bytes:
        """One signed ATTESTATION_REPORT (1184 bytes).  ``EINVAL`` unless ``report_data`` is 64
        bytes and ``vmpl`` 0..3 (the firmware's INVALID_PARAM)."""
        if len(report_data) != _USER_DATA:
            raise error(errno.EINVAL, f"emulated SEV-SNP: REPORT_DATA must be {_USER_DATA} bytes, got {len(report_data)}")
        if not 0 <= vmpl <= _VMPL_MAX:
            raise error(errno.EINVAL, f"emulated SEV-SNP: VMPL must be 0..{_VMPL_MAX}")
        c = self.config
        with self._lock:
            vcek = self._vcek()
            chip_id, report_id = self.chip_id, self._derive(b"report id", 32)
        tcb = c.tcb_raw
        body = snp.pack_signed_part(
            version=c.version,
            policy=c.policy,
            vmpl=vmpl,
            report_data=bytes(report_data),
            measurement=c.measurement,
            chip_id=chip_id,
            current_tcb=tcb,
            reported_tcb=tcb,
            committed_tcb=tcb,
            launch_tcb=tcb,
            guest_svn=c.guest_svn,
            family_id=c.family_id,
            image_id=c.image_id,
            platform_info=c.platform_info,
            host_data=c.host_data,
            report_id=report_id,
            cpuid=_PRODUCTS[c.product][0],
            current_version=c.firmware_version,
            committed_version=c.firmware_version,
        )
        r, s = decode_dss_signature(vcek.key.sign(body, ec.ECDSA(hashes.SHA384())))
        return body + snp.pack_signature(r, s)

    def auth_new(self, request: TsmRequest) -> bytes:
        """The ``tsm`` key's blob: the report (``format`` empty) or, with ``format=extended``,
        the report zero-padded to 16 KiB and then the certificate table.

        ``EINVAL`` for user data that is not 64 bytes without ``nonce=`` (the RFC's SEV rule),
        a privlevel above 3, or a format other than ``extended``.
        """
        if request.format not in ("", "extended"):
            raise error(errno.EINVAL, "emulated SEV-SNP: the only format is 'extended'")
        if request.nonce is None and len(request.pubkey) != _USER_DATA:
            raise error(errno.EINVAL, f"emulated SEV-SNP: the user data must be {_USER_DATA} bytes (or use nonce=)")
        report = self.report(request.report_data, request.privlevel)
        if request.format != "extended":
            return report
        table = self.cert_table()
        if len(table) > _EXTENDED_MAX:
            raise error(errno.ENOMEM, "emulated SEV-SNP: certificate table larger than the extended area")
        return report + bytes(EXTENDED_OFFSET - len(report)) + table
