"""keyring_types.attest.snp against real AMD reports and certificates (../shared/testdata).

Every real report verifies, under AMD's embedded chains and under the chain given beside it;
every single-bit change of the signed bytes or of the signature is refused; another product's
chain, another chip's VCEK and a certificate outside its validity are refused.
"""

from __future__ import annotations

import base64
import datetime as dt
import errno
import os
import random
import warnings
from pathlib import Path

import pytest
from conftest import require
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from keyring_types.attest import snp

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
IN_VLEK_VALIDITY = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def data(rel: str) -> bytes:
    path = TESTDATA / rel
    require(path.is_file(), f"the real SEV-SNP test data {path}")
    return path.read_bytes()


# (name, report, cert, chain beside it, time inside every certificate's validity)
REAL = [
    ("milan-v2", "sev-snp/attestation.bin", "sev-snp/vcek.testcer", "sev-snp/milan.testcer", None),
    ("genoa-v3", "sev-snp-genoa/report.bin", "sev-snp-genoa/vcek.pem", "sev-snp-genoa/ask_ark.pem", None),
    ("milan-vlek-v3", "sev-snp-vlek/report.bin", "sev-snp-vlek/vlek.der", "sev-snp-vlek/asvk_ark.pem", IN_VLEK_VALIDITY),
]
IDS = [r[0] for r in REAL]


@pytest.mark.parametrize(("name", "rep", "crt", "chn", "at"), REAL, ids=IDS)
def test_real_report_verifies_with_embedded_and_given_chain(name: str, rep: str, crt: str, chn: str, at: dt.datetime | None) -> None:
    blob, cert, chain = data(rep), data(crt), data(chn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the serial-0 warning is handled inside, nothing else warns
        embedded = snp.verify(blob, cert=cert, at=at)
        given = snp.verify(blob, cert=cert, chain=chain, at=at)
    assert embedded == given
    assert embedded.product in snp.PRODUCTS


def test_vlek_report_expires_with_its_certificate() -> None:
    blob, cert = data("sev-snp-vlek/report.bin"), data("sev-snp-vlek/vlek.der")
    snp.verify(blob, cert=cert, at=dt.datetime(2024, 12, 10, 22, 14, 21, tzinfo=dt.UTC))  # first second
    snp.verify(blob, cert=cert, at=dt.datetime(2025, 12, 10, 22, 14, 21, tzinfo=dt.UTC))  # last second
    for when in (None, dt.datetime(2025, 12, 10, 22, 14, 22, tzinfo=dt.UTC), dt.datetime(2024, 12, 10, tzinfo=dt.UTC)):
        with pytest.raises(OSError) as e:
            snp.verify(blob, cert=cert, at=when)  # None: today, which is after 2025-12-10
        assert e.value.errno == errno.EKEYEXPIRED
        assert "VLEK certificate" in str(e.value)


def test_milan_fields_as_published() -> None:
    r = snp.parse_report(data("sev-snp/attestation.bin"))
    assert (r.version, r.guest_svn, r.policy, r.vmpl, r.signature_algo) == (2, 0, 0xB0000, 0, 1)
    assert r.report_data == bytes([1, 2, 3, 4, 5]) + bytes(59)
    assert r.measurement.hex().startswith("b07af962") and r.measurement.hex().endswith("e4872b01")
    assert r.current_tcb == r.reported_tcb == r.committed_tcb == r.launch_tcb == 0x4405000000000002
    assert (r.current_build, r.current_minor, r.current_major) == (3, 49, 1)
    assert r.chip_id.hex().startswith("3ac3fe21") and r.chip_id.hex().endswith("8b006b5d")
    assert r.signing_key == "vcek" and r.product is None  # version 2 has no CPUID fields
    assert r.cpuid_fam_id is None and r.launch_mit_vector is None
    assert r.debug and not r.migrate_ma
    assert r.tcb() == snp.Tcb(bl=2, tee=0, snp=5, ucode=0x44)
    v = snp.verify(data("sev-snp/attestation.bin"), cert=data("sev-snp/vcek.testcer"))
    assert v.product == "Milan" and attrs_equal_but_product(r, v)


def attrs_equal_but_product(a: snp.SnpReport, b: snp.SnpReport) -> bool:
    import attrs

    return attrs.evolve(a, product=b.product) == b


def test_genoa_and_vlek_fields() -> None:
    g = snp.parse_report(data("sev-snp-genoa/report.bin"))
    assert (g.version, g.product, g.cpuid_fam_id, g.cpuid_mod_id, g.signing_key) == (3, "Genoa", 0x19, 0x11, "vcek")
    assert g.tcb() == snp.Tcb(bl=10, tee=0, snp=23, ucode=0x54)
    v = snp.parse_report(data("sev-snp-vlek/report.bin"))
    assert (v.version, v.product, v.signing_key, v.vmpl) == (3, "Milan", "vlek", 1)
    assert v.chip_id == bytes(64)


def test_turin_vcek_chains_to_embedded_turin_roots() -> None:
    # No public Turin report exists.  A report shaped for the real Turin VCEK (its 8-byte hwID in
    # CHIP_ID, its TCB in Turin's layout) passes the chain and form checks and fails only at the
    # signature, which nobody but that chip can make.
    cert = data("sev-snp-turin/vcek_turin.der")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        c = x509.load_der_x509_certificate(cert)
    hwid = c.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.4")).value.value  # type: ignore[attr-defined]
    assert len(hwid) == 8
    blob = bytearray(data("sev-snp-genoa/report.bin"))
    blob[0x188:0x18A] = bytes([0x1A, 0x00])
    blob[0x1A0:0x1E0] = hwid + bytes(56)
    blob[0x180:0x188] = bytes([0, 0, 0, 0, 0, 0, 0, 9])  # fmc 0, bl 0, tee 0, snp 0, ucode 9
    for chain in (None, data("sev-snp-turin/cert_chain_turin")):
        with pytest.raises(OSError) as e:
            snp.verify(bytes(blob), cert=cert, chain=chain)
        assert e.value.errno == errno.EKEYREJECTED
        assert str(e.value).endswith("SIGNATURE: does not verify under the VCEK")


def _rejected(blob: bytes, cert: bytes, chain: bytes | None = None, at: dt.datetime | None = None) -> OSError:
    with pytest.raises(OSError) as e:
        snp.verify(blob, cert=cert, chain=chain, at=at)
    return e.value


@pytest.mark.parametrize(
    ("rep", "crt", "chn", "at"),
    [
        ("sev-snp/attestation.bin", "sev-snp/vcek.testcer", "amd-roots/ask_ark_genoa.pem", None),
        ("sev-snp/attestation.bin", "sev-snp/vcek.testcer", "amd-roots/ask_ark_turin_vcek.pem", None),
        ("sev-snp/attestation.bin", "sev-snp/vcek.testcer", "amd-roots/ask_ark_milan_vlek.pem", None),
        ("sev-snp-genoa/report.bin", "sev-snp-genoa/vcek.pem", "amd-roots/ask_ark_milan.pem", None),
        ("sev-snp-vlek/report.bin", "sev-snp-vlek/vlek.der", "amd-roots/ask_ark_milan.pem", IN_VLEK_VALIDITY),
        ("sev-snp-vlek/report.bin", "sev-snp-vlek/vlek.der", "amd-roots/ask_ark_genoa_vlek.pem", IN_VLEK_VALIDITY),
    ],
)
def test_wrong_product_or_kind_chain_is_rejected(rep: str, crt: str, chn: str, at: dt.datetime | None) -> None:
    e = _rejected(data(rep), data(crt), data(chn), at)
    assert e.errno == errno.EKEYREJECTED
    assert "certificate" in str(e) or "ASK" in str(e) or "ASVK" in str(e)


def test_another_chips_vcek_is_rejected() -> None:
    # The Genoa chip's VCEK (a real AMD certificate, valid chain) against the Milan chip's report.
    e = _rejected(data("sev-snp/attestation.bin"), data("sev-snp-genoa/vcek.pem"))
    assert e.errno == errno.EKEYREJECTED and "SIGNATURE" in str(e)
    # And the Milan VCEK against the Genoa report: the CPUID fields already say Genoa.
    e = _rejected(data("sev-snp-genoa/report.bin"), data("sev-snp/vcek.testcer"))
    assert e.errno == errno.EKEYREJECTED and "CPUID" in str(e)


def test_vcek_for_a_vlek_report_and_back_are_rejected() -> None:
    e = _rejected(data("sev-snp-vlek/report.bin"), data("sev-snp/vcek.testcer"), at=IN_VLEK_VALIDITY)
    assert e.errno == errno.EKEYREJECTED and "SIGNING_KEY" in str(e)
    e = _rejected(data("sev-snp/attestation.bin"), data("sev-snp-vlek/vlek.der"), at=IN_VLEK_VALIDITY)
    assert e.errno == errno.EKEYREJECTED and "SIGNING_KEY" in str(e)


def _flip_all(blob: bytes, bits: list[int], cert: bytes, at: dt.datetime | None) -> None:
    accepted = []
    for bit in bits:
        b = bytearray(blob)
        b[bit // 8] ^= 1 << (bit % 8)
        try:
            snp.verify(bytes(b), cert=cert, at=at)
        except OSError as e:
            assert e.errno in (errno.EKEYREJECTED, errno.EBADMSG), (bit, e)
        else:
            accepted.append(bit)
    assert not accepted, f"bit flips accepted at {accepted[:10]}"


def test_every_bit_of_the_milan_report_matters() -> None:
    # All 9472 bits: the 672 signed bytes and the 512-byte signature area.
    blob, cert = data("sev-snp/attestation.bin"), data("sev-snp/vcek.testcer")
    _flip_all(blob, list(range(snp.REPORT_SIZE * 8)), cert, None)


@pytest.mark.parametrize(("name", "rep", "crt", "chn", "at"), REAL[1:], ids=IDS[1:])
def test_bit_flips_in_other_reports(name: str, rep: str, crt: str, chn: str, at: dt.datetime | None) -> None:
    # Every bit of the signature area, and a stratified sample of the signed body: 8 bits from
    # each 16-byte stripe (the Milan report above takes every bit).
    blob, cert = data(rep), data(crt)
    rng = random.Random(name)
    body = [stripe * 128 + rng.randrange(128) for stripe in range(snp.SIGNED_SIZE // 16) for _ in range(8)]
    sig = list(range(snp.SIGNED_SIZE * 8, snp.REPORT_SIZE * 8))
    _flip_all(blob, body + sig, cert, at)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b[:-1], "size"),
        (lambda b: b + b"\0", "size"),
        (lambda b: b"", "size"),
        (lambda b: (1).to_bytes(4, "little") + b[4:], "VERSION"),
        (lambda b: (6).to_bytes(4, "little") + b[4:], "VERSION"),
        (lambda b: b[:0x34] + (2).to_bytes(4, "little") + b[0x38:], "SIGNATURE_ALGO"),
        (lambda b: b[:0x48] + (3 << 2).to_bytes(4, "little") + b[0x4C:], "SIGNING_KEY"),
        (lambda b: b[:0x48] + (1 << 5).to_bytes(4, "little") + b[0x4C:], "signer info"),
        (lambda b: b[:0x8] + (0).to_bytes(8, "little") + b[0x10:], "POLICY bit 17"),
        (lambda b: b[: 0x4A0 - 1] + b"\1", "reserved bytes of SIGNATURE"),
        (lambda b: b[: 0x2A0 + 71] + b"\1" + b[0x2A0 + 72 :], "SIGNATURE R or S"),
    ],
)
def test_malformed_reports_are_ebadmsg(mutate: object, field: str) -> None:
    blob = mutate(data("sev-snp/attestation.bin"))  # type: ignore[operator]
    for call in (lambda: snp.parse_report(blob), lambda: snp.verify(blob, cert=data("sev-snp/vcek.testcer"))):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EBADMSG
        assert field in str(e.value)


def test_bad_arguments() -> None:
    blob, cert = data("sev-snp/attestation.bin"), data("sev-snp/vcek.testcer")
    for kwargs, err, word in [
        ({"cert": None}, errno.EINVAL, "cert"),
        ({"cert": cert, "at": dt.datetime(2025, 1, 1)}, errno.EINVAL, "aware"),  # naive: the point of the case
        ({"cert": b"not a certificate"}, errno.EBADMSG, "cert"),
        ({"cert": cert + cert}, errno.EBADMSG, "cert"),
        (
            {"cert": cert, "chain": data("sev-snp/milan.testcer").split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"},
            errno.EBADMSG,
            "chain",
        ),
        ({"cert": cert, "chain": b"garbage"}, errno.EBADMSG, "chain"),
        ({"cert": cert, "crl": b"garbage"}, errno.EBADMSG, "crl"),
        ({"cert": cert, "policy": "measurement"}, errno.EINVAL, "policy"),
    ]:
        with pytest.raises(OSError) as e:
            snp.verify(blob, **kwargs)  # type: ignore[arg-type]
        assert e.value.errno == err, kwargs
        assert word in str(e.value)


def test_ark_certificate_as_cert_is_rejected() -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    ask, ark = x509.load_pem_x509_certificates(data("amd-roots/ask_ark_milan.pem"))
    for c in (ask, ark):
        e = _rejected(data("sev-snp/attestation.bin"), c.public_bytes(Encoding.DER))
        assert e.errno == errno.EKEYREJECTED and "SEV-VCEK" in str(e)


def test_serial_zero_warning_is_not_silenced_globally() -> None:
    cert = data("sev-snp/vcek.testcer")
    before = list(warnings.filters)
    snp.verify(data("sev-snp/attestation.bin"), cert=cert)
    assert warnings.filters == before
    with pytest.warns(CryptographyDeprecationWarning, match="serial number"):
        x509.load_der_x509_certificate(cert)  # outside the verifier, cryptography still warns


@pytest.mark.parametrize("target", ["cert", "chain"])
def test_mutated_certificates_only_raise_oserror(target: str) -> None:
    # 300 random byte changes of the VCEK (DER) or of the chain (PEM body, base64 letters swapped):
    # each is refused with EBADMSG or EKEYREJECTED, never another exception, never accepted.
    blob, cert, chain = data("sev-snp/attestation.bin"), data("sev-snp/vcek.testcer"), data("sev-snp/milan.testcer")
    rng = random.Random(target)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    for _ in range(int(os.environ.get("SNP_MUTATIONS", "300"))):
        if target == "cert":
            b = bytearray(cert)
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
            kwargs = {"cert": bytes(b), "chain": chain}
        else:
            b = bytearray(chain)
            i = rng.choice([j for j in range(len(b)) if b[j] in alphabet])
            b[i] = rng.choice([c for c in alphabet if c != b[i]])
            kwargs = {"cert": cert, "chain": bytes(b)}
        try:
            snp.verify(blob, **kwargs)
        except OSError as e:
            assert e.errno in (errno.EBADMSG, errno.EKEYREJECTED), (i, e)
        else:
            # Only a change that leaves the DER meaning intact could pass (e.g. base64 padding bits).
            assert target == "chain" and x509.load_pem_x509_certificates(bytes(b)) == x509.load_pem_x509_certificates(chain), i


def _outer_parts(der: bytes) -> tuple[int, int]:
    """(offset of the outer signatureAlgorithm, offset of the signature BIT STRING) in a certificate."""
    body, _ = snp._tlv_end(der, 0)
    _, tbs_end = snp._tlv_end(der, body)
    _, alg_end = snp._tlv_end(der, tbs_end)
    return tbs_end, alg_end


@pytest.mark.parametrize("which", ["trailerField", "unused bits"])
def test_unsigned_certificate_bytes_cannot_change(which: str) -> None:
    # Found by the mutation test above: cryptography verifies a certificate whose outer PSS
    # trailerField (outside tbsCertificate) or signature unused-bits byte was changed.
    from cryptography.hazmat.primitives.serialization import Encoding

    ask, ark = x509.load_pem_x509_certificates(data("sev-snp/milan.testcer"))
    # The ARK for the trailerField; the ASK for the unused bits, as its signature's last byte is
    # even (with one unused bit it is still valid DER, and cryptography verifies it unchanged).
    target = ark if which == "trailerField" else ask
    der = bytearray(target.public_bytes(Encoding.DER))
    alg, sig = _outer_parts(bytes(der))
    if which == "trailerField":
        i = bytes(der).index(bytes.fromhex("a303020101"), alg, sig)  # [3] trailerField INTEGER 1
        der[i + 4] = 0x3D
    else:
        assert der[sig] == 0x03 and der[sig + 4] == 0 and der[-1] % 2 == 0  # BIT STRING, 2-byte length, unused bits
        der[sig + 4] = 1
    body = base64.encodebytes(bytes(der)).replace(b"\n", b"")
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    bad = b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"
    chain = bad + ark.public_bytes(Encoding.PEM) if target is ask else ask.public_bytes(Encoding.PEM) + bad
    with pytest.raises(OSError) as e:
        snp.verify(data("sev-snp/attestation.bin"), cert=data("sev-snp/vcek.testcer"), chain=chain)
    assert e.value.errno == errno.EBADMSG and "signatureAlgorithm or signatureValue" in str(e.value)
