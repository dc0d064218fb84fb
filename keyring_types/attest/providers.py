"""Providers of the ``tsm`` key type: :class:`EmulatedSevSnp`, an emulated SEV-SNP guest;
:class:`EmulatedTdx`, an emulated TDX guest (in :mod:`keyring_types.attest.emulated_tdx`); and
:class:`ConfigfsTsm` (the kernel's configfs-tsm interface; module :mod:`.configfs`).

The emulated guest makes ATTESTATION_REPORTs of AMD's layout (versions 2, 3 and 5; Milan, Genoa
and Turin) and signs them as AMD firmware does: ECDSA P-384 with SHA-384 by a VCEK whose
certificate carries AMD's extensions (productName, TCB SPLs, hwID = CHIP_ID, 8 bytes on Turin)
and is signed RSASSA-PSS/SHA-384 by an ASK, itself signed by a self-signed ARK, both RSA-4096;
or by a VLEK (no hwID, a CSP id) signed by an ASVK under the same ARK.  Every one of these keys
is made here: the chain is **emulated**, its roots are never AMD's, and
:func:`keyring_types.attest.snp.verify` rejects its reports unless given its chain
(:meth:`EmulatedSevSnp.chain_pem`).

State (``<state dir>/emulated-sev-snp/``, files checked by :mod:`keyring_types.state`, created
on first use): ``chip.secret``, 64 random bytes from which the chip id, the report id, the
VCEK of each TCB and the VLEK are derived (AMD derives a VCEK from the chip's secret and its
TCB, too), and ``roots.secret``, the ASK and ASVK keys and the ARK, ASK and ASVK certificates.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import struct
import threading
from pathlib import Path
from typing import Final

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyring_types import state
from keyring_types.attest import sevguest, snp
from keyring_types.attest.emulated_tdx import EmulatedTdx
from keyring_types.attest.tsm import TsmRequest
from keyring_types.errors import error
from keyring_types.hmac import SHA384_SIZE, hmac_sha384_into
from keyring_types.secret import SecretBuffer

__all__ = ["EXTENDED_OFFSET", "EmulatedSevSnp", "EmulatedTdx", "GuestConfig", "ConfigfsTsm"]

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
_PRODUCTS: Final = {
    "Milan": ((0x19, 0x01, 0x01), "Milan-B0"),
    "Genoa": ((0x19, 0x11, 0x01), "Genoa-B1"),
    "Turin": ((0x1A, 0x02, 0x01), "Turin-C1"),
}
_TURIN_DEFAULT_FMC: Final = 1
#: Turin's hwID (and so its CHIP_ID's significant part) is 8 bytes; Milan's and Genoa's 64.
_HWID_SIZE: Final = {"Milan": 64, "Genoa": 64, "Turin": 8}
_SIGNING_KEY_BITS: Final = {"vcek": 0, "vlek": 1}
_CSP_ID: Final = "emulated-csp"


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
    #: ``None``: the default TCB (Turin: with an FMC level of 1).
    tcb: snp.Tcb | None = None
    firmware_version: tuple[int, int, int] = (2, 55, 1)  # (build, minor, major)
    #: ``"vcek"`` (the chip's key) or ``"vlek"`` (a key the host loaded, issued to a CSP).
    signing_key: str = "vcek"
    #: MASK_CHIP_KEY: CHIP_ID reported as zeros (a VCEK report then cannot be bound to its chip).
    mask_chip_id: bool = False

    def __attrs_post_init__(self) -> None:
        if self.version not in (2, 3, 5):
            raise error(errno.EINVAL, "emulated guest: version must be 2, 3 or 5")
        if self.product not in _PRODUCTS:
            raise error(errno.EINVAL, f"emulated guest: product must be one of {', '.join(_PRODUCTS)}")
        if self.signing_key not in _SIGNING_KEY_BITS:
            raise error(errno.EINVAL, "emulated guest: signing_key must be 'vcek' or 'vlek'")
        if self.chip_id is not None and len(self.chip_id) != 64:
            raise error(errno.EINVAL, "emulated guest: chip_id must be 64 bytes")
        if self.chip_id is not None and not any(self.chip_id):
            raise error(errno.EINVAL, "emulated guest: chip_id must not be all zero (that means masked: use mask_chip_id)")
        if self.chip_id is not None and any(self.chip_id[_HWID_SIZE[self.product] :]):
            raise error(errno.EINVAL, f"emulated guest: a {self.product} chip_id has {_HWID_SIZE[self.product]} significant bytes")
        t = self.effective_tcb
        if (t.fmc is None) != (self.product != "Turin"):
            raise error(errno.EINVAL, "emulated guest: tcb has an fmc level on Turin and only there")
        if not all(0 <= v <= 255 for v in (t.bl, t.tee, t.snp, t.ucode, t.fmc or 0)):
            raise error(errno.EINVAL, "emulated guest: tcb levels must be 0..255")

    @property
    def effective_tcb(self) -> snp.Tcb:
        """:attr:`tcb`, or the default for the product."""
        if self.tcb is not None:
            return self.tcb
        return attrs.evolve(_DEFAULT_TCB, fmc=_TURIN_DEFAULT_FMC) if self.product == "Turin" else _DEFAULT_TCB

    @property
    def tcb_raw(self) -> int:
        """The TCB_VERSION of :attr:`effective_tcb` in the product's layout."""
        t = self.effective_tcb
        if self.product == "Turin":
            return int.from_bytes(bytes([t.fmc or 0, t.bl, t.tee, t.snp, 0, 0, 0, t.ucode]), "little")
        return int.from_bytes(bytes([t.bl, t.tee, 0, 0, 0, 0, t.snp, t.ucode]), "little")


@attrs.frozen
class _Roots:
    ark_cert: bytes
    ask_cert: bytes
    ask_key: rsa.RSAPrivateKey
    #: The ASVK (VLEK issuer); ``None`` in a state directory made before VLEK signing existed.
    asvk_cert: bytes | None
    asvk_key: rsa.RSAPrivateKey | None


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
    """``count`` items; past the last stored one (zero padding) the rest are empty."""
    items, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(data):
            raise error(errno.EBADMSG, f"{path}: not an emulated roots file")
        (n,) = struct.unpack_from("<I", data, pos)
        if pos + 4 + n > len(data):
            raise error(errno.EBADMSG, f"{path}: not an emulated roots file")
        items.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return items


def _hmac384(key: SecretBuffer, msg: bytes) -> SecretBuffer:
    """HMAC-SHA-384 of ``msg`` under ``key``, into a new SecretBuffer (the caller wipes it)."""
    out = SecretBuffer(SHA384_SIZE)
    kv, ov = key.view(), out.writable()
    try:
        hmac_sha384_into(kv, msg, ov)
    except BaseException:
        out.wipe()
        raise
    finally:
        kv.release()
        ov.release()
    return out


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
        self._chip_lock = threading.Lock()  # _chip_secret is called with _lock held
        self._chip: tuple[int, SecretBuffer] | None = None  # (pid that read it, the secret)
        self._derived: dict[bytes, bytes] = {}
        self._roots: _Roots | None = None
        self._vceks: dict[tuple[bytes, int, str], _Vcek] = {}  # (hwID, TCB, product + kind)

    # -- state -------------------------------------------------------------------------------
    def _chip_secret(self) -> SecretBuffer:
        # Kept in secret memory (never a bytes), read once per process: reading the file for
        # each derived key cost 100 us against 17 (a forked child inherits the buffer as
        # zeros, see keyring_types.secret, so it reads the file again).  Callers never wipe it.
        pid = os.getpid()
        with self._chip_lock:
            if self._chip is None or self._chip[0] != pid:
                buf = state.load_or_create_secret(self.state_dir / _CHIP_SECRET, 64, "emulated SEV-SNP chip secret")
                self._chip = (pid, buf)
            return self._chip[1]

    def _derive(self, label: bytes, n: int) -> bytes:
        # Fixed for the chip and public (ids): computed once (a report needs the chip id
        # twice and the report id).
        value = self._derived.get(label)
        if value is None:
            mac = c_hmac.HMAC(self._chip_secret().view(), hashes.SHA512())
            mac.update(b"emulated-sev-snp " + label)
            value = mac.finalize()[:n]
            self._derived[label] = value
        return value

    def _load_roots(self) -> _Roots:
        if self._roots is not None:
            return self._roots
        path = self.state_dir / _ROOTS
        buf = state.load_or_create_secret(path, _ROOTS_SIZE, "emulated SEV-SNP roots", self._make_roots)
        try:
            ark_cert, ask_cert, ask_key_der, asvk_cert, asvk_key_der = _unpack(buf.tobytes(), 5, path)
        finally:
            buf.wipe()

        def rsa_key(der: bytes, what: str) -> rsa.RSAPrivateKey:
            key = serialization.load_der_private_key(der, password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise error(errno.EBADMSG, f"{path}: the {what} key is not RSA")
            return key

        self._roots = _Roots(
            ark_cert=ark_cert,
            ask_cert=ask_cert,
            ask_key=rsa_key(ask_key_der, "ASK"),
            asvk_cert=asvk_cert or None,
            asvk_key=rsa_key(asvk_key_der, "ASVK") if asvk_key_der else None,
        )
        return self._roots

    def _make_roots(self) -> bytes:
        product = self.config.product
        ark_key, ask_key, asvk_key = (rsa.generate_private_key(public_exponent=65537, key_size=4096) for _ in range(3))
        ark_name, ask_name, asvk_name = _name(f"ARK-{product}"), _name(f"SEV-{product}"), _name(f"SEV-VLEK-{product}")
        ark = _cert(ark_name, ark_name, ark_key.public_key(), ark_key, 25)
        ask = _cert(ask_name, ark_name, ask_key.public_key(), ark_key, 25)
        asvk = _cert(asvk_name, ark_name, asvk_key.public_key(), ark_key, 25)

        def der(k: rsa.RSAPrivateKey) -> bytes:
            return k.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

        # The ARK key signs nothing more: it is not kept.
        return _pack([ark, ask, der(ask_key), asvk, der(asvk_key)])

    def _vcek(self) -> _Vcek:
        return self._endorsement("vcek")

    def _endorsement(self, kind: str) -> _Vcek:
        c = self.config
        hwid = self._chip_id()[: _HWID_SIZE[c.product]]
        tcb = c.tcb_raw
        cached = self._vceks.get((hwid, tcb, c.product + kind))
        if cached is not None:
            return cached
        # As AMD's firmware does, one VCEK per chip and TCB: derived, never stored.  The VLEK
        # is the key a CSP's host loads (wrapped) into the firmware: emulated, one per TCB too.
        label = b"emulated-sev-snp VCEK" if kind == "vcek" else b"emulated-sev-snp VLEK " + _CSP_ID.encode()
        okm = HKDF(hashes.SHA384(), 64, salt=None, info=label + tcb.to_bytes(8, "little") + (hwid if kind == "vcek" else b"")).derive(
            self._chip_secret().view()
        )
        key = ec.derive_private_key(int.from_bytes(okm, "big") % (_P384_ORDER - 1) + 1, ec.SECP384R1())
        roots = self._load_roots()
        t = c.effective_tcb
        exts: list[tuple[str, bytes]] = [
            (_AMD_OID + "1", _der_int(1)),
            (_AMD_OID + "2", _der_ia5(_PRODUCTS[c.product][1])),
            (_AMD_OID + "3.1", _der_int(t.bl)),
            (_AMD_OID + "3.2", _der_int(t.tee)),
            (_AMD_OID + "3.3", _der_int(t.snp)),
            *((_AMD_OID + f"3.{i}", _der_int(0)) for i in (4, 5, 6, 7)),
            (_AMD_OID + "3.8", _der_int(t.ucode)),
        ]
        if t.fmc is not None:
            exts.append((_AMD_OID + "3.9", _der_int(t.fmc)))
        if kind == "vcek":
            exts.append((_AMD_OID + "4", hwid))  # bare, as AMD's KDS stores it
            issuer_cert, issuer_key, subject = roots.ask_cert, roots.ask_key, "SEV-VCEK"
        else:
            if roots.asvk_cert is None or roots.asvk_key is None:
                raise error(errno.ENOKEY, f"{self.state_dir}: emulated roots made before VLEK signing; remove the directory")
            exts.append((_AMD_OID + "5", _der_ia5(_CSP_ID)))
            issuer_cert, issuer_key, subject = roots.asvk_cert, roots.asvk_key, "SEV-VLEK"
        issuer = x509.load_der_x509_certificate(issuer_cert)
        cert = _cert(_name(subject), issuer.subject, key.public_key(), issuer_key, 7, tuple(exts))
        vcek = _Vcek(key=key, cert=cert)
        self._vceks[(hwid, tcb, c.product + kind)] = vcek
        return vcek

    # -- what a verifier needs --------------------------------------------------------------
    def _chip_id(self) -> bytes:
        if self.config.chip_id is not None:
            return self.config.chip_id
        chip = self._derived.get(b"chip id (product)")
        if chip is None:  # computed once: every report needs it
            n = _HWID_SIZE[self.config.product]
            chip = self._derived[b"chip id (product)"] = self._derive(b"chip id", 64)[:n] + bytes(64 - n)
        return chip

    @property
    def chip_id(self) -> bytes:
        """The chip's id (64 bytes; Turin: 8 significant bytes, then zeros): the configured one,
        or one derived from the chip secret.  Reports carry zeros instead with ``mask_chip_id``."""
        return self._chip_id()

    def vcek_der(self) -> bytes:
        """The emulated VCEK certificate (DER) for the configured chip and TCB."""
        with self._lock:
            return self._vcek().cert

    def vlek_der(self) -> bytes:
        """The emulated VLEK certificate (DER) for the configured TCB (issued by the emulated ASVK)."""
        with self._lock:
            return self._endorsement("vlek").cert

    def cert_der(self) -> bytes:
        """The certificate of the key that signs this guest's reports (``signing_key``)."""
        return self.vlek_der() if self.config.signing_key == "vlek" else self.vcek_der()

    def chain_pem(self, kind: str | None = None) -> bytes:
        """The emulated ASK (``kind`` ``"vcek"``) or ASVK (``"vlek"``) then ARK (PEM): the ``chain=``
        that makes its reports verify.  ``kind`` ``None``: the configured ``signing_key``'s."""
        kind = kind or self.config.signing_key
        with self._lock:
            roots = self._load_roots()
        issuer = roots.ask_cert if kind == "vcek" else roots.asvk_cert
        if issuer is None:
            raise error(errno.ENOKEY, f"{self.state_dir}: emulated roots made before VLEK signing; remove the directory")
        return b"".join(x509.load_der_x509_certificate(c).public_bytes(serialization.Encoding.PEM) for c in (issuer, roots.ark_cert))

    def cert_table(self) -> bytes:
        """The GHCB certificate table as ``auxblob`` holds it (DER): VCEK, ASK, ARK; or, signing
        with the VLEK, VLEK, its ASVK (in the ASK slot) and ARK."""
        kind = self.config.signing_key
        with self._lock:
            endorsement, roots = self._endorsement(kind), self._load_roots()
        issuer = roots.ask_cert if kind == "vcek" else roots.asvk_cert
        assert issuer is not None  # _endorsement refused roots without an ASVK
        return snp.pack_cert_table([(kind, endorsement.cert), ("ask", issuer), ("ark", roots.ark_cert)])

    # -- the firmware's derived keys (SNP_GET_DERIVED_KEY) ----------------------------------
    def current_versions(self) -> tuple[int, int]:
        """(GUEST_SVN, COMMITTED_TCB): the most a derived-key request may ask to mix."""
        return self.config.guest_svn, self.config.tcb_raw

    def derived_key(self, request: sevguest.DerivedKeyRequest) -> SecretBuffer:
        """The 32-byte key the firmware derives for MSG_KEY_REQ ``request``, in secret memory
        (the caller wipes it): HMAC-SHA-384 of the emulated root (the chip secret's VCEK or
        VLEK root, or a VMRK derived from the launch measurement) over the request and the
        guest fields it selects, as the real firmware mixes them (its KDF is not published;
        this one is emulated).  The root and the key are computed straight into secret memory.

        ``EINVAL`` (the firmware's INVALID_PARAM) for a guest SVN or TCB above the guest's, or
        the VLEK when none is loaded (``signing_key`` not ``"vlek"``).
        """
        c = self.config
        if request.guest_svn > c.guest_svn:
            raise error(errno.EINVAL, "emulated SEV-SNP: derived key asks for a GUEST_SVN above the guest's")
        mine = snp.decode_tcb(c.tcb_raw, c.product)
        asked = snp.decode_tcb(request.tcb_version, c.product)
        above = [f for f in ("bl", "tee", "snp", "ucode", "fmc") if (getattr(asked, f) or 0) > (getattr(mine, f) or 0)]
        if above or request.tcb_version & ~self._tcb_mask():
            raise error(errno.EINVAL, "emulated SEV-SNP: derived key asks for a TCB_VERSION above the committed one")
        key_sel = request.key_sel if request.key_sel != "default" else c.signing_key
        if key_sel == "vlek" and c.signing_key != "vlek":
            raise error(errno.EINVAL, "emulated SEV-SNP: derived key asks for the VLEK, and none is loaded")
        root = _hmac384(self._chip_secret(), f"emulated-sev-snp {request.root} root {key_sel}".encode())
        if request.root == "vmrk":  # a VM root key: made at launch, so it follows the launch
            try:
                vmrk = _hmac384(root, c.measurement + c.host_data)
            finally:
                root.wipe()
            root = vmrk
        f = request.fields
        mixed = [request.pack(), struct.pack("<I", request.vmpl)]
        for bit, value in (
            (sevguest.FIELDS["policy"], struct.pack("<Q", c.policy)),
            (sevguest.FIELDS["image_id"], c.image_id),
            (sevguest.FIELDS["family_id"], c.family_id),
            (sevguest.FIELDS["measurement"], c.measurement),
            (sevguest.FIELDS["guest_svn"], struct.pack("<I", request.guest_svn)),
            (sevguest.FIELDS["tcb"], struct.pack("<Q", request.tcb_version)),
            (sevguest.FIELDS["launch_mit_vector"], bytes(8)),
        ):
            if f & bit:
                mixed.append(value)
        try:
            full = _hmac384(root, b"".join(mixed))
        finally:
            root.wipe()
        src = full.view()
        try:
            return SecretBuffer.from_bytes(src[:32])
        finally:
            src.release()
            full.wipe()

    def _tcb_mask(self) -> int:
        # The bytes of TCB_VERSION that hold a level in this product's layout.
        used = (0, 1, 2, 3, 7) if self.config.product == "Turin" else (0, 1, 6, 7)
        return sum(0xFF << (8 * i) for i in used)

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
            vcek = self._endorsement(c.signing_key)
            chip_id, report_id = self._chip_id(), self._derive(b"report id", 32)
        if c.mask_chip_id:
            chip_id = bytes(64)
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
            cpuid=_PRODUCTS[c.product][0] if c.version >= 3 else (0, 0, 0),
            signer_info=(_SIGNING_KEY_BITS[c.signing_key] << 2) | (2 if c.mask_chip_id else 0),
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


# The configfs-tsm provider lives in its own module; it is part of this module's names.
from keyring_types.attest.configfs import ConfigfsTsm  # noqa: E402
