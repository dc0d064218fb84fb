"""The ``tsm`` trust source (SEV-SNP derived keys) against the trust-source contract, and its
binding: a blob sealed under one measurement (policy, SVN, TCB, ...) does not unseal under another.

The contract's tests are taken from tests/trust/test_trust_contract.py as they are, and run here
with a ``device`` fixture that makes emulated SEV-SNP guests (each its own chip)."""

from __future__ import annotations

import errno
import importlib.util
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import errno_of

import keyring_types as kt
from keyring_types.attest import sevguest
from keyring_types.attest.providers import EmulatedSevSnp
from keyring_types.secret import SecretBuffer
from keyring_types.trust import registry
from keyring_types.trust.base import ALL_OPTIONS
from keyring_types.trust.tsm import TsmSource


def _load_contract() -> Any:
    path = Path(__file__).resolve().parents[1] / "trust" / "test_trust_contract.py"
    spec = importlib.util.spec_from_file_location("trust_contract_for_tsm", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


contract = _load_contract()
MEASUREMENT = bytes(range(48))


def make_device(root: Path, fields: str | None = None, **guest: Any) -> Any:
    guest.setdefault("measurement", MEASUREMENT)
    return contract.Device(TsmSource(EmulatedSevSnp(root, **guest), fields=fields), [root])


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Any]:
    dev = make_device(tmp_path / "a")
    try:
        yield dev
    finally:
        dev.close()


@pytest.fixture
def other_device(device: Any, tmp_path: Path) -> Iterator[Any]:
    dev = make_device(tmp_path / "b")  # another chip: another chip secret
    try:
        yield dev
    finally:
        dev.close()


# The contract, unchanged, on this source.
test_round_trip = contract.test_round_trip
test_two_seals_differ = contract.test_two_seals_differ
test_blob_from_another_device_is_rejected = contract.test_blob_from_another_device_is_rejected
test_blob_from_another_source_is_rejected = contract.test_blob_from_another_source_is_rejected
test_every_single_bit_flip_is_rejected = contract.test_every_single_bit_flip_is_rejected
test_wrong_auth_is_rejected = contract.test_wrong_auth_is_rejected
test_nothing_plaintext_on_disk = contract.test_nothing_plaintext_on_disk
test_random = contract.test_random
test_non_migratable_when_asked = contract.test_non_migratable_when_asked


def _key(n: int = 32) -> SecretBuffer:
    return SecretBuffer.from_bytes(os.urandom(n))


@pytest.mark.parametrize("option", sorted(ALL_OPTIONS - TsmSource.supported_options))
def test_unsupported_option_is_einval(option: str, tmp_path: Path) -> None:
    dev = make_device(tmp_path)
    opts = dev.opts(f"{option}={contract.OPTION_VALUES[option]}")
    assert errno_of(dev.source.seal, _key(), opts) == errno.EINVAL
    blob = dev.source.seal(_key(), dev.opts())
    assert errno_of(dev.source.unseal, blob, opts) == errno.EINVAL


@pytest.mark.parametrize("name", [n for n in contract.SOURCES if n != "tpm2"])
def test_blobs_of_other_sources_are_rejected(name: str, tmp_path: Path) -> None:
    other = contract.make_device(name, tmp_path / "other")
    try:
        blob = other.source.seal(_key(), other.opts())
    finally:
        other.close()
    dev = make_device(tmp_path / "tsm")
    assert errno_of(dev.source.unseal, blob, dev.opts()) in contract.REJECT


def _seal_then_unseal_in(tmp_path: Path, sealer: dict[str, Any], opener: dict[str, Any], fields: str | None = None) -> SecretBuffer:
    root = tmp_path / "chip"  # the same chip (state dir) for both guests
    key = _key()
    a = make_device(root, fields, **sealer)
    blob = a.source.seal(key, a.opts())
    b = make_device(root, fields, **opener)
    got = b.source.unseal(blob, b.opts()).secret
    assert got == key
    return got


@pytest.mark.parametrize(
    ("field", "sealer", "opener"),
    [
        ("measurement", {"measurement": b"\x01" * 48}, {"measurement": b"\x02" * 48}),
        ("policy", {"policy": 0x30000}, {"policy": 0x30000 | 1 << 19}),
        ("family_id", {"family_id": b"\x01" * 16}, {"family_id": b"\x02" * 16}),
        ("image_id", {"image_id": b"\x01" * 16}, {"image_id": b"\x02" * 16}),
    ],
)
def test_sealed_under_one_value_does_not_unseal_under_another(
    tmp_path: Path, field: str, sealer: dict[str, Any], opener: dict[str, Any]
) -> None:
    _seal_then_unseal_in(tmp_path, sealer, sealer, fields=field).wipe()  # the same guest opens it
    with pytest.raises(OSError) as e:
        _seal_then_unseal_in(tmp_path, sealer, opener, fields=field)
    assert e.value.errno == errno.EBADMSG and "measurement" in str(e.value)
    # Not selected: the field does not bind.
    other = "policy" if field != "policy" else "measurement"
    _seal_then_unseal_in(tmp_path, sealer, opener, fields=other).wipe()


def test_guest_svn_and_tcb_bind_against_rollback(tmp_path: Path) -> None:
    from keyring_types.attest import snp

    _seal_then_unseal_in(tmp_path, {"guest_svn": 5}, {"guest_svn": 6}).wipe()  # a newer guest opens it
    with pytest.raises(OSError) as e:
        _seal_then_unseal_in(tmp_path, {"guest_svn": 5}, {"guest_svn": 4})
    assert e.value.errno == errno.EPERM and "GUEST_SVN" in str(e.value)
    old, new = snp.Tcb(bl=3, tee=0, snp=8, ucode=115), snp.Tcb(bl=3, tee=0, snp=9, ucode=115)
    _seal_then_unseal_in(tmp_path, {"tcb": old}, {"tcb": new}).wipe()
    with pytest.raises(OSError) as e:
        _seal_then_unseal_in(tmp_path, {"tcb": new}, {"tcb": old})
    assert e.value.errno == errno.EPERM and "TCB_VERSION" in str(e.value)


def test_vmrk_root_follows_the_launch(tmp_path: Path) -> None:
    root = tmp_path / "chip"
    a = contract.Device(TsmSource(EmulatedSevSnp(root, host_data=b"\x01" * 32), fields="policy", root="vmrk"), [root])
    blob = a.source.seal(_key(), a.opts())
    b = contract.Device(TsmSource(EmulatedSevSnp(root, host_data=b"\x02" * 32), fields="policy", root="vmrk"), [root])
    assert errno_of(b.source.unseal, blob, b.opts()) == errno.EBADMSG
    a.source.unseal(blob, a.opts()).secret.wipe()


def test_bad_configuration(tmp_path: Path) -> None:
    g = EmulatedSevSnp(tmp_path)
    assert errno_of(TsmSource, g, fields="measurement,colour") == errno.EINVAL
    assert errno_of(TsmSource, g, root="ark") == errno.EINVAL
    vlek = sevguest.DerivedKeyRequest(fields=0, key_sel="vlek")
    assert errno_of(g.derived_key, vlek) == errno.EINVAL  # no VLEK loaded
    assert len(EmulatedSevSnp(tmp_path, signing_key="vlek").derived_key(vlek)) == 32


def test_request_layout_and_the_real_device_path(tmp_path: Path) -> None:
    req = sevguest.DerivedKeyRequest(fields=sevguest.parse_fields("measurement,tcb"), vmpl=1, guest_svn=2, tcb_version=3, key_sel="vcek")
    raw = req.pack()
    assert raw == struct.pack("<IIQIIQ", 0b010, 0, 0b101000, 1, 2, 3)
    assert sevguest.DerivedKeyRequest.unpack(raw) == req
    assert errno_of(sevguest.DerivedKeyRequest.unpack, struct.pack("<IIQIIQ", 0b110, 0, 0, 0, 0, 0)) == errno.EINVAL
    assert sevguest.SNP_GET_DERIVED_KEY == 0xC0205301 and sevguest.SNP_GET_REPORT == 0xC0205300
    # The ioctl itself, against a file that is not the driver: the kernel's ENOTTY comes back.
    not_a_device = tmp_path / "sev-guest"
    not_a_device.write_bytes(b"")
    assert errno_of(sevguest.SevGuestDevice(str(not_a_device)).derived_key, req) == errno.ENOTTY


def test_trusted_key_sealed_by_the_tsm_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEYRING_TYPES_TSM_FIRMWARE", "emulated")
    registry.clear_cache()
    try:
        assert TsmSource.available() and "tsm" in registry.available_sources()
        ks = kt.Keyspace()
        key = ks.add_key("trusted", "kmk", "new 32 source=tsm", "@s")
        blob = key.read()
        again = ks.add_key("trusted", "kmk2", b"load " + blob + b" source=tsm", "@s")
        with key.secret() as a, again.secret() as b:
            assert bytes(a) == bytes(b)
        first = registry.get_trust_source("tsm")
        monkeypatch.setenv("KEYRING_TYPES_TSM_FIELDS", "measurement")
        assert registry.get_trust_source("tsm") is not first  # a fresh instance per configuration
    finally:
        registry.clear_cache()
    monkeypatch.setenv("KEYRING_TYPES_TSM_FIRMWARE", "none")
    assert not TsmSource.available()
