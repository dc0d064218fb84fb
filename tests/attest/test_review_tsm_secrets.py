"""Regression found in review: the ``tsm`` trust source leaves no unsealed key in a Python bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keyring_types.attest.providers import EmulatedSevSnp
from keyring_types.secret import SecretBuffer
from keyring_types.trust.base import TrustedOptions
from keyring_types.trust.tsm import TsmSource


class _Recorder:
    """Stands in for the AEAD a TsmSource makes, keeping every plaintext buffer it hands out."""

    def __init__(self, aead: Any, seen: list[Any]) -> None:
        self._aead = aead
        self._seen = seen

    def encrypt(self, *args: Any) -> bytes:
        return bytes(self._aead.encrypt(*args))

    def decrypt(self, *args: Any) -> bytes:
        out = self._aead.decrypt(*args)
        self._seen.append(out)
        return bytes(out)

    def decrypt_into(self, nonce: bytes, data: bytes, ad: bytes, buf: Any) -> int:
        n = int(self._aead.decrypt_into(nonce, data, ad, buf))
        self._seen.append(buf.obj)  # the buffer under the view, looked at after the unseal
        return n


def test_unseal_leaves_no_plaintext_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = TsmSource(EmulatedSevSnp(tmp_path / "guest", measurement=bytes(range(48))))
    secret = SecretBuffer.from_bytes(b"K" * 32)
    blob = source.seal(secret, TrustedOptions())
    real = source._aead
    seen: list[Any] = []
    monkeypatch.setattr(source, "_aead", lambda *a: _Recorder(real(*a), seen))
    unsealed = source.unseal(blob, TrustedOptions())
    with unsealed.secret._reading() as mv:
        assert bytes(mv) == b"K" * 32
    # The only plaintext is the returned secret buffer; anything else handed out is wiped.
    for buf in seen:
        if isinstance(buf, bytes):
            assert buf.count(0) == len(buf), "the unsealed key is left in an unwipeable bytes"
