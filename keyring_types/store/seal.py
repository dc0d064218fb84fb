"""The store key and the seal on every stored payload.

Each store file has its own random 32-byte store key.  On disk it exists only
sealed by a trust source (the default one when the store is made: the TPM where
one is configured, else the host key), and every payload row is AES-256-GCM
under it with the row's identity — serial, type, description and use binding —
as associated data, so a sealed payload moved to another row, or a row's
identity or binding edited, fails to open (``EBADMSG``) instead of handing one key's secret out as another's.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING, Any

from keyring_types.errors import error
from keyring_types.secret import SecretBuffer

if TYPE_CHECKING:
    from keyring_types.trust.base import TrustedOptions

__all__ = ["ENV_SEAL", "RowSealer", "STORE_KEY_SIZE", "TPM2_DEFAULT_KEYHANDLE", "new_store_key", "seal_store_key", "unseal_store_key"]

STORE_KEY_SIZE = 32
#: Trusted-key options for the store key, in the kernel's grammar plus ``source=``
#: (e.g. ``source=tpm2 keyhandle=0x81000002``); read when a store is made and opened.
ENV_SEAL = "KEYRING_TYPES_STORE_SEAL"
#: The parent a TPM seals the store key under when ``keyhandle=`` is not given:
#: the storage primary's customary persistent handle (TCG's SRK handle).
TPM2_DEFAULT_KEYHANDLE = 0x81000001
_NONCE = 12
_AD_HEAD = struct.Struct(">4si")
_AD_MAGIC = b"KTS1"


def new_store_key() -> SecretBuffer:
    """A fresh random store key from the OS CSPRNG."""
    raw = bytearray(os.urandom(STORE_KEY_SIZE))
    try:
        return SecretBuffer.from_bytes(raw)
    finally:
        raw[:] = bytes(STORE_KEY_SIZE)


def _seal_options() -> tuple[str | None, TrustedOptions]:
    """``$KEYRING_TYPES_STORE_SEAL`` parsed: (source= or None, the kernel options); ``EINVAL``."""
    from keyring_types.trust.options import parse_options

    parsed = parse_options(os.environ.get(ENV_SEAL, ""))
    return parsed.source, parsed.options


def seal_store_key(key: SecretBuffer) -> tuple[str, bytes]:
    """Seal ``key`` with the trust source ``$KEYRING_TYPES_STORE_SEAL`` names, else the default.

    Returns (source name, blob).  ``EINVAL`` for bad options; the trust source's
    errors (``ENODEV`` when it is unavailable, ...).
    """
    import attrs

    from keyring_types.trust.registry import get_trust_source

    source_name, options = _seal_options()
    source = get_trust_source(source_name)
    if source.name == "tpm2" and options.keyhandle is None:
        options = attrs.evolve(options, keyhandle=TPM2_DEFAULT_KEYHANDLE)
    return source.name, source.seal(key, options)


def unseal_store_key(source_name: str, blob: bytes) -> SecretBuffer:
    """The store key sealed in ``blob``; the trust source's errors (``EBADMSG`` another host's ...)."""
    from keyring_types.trust.registry import get_trust_source

    _, options = _seal_options()
    unsealed = get_trust_source(source_name).unseal(blob, options)
    if len(unsealed.secret) != STORE_KEY_SIZE:
        unsealed.secret.wipe()
        raise error(errno.EBADMSG, f"the sealed store key is {len(unsealed.secret)} bytes, not {STORE_KEY_SIZE}")
    return unsealed.secret


def _ad(serial: int, type_name: str, description: str, usage: str | None) -> bytes:
    # The use binding too: a row whose binding was removed or changed does not open.
    return (
        _AD_HEAD.pack(_AD_MAGIC, serial)
        + type_name.encode("utf-8", "surrogatepass")
        + b"\0"
        + (b"\0" if usage is None else b"\1" + usage.encode("utf-8", "surrogatepass") + b"\0")
        + description.encode("utf-8", "surrogatepass")
    )


class RowSealer:
    """AES-256-GCM of payload rows under one store key, bound to the row's identity."""

    __slots__ = ("_aead",)

    def __init__(self, key: SecretBuffer) -> None:
        # Imported here: a process that never opens a payload never loads them.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        mv = key.view()
        try:
            self._aead: Any = AESGCM(bytes(mv))
        finally:
            mv.release()

    def seal(self, serial: int, type_name: str, description: str, usage: str | None, plain: bytes | bytearray) -> bytes:
        """``nonce | ciphertext | tag`` of ``plain`` for the row ``serial``."""
        nonce = os.urandom(_NONCE)
        sealed: bytes = nonce + self._aead.encrypt(nonce, plain, _ad(serial, type_name, description, usage))
        return sealed

    def open(self, serial: int, type_name: str, description: str, usage: str | None, sealed: bytes) -> SecretBuffer:
        """The plaintext of a sealed row, in secret memory (the caller wipes it);
        ``EBADMSG`` if it was altered or belongs to another row, ``ENOMEM``."""
        if len(sealed) < _NONCE + 16:
            raise error(errno.EBADMSG, f"the stored payload of key {serial} is truncated")
        from cryptography.exceptions import InvalidTag

        # Decrypted straight into secret memory: a plaintext ``bytes`` could not be wiped.
        out = SecretBuffer(len(sealed) - _NONCE - 16)
        buf = out.writable()
        try:
            self._aead.decrypt_into(sealed[:_NONCE], sealed[_NONCE:], _ad(serial, type_name, description, usage), buf)
        except InvalidTag:
            out.wipe()
            raise error(
                errno.EBADMSG,
                f"the stored payload of key {serial} fails authentication (altered, or moved from another row)",
            ) from None
        except BaseException:
            out.wipe()
            raise
        finally:
            buf.release()
        return out
