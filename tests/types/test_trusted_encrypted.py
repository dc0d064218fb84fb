"""Encrypted keys under a trusted master (``trusted:NAME``), the kernel's EVM recipe."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types.trust import registry, tee_emulator


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "state"))
    monkeypatch.delenv(registry.ENV_SOURCE, raising=False)
    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", "device:/nonexistent/tpmrm9")
    registry.clear_cache()
    yield
    registry.clear_cache()
    tee_emulator.stop_spawned()  # source=tee started an emulated TEE on demand


def secret_of(k: kt.Key) -> bytes:
    with k.secret() as mv:
        return bytes(mv)


@pytest.mark.parametrize("source", ["host", "caam", "tee"])
def test_encrypted_under_trusted_master_survives_reload(source: str) -> None:
    ks = kt.Keyspace()
    kmk = ks.add_key("trusted", "kmk", f"new 32 source={source}", "@s")
    evm = ks.add_key("encrypted", "evm", "new default trusted:kmk 32", "@s")
    plain = secret_of(evm)
    assert len(plain) == 32
    kmk_blob, evm_blob = kmk.read().decode(), evm.read().decode()
    assert evm_blob.startswith("default trusted:kmk 32 ")
    assert plain.hex() not in evm_blob

    # A fresh keyspace (say, after a reboot): load the master from its blob, then the key.
    ks2 = kt.Keyspace()
    ks2.add_key("trusted", "kmk", f"load {kmk_blob} source={source}", "@s")
    evm2 = ks2.add_key("encrypted", "evm", f"load {evm_blob}", "@s")
    assert secret_of(evm2) == plain


def test_encrypted_load_needs_the_same_trusted_master() -> None:
    ks = kt.Keyspace()
    ks.add_key("trusted", "kmk", "new 32", "@s")
    evm_blob = ks.add_key("encrypted", "evm", "new default trusted:kmk 32", "@s").read().decode()
    ks2 = kt.Keyspace()
    with pytest.raises(OSError) as info:
        ks2.add_key("encrypted", "evm", f"load {evm_blob}", "@s")
    assert info.value.errno == errno.ENOKEY
    ks2.add_key("trusted", "kmk", "new 32", "@s")  # a different master of the same name
    with pytest.raises(OSError) as info:
        ks2.add_key("encrypted", "evm", f"load {evm_blob}", "@s")
    assert info.value.errno == errno.EINVAL  # the datablob HMAC does not verify


def test_encrypted_survives_master_update() -> None:
    ks = kt.Keyspace()
    kmk = ks.add_key("trusted", "kmk", "new 64", "@s")
    evm = ks.add_key("encrypted", "evm", "new default trusted:kmk 32", "@s")
    plain = secret_of(evm)
    kmk.update("update blobauth=newpass")  # reseals the same master key
    evm2 = ks.add_key("encrypted", "evm2", f"load {evm.read().decode()}", "@s")
    assert secret_of(evm2) == plain


def test_encrypted_under_tpm2_master(tpm2_source: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", tpm2_source.tcti)  # type: ignore[attr-defined]
    registry.clear_cache()
    ks = kt.Keyspace()
    kmk = ks.add_key("trusted", "kmk", "new 32 source=tpm keyhandle=0x81000001", "@s")
    assert kmk.read().startswith(b"30")  # DER TPMKey
    evm = ks.add_key("encrypted", "evm", "new default trusted:kmk 32", "@s")
    plain = secret_of(evm)
    ks2 = kt.Keyspace()
    ks2.add_key("trusted", "kmk", f"load {kmk.read().decode()} source=tpm2 keyhandle=0x81000001", "@s")
    evm2 = ks2.add_key("encrypted", "evm", f"load {evm.read().decode()}", "@s")
    assert secret_of(evm2) == plain
