"""The emulated SEV-SNP guest as the tsm provider: its reports verify through snp.verify with
its own (emulated) roots, never with AMD's."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types.attest import register_tsm_provider, snp, unregister_tsm_provider
from keyring_types.attest.providers import EXTENDED_OFFSET, EmulatedSevSnp

MEASUREMENT = bytes(range(48))


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One state directory for the module: the RSA-4096 roots are made once.
    return tmp_path_factory.mktemp("emu") / "state"


@pytest.fixture
def guest(state: Path) -> Iterator[EmulatedSevSnp]:
    g = EmulatedSevSnp(state, measurement=MEASUREMENT, host_data=b"\x42" * 32)
    register_tsm_provider(g)
    yield g
    unregister_tsm_provider(g)


def blob_of(payload: str) -> tuple[bytes, bytes]:
    key = kt.Keyspace().add_key("tsm", "att", payload, "@s")
    _pub, desc, blob = key.read().split(b" ")
    key.invalidate()
    return desc, bytes.fromhex(blob.decode())


def test_report_verifies_with_the_emulated_roots_only(guest: EmulatedSevSnp) -> None:
    user = os.urandom(64)
    desc, blob = blob_of(f"auth {user.hex()} privlevel=2")
    assert desc == b"emulated-sev-snp"
    r = snp.verify(
        blob, cert=guest.vcek_der(), chain=guest.chain_pem(), policy=snp.Policy(measurement=MEASUREMENT, report_data=user, vmpl=2)
    )
    assert (r.version, r.vmpl, r.report_data, r.chip_id, r.signing_key) == (5, 2, user, guest.chip_id, "vcek")
    assert r.host_data == b"\x42" * 32 and r.product == "Milan"
    with pytest.raises(OSError) as e:  # AMD's embedded roots (chosen by the issuer name) refuse it
        snp.verify(blob, cert=guest.vcek_der())
    assert e.value.errno == errno.EKEYREJECTED
    with pytest.raises(OSError) as e:  # a changed byte of the signed part
        snp.verify(blob[:0x50] + bytes([blob[0x50] ^ 1]) + blob[0x51:], cert=guest.vcek_der(), chain=guest.chain_pem())
    assert e.value.errno == errno.EKEYREJECTED


def test_chain_is_named_emulated_and_is_not_amds(guest: EmulatedSevSnp) -> None:
    from cryptography import x509

    for c in x509.load_pem_x509_certificates(guest.chain_pem()):
        assert "Emulated" in c.subject.rfc4514_string()
    amd = snp._read_root("ask_ark_milan.pem")
    assert guest.chain_pem() != amd


def test_nonce_binding_checked_by_snp_policy(guest: EmulatedSevSnp) -> None:
    nonce, user = os.urandom(32), b"client-key-fingerprint"
    _, blob = blob_of(f"auth {user.hex()} nonce={nonce.hex()}")
    r = snp.verify(blob, cert=guest.vcek_der(), chain=guest.chain_pem(), policy=snp.Policy(nonce=nonce, user_data=user))
    assert r.report_data == hashlib.sha512(nonce + user).digest()
    with pytest.raises(OSError) as e:
        snp.verify(blob, cert=guest.vcek_der(), chain=guest.chain_pem(), policy=snp.Policy(nonce=os.urandom(32), user_data=user))
    assert e.value.errno == errno.EKEYREJECTED and "REPORT_DATA" in str(e.value)


@pytest.mark.parametrize("vmpl", [0, 1, 2, 3])
def test_vmpl_from_privlevel(guest: EmulatedSevSnp, vmpl: int) -> None:
    _, blob = blob_of(f"auth {'00' * 64} privlevel={vmpl}")
    assert snp.parse_report(blob).vmpl == vmpl


@pytest.mark.parametrize(
    "payload",
    [f"auth {'00' * 64} privlevel=4", f"auth {'00' * 63}", f"auth {'00' * 64} format=short", "auth "],
)
def test_provider_rules_are_einval(guest: EmulatedSevSnp, payload: str) -> None:
    with pytest.raises(OSError) as e:
        blob_of(payload)
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("version", [3, 5])
def test_versions(state: Path, version: int) -> None:
    g = EmulatedSevSnp(state, version=version, product="Genoa")
    r = snp.verify(g.report(b"\x01" * 64), cert=g.vcek_der(), chain=g.chain_pem())
    assert r.version == version and r.product == "Genoa"
    assert (r.launch_mit_vector is None) == (version == 3)


def test_tcb_and_chip_id_from_configuration(state: Path) -> None:
    chip = bytes([7]) * 64
    tcb = snp.Tcb(bl=4, tee=1, snp=22, ucode=213)
    g = EmulatedSevSnp(state, chip_id=chip, tcb=tcb, policy=0x30000 | 1 << 16, guest_svn=9)
    r = snp.verify(g.report(bytes(64)), cert=g.vcek_der(), chain=g.chain_pem(), policy=snp.Policy(minimum_tcb=tcb, minimum_guest_svn=9))
    assert (r.chip_id, r.tcb("reported"), r.policy, r.guest_svn) == (chip, tcb, 0x30000 | 1 << 16, 9)
    # A VCEK of another chip (the default one) does not verify this chip's report.
    other = EmulatedSevSnp(state)
    with pytest.raises(OSError) as e:
        snp.verify(g.report(bytes(64)), cert=other.vcek_der(), chain=g.chain_pem())
    assert e.value.errno == errno.EKEYREJECTED


def test_extended_format_carries_the_certificate_table(guest: EmulatedSevSnp) -> None:
    desc, blob = blob_of(f"auth {'11' * 64} format=extended")
    assert desc == b"emulated-sev-snp:extended"
    report, table = blob[: snp.REPORT_SIZE], blob[EXTENDED_OFFSET:]
    assert not any(blob[snp.REPORT_SIZE : EXTENDED_OFFSET])
    certs = snp.parse_cert_table(table)
    assert certs.vcek == guest.vcek_der()
    assert certs.ask is not None and certs.ark is not None
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    chain = b"".join(x509.load_der_x509_certificate(c).public_bytes(serialization.Encoding.PEM) for c in (certs.ask, certs.ark))
    assert snp.verify(report, cert=certs.vcek, chain=chain).report_data == b"\x11" * 64


def test_state_is_created_private_and_reused(tmp_path: Path) -> None:
    d = tmp_path / "fresh"
    a = EmulatedSevSnp(d)
    assert not d.exists()  # nothing until first use
    chain, vcek = a.chain_pem(), a.vcek_der()
    for name in ("chip.secret", "roots.secret"):
        st = (d / name).stat()
        assert stat.S_IMODE(st.st_mode) == 0o400
    b = EmulatedSevSnp(d)
    assert b.chain_pem() == chain and b.chip_id == a.chip_id
    # Same chip and TCB: the same VCEK key, so a's certificate verifies b's report.
    snp.verify(b.report(bytes(64)), cert=vcek, chain=chain)
    (d / "chip.secret").chmod(0o440)
    with pytest.raises(OSError) as e:
        EmulatedSevSnp(d).report(bytes(64))
    assert e.value.errno == errno.EACCES


def test_bad_configuration_is_einval(state: Path) -> None:
    turin_without_fmc = {"product": "Turin", "tcb": snp.Tcb(bl=1)}
    milan_with_fmc = {"tcb": snp.Tcb(bl=1, fmc=1)}
    long_turin_chip = {"product": "Turin", "chip_id": b"\x01" * 9 + bytes(55)}
    for kwargs in ({"version": 4}, {"product": "Naples"}, {"chip_id": b"x"}, {"chip_id": bytes(64)}, {"policy": -1},
                   {"signing_key": "vcak"}, turin_without_fmc, milan_with_fmc, long_turin_chip):  # fmt: skip
        with pytest.raises(OSError) as e:
            EmulatedSevSnp(state, **kwargs)
        assert e.value.errno == errno.EINVAL


def test_concurrent_keys_each_get_their_own_report(guest: EmulatedSevSnp) -> None:
    import threading

    ks = kt.Keyspace()
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(5):
                user = bytes([i, j]) * 32
                key = ks.add_key("tsm", f"t{i}", f"auth {user.hex()}", "@s")
                blob = bytes.fromhex(key.read().split(b" ")[2].decode())
                key.invalidate()
                assert snp.parse_report(blob).report_data == user
                results[i * 10 + j] = blob
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 20
    for blob in list(results.values())[:3]:
        snp.verify(blob, cert=guest.vcek_der(), chain=guest.chain_pem())
