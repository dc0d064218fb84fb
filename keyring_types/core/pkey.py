"""The public-key keyctls' shared parts (security/keys/keyctl_pkey.c): the info
string grammar, the query result and the ``KEYCTL_SUPPORTS_*`` bits.

Both keyspaces use these: the in-process one to run the operations, the kernel
one to hand results back in the same shape.
"""

from __future__ import annotations

import errno
import struct

import attrs

from keyring_types.errors import error

__all__ = [
    "KEYCTL_SUPPORTS_DECRYPT",
    "KEYCTL_SUPPORTS_ENCRYPT",
    "KEYCTL_SUPPORTS_SIGN",
    "KEYCTL_SUPPORTS_VERIFY",
    "PkeyParams",
    "PkeyQuery",
    "parse_pkey_info",
]

KEYCTL_SUPPORTS_ENCRYPT = 0x01
KEYCTL_SUPPORTS_DECRYPT = 0x02
KEYCTL_SUPPORTS_SIGN = 0x04
KEYCTL_SUPPORTS_VERIFY = 0x08

#: strndup_user(info, PAGE_SIZE): the string and its NUL must fit one page.
_INFO_MAX = 4096

_PACKED = struct.Struct("=6I")


@attrs.frozen
class PkeyQuery:
    """``struct keyctl_pkey_query``: what a key can do and its sizes (key_size in bits, the rest in bytes)."""

    supported_ops: int
    key_size: int
    max_data_size: int
    max_sig_size: int
    max_enc_size: int
    max_dec_size: int

    def pack(self) -> bytes:
        return _PACKED.pack(*attrs.astuple(self))

    @classmethod
    def unpack(cls, data: bytes) -> PkeyQuery:
        return cls(*_PACKED.unpack(data))

    @property
    def ops(self) -> frozenset[str]:
        """The supported operations by name: ``encrypt``, ``decrypt``, ``sign``, ``verify``."""
        names = (
            (KEYCTL_SUPPORTS_ENCRYPT, "encrypt"),
            (KEYCTL_SUPPORTS_DECRYPT, "decrypt"),
            (KEYCTL_SUPPORTS_SIGN, "sign"),
            (KEYCTL_SUPPORTS_VERIFY, "verify"),
        )
        return frozenset(name for bit, name in names if self.supported_ops & bit)


@attrs.frozen
class PkeyParams:
    """The parsed info string: ``encoding`` (default ``raw``) and ``hash_algo`` (None if not given)."""

    encoding: str = "raw"
    hash_algo: str | None = None


def parse_pkey_info(info: str) -> PkeyParams:
    """``keyctl_pkey_params_parse``: space- or tab-separated ``enc=<name>`` and ``hash=<name>``.

    ``EINVAL`` for an unknown word, a repeated one, an empty value, or a string
    that does not fit a page.  The names are not checked here: the key's
    algorithm judges them when the operation runs.
    """
    if len(info.encode()) >= _INFO_MAX:
        raise error(errno.EINVAL, f"info string is longer than {_INFO_MAX - 1} bytes")
    encoding = "raw"
    hash_algo: str | None = None
    seen: set[str] = set()
    for word in info.replace("\t", " ").split(" "):
        if not word:
            continue
        name, eq, value = word.partition("=")
        if not eq or name not in ("enc", "hash"):
            raise error(errno.EINVAL, "info string: a word is neither enc=<name> nor hash=<name>")
        if name in seen:
            raise error(errno.EINVAL, f"info string: {name}= given twice")
        if not value:
            raise error(errno.EINVAL, f"info string: {name}= has no value")
        seen.add(name)
        if name == "enc":
            encoding = value
        else:
            hash_algo = value
    return PkeyParams(encoding, hash_algo)
