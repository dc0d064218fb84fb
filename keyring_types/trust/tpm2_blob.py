"""The kernel's TPM 2.0 trusted-key blob: the ASN.1 ``TPMKey`` container and the old raw format.

Pure byte work, no TPM.  The encoder reproduces the kernel's ``lib/asn1_encoder.c``
output byte for byte (spec §2.4), quirks included, so a blob written here loads
in a kernel with trusted keys and the other way round::

    TPMKey ::= SEQUENCE {
        type       OBJECT IDENTIFIER,          -- 2.23.133.10.1.5 (TPM sealed data)
        emptyAuth  [0] EXPLICIT BOOLEAN OPTIONAL,
        parent     INTEGER,
        pubkey     OCTET STRING,               -- TPM2B_PUBLIC, size prefix included
        privkey    OCTET STRING                -- TPM2B_PRIVATE, size prefix included
    }

* emptyAuth is written only when the object has no blobauth, and its TRUE is
  the byte ``01`` (the kernel's encoder), not DER's ``ff``.
* pub comes before priv, the reverse of the TPM2_Create response and of the
  pre-5.13 raw format, which is ``TPM2B_PRIVATE || TPM2B_PUBLIC``.

The decoder accepts BER (long, non-minimal and indefinite lengths) like the
kernel's ``asn1_ber_decoder``; a blob that is not a ``TPMKey`` with the sealed
data OID is parsed as the old raw format.  It is stricter than the kernel in
three places, each so that every single-bit change of a valid blob is refused
(the kernel ignores these bytes): the emptyAuth BOOLEAN must be TRUE
(``01`` or ``ff``), the parent must fit in 32 bits, and no bytes may trail the
structures.
"""

from __future__ import annotations

import errno
import struct

import attrs

from keyring_types.errors import error

__all__ = [
    "MAX_BLOB_SIZE",
    "TPM2_SEALED_DATA_OID",
    "TPMA_OBJECT_FIXED_PARENT",
    "TPMA_OBJECT_FIXED_TPM",
    "TPMA_OBJECT_USER_WITH_AUTH",
    "Tpm2Blob",
    "decode",
    "decode_old_format",
    "decode_tpmkey",
    "encode_tpmkey",
    "is_migratable_attributes",
    "object_attributes",
]

#: include/keys/trusted-type.h MAX_BLOB_SIZE: the largest blob the kernel keeps.
MAX_BLOB_SIZE = 512

#: The OID the TCG assigned to "TPM sealed data" (tpm2key.asn1 / TSS2 key files).
TPM2_SEALED_DATA_OID = "2.23.133.10.1.5"

# TPMA_OBJECT bits the kernel sets or reads (TPM 2.0 Part 2, 8.3).
TPMA_OBJECT_FIXED_TPM = 0x00000002
TPMA_OBJECT_FIXED_PARENT = 0x00000010
TPMA_OBJECT_USER_WITH_AUTH = 0x00000040

_TAG_BOOLEAN = 0x01
_TAG_INTEGER = 0x02
_TAG_OCTET_STRING = 0x04
_TAG_OID = 0x06
_TAG_SEQUENCE = 0x30
_TAG_CONTEXT_0 = 0xA0  # [0] EXPLICIT, constructed


@attrs.frozen
class Tpm2Blob:
    """A decoded TPM 2.0 trusted-key blob.

    ``public``/``private`` are the marshalled ``TPM2B_PUBLIC``/``TPM2B_PRIVATE``,
    each with its 2-byte size prefix, ready for TPM2_Load.  ``parent`` is
    ``None`` for the old format (the caller must supply ``keyhandle=``).
    """

    public: bytes
    private: bytes
    parent: int | None
    empty_auth: bool
    old_format: bool

    @property
    def object_attributes(self) -> int:
        """The sealed object's TPMA_OBJECT (offset 4 of TPMT_PUBLIC)."""
        return object_attributes(self.public)

    @property
    def migratable(self) -> bool:
        """The kernel's rule: migratable unless both fixedTPM and fixedParent are set."""
        return is_migratable_attributes(self.object_attributes)


# --------------------------------------------------------------------------- encoder


def _encode_length(n: int) -> bytes:
    """Definite length exactly as lib/asn1_encoder.c writes it (short, 81 xx, 82 xx xx)."""
    if n < 0x80:
        return bytes([n])
    if n <= 0xFF:
        return bytes([0x81, n])
    if n <= 0xFFFF:
        return bytes([0x82, n >> 8, n & 0xFF])
    raise error(errno.E2BIG, f"ASN.1 element of {n} bytes is too long for a trusted-key blob")


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _encode_length(len(content)) + content


def _encode_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _tlv(_TAG_OID, bytes(body))


def _encode_unsigned_integer(value: int) -> bytes:
    """Minimal two's-complement INTEGER of a non-negative value (leading 00 if bit 7 set)."""
    if value < 0:
        raise error(errno.EINVAL, f"parent handle must not be negative, got {value}")
    body = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    if body[0] & 0x80:
        body = b"\x00" + body
    return _tlv(_TAG_INTEGER, body)


_OID_BYTES = _encode_oid(TPM2_SEALED_DATA_OID)


def encode_tpmkey(parent: int, public: bytes, private: bytes, empty_auth: bool) -> bytes:
    """Encode the kernel's ``TPMKey`` container (spec §2.4), byte-exact.

    ``public``/``private`` are ``TPM2B_PUBLIC``/``TPM2B_PRIVATE`` with their size
    prefixes.  ``empty_auth`` writes ``[0] BOOLEAN TRUE`` (the kernel does so
    exactly when no blobauth was given).  Raises ``EINVAL`` for a parent outside
    0..2**32-1 (or not an int), parts that are not bytes or have malformed
    TPM2B sizes, ``E2BIG`` when the result exceeds ``MAX_BLOB_SIZE``.
    """
    if not isinstance(parent, int) or isinstance(parent, bool):
        raise error(errno.EINVAL, f"parent handle must be an int, not {type(parent).__name__}")
    public = _as_bytes(public, "TPM2B_PUBLIC")
    private = _as_bytes(private, "TPM2B_PRIVATE")
    if not 0 <= parent <= 0xFFFFFFFF:
        raise error(errno.EINVAL, f"parent handle {parent:#x} does not fit in 32 bits")
    _check_tpm2b(public, "TPM2B_PUBLIC")
    _check_tpm2b(private, "TPM2B_PRIVATE")
    body = bytearray(_OID_BYTES)
    if empty_auth:
        # The kernel's asn1_encode_boolean writes TRUE as 01 (DER would be ff).
        body += _tlv(_TAG_CONTEXT_0, _tlv(_TAG_BOOLEAN, b"\x01"))
    body += _encode_unsigned_integer(parent)
    body += _tlv(_TAG_OCTET_STRING, public)
    body += _tlv(_TAG_OCTET_STRING, private)
    blob = _tlv(_TAG_SEQUENCE, bytes(body))
    if len(blob) > MAX_BLOB_SIZE:
        raise error(errno.E2BIG, f"sealed blob of {len(blob)} bytes exceeds the {MAX_BLOB_SIZE}-byte maximum")
    return blob


def _check_tpm2b(data: bytes, what: str) -> None:
    if len(data) < 2 or int.from_bytes(data[:2], "big") != len(data) - 2:
        raise error(errno.EINVAL, f"{what} must be a 2-byte size followed by exactly that many bytes")


# --------------------------------------------------------------------------- decoder


class _NotTpmKey(Exception):
    """Internal: the bytes are not a TPMKey container (the caller falls back to the old format)."""


#: Deepest nesting of indefinite-length elements walked; a TPMKey needs two.
_MAX_DEPTH = 8


def _read_tlv(buf: bytes, pos: int, end: int, depth: int = 0) -> tuple[int, int, int, int]:
    """Read one BER element header at ``pos``.

    Returns ``(tag, content_start, content_end, next_pos)``.  For an
    indefinite length the content runs to the matching end-of-contents and
    ``content_end`` excludes the ``00 00`` marker; the children are walked to
    find it, at most ``_MAX_DEPTH`` levels deep (deeper is not a TPMKey, and
    would otherwise exhaust Python's recursion limit).
    """
    if depth > _MAX_DEPTH:
        raise _NotTpmKey("indefinite lengths nested too deeply")
    if pos >= end:
        raise _NotTpmKey("truncated element")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise _NotTpmKey("multi-byte tags are not used by TPMKey")
    pos += 1
    if pos >= end:
        raise _NotTpmKey("missing length")
    first = buf[pos]
    pos += 1
    if first < 0x80:
        length = first
    elif first == 0x80:
        if not tag & 0x20:
            raise _NotTpmKey("indefinite length on a primitive element")
        # Walk the children until the end-of-contents marker.
        inner = pos
        while True:
            if inner + 2 <= end and buf[inner] == 0 and buf[inner + 1] == 0:
                return tag, pos, inner, inner + 2
            _, _, _, inner = _read_tlv(buf, inner, end, depth + 1)
    else:
        count = first & 0x7F
        if count > 2:
            # No element of a <= 512-byte blob needs more than two length bytes.
            raise _NotTpmKey("length field too long")
        if pos + count > end:
            raise _NotTpmKey("truncated length")
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise _NotTpmKey("element runs past its container")
    return tag, pos, pos + length, pos + length


def _decode_oid(body: bytes) -> str:
    if not body or body[-1] & 0x80:
        raise _NotTpmKey("malformed OID")
    arcs: list[int] = []
    value = 0
    for b in body:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


def _as_bytes(blob: object, what: str) -> bytes:
    """``blob`` as bytes; anything but a bytes-like object is ``EINVAL``."""
    if isinstance(blob, bytes):
        return blob
    if isinstance(blob, (bytearray, memoryview)):
        return bytes(blob)
    raise error(errno.EINVAL, f"{what} must be bytes, not {type(blob).__name__}")


def decode_tpmkey(blob: bytes) -> Tpm2Blob:
    """Decode a ``TPMKey`` container.

    Raises ``EBADMSG`` when the bytes are not a well-formed TPMKey with the
    sealed-data OID, ``E2BIG`` when the inner TPM2B sizes disagree with their
    octet strings or the parts exceed ``MAX_BLOB_SIZE``, ``EINVAL`` when
    ``blob`` is not bytes-like.
    """
    blob = _as_bytes(blob, "a TPMKey blob")
    try:
        return _decode_tpmkey(blob)
    except _NotTpmKey as exc:
        raise error(errno.EBADMSG, f"not a TPMKey ASN.1 blob: {exc}") from None


def _decode_tpmkey(blob: bytes) -> Tpm2Blob:
    tag, start, stop, after = _read_tlv(blob, 0, len(blob))
    if tag != _TAG_SEQUENCE:
        raise _NotTpmKey("does not start with a SEQUENCE")
    if after != len(blob):
        raise _NotTpmKey("bytes trail the SEQUENCE")
    tag, s, e, pos = _read_tlv(blob, start, stop)
    if tag != _TAG_OID or _decode_oid(blob[s:e]) != TPM2_SEALED_DATA_OID:
        raise _NotTpmKey("type is not the TPM sealed-data OID")
    tag, s, e, nxt = _read_tlv(blob, pos, stop)
    empty_auth = False
    if tag == _TAG_CONTEXT_0:
        btag, bs, be, bafter = _read_tlv(blob, s, e)
        if btag != _TAG_BOOLEAN or be - bs != 1 or bafter != e:
            raise _NotTpmKey("emptyAuth is not a single BOOLEAN")
        # The kernel writes 01, DER writers ff; anything else is damage.
        if blob[bs] not in (0x01, 0xFF):
            raise _NotTpmKey("emptyAuth is not TRUE")
        empty_auth = True
        pos = nxt
        tag, s, e, nxt = _read_tlv(blob, pos, stop)
    if tag != _TAG_INTEGER or e == s:
        raise _NotTpmKey("parent is not an INTEGER")
    if blob[s] & 0x80:
        raise _NotTpmKey("parent handle is negative")
    parent = int.from_bytes(blob[s:e], "big")
    if parent > 0xFFFFFFFF:
        raise _NotTpmKey("parent handle does not fit in 32 bits")
    pos = nxt
    tag, s, e, pos = _read_tlv(blob, pos, stop)
    if tag != _TAG_OCTET_STRING:
        raise _NotTpmKey("pubkey is not an OCTET STRING")
    public = bytes(blob[s:e])
    tag, s, e, pos = _read_tlv(blob, pos, stop)
    if tag != _TAG_OCTET_STRING:
        raise _NotTpmKey("privkey is not an OCTET STRING")
    private = bytes(blob[s:e])
    if pos != stop:
        raise _NotTpmKey("unexpected elements after privkey")
    if len(public) + len(private) > MAX_BLOB_SIZE:
        raise error(errno.E2BIG, f"TPM2 key parts of {len(public) + len(private)} bytes exceed {MAX_BLOB_SIZE}")
    for part, what in ((public, "pubkey"), (private, "privkey")):
        if len(part) < 2 or int.from_bytes(part[:2], "big") != len(part) - 2:
            raise error(errno.E2BIG, f"{what}: TPM2B size prefix disagrees with its OCTET STRING length")
    _check_public_area(public)
    return Tpm2Blob(public=public, private=private, parent=parent, empty_auth=empty_auth, old_format=False)


def decode_old_format(blob: bytes) -> Tpm2Blob:
    """Decode the pre-5.13 raw blob ``TPM2B_PRIVATE || TPM2B_PUBLIC``.

    Raises ``E2BIG`` when the blob is shorter than its two size fields or the
    sizes disagree with its length (the kernel's sanity checks, made exact),
    ``EINVAL`` when ``blob`` is not bytes-like.
    """
    blob = _as_bytes(blob, "a TPM2 blob")
    if len(blob) < 4:
        raise error(errno.E2BIG, f"old-format TPM2 blob of {len(blob)} bytes is too short for two sizes")
    private_len = int.from_bytes(blob[:2], "big")
    if 2 + private_len + 2 > len(blob):
        raise error(errno.E2BIG, "old-format TPM2 blob: private size runs past the blob")
    public_len = int.from_bytes(blob[2 + private_len : 4 + private_len], "big")
    if 4 + private_len + public_len != len(blob):
        raise error(errno.E2BIG, "old-format TPM2 blob: sizes disagree with the blob length")
    private = bytes(blob[: 2 + private_len])
    public = bytes(blob[2 + private_len :])
    _check_public_area(public)
    return Tpm2Blob(public=public, private=private, parent=None, empty_auth=False, old_format=True)


def decode(blob: bytes) -> Tpm2Blob:
    """Decode either blob format the kernel loads: ``TPMKey`` first, else the old raw format.

    Raises ``E2BIG`` for inconsistent sizes or an oversize blob, ``EINVAL``
    when ``blob`` is not bytes-like.
    """
    blob = _as_bytes(blob, "a TPM2 blob")
    if len(blob) > MAX_BLOB_SIZE:
        raise error(errno.E2BIG, f"TPM2 blob of {len(blob)} bytes exceeds the {MAX_BLOB_SIZE}-byte maximum")
    try:
        return _decode_tpmkey(blob)
    except _NotTpmKey:
        # trusted_tpm2.c: a failed ASN.1 decode means the pre-5.13 raw format.
        return decode_old_format(blob)


def _check_public_area(public: bytes) -> None:
    # The attributes at offset 4 of TPMT_PUBLIC (after type and nameAlg) must exist.
    if len(public) < 2 + 8:
        raise error(errno.E2BIG, "TPM2B_PUBLIC too short to hold object attributes")


def object_attributes(public: bytes) -> int:
    """TPMA_OBJECT of a marshalled ``TPM2B_PUBLIC`` (u32 at offset 4 of TPMT_PUBLIC).

    Raises ``E2BIG`` if the structure is too short.
    """
    _check_public_area(public)
    return int(struct.unpack_from(">I", public, 2 + 4)[0])


def is_migratable_attributes(attributes: int) -> bool:
    """The kernel's rule: not migratable only when fixedTPM and fixedParent are both set."""
    fixed = TPMA_OBJECT_FIXED_TPM | TPMA_OBJECT_FIXED_PARENT
    return (attributes & fixed) != fixed
