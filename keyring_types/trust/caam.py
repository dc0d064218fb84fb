"""The ``caam`` trust source: NXP CAAM "black blob" format with an EMULATED device key.

Real CAAM hardware seals with a blob-key-encryption key (BKEK) it derives from
its one-time-programmable master key (OTPMK) and a key modifier; the master key
never leaves the chip.  There is no CAAM here, so this source is **emulated**:
the master key is a random 32-byte file, ``<state dir>/caam/emulated-otpmk``
(mode 0400, created by the first seal, checked as :mod:`keyring_types.state`
says; an unseal never creates it).  A blob is only as safe as that file.  The
derived blob-key-encryption key is kept in a :class:`SecretBuffer`, never in an
ordinary ``bytes``.

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
import os
import threading
from pathlib import Path
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from keyring_types.errors import error
from keyring_types.hmac import HmacSha256
from keyring_types.osrng import fill_random
from keyring_types.secret import SecretBuffer
from keyring_types.state import load_or_create_secret, load_secret_file, state_dir
from keyring_types.trust.base import TrustedOptions, TrustSource, Unsealed
from keyring_types.trust.options import check_supported

__all__ = ["CAAM_BLOB_OVERHEAD", "KEY_MODIFIER", "MASTER_KEY_FILE", "CaamSource"]

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
        self._bkek: SecretBuffer | None = None

    @property
    def master_key_path(self) -> Path:
        return self._path

    def _load_master(self, create: bool) -> SecretBuffer:
        if create:
            return load_or_create_secret(self._path, 32, "emulated CAAM master key")
        try:
            return load_secret_file(self._path, 32, "emulated CAAM master key")
        except OSError as exc:
            if exc.errno != errno.ENOKEY or os.path.isdir(self._path.parent):
                raise
        # Not even the key's directory exists: this emulated device never sealed
        # anything, so the blob is another device's, which the hardware reports as
        # a MAC failure.
        raise error(
            errno.EBADMSG,
            f"CAAM blob MAC check failed: this emulated device has no master key ({self._path.parent} does not exist)",
        )

    def _bkek_for(self, create: bool) -> SecretBuffer:
        """The blob-key-encryption key (call with ``self._lock`` held)."""
        if self._bkek is None:
            master = self._load_master(create)
            bkek = SecretBuffer(32)
            try:
                label = b"emulated CAAM BKEK\0" + self._keymod
                out = bkek.writable()
                try:
                    # HMAC-SHA256(master, label) computed straight into secret memory.
                    with HmacSha256(master) as mac:
                        mac.mac_batch(label, len(label), out=out)
                finally:
                    out.release()
            except BaseException:
                bkek.wipe()
                raise
            finally:
                master.wipe()
            self._bkek = bkek
        return self._bkek

    def _ecb_into(self, data: bytes | memoryview, out: memoryview, encrypt: bool, create: bool) -> None:
        """AES-256-ECB of ``data`` into ``out`` (at least ``len(data) + 15`` bytes) under the BKEK.

        The BKEK is used in place from secret memory, and ``out`` may be secret
        memory too, so neither key ever lands in an ordinary ``bytes``.
        """
        with self._lock:
            kv = self._bkek_for(create).view()
            try:
                # ECB is safe here: it wraps exactly two blocks of a fresh random key
                # (BK) under the BKEK, never structured data (module docstring).
                cipher = Cipher(algorithms.AES(kv), modes.ECB())  # noqa: S305
                ctx = cipher.encryptor() if encrypt else cipher.decryptor()
                n = ctx.update_into(data, out)
                ctx.finalize()
                del cipher, ctx
            finally:
                kv.release()
        if n != len(data):
            raise error(errno.EIO, "AES-ECB returned a partial block")

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
                enc = bytearray(BLOB_KEY_SIZE + 15)
                self._ecb_into(bkv, memoryview(enc), encrypt=True, create=True)
                enc_bk = bytes(enc[:BLOB_KEY_SIZE])
                ccm = AESCCM(bkv, tag_length=MAC_SIZE)
                body = ccm.encrypt(_CCM_NONCE, mv, None)
                del ccm
            finally:
                bkv.release()
                mv.release()
        finally:
            bk.wipe()
        return enc_bk + body

    def unseal(self, blob: bytes, options: TrustedOptions) -> Unsealed:
        """Decapsulate a black blob.

        ``EINVAL``: wrong length or an option; ``EBADMSG``: the MAC does not verify
        (another device's master key, another key modifier, or an altered blob);
        ``ENOKEY``: the emulated master key file is missing (the message names it;
        when its whole directory is missing, nothing was ever sealed here: ``EBADMSG``);
        ``EACCES``: the state directory or key file fails its owner/mode checks.
        """
        check_supported(options, self)
        blob = bytes(blob)
        keylen = len(blob) - CAAM_BLOB_OVERHEAD
        if not MIN_KEY <= keylen <= MAX_KEY:
            raise error(
                errno.EINVAL,
                f"a CAAM blob is {MIN_KEY + CAAM_BLOB_OVERHEAD}..{MAX_KEY + CAAM_BLOB_OVERHEAD} bytes, got {len(blob)}",
            )
        bk = SecretBuffer(BLOB_KEY_SIZE + 15)
        try:
            bkw = bk.writable()
            try:
                self._ecb_into(blob[:BLOB_KEY_SIZE], bkw, encrypt=False, create=False)
                ccm = AESCCM(bkw[:BLOB_KEY_SIZE], tag_length=MAC_SIZE)
                plain = bytearray(ccm.decrypt(_CCM_NONCE, blob[BLOB_KEY_SIZE:], None))
                del ccm
            finally:
                bkw.release()
        except InvalidTag:
            raise error(
                errno.EBADMSG,
                "CAAM blob MAC check failed: sealed by another (emulated) device or key modifier, or altered",
            ) from None
        finally:
            bk.wipe()
        out = SecretBuffer(keylen)
        try:
            out.writable()[:] = plain
        finally:
            plain[:] = bytes(len(plain))
        return Unsealed(secret=out, migratable=False)

    def close(self) -> None:
        """Wipe the derived blob-key-encryption key."""
        with self._lock:
            if self._bkek is not None:
                self._bkek.wipe()
                self._bkek = None
