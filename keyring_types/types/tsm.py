"""The ``tsm`` key type (Dan Williams's RFC "keys: Introduce tsm keys", 2023): attestation reports.

Payload ``auth <hex pubkey> [privlevel=<hex>] [format=<name>]``, 1..32767 bytes, read as a C
string (it ends at a NUL): tokens split on single spaces or tabs; the first must be ``auth``;
the second is hex, of which ``len // 2`` bytes are decoded (an odd last digit is ignored), at
most 64; then options, empty tokens skipped, each at most once: ``privlevel`` is
``kstrtouint(…, 16)`` (hexadecimal: ``privlevel=10`` is 16), ``format`` shorter than 16
characters.  Anything else is ``EINVAL`` (``ERANGE`` for a privlevel past 32 bits).  Then the
registered provider (:func:`keyring_types.attest.register_tsm_provider`) makes the blob:
``ENXIO`` if there is none, its own errno otherwise.

Extension (not the RFC's; answering its review): ``nonce=<hex>`` (1..64 bytes) makes the
report data SHA-512(nonce ‖ user data), and the user data may then be any 0..64 bytes.

Read: ``<hex pubkey> <desc>[:<format>] <hex blob>``, lowercase hex, no newline.  Describe is
the user type's (``<description>: <datalen>``, the datalen counting the kernel's 120-byte
payload struct and the blob).  No update, no revoke op, as in the RFC.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final

import attrs

from keyring_types.core.keytype import KeyType, Preparsed
from keyring_types.core.record import KeyRecord
from keyring_types.errors import error
from keyring_types.grammar import OptionTable, as_payload, hex2bin, kstrtouint, split_tokens

if TYPE_CHECKING:  # imported where used: attest loads only when a tsm key is made
    from keyring_types.attest.tsm import TsmRequest

__all__ = ["TSM_DATA_MAX", "TSM_FORMAT_MAX", "TSM_NONCE_MAX", "TSM_PUBKEY_MAX", "TsmKeyType", "TsmPayload", "parse_payload"]

TSM_DATA_MAX: Final = 32767
TSM_PUBKEY_MAX: Final = 64
TSM_FORMAT_MAX: Final = 16
#: The nonce extension's limit (the same as the user data's).
TSM_NONCE_MAX: Final = 64
#: sizeof(struct tsm_key_payload) on 64-bit kernels: charged with the blob, as the RFC does.
_PAYLOAD_STRUCT: Final = 120
_OPTIONS: Final = OptionTable("tsm-key option", frozenset({"privlevel", "format", "nonce"}))


@attrs.frozen
class TsmPayload:
    """A ``tsm`` key's payload: the user data, the provider's name, the format, the blob."""

    pubkey: bytes
    desc: str
    format: bytes
    blob: bytes = attrs.field(repr=False)


def parse_payload(data: object) -> TsmRequest:
    """The request a payload makes, as the RFC's ``tsm_parse``; errors as the module docstring."""
    from keyring_types.attest.tsm import TsmRequest

    raw = as_payload(data)
    if not 0 < len(raw) <= TSM_DATA_MAX:
        raise error(errno.EINVAL, f"a tsm key payload must be 1..{TSM_DATA_MAX} bytes, got {len(raw)}")
    nul = raw.find(0)
    tokens = split_tokens(raw if nul < 0 else raw[:nul])
    if tokens[0] != b"auth":
        raise error(errno.EINVAL, "a tsm key payload must start with 'auth'")
    if len(tokens) < 2:
        raise error(errno.EINVAL, "a tsm key payload needs the hex user data after 'auth'")
    hexdata = tokens[1]
    n = len(hexdata) // 2
    if n > TSM_PUBKEY_MAX:
        raise error(errno.EINVAL, f"tsm user data: at most {TSM_PUBKEY_MAX} bytes")
    pubkey = hex2bin(hexdata, n, "tsm user data")
    privlevel, fmt, nonce = 0, b"", None
    for name, value in _OPTIONS.items(tokens[2:]):
        if name == "privlevel":
            privlevel = kstrtouint(value, 16, "tsm privlevel")
        elif name == "format":
            if len(value) >= TSM_FORMAT_MAX:
                raise error(errno.EINVAL, f"tsm format: must be shorter than {TSM_FORMAT_MAX} characters")
            fmt = value
        else:
            if len(value) % 2 or len(value) // 2 > TSM_NONCE_MAX:
                raise error(errno.EINVAL, f"tsm nonce: must be 1..{TSM_NONCE_MAX} bytes of hex")
            nonce = hex2bin(value, len(value) // 2, "tsm nonce")
    return TsmRequest(pubkey=pubkey, privlevel=privlevel, format=fmt.decode("utf-8", "surrogateescape"), nonce=nonce)


class TsmKeyType(KeyType):
    """An attestation report from the registered TSM provider, bound to 64 bytes of user data."""

    name = "tsm"
    #: The provider may wait (a report from firmware; the emulated guest signs).
    preparse_blocks = True

    def preparse(self, data: bytes) -> Preparsed:
        """Parse, then ask the provider.  ``EINVAL``/``ERANGE`` for the grammar, ``ENXIO``
        without a provider, the provider's errno otherwise."""
        from keyring_types.attest.tsm import current_tsm_provider

        request = parse_payload(data)
        provider = current_tsm_provider()
        if provider is None:
            raise error(errno.ENXIO, "no TSM provider is registered")
        blob = bytes(provider.auth_new(request))
        payload = TsmPayload(pubkey=request.pubkey, desc=provider.name, format=request.format.encode("utf-8", "surrogateescape"), blob=blob)
        return Preparsed(b"", payload, _PAYLOAD_STRUCT + len(blob))

    def read(self, key: KeyRecord) -> bytes:
        """``<hex pubkey> <desc>[:<format>] <hex blob>``."""
        p: TsmPayload = key.payload
        desc = p.desc.encode() + (b":" + p.format if p.format else b"")
        return b"%s %s %s" % (p.pubkey.hex().encode(), desc, p.blob.hex().encode())

    def describe(self, key: KeyRecord) -> str:
        if key.payload is None:
            return key.description
        return f"{key.description}: {key.datalen}"
