"""keyring_types.attest.snp with a chain made here: caller roots, binding checks, validity, CRL.

Real AMD data cannot give a report with chosen fields, a Turin report, or an ARK-signed CRL
under our control; snp_testchain.py makes an AMD-shaped chain whose keys the tests hold.
"""

from __future__ import annotations

import datetime as dt
import errno

import pytest
import snp_testchain as tc
from cryptography.hazmat.primitives.asymmetric import ec

from keyring_types.attest import snp


@pytest.fixture(scope="module")
def milan() -> tc.Chain:
    return tc.make_chain("Milan")


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def fails(err: int, words: str, blob: bytes, **kwargs: object) -> None:
    with pytest.raises(OSError) as e:
        snp.verify(blob, **kwargs)  # type: ignore[arg-type]
    assert e.value.errno == err, str(e.value)
    assert words in str(e.value)


def test_caller_roots_verify_through_the_same_path(milan: tc.Chain, key: ec.EllipticCurvePrivateKey) -> None:
    cert = milan.endorsement(key)
    r = snp.verify(tc.report(key, report_data=b"\x07" * 64), cert=cert, chain=milan.pem, at=tc.INSIDE)
    assert (r.product, r.signing_key, r.report_data) == ("Milan", "vcek", b"\x07" * 64)
    # The ARK may come first too; DER and PEM certificates both work.
    snp.verify(tc.report(key), cert=tc.pem(tc.x509.load_der_x509_certificate(cert)), chain=tc.pem(milan.ark, milan.ask), at=tc.INSIDE)


def test_made_up_chain_is_refused_against_amds_roots(milan: tc.Chain, key: ec.EllipticCurvePrivateKey) -> None:
    # Its ASK is called SEV-Milan like AMD's, so the embedded Milan chain is picked, and refuses it.
    fails(errno.EKEYREJECTED, "VCEK certificate", tc.report(key), cert=milan.endorsement(key), at=tc.INSIDE)
    other = tc.make_chain("Milan")
    fails(errno.EKEYREJECTED, "signature does not verify under the ASK", tc.report(key), cert=milan.endorsement(key), chain=other.pem)


def test_chain_must_hang_together(milan: tc.Chain, key: ec.EllipticCurvePrivateKey) -> None:
    other = tc.make_chain("Milan")
    fails(
        errno.EKEYREJECTED,
        "ASK: signature does not verify under the ARK",
        tc.report(key),
        cert=milan.endorsement(key),
        chain=tc.pem(milan.ask, other.ark),
    )
    fails(errno.EBADMSG, "chain: 1 certificates", tc.report(key), cert=milan.endorsement(key), chain=tc.pem(milan.ask))
    # An ARK that is not self-issued: the other chain's ASK in the ARK's place.
    fails(errno.EKEYREJECTED, "ARK", tc.report(key), cert=milan.endorsement(key), chain=tc.pem(milan.ask, other.ask))


def test_another_chip_same_key_different_hwid(milan: tc.Chain, key: ec.EllipticCurvePrivateKey) -> None:
    cert = milan.endorsement(key, hwid=bytes(64 - 1) + b"\x01")
    fails(errno.EKEYREJECTED, "CHIP_ID: does not match the VCEK's hwID", tc.report(key), cert=cert, chain=milan.pem, at=tc.INSIDE)


def test_another_chips_key_is_refused(milan: tc.Chain, key: ec.EllipticCurvePrivateKey) -> None:
    other_key = ec.generate_private_key(ec.SECP384R1())
    fails(errno.EKEYREJECTED, "SIGNATURE", tc.report(key), cert=milan.endorsement(other_key), chain=milan.pem, at=tc.INSIDE)


def test_masked_chip_id_cannot_bind_to_a_vcek(milan: tc.Chain, key: ec.EllipticCurvePrivateKey) -> None:
    fails(
        errno.EKEYREJECTED, "CHIP_ID: masked", tc.report(key, chip_id=bytes(64)), cert=milan.endorsement(key), chain=milan.pem, at=tc.INSIDE
    )


@pytest.mark.parametrize(
    ("field", "tcb"),
    [("blSPL", {"bl": 3}), ("teeSPL", {"tee": 1}), ("snpSPL", {"snp": 6}), ("ucodeSPL", {"ucode": 0x45}), ("spl4", {"spl4": 1})],
)
def test_reported_tcb_must_equal_the_certificates(
    milan: tc.Chain, key: ec.EllipticCurvePrivateKey, field: str, tcb: dict[str, int]
) -> None:
    levels = {"bl": 2, "tee": 0, "snp": 5, "ucode": 0x44} | tcb
    fails(
        errno.EKEYREJECTED, f"REPORTED_TCB: {field}", tc.report(key), cert=milan.endorsement(key, tcb=levels), chain=milan.pem, at=tc.INSIDE
    )


def test_tcb_extension_missing_or_malformed(milan: tc.Chain, key: ec.EllipticCurvePrivateKey) -> None:
    fails(errno.EKEYREJECTED, "no snpSPL extension", tc.report(key), cert=milan.endorsement(key, drop=["snp"]), chain=milan.pem)
    fails(errno.EKEYREJECTED, "no hwID extension", tc.report(key), cert=milan.endorsement(key, drop=["4"]), chain=milan.pem)
    fails(errno.EKEYREJECTED, "no productName", tc.report(key), cert=milan.endorsement(key, drop=["2"]), chain=milan.pem)
    fails(errno.EKEYREJECTED, "productName", tc.report(key), cert=milan.endorsement(key, product="Naples"), chain=milan.pem)


def test_turin_hwid_is_8_bytes_and_tcb_has_fmc() -> None:
    turin = tc.make_chain("Turin")
    key = ec.generate_private_key(ec.SECP384R1())
    hwid = bytes.fromhex("1e550a8ee5cf9f4d")
    levels = {"fmc": 1, "bl": 2, "tee": 3, "snp": 4, "ucode": 9}
    cert = turin.endorsement(key, product="Turin-B0", hwid=hwid, tcb=levels)
    tcb = tc.tcb_bytes("Turin", fmc=1, bl=2, tee=3, snp=4, ucode=9)
    good = tc.report(
        key,
        version=5,
        cpuid=(0x1A, 0x02, 0x01),
        chip_id=hwid + bytes(56),
        reported_tcb=tcb,
        current_tcb=tcb,
        committed_tcb=tcb,
        launch_tcb=tcb,
    )
    r = snp.verify(good, cert=cert, chain=turin.pem, at=tc.INSIDE)
    assert r.product == "Turin" and r.tcb() == snp.Tcb(fmc=1, bl=2, tee=3, snp=4, ucode=9)
    assert r.launch_mit_vector == 0 and r.current_mit_vector == 0
    wrong_chip = tc.report(key, version=5, cpuid=(0x1A, 0x02, 0x01), chip_id=b"\x1f" + hwid[1:] + bytes(56), reported_tcb=tcb)
    fails(errno.EKEYREJECTED, "CHIP_ID", wrong_chip, cert=cert, chain=turin.pem, at=tc.INSIDE)
    # The Milan layout of the same levels does not pass for Turin: fmcSPL sits in byte 0.
    milan_layout = tc.report(
        key, version=5, cpuid=(0x1A, 0x02, 0x01), chip_id=hwid + bytes(56), reported_tcb=tc.tcb_bytes("Milan", bl=2, tee=3, snp=4, ucode=9)
    )
    fails(errno.EKEYREJECTED, "REPORTED_TCB: fmcSPL", milan_layout, cert=cert, chain=turin.pem, at=tc.INSIDE)
    # A 64-byte hwID on a Turin certificate is malformed.
    fails(errno.EBADMSG, "hwID", good, cert=turin.endorsement(key, product="Turin-B0", hwid=bytes(64), tcb=levels), chain=turin.pem)
    # A Milan report (CPUID) with the Turin certificate.
    fails(errno.EKEYREJECTED, "CPUID", tc.report(key, chip_id=hwid + bytes(56), reported_tcb=tcb), cert=cert, chain=turin.pem)


def test_vlek_kind_and_chain(key: ec.EllipticCurvePrivateKey) -> None:
    vchain = tc.make_chain("Genoa", vlek=True)
    cert = vchain.endorsement(key, kind="vlek", product="Genoa")
    r = snp.verify(tc.report(key, signing_key=1, chip_id=bytes(64), cpuid=(0x19, 0x11, 0x01)), cert=cert, chain=vchain.pem, at=tc.INSIDE)
    assert (r.signing_key, r.product) == ("vlek", "Genoa")
    fails(errno.EKEYREJECTED, "SIGNING_KEY", tc.report(key, signing_key=0, cpuid=(0x19, 0x11, 0x01)), cert=cert, chain=vchain.pem)
    fails(errno.EKEYREJECTED, "SIGNING_KEY", tc.report(key, signing_key=7, cpuid=(0x19, 0x11, 0x01)), cert=cert, chain=vchain.pem)


@pytest.mark.parametrize("which", ["VCEK certificate", "ASK", "ARK"])
def test_validity_of_each_certificate(key: ec.EllipticCurvePrivateKey, which: str) -> None:
    start, end = dt.datetime(2025, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    if which == "ASK":
        chain = tc.make_chain("Milan", ask_window=(start, end))
        cert = chain.endorsement(key)
    elif which == "ARK":
        chain = tc.make_chain("Milan")
        ark = tc.cert("ARK-Milan", chain.ark.subject, chain.ark_key.public_key(), chain.ark_key, not_before=start, not_after=end)
        chain = tc.Chain(ark_key=chain.ark_key, ark=ark, ask_key=chain.ask_key, ask=chain.ask)
        cert = chain.endorsement(key)
    else:
        chain = tc.make_chain("Milan")
        cert = chain.endorsement(key, not_before=start, not_after=end)
    blob = tc.report(key)
    snp.verify(blob, cert=cert, chain=chain.pem, at=dt.datetime(2025, 6, 1, tzinfo=dt.UTC))
    for when in (dt.datetime(2024, 12, 31, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, tzinfo=dt.UTC)):
        fails(errno.EKEYEXPIRED, which, blob, cert=cert, chain=chain.pem, at=when)


def test_cached_chain_still_checks_time(milan: tc.Chain, key: ec.EllipticCurvePrivateKey) -> None:
    cert = milan.endorsement(key, not_after=dt.datetime(2031, 1, 1, tzinfo=dt.UTC))
    snp.verify(tc.report(key), cert=cert, chain=milan.pem, at=tc.INSIDE)
    fails(errno.EKEYEXPIRED, "VCEK certificate", tc.report(key), cert=cert, chain=milan.pem, at=dt.datetime(2032, 1, 1, tzinfo=dt.UTC))
    # A timezone other than UTC is the same instant.
    snp.verify(tc.report(key), cert=cert, chain=milan.pem, at=tc.INSIDE.astimezone(dt.timezone(dt.timedelta(hours=5))))


def test_crl(milan: tc.Chain, key: ec.EllipticCurvePrivateKey) -> None:
    blob, cert = tc.report(key), milan.endorsement(key)
    snp.verify(blob, cert=cert, chain=milan.pem, at=tc.INSIDE, crl=milan.crl())
    snp.verify(blob, cert=cert, chain=milan.pem, at=tc.INSIDE, crl=milan.crl(revoked=[0x9999]))
    fails(errno.EKEYREJECTED, "crl: the ASK is revoked", blob, cert=cert, chain=milan.pem, at=tc.INSIDE, crl=milan.crl(revoked=[0x2000]))
    fails(errno.EKEYREJECTED, "crl: signature", blob, cert=cert, chain=milan.pem, at=tc.INSIDE, crl=milan.crl(signer=milan.ask_key))
    other = tc.make_chain("Genoa")
    fails(errno.EKEYREJECTED, "crl: issuer", blob, cert=cert, chain=milan.pem, at=tc.INSIDE, crl=other.crl())
    # Its own validity window: a CRL past nextUpdate, or not yet issued, is EKEYEXPIRED.
    stale = milan.crl(last=dt.datetime(2029, 1, 1, tzinfo=dt.UTC), next_=dt.datetime(2029, 2, 1, tzinfo=dt.UTC))
    fails(errno.EKEYEXPIRED, "crl", blob, cert=cert, chain=milan.pem, at=tc.INSIDE, crl=stale)
    future = milan.crl(last=dt.datetime(2031, 1, 1, tzinfo=dt.UTC), next_=dt.datetime(2032, 2, 1, tzinfo=dt.UTC))
    fails(errno.EKEYEXPIRED, "crl", blob, cert=cert, chain=milan.pem, at=tc.INSIDE, crl=future)
    pem = tc.x509.load_der_x509_crl(milan.crl()).public_bytes(tc.serialization.Encoding.PEM)
    snp.verify(blob, cert=cert, chain=milan.pem, at=tc.INSIDE, crl=pem)


def test_chain_checks_are_cached_by_bytes(milan: tc.Chain, key: ec.EllipticCurvePrivateKey) -> None:
    cert = milan.endorsement(key)
    snp.verify(tc.report(key), cert=cert, chain=milan.pem, at=tc.INSIDE)
    hits = snp._endorsement.cache_info().hits
    snp.verify(tc.report(key, guest_svn=1), cert=bytes(bytearray(cert)), chain=milan.pem, at=tc.INSIDE)
    assert snp._endorsement.cache_info().hits == hits + 1


def test_chain_must_use_rsa_pss_sha384(milan: tc.Chain, key: ec.EllipticCurvePrivateKey) -> None:
    pkcs1_ask = tc.cert("SEV-Milan", milan.ark.subject, milan.ask_key.public_key(), milan.ark_key, serial=0x2000, pss=False)
    chain = tc.pem(pkcs1_ask, milan.ark)
    fails(errno.EKEYREJECTED, "ASK: not signed with RSASSA-PSS", tc.report(key), cert=milan.endorsement(key), chain=chain)
    # An ECDSA key where the ASK's RSA key belongs.
    ec_ask = tc.cert("SEV-Milan", milan.ark.subject, key.public_key(), milan.ark_key, serial=0x2000)
    fails(errno.EKEYREJECTED, "ASK: public key is not RSA", tc.report(key), cert=milan.endorsement(key), chain=tc.pem(ec_ask, milan.ark))
    # A P-256 endorsement key.
    p256 = ec.generate_private_key(ec.SECP256R1())
    fails(errno.EKEYREJECTED, "not ECDSA P-384", tc.report(key), cert=milan.endorsement(p256), chain=milan.pem)


def test_mutated_crl_only_raises_oserror(milan: tc.Chain, key: ec.EllipticCurvePrivateKey) -> None:
    # Every single-bit change of a CRL that revokes nothing: refused with EBADMSG or EKEYREJECTED,
    # or, where the bit lies outside what the ARK signed and changes nothing that is read, accepted.
    blob, cert = tc.report(key), milan.endorsement(key)
    crl = milan.crl(revoked=[0x9999])
    for bit in range(len(crl) * 8):
        b = bytearray(crl)
        b[bit // 8] ^= 1 << (bit % 8)
        try:
            snp.verify(blob, cert=cert, chain=milan.pem, at=tc.INSIDE, crl=bytes(b))
        except OSError as e:
            assert e.errno in (errno.EBADMSG, errno.EKEYREJECTED, errno.EKEYEXPIRED), (bit, e)
        else:
            signed = tc.x509.load_der_x509_crl(crl).tbs_certlist_bytes
            assert signed in bytes(b), bit  # the signed part is intact
