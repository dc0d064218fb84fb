"""The ``caam`` trust source: NXP CAAM "black blob" format with an EMULATED device key.

Real CAAM hardware seals with a blob-key-encryption key (BKEK) it derives from
its one-time-programmable master key (OTPMK) and a key modifier; the master key
never leaves the chip.  There is no CAAM here, so this source is **emulated**:
the master key is a random 32-byte file, ``<state dir>/caam/emulated-otpmk``
(mode 0400).  A blob is only as safe as that file.

What is faithful to the kernel (``trusted_caam.c``, ``caam-blob.h``):

* key modifier ``SECURE_KEY`` (10 ASCII bytes, no NUL), at most 16 bytes;
* ``CAAM_BLOB_OVERHEAD`` = 48: a 32-byte encrypted blob key (BK) and a 16-byte MAC,
  so a blob is KEYLEN + 48 bytes, laid out ``enc(BK) | ciphertext | MAC``;
* no options (any option is ``EINVAL``), no RNG of its own, never migratable;
* a MAC failure is ``EBADMSG`` (the job ring's ICV-check status).

What is the emulation's own (the hardware's internals are not public): the BKEK
is HMAC-SHA256(master key, label ‖ key modifier); BK is encrypted with
AES-256-ECB under the BKEK (two blocks of a random key); the payload is
AES-256-CCM under BK with a 16-byte MAC and a fixed nonce (safe because BK is
fresh for every blob).  A flipped bit anywhere — in enc(BK), ciphertext or MAC —
fails the MAC.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import threading
from pathlib import Path
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from keyring_types.errors import error
from keyring_types.secret import SecretBuffer
from keyring_types.trust.base import TrustedOptions, TrustSource, Unsealed
from keyring_types.trust.options import check_supported
from keyring_types.trust.state import fill_random, load_or_create_secret, state_dir

__all__ = ["CaamSource", "KEY_MODIFIER", "CAAM_BLOB_OVERHEAD", "MASTER_KEY_FILE"]

KEY_MODIFIER = b"SECURE_KEY"
CAAM_BLOB_KEYMOD_LENGTH = 16
BLOB_KEY_SIZE = 32
MAC_SIZE = 16
CAAM_BLOB_OVERHEAD = BLOB_KEY_SIZE + MAC_SIZE
MASTER_KEY_FILE = Path("caam") / "emulated-otpmk"
MIN_KEY, MAX_KEY = 32, 128
_CCM_NONCE = b"\x00" * 13


class CaamSource(TrustSource):
    """CAAM blobs sealed under an emulated device master key file."""

    name: ClassVar[str] = "caam"
    migratable: ClassVar[bool] = False
    supported_options: ClassVar[frozenset[str]] = frozenset()
    has_rng: ClassVar[bool] = False

    def __init__(self, directory: Path | None = None, key_modifier: bytes = KEY_MODIFIER) -> None:
        if len(key_modifier) > CAAM_BLOB_KEYMOD_LENGTH:
            raise error(errno.EINVAL, f"CAAM key modifier longer than {CAAM_BLOB_KEYMOD_LENGTH} bytes")
        self._path = (directory or state_dir()) / MASTER_KEY_FILE
        self._keymod = key_modifier
        self._lock = threading.Lock()
        self._bkek: bytes | None = None

    @property
    def master_key_path(self) -> Path:
        return self._path

    def _blob_key_encryption_key(self) -> bytes:
        with self._lock:
            if self._bkek is None:
                master = load_or_create_secret(self._path, 32)
                mv = master.view()
                try:
                    self._bkek = hmac.new(mv.tobytes(), b"emulated CAAM BKEK\0" + self._keymod, hashlib.sha256).digest()
                finally:
                    mv.release()
                    master.wipe()
            return self._bkek

    def _ecb(self) -> Cipher[modes.ECB]:
        return Cipher(algorithms.AES(self._blob_key_encryption_key()), modes.ECB())

    def seal(self, secret: SecretBuffer, options: TrustedOptions) -> bytes:
        """Encapsulate ``secret`` (32..128 bytes) as a black blob; ``EINVAL`` on bad length/options."""
        check_supported(options, self)
        if not MIN_KEY <= len(secret) <= MAX_KEY:
            raise error(errno.EINVAL, f"key length {len(secret)} is outside {MIN_KEY}..{MAX_KEY}")
        bk = SecretBuffer(BLOB_KEY_SIZE)
        try:
            fill_random(bk)
            bkv, mv = bk.view(), secret.view()
            try:
                enc = self._ecb().encryptor()
                enc_bk = enc.update(bkv) + enc.finalize()
                body = AESCCM(bkv.tobytes(), tag_length=MAC_SIZE).encrypt(_CCM_NONCE, mv, None)
            finally:
                bkv.release()
                mv.release()
        finally:
            bk.wipe()
        return enc_bk + body

    def unseal(self, blob: bytes, options: TrustedOptions) -> Unsealed:
        """Decapsulate a black blob.

        ``EINVAL``: wrong length or an option; ``EBADMSG``: the MAC does not verify
        (another device's master key, another key modifier, or an altered blob).
        """
        check_supported(options, self)
        blob = bytes(blob)
        keylen = len(blob) - CAAM_BLOB_OVERHEAD
        if not MIN_KEY <= keylen <= MAX_KEY:
            raise error(
                errno.EINVAL,
                f"a CAAM blob is {MIN_KEY + CAAM_BLOB_OVERHEAD}..{MAX_KEY + CAAM_BLOB_OVERHEAD} bytes, got {len(blob)}",
            )
        dec = self._ecb().decryptor()
        bk = bytearray(dec.update(blob[:BLOB_KEY_SIZE]) + dec.finalize())
        try:
            plain = bytearray(AESCCM(bytes(bk), tag_length=MAC_SIZE).decrypt(_CCM_NONCE, blob[BLOB_KEY_SIZE:], None))
        except InvalidTag:
            raise error(
                errno.EBADMSG,
                "CAAM blob MAC check failed: sealed by another (emulated) device or key modifier, or altered",
            ) from None
        finally:
            bk[:] = bytes(len(bk))
        out = SecretBuffer(keylen)
        try:
            out.writable()[:] = plain
        finally:
            plain[:] = bytes(len(plain))
        return Unsealed(secret=out, migratable=False)

    def close(self) -> None:
        """Forget the derived blob-key-encryption key."""
        with self._lock:
            self._bkek = None
