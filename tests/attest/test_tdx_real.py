"""keyring_types.attest.tdx against real Intel TDX quotes and PCS collateral (../shared/testdata).

Both quotes of testdata/tdx (v4 and v5) and the GCP quote of testdata/tdx-ccel verify under
Intel's embedded root at a time inside their certificates' validity; every single-bit change of
the signed bytes, the signatures, the QE report and its binding, or the PCK chain is refused
(sampled per field here, every bit under ``-m slow``); bytes after the signed data do not matter.
"""

from __future__ import annotations

import datetime as dt
import errno
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require

from keyring_types.attest import tdx

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
IN_CRL_VALIDITY = dt.datetime(2023, 6, 20, tzinfo=dt.UTC)  # PCK CRL 2023-06-08..07-08, root CRL ..2024-04-02
IN_V5_VALIDITY = dt.datetime(2026, 2, 10, tzinfo=dt.UTC)  # v5 PCK leaf from 2026-01-27; its TCB info 2026-02-01..03-03
CCEL_AT = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)  # GCP PCK leaf 2024-07-02..2031


def data(rel: str) -> bytes:
    path = TESTDATA / rel
    require(path.is_file(), f"the real TDX test data {path}")
    return path.read_bytes()


REAL = [
    ("spr-v4", "tdx/tdx_prod_quote_SPR_E4.dat", IN_CRL_VALIDITY),
    ("v5", "tdx/quote_v5_sample.dat", IN_V5_VALIDITY),
    ("gcp-ccel-v4", "tdx-ccel/cos-113-tdx-quote.dat", CCEL_AT),
]


@pytest.mark.parametrize(("name", "rel", "at"), REAL, ids=[r[0] for r in REAL])
def test_real_quotes_verify_under_intels_embedded_root(name: str, rel: str, at: dt.datetime) -> None:
    blob = data(rel)
    q = tdx.verify(blob, at=at)
    assert q.tee_type == 0x81 and q.att_key_type == 2
    assert q.qe_vendor_id == tdx.INTEL_QE_VENDOR_ID
    assert len(q.rtmrs) == 4 and all(len(r) == 48 for r in q.rtmrs)
    assert q.pck is not None and q.pck.ca == "platform" and len(q.pck.fmspc) == 6
    assert q.tcb is not None and q.tcb.fmspc == q.pck.fmspc and q.tcb.tcb_status is None
    assert not q.debug
    # The same verdict with the root given explicitly.
    assert tdx.verify(blob, at=at, roots=data("tdx/trusted_root.pem")).mrtd == q.mrtd


def test_the_two_versions_and_body_types_parse_as_they_are() -> None:
    v4 = tdx.parse_quote(data("tdx/tdx_prod_quote_SPR_E4.dat"))
    assert (v4.version, v4.body_type, v4.tee_tcb_svn2, v4.mrservicetd) == (4, 2, None, None)
    assert v4.end == 4935 and len(v4.raw) == 4974  # 39 bytes of padding tolerated
    assert v4.signed_bytes == v4.raw[: 48 + 584]
    v5 = tdx.parse_quote(data("tdx/quote_v5_sample.dat"))
    assert (v5.version, v5.body_type) == (5, 3)
    assert v5.tee_tcb_svn2 is not None and len(v5.tee_tcb_svn2) == 16 and v5.mrservicetd is not None
    assert v5.signed_bytes == v5.raw[: 48 + 6 + 648] and v5.end == len(v5.raw)
    gcp = tdx.parse_quote(data("tdx-ccel/cos-113-tdx-quote.dat"))
    assert gcp.report_data == data("tdx-ccel/nonce.dat")
    assert gcp.end == 4935 and len(gcp.raw) == 8000


def test_the_embedded_root_is_intels_sgx_root_ca() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    root = x509.load_pem_x509_certificate(tdx.intel_root_pem())
    assert root.fingerprint(hashes.SHA256()).hex() == "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
    assert root == x509.load_pem_x509_certificate(data("tdx/trusted_root.pem"))


def test_crls_inside_and_outside_their_validity() -> None:
    blob = data("tdx/tdx_prod_quote_SPR_E4.dat")
    col = tdx.Collateral(pck_crl=data("tdx/pckcrl"), root_crl=data("tdx/rootcrl.der"))
    assert tdx.verify(blob, at=IN_CRL_VALIDITY, collateral=col).pck is not None
    with pytest.raises(OSError) as e:
        tdx.verify(blob, collateral=col)  # now: both CRLs are long past their next update
    assert e.value.errno == errno.EKEYEXPIRED and "CRL" in str(e.value)
    # The PCK CRL belongs to the v4 quote's CA; the root CRL is not a PCK CRL.
    with pytest.raises(OSError) as e:
        tdx.verify(blob, at=IN_CRL_VALIDITY, collateral=tdx.Collateral(pck_crl=data("tdx/rootcrl.der")))
    assert e.value.errno == errno.EKEYREJECTED


def test_certificates_outside_their_validity_are_expired() -> None:
    with pytest.raises(OSError) as e:
        tdx.verify(data("tdx/quote_v5_sample.dat"), at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    assert e.value.errno == errno.EKEYEXPIRED and "PCK certificate" in str(e.value)
    with pytest.raises(OSError) as e:
        tdx.verify(data("tdx/tdx_prod_quote_SPR_E4.dat"), at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    assert e.value.errno == errno.EKEYEXPIRED


def test_a_non_root_as_roots_is_refused() -> None:
    blob = data("tdx/tdx_prod_quote_SPR_E4.dat")
    ca_pem = tdx.parse_quote(blob).pck_chain.split(b"-----END CERTIFICATE-----\n")[1] + b"-----END CERTIFICATE-----\n"
    with pytest.raises(OSError) as e:
        tdx.verify(blob, at=IN_CRL_VALIDITY, roots=ca_pem)
    assert e.value.errno == errno.EINVAL  # the PCK CA is not self-issued: not a root


def test_naive_time_and_bad_arguments() -> None:
    blob = data("tdx/tdx_prod_quote_SPR_E4.dat")
    for kwargs in ({"at": dt.datetime(2023, 6, 20)}, {"policy": object()}, {"collateral": {"pck_crl": b""}}):
        with pytest.raises(OSError) as e:
            tdx.verify(blob, **kwargs)  # type: ignore[arg-type]
        assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("cut", [0, 47, 48 + 583, 48 + 584 + 3, 1000, 4934])
def test_truncated_quotes_are_malformed(cut: int) -> None:
    with pytest.raises(OSError) as e:
        tdx.parse_quote(data("tdx/tdx_prod_quote_SPR_E4.dat")[:cut])
    assert e.value.errno == errno.EBADMSG


def test_padding_after_the_signed_data_does_not_matter() -> None:
    blob = bytearray(data("tdx/tdx_prod_quote_SPR_E4.dat"))
    for i in range(4935, len(blob)):
        blob[i] ^= 0xA5
    assert tdx.verify(bytes(blob), at=IN_CRL_VALIDITY).report_data == tdx.parse_quote(blob).report_data
    assert tdx.verify(bytes(blob[:4935]), at=IN_CRL_VALIDITY) is not None


# ---------------------------------------------------------------------------------------------
# Single-bit changes


def regions(q: tdx.TdxQuote) -> Iterator[tuple[str, int, int]]:
    """(name, start, end) of every field the verifier depends on, in quote order."""
    yield "header", 0, 48
    pos = 48
    if q.version == 5:
        yield "body descriptor", 48, 54
        pos = 54
    names = ["TEE_TCB_SVN", "MRSEAM", "MRSIGNERSEAM", "SEAMATTRIBUTES", "TDATTRIBUTES", "XFAM", "MRTD", "MRCONFIGID", "MROWNER",
             "MROWNERCONFIG", "RTMR0", "RTMR1", "RTMR2", "RTMR3", "REPORTDATA", "TEE_TCB_SVN2", "MRSERVICETD"]  # fmt: skip
    sizes = [16, 48, 48, 8, 8, 8, 48, 48, 48, 48, 48, 48, 48, 48, 64, 16, 48]
    for name, size in zip(names, sizes, strict=True):
        if pos >= q.signed_size:
            break
        yield name, pos, pos + size
        pos += size
    assert pos == q.signed_size
    yield "signed data size", pos, pos + 4
    pos += 4
    yield "signature", pos, pos + 64
    yield "attestation key", pos + 64, pos + 128
    yield "certification data type and size", pos + 128, pos + 134
    pos += 134
    qe = [("QE CPUSVN", 16), ("QE MISCSELECT", 4), ("QE reserved", 28), ("QE ATTRIBUTES", 16), ("QE MRENCLAVE", 32),
          ("QE reserved 2", 32), ("QE MRSIGNER", 32), ("QE reserved 3", 96), ("QE ISVPRODID+ISVSVN", 4), ("QE reserved 4", 60),
          ("QE REPORTDATA", 64), ("QE report signature", 64), ("QE auth data size", 2)]  # fmt: skip
    for name, size in qe:
        yield name, pos, pos + size
        pos += size
    yield "QE auth data", pos, pos + len(q.qe_auth_data)
    pos += len(q.qe_auth_data)
    yield "PCK certification data type and size", pos, pos + 6
    pos += 6
    # The chain: every line of every certificate is its own region.
    for n, line in enumerate(q.pck_chain.splitlines(keepends=True)):
        yield f"PCK chain line {n}", pos, pos + len(line)
        pos += len(line)
    assert pos == q.end


def sampled_bits(q: tdx.TdxQuote, seed: int) -> Iterator[tuple[str, int]]:
    rng = random.Random(seed)
    for name, start, end in regions(q):
        picks = {start, end - 1, (start + end) // 2, rng.randrange(start, end)}
        for byte in sorted(picks):
            yield name, byte * 8 + rng.randrange(8)
    # Every bit of a few bytes whose value is a type, size or version.
    for byte in (0, 2, 4, q.signed_size, q.signed_size + 4 + 128, q.signed_size + 4 + 130):
        for bit in range(8):
            yield "type/size", byte * 8 + bit


def flip(blob: bytes, bit: int) -> bytes:
    b = bytearray(blob)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def assert_refused(blob: bytes, at: dt.datetime, where: str) -> None:
    try:
        tdx.verify(blob, at=at)
    except OSError as e:
        assert e.errno in (errno.EBADMSG, errno.EKEYREJECTED), (where, e)
    else:
        pytest.fail(f"a flipped bit in {where} was accepted")


@pytest.mark.parametrize(("name", "rel", "at"), REAL, ids=[r[0] for r in REAL])
def test_every_sampled_single_bit_change_is_refused(name: str, rel: str, at: dt.datetime) -> None:
    blob = data(rel)
    q = tdx.parse_quote(blob)
    seen = set()
    for where, bit in sampled_bits(q, seed=len(blob)):
        seen.add(where.split(" line ")[0])
        assert_refused(flip(blob, bit), at, f"{where} (bit {bit})")
    assert {"signature", "attestation key", "QE report signature", "QE REPORTDATA", "QE auth data", "PCK chain", "RTMR3"} <= seen


@pytest.mark.slow
@pytest.mark.parametrize(("name", "rel", "at"), REAL, ids=[r[0] for r in REAL])
def test_every_single_bit_change_is_refused_exhaustively(name: str, rel: str, at: dt.datetime) -> None:
    blob = data(rel)
    end = tdx.parse_quote(blob).end
    for bit in range(end * 8):
        assert_refused(flip(blob, bit), at, f"byte {bit // 8}")


# ---------------------------------------------------------------------------------------------
# Intel PCS collateral (the samples carry no TCB Signing chain: their evaluation is tested here,
# their signatures through the emulated guest's collateral in test_tdx_emulated.py)


def test_real_tcb_info_and_qe_identity_evaluate() -> None:
    v5 = data("tdx/quote_v5_sample.dat")
    info = tdx.parse_tcb_info(data("tdx/sample_tcbinfo_response_v5"))
    assert info.fmspc == tdx.pck_info(v5).fmspc and "TDX_01" in info.module_identities
    status, date, _adv = tdx.evaluate_tcb(tdx.parse_quote(v5), tdx.pck_info(v5), info)
    assert status == "UpToDate" and date.startswith("20")
    ident = tdx.parse_qe_identity(data("tdx/sample_qeIdentity_response"))
    assert tdx.evaluate_qe_tcb(tdx.parse_quote(v5).qe_report, ident) == "UpToDate"
    # The v4 platform's CPU SVNs are below every level of the sample TCB info for its FMSPC.
    v4 = data("tdx/tdx_prod_quote_SPR_E4.dat")
    info4 = tdx.parse_tcb_info(data("tdx/sample_tcbInfo_response"))
    assert info4.fmspc == tdx.pck_info(v4).fmspc
    assert tdx.evaluate_tcb(tdx.parse_quote(v4), tdx.pck_info(v4), info4)[0] == "NotSupported"
    # Another platform's TCB info is refused.
    with pytest.raises(OSError) as e:
        tdx.evaluate_tcb(tdx.parse_quote(v4), tdx.pck_info(v4), info)
    assert e.value.errno == errno.EKEYREJECTED and "FMSPC" in str(e.value)


def test_tcb_info_signed_bytes_are_the_exact_member() -> None:
    body = data("tdx/sample_tcbInfo_response")
    info = tdx.parse_tcb_info(body)
    assert info.signed.startswith(b'{"id":"TDX"') and body.index(info.signed) == len(b'{"tcbInfo":')
    assert len(info.signature) == 64


@pytest.mark.parametrize("body", [b"", b"[]", b'{"tcbInfo":{}}', b'{"tcbInfo":{"id":"SGX","version":3},"signature":"00"}', b"{,}"])
def test_malformed_tcb_info_is_ebadmsg(body: bytes) -> None:
    with pytest.raises(OSError) as e:
        tdx.parse_tcb_info(body)
    assert e.value.errno == errno.EBADMSG


def test_collateral_needs_the_issuer_chains() -> None:
    with pytest.raises(OSError) as e:
        tdx.Collateral(tcb_info=data("tdx/sample_tcbInfo_response"))
    assert e.value.errno == errno.EINVAL
