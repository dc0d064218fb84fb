"""The ``fscrypt-provisioning`` key type (fs/crypto/keyring.c): a raw fscrypt master
key held for ``FS_IOC_ADD_ENCRYPTION_KEY``'s ``key_id``, usable for nothing else.

Payload (``struct fscrypt_provisioning_key_payload``, host byte order)::

    u32 type    FSCRYPT_KEY_SPEC_TYPE_DESCRIPTOR (1, v1 policies) or _IDENTIFIER (2, v2)
    u32 flags   0, or FSCRYPT_ADD_KEY_FLAG_HW_WRAPPED (1); older kernels called it
                __reserved and required 0
    u8  raw[]   16..64 bytes (16..128 for a hardware-wrapped key)

As the kernel's type: no read (``EOPNOTSUPP``), no update, ``describe`` shows
``desc: <datalen> [<type>]``, and the whole payload is charged to the quota.
"""

from __future__ import annotations

import errno
import struct

from keyring_types.core.keytype import KeyType, Preparsed
from keyring_types.core.record import KeyRecord
from keyring_types.errors import error
from keyring_types.secret import SecretBuffer

__all__ = [
    "FSCRYPT_ADD_KEY_FLAG_HW_WRAPPED",
    "FSCRYPT_KEY_SPEC_TYPE_DESCRIPTOR",
    "FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER",
    "FSCRYPT_MAX_HW_WRAPPED_KEY_SIZE",
    "FSCRYPT_MAX_RAW_KEY_SIZE",
    "FSCRYPT_MIN_KEY_SIZE",
    "HEADER",
    "FscryptProvisioningKeyType",
]

FSCRYPT_KEY_SPEC_TYPE_DESCRIPTOR = 1
FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER = 2
FSCRYPT_ADD_KEY_FLAG_HW_WRAPPED = 0x1
FSCRYPT_MIN_KEY_SIZE = 16
FSCRYPT_MAX_RAW_KEY_SIZE = 64
#: BLK_CRYPTO_MAX_HW_WRAPPED_KEY_SIZE, the limit with the hardware-wrapped flag.
FSCRYPT_MAX_HW_WRAPPED_KEY_SIZE = 128

#: The payload header: type and flags, two u32 in host byte order.
HEADER = struct.Struct("=II")


class FscryptProvisioningKeyType(KeyType):
    """A fscrypt master key bound to one KDF version; unreadable, not updatable."""

    name = "fscrypt-provisioning"

    def preparse(self, data: bytes) -> Preparsed:
        """EINVAL for a short payload, a raw key outside 16..64 bytes (16..128 with
        the hardware-wrapped flag), a type other than 1 or 2, or an unknown flag;
        checked in the kernel's order."""
        if len(data) < HEADER.size:
            raise error(
                errno.EINVAL,
                f"an fscrypt-provisioning payload starts with an {HEADER.size}-byte header "
                f"(type, flags), got {len(data)} bytes",
            )
        spec_type, flags = HEADER.unpack_from(data)
        size = len(data) - HEADER.size
        limit = FSCRYPT_MAX_HW_WRAPPED_KEY_SIZE if flags & FSCRYPT_ADD_KEY_FLAG_HW_WRAPPED else FSCRYPT_MAX_RAW_KEY_SIZE
        if not FSCRYPT_MIN_KEY_SIZE <= size <= limit:
            raise error(
                errno.EINVAL,
                f"an fscrypt-provisioning key must be {FSCRYPT_MIN_KEY_SIZE}..{limit} bytes "
                f"after the header, got {size}",
            )
        if spec_type not in (FSCRYPT_KEY_SPEC_TYPE_DESCRIPTOR, FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER):
            raise error(
                errno.EINVAL,
                f"fscrypt-provisioning type must be 1 (descriptor, v1) or 2 (identifier, v2), got {spec_type}",
            )
        if flags & ~FSCRYPT_ADD_KEY_FLAG_HW_WRAPPED:
            raise error(errno.EINVAL, f"fscrypt-provisioning flags {flags:#x} has bits other than 0x1 (hw-wrapped)")
        return Preparsed(b"", SecretBuffer.from_bytes(data), len(data))

    def describe(self, key: KeyRecord) -> str:
        payload: SecretBuffer | None = key.payload
        if payload is None or payload.wiped:
            return key.description
        (spec_type,) = struct.unpack_from("=I", payload.view())
        return f"{key.description}: {key.datalen} [{spec_type}]"

    def secret(self, key: KeyRecord) -> SecretBuffer:
        """The whole payload, header included, for the fscrypt helper: it checks
        the type and flags before use, as the kernel's ``get_keyring_key`` does."""
        payload: SecretBuffer = key.payload
        return SecretBuffer.from_bytes(payload.view())
