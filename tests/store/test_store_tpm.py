"""With a TPM as the default trust source, the store key is sealed by the TPM."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types.trust import registry


def test_store_key_sealed_under_the_tpm(tpm2_source: object, swtpm: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", swtpm.tcti)  # type: ignore[attr-defined]
    monkeypatch.setenv("KEYRING_TYPES_TRUST_SOURCE", "tpm2")
    registry.clear_cache()
    store = tmp_path / "keys.db"
    try:
        ks = kt.Keyspace(store=store)
        ks.session.link(ks.user_keyring)
        k = ks.add_key("user", "under-tpm", b"tpm-held", "@u")
        assert ks.store is not None
        ks.store.close()
        conn = sqlite3.connect(store)
        assert conn.execute("SELECT v FROM meta WHERE k = 'key_source'").fetchone()[0] == "tpm2"
        conn.close()
        assert not (tmp_path / "home" / "host.key").exists()

        registry.clear_cache()  # a new process, as far as the trust source knows
        again = kt.Keyspace(store=store)
        again.session.link(again.user_keyring)
        assert again.key(k.serial).read() == b"tpm-held"
        assert again.store is not None
        again.store.close()

        # The same file where that TPM is not reachable: a clear error when a payload
        # is needed, not a traceback; what is not secret still reads.
        monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", "swtpm:host=127.0.0.1,port=1")
        registry.clear_cache()
        blind = kt.Keyspace(store=store)
        blind.session.link(blind.user_keyring)
        assert blind.key(k.serial).describe().endswith(";under-tpm")
        with pytest.raises(OSError) as info:
            blind.key(k.serial).read()
        assert info.value.errno is not None
    finally:
        registry.clear_cache()
