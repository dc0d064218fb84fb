"""A third-party trust source for tests: AES-GCM under a per-instance key.

Each instance is its own "device" (its key lives only in memory), which is all
a test of plugin discovery needs.
"""

from __future__ import annotations

import errno
import os
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyring_types.errors import error
from keyring_types.secret import SecretBuffer
from keyring_types.trust.base import TrustedOptions, TrustSource, Unsealed
from keyring_types.trust.options import check_supported

MAGIC = b"FXT1"


class FixtureSource(TrustSource):
    name: ClassVar[str] = "fixture"
    migratable: ClassVar[bool] = True
    supported_options: ClassVar[frozenset[str]] = frozenset({"blobauth"})

    def __init__(self) -> None:
        self._aead = AESGCM(AESGCM.generate_key(256))

    def seal(self, secret: SecretBuffer, options: TrustedOptions) -> bytes:
        check_supported(options, self)
        nonce = os.urandom(12)
        mv = secret.view()
        try:
            return MAGIC + nonce + self._aead.encrypt(nonce, mv, MAGIC + options.blobauth)
        finally:
            mv.release()

    def unseal(self, blob: bytes, options: TrustedOptions) -> Unsealed:
        check_supported(options, self)
        if blob[:4] != MAGIC or len(blob) < 32:
            raise error(errno.EINVAL, "not a fixture blob")
        try:
            plain = self._aead.decrypt(blob[4:16], blob[16:], MAGIC + options.blobauth)
        except InvalidTag:
            raise error(errno.EBADMSG, "fixture blob failed authentication") from None
        return Unsealed(secret=SecretBuffer.from_bytes(plain), migratable=True)
