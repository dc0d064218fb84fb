"""The emulated SEV-SNP guest's other shapes: Turin (8-byte hwID, FMC level), VLEK signing under an
emulated ASVK, version 2 reports, masked chip ids; all verified through snp.verify."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest
from conftest import errno_of
from cryptography import x509

from keyring_types.attest import snp
from keyring_types.attest.providers import EmulatedSevSnp
from keyring_types.attest.tsm import TsmRequest


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("emu-products") / "state"


def test_turin_report_binds_an_8_byte_hwid_and_the_fmc_level(state: Path) -> None:
    tcb = snp.Tcb(bl=3, tee=2, snp=24, ucode=80, fmc=5)
    g = EmulatedSevSnp(state, product="Turin", tcb=tcb)
    assert len(g.chip_id) == 64 and not any(g.chip_id[8:]) and any(g.chip_id[:8])
    hwid = x509.load_der_x509_certificate(g.vcek_der()).extensions.get_extension_for_oid(
        x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.4")
    )
    assert len(hwid.value.value) == 8  # type: ignore[attr-defined]
    r = snp.verify(g.report(b"\x03" * 64), cert=g.vcek_der(), chain=g.chain_pem(), policy=snp.Policy(minimum_tcb=tcb))
    assert (r.product, r.tcb(), r.cpuid_fam_id) == ("Turin", tcb, 0x1A)
    assert r.reported_tcb.to_bytes(8, "little") == bytes([5, 3, 2, 24, 0, 0, 0, 80])
    # A Turin chip whose first 8 bytes differ is another chip.
    other = EmulatedSevSnp(state, product="Turin", tcb=tcb, chip_id=b"\x09" * 8 + bytes(56))
    assert errno_of(snp.verify, other.report(bytes(64)), cert=g.vcek_der(), chain=g.chain_pem()) == errno.EKEYREJECTED


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
def test_vlek_signed_report(state: Path, product: str) -> None:
    g = EmulatedSevSnp(state, product=product, signing_key="vlek")
    blob = g.report(b"\x04" * 64)
    r = snp.verify(blob, cert=g.vlek_der(), chain=g.chain_pem())
    assert (r.signing_key, r.product) == ("vlek", product)
    assert g.cert_der() == g.vlek_der() and g.chain_pem() == g.chain_pem("vlek") != g.chain_pem("vcek")
    cert = x509.load_der_x509_certificate(g.vlek_der())
    assert "SEV-VLEK" in cert.subject.rfc4514_string() and "CN=SEV-VLEK-" in cert.issuer.rfc4514_string()
    # The VCEK does not verify a VLEK report, nor the VLEK under the ASK's chain.
    assert errno_of(snp.verify, blob, cert=g.vcek_der(), chain=g.chain_pem("vcek")) == errno.EKEYREJECTED
    assert errno_of(snp.verify, blob, cert=g.vlek_der(), chain=g.chain_pem("vcek")) == errno.EKEYREJECTED
    # Nor AMD's roots.
    assert errno_of(snp.verify, blob, cert=g.vlek_der()) == errno.EKEYREJECTED


def test_vlek_extended_table(state: Path) -> None:
    g = EmulatedSevSnp(state, signing_key="vlek")
    blob = g.auth_new(TsmRequest(pubkey=b"\x05" * 64, format="extended"))
    table = snp.parse_cert_table(blob[16384:])
    assert table.vcek is None and table.vlek is not None and table.ask is not None
    snp.verify(blob[: snp.REPORT_SIZE], cert=table.vlek, chain=g.chain_pem())


def test_version_2_has_no_cpuid_and_takes_the_product_from_the_certificate(state: Path) -> None:
    g = EmulatedSevSnp(state, version=2, product="Genoa")
    blob = g.report(b"\x06" * 64)
    parsed = snp.parse_report(blob)
    assert (parsed.version, parsed.cpuid_fam_id, parsed.product) == (2, None, None)
    assert snp.verify(blob, cert=g.vcek_der(), chain=g.chain_pem()).product == "Genoa"


def test_masked_chip_id(state: Path) -> None:
    vlek = EmulatedSevSnp(state, signing_key="vlek", mask_chip_id=True)
    r = snp.verify(vlek.report(bytes(64)), cert=vlek.vlek_der(), chain=vlek.chain_pem())
    assert r.mask_chip_key and r.chip_id == bytes(64)
    vcek = EmulatedSevSnp(state, mask_chip_id=True)
    with pytest.raises(OSError) as e:
        snp.verify(vcek.report(bytes(64)), cert=vcek.vcek_der(), chain=vcek.chain_pem())
    assert e.value.errno == errno.EKEYREJECTED and "masked" in str(e.value)


def test_roots_made_before_vlek_still_serve_the_vcek(tmp_path: Path) -> None:
    fresh = EmulatedSevSnp(tmp_path / "new")
    fresh.report(bytes(64))
    data = (tmp_path / "new" / "roots.secret").read_bytes()
    # Keep the first three items (ARK, ASK, ASK key), as the earlier layout stored them.
    pos = 0
    for _ in range(3):
        (n,) = struct.unpack_from("<I", data, pos)
        pos += 4 + n
    old = tmp_path / "old"
    old.mkdir(mode=0o700)
    (old / "chip.secret").write_bytes((tmp_path / "new" / "chip.secret").read_bytes())
    (old / "roots.secret").write_bytes(data[:pos] + bytes(len(data) - pos))
    for f in old.iterdir():
        f.chmod(0o400)
    g = EmulatedSevSnp(old)
    snp.verify(g.report(bytes(64)), cert=g.vcek_der(), chain=g.chain_pem())
    assert errno_of(EmulatedSevSnp(old, signing_key="vlek").report, bytes(64)) == errno.ENOKEY
