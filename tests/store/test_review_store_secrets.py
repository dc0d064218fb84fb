"""Regressions found in review: no stored key's plaintext outlives its use in a Python bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import keyring_types as kt
from keyring_types.trust import registry


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEYRING_TYPES_TRUST_SOURCE", "host")
    registry.clear_cache()
    yield tmp_path / "st" / "keys.db"
    registry.clear_cache()


class _Recorder:
    """Stands in for a RowSealer's AEAD and keeps every plaintext buffer it hands out."""

    def __init__(self, aead: Any) -> None:
        self._aead = aead
        self.plaintexts: list[bytes | bytearray | memoryview] = []

    def encrypt(self, *args: Any) -> bytes:
        return bytes(self._aead.encrypt(*args))

    def decrypt(self, *args: Any) -> bytes:
        out = self._aead.decrypt(*args)
        self.plaintexts.append(out)
        return out

    def decrypt_into(self, nonce: bytes, data: bytes, ad: bytes, buf: Any) -> int:
        n = int(self._aead.decrypt_into(nonce, data, ad, buf))
        # The buffer object under the view: it outlives the view, so it can be looked at afterwards.
        self.plaintexts.append(buf.obj)
        return n


def test_a_loaded_payload_leaves_no_plaintext_behind(store: Path) -> None:
    writer = kt.Keyspace(store=store)
    reader = kt.Keyspace(store=store)
    writer.session.link(writer.user_keyring)
    reader.session.link(reader.user_keyring)
    secret = b"review-secret-0123456789abcdef!!"
    key = writer.add_key("logon", "svc:review", secret, "@u")
    world: Any = reader._world
    with world.lock:  # the store key is unsealed when first needed
        sealer = world._sealer or world._load_key()
    recorder = _Recorder(sealer._aead)
    sealer._aead = recorder
    with reader.key(key.serial).secret() as mv:  # catches up: opens the row sealed by the writer
        assert bytes(mv) == secret
    assert recorder.plaintexts, "the reader opened the sealed row"
    for buf in recorder.plaintexts:
        assert bytes(buf).count(0) == len(bytes(buf)), "a decrypted row is left in memory unwiped"
