"""The ``user`` key type (security/keys/user_defined.c): an opaque, readable blob."""

from __future__ import annotations

import errno

from keyring_types.core.keytype import KeyType, Preparsed
from keyring_types.core.record import KeyRecord
from keyring_types.errors import error
from keyring_types.secret import SecretBuffer

__all__ = ["USER_PAYLOAD_MAX", "UserKeyType"]

#: add_key accepts 1..32767 bytes for user and logon keys.
USER_PAYLOAD_MAX = 32767


class UserKeyType(KeyType):
    """Payload: 1..32767 bytes held in a SecretBuffer; readable; update replaces it."""

    name = "user"

    def preparse(self, data: bytes) -> Preparsed:
        """EINVAL unless 1..32767 bytes."""
        if not 0 < len(data) <= USER_PAYLOAD_MAX:
            raise error(
                errno.EINVAL,
                f"a {self.name} key payload must be 1..{USER_PAYLOAD_MAX} bytes, got {len(data)}",
            )
        return Preparsed(b"", SecretBuffer.from_bytes(data), len(data))  # data, payload, quotalen

    def update(self, key: KeyRecord, prep: Preparsed) -> None:
        """Replace the payload in place (same serial) and clear any timeout; EDQUOT."""
        key.payload_reserve(prep.quotalen)
        # The kernel installs the new payload's expiry, which is "never".
        key.expiry = 0
        old, key.payload, prep.payload = key.payload, prep.payload, None
        if old is not None:
            old.wipe()

    def read(self, key: KeyRecord) -> bytes:
        payload: SecretBuffer = key.payload
        return payload.tobytes()

    def describe(self, key: KeyRecord) -> str:
        # The kernel prints the length of any positive key, a revoked one's (0) too.
        if key.payload is None and not key.revoked:
            return key.description
        return f"{key.description}: {key.datalen}"

    def revoke(self, key: KeyRecord) -> None:
        """The payload is freed at revocation and its bytes leave the quota."""
        key.payload_reserve(0)
        old, key.payload = key.payload, None
        if old is not None:
            old.wipe()

    def destroy(self, key: KeyRecord) -> None:
        """Wipe the payload (the base class's generic version, without the lookups)."""
        payload, key.payload = key.payload, None
        if payload is not None:
            payload.wipe()

    def secret(self, key: KeyRecord) -> SecretBuffer:
        payload: SecretBuffer = key.payload
        return SecretBuffer.from_bytes(payload.view())
