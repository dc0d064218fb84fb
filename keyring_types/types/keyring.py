"""The ``keyring`` key type: a key whose payload is a set of links to other keys."""

from __future__ import annotations

import errno
import struct

from keyring_types.core.keytype import KeyType, Preparsed
from keyring_types.core.record import KeyRecord
from keyring_types.errors import error

__all__ = ["KeyringType"]

_SERIAL = struct.Struct("=i")


class KeyringType(KeyType):
    """No payload at creation (EINVAL otherwise), no update; read lists the linked serials."""

    name = "keyring"

    def preparse(self, data: bytes) -> Preparsed:
        """EINVAL if any payload is given."""
        if data:
            raise error(errno.EINVAL, f"a keyring takes no payload, got {len(data)} bytes")
        return Preparsed(data=b"", payload=None, quotalen=0)

    def instantiate(self, key: KeyRecord, prep: Preparsed) -> None:
        key.links = {}
        key.rings = {}

    def read(self, key: KeyRecord) -> bytes:
        """The linked keys' serials as native-endian 32-bit integers, as KEYCTL_READ gives."""
        links = key.links or {}
        return b"".join(_SERIAL.pack(k.serial) for k in links.values())

    def describe(self, key: KeyRecord) -> str:
        n = len(key.links or ())
        return f"{key.description}: {n}" if n else f"{key.description}: empty"

    def destroy(self, key: KeyRecord) -> None:
        key.links = None if key.links is None else {}
        key.rings = None if key.rings is None else {}


