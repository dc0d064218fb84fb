"""The encrypted-key blob, byte for byte as the kernel's ``encrypted`` type makes it.

Pure functions, no keyspace knowledge: key derivation from the master key, the
internal "datablob" the HMAC covers, AES-256-CBC, the hex text that ``keyctl
pipe`` prints and its parser, and the eCryptfs auth-token payload.

References: ``/work/shared/spec/kernel-keytypes.md`` §1.3-§1.8 and the kernel's
``security/keys/encrypted-keys/encrypted.c`` / ``ecryptfs_format.c``.

The functions here (``derive_*``, ``seal``, ``unseal``, ``export``, ...) are the
readable reference.  :mod:`keyring_types.bindings.encrypted` does the same in
one call into ``_native/encrypted.c`` (the hot path of the ``encrypted`` key
type): the derived keys never reach the Python heap and a seal costs well
under a microsecond of crypto.  Tests hold the two to the same bytes on random
inputs.
"""

from __future__ import annotations

import binascii
import errno
import hashlib
import struct

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from keyring_types.errors import error
from keyring_types.grammar import kstrtol
from keyring_types.secret import SecretBuffer

__all__ = [
    "AUTH_TOK_TEMPLATE",
    "BLOCK_SIZE",
    "ECRYPTFS_AUTH_TOK_SIZE",
    "ECRYPTFS_KEY_BYTES",
    "ECRYPTFS_KEY_OFFSET",
    "ENC32_KEY_BYTES",
    "FORMATS",
    "HASH_SIZE",
    "IV_SIZE",
    "MAX_DATA_SIZE",
    "MIN_DATA_SIZE",
    "Sealed",
    "compute_hmac",
    "datablob_header",
    "decrypt_padded",
    "derive_auth_key",
    "derive_enc_key",
    "ecryptfs_auth_tok",
    "ecryptfs_auth_tok_empty",
    "ecryptfs_key_view",
    "encrypt",
    "export",
    "export_len",
    "hex_blob_len",
    "padded_len",
    "parse_datalen",
    "parse_hex_blob",
    "seal",
    "seal_with",
    "unseal",
    "valid_ecryptfs_desc",
    "verify",
]

IV_SIZE = 16
HASH_SIZE = 32
BLOCK_SIZE = 16
#: Length limits of the decrypted data, ``default`` format (kernel MIN/MAX_DATA_SIZE).
MIN_DATA_SIZE = 20
MAX_DATA_SIZE = 4096
#: ``ecryptfs`` keys carry exactly ECRYPTFS_MAX_KEY_BYTES; ``enc32`` exactly 32.
ECRYPTFS_KEY_BYTES = 64
ENC32_KEY_BYTES = 32
#: sizeof(struct ecryptfs_auth_tok), packed, x86-64 (spec 1.7).
ECRYPTFS_AUTH_TOK_SIZE = 740
#: Offset of token.password.session_key_encryption_key inside the auth token.
ECRYPTFS_KEY_OFFSET = 648
FORMATS = ("default", "ecryptfs", "enc32")

_ENC_LABEL = b"ENC_KEY\x00"
_AUTH_LABEL = b"AUTH_KEY\x00"
#: The kernel sizes both derivation buffers by the longer label (spec 1.4), so
#: the ENC input always ends in one more zero byte than the AUTH input.
_LABEL_ROOM = len(_AUTH_LABEL)
_ZEROS = bytes(HASH_SIZE + 1)
_SHA256 = hashes.SHA256()
_AES_KEY_MODE = algorithms.AES
_HEX_DIGITS = "0123456789abcdefABCDEF"

Bytes = bytes | bytearray | memoryview


def _derive(label: bytes, master: Bytes) -> bytes:
    # Hash label || master || zeros without joining them, so the master is
    # never copied onto the Python heap.
    # The pad is at most 24 bytes (ENC label, empty master), always within _ZEROS.
    pad = max(_LABEL_ROOM + len(master), HASH_SIZE) - len(label) - len(master)
    h = hashlib.sha256(label)
    h.update(master)
    h.update(_ZEROS[:pad])
    return h.digest()


def derive_enc_key(master: Bytes) -> bytes:
    """The AES-256 key: SHA-256 over ``"ENC_KEY\\0" || master || zero pad`` (spec 1.4).

    The hash input is ``max(9 + len(master), 32)`` bytes, so it always carries a
    trailing zero after the master and short masters are zero-padded to 32.
    """
    return _derive(_ENC_LABEL, master)


def derive_auth_key(master: Bytes) -> bytes:
    """The HMAC key: SHA-256 over ``"AUTH_KEY\\0" || master`` padded to at least 32 bytes."""
    return _derive(_AUTH_LABEL, master)


def padded_len(datalen: int) -> int:
    """Ciphertext length: ``datalen`` rounded up to the AES block (no PKCS#7 block)."""
    return (datalen + BLOCK_SIZE - 1) // BLOCK_SIZE * BLOCK_SIZE


def hex_blob_len(datalen: int) -> int:
    """Characters of the hex field ``IV || 00 || ciphertext || HMAC``."""
    return 2 * (IV_SIZE + 1 + padded_len(datalen) + HASH_SIZE)


def export_len(fmt: str, master_desc: str, datalen_str: str, datalen: int) -> int:
    """Bytes ``read()`` returns, computable without the master (the kernel's size query)."""
    head = len(fmt.encode()) + len(master_desc.encode("utf-8", "surrogateescape")) + len(datalen_str.encode()) + 3
    return head + hex_blob_len(datalen)


def datablob_header(fmt: str | None, master_desc: str, datalen_str: str) -> bytes:
    """Rows 1-6 of the datablob: ``fmt\\0 master\\0 datalen\\0``.

    ``fmt=None`` gives the legacy layout (no format row), which only ``load``
    of a format-less blob verifies against (spec 1.6).
    """
    mdesc = master_desc.encode("utf-8", "surrogateescape")
    dlen = datalen_str.encode("utf-8", "surrogateescape")
    if fmt is None:
        return b"%s\x00%s\x00" % (mdesc, dlen)
    return b"%s\x00%s\x00%s\x00" % (fmt.encode(), mdesc, dlen)


def compute_hmac(auth_key: Bytes, header: bytes, iv: bytes, ciphertext: Bytes) -> bytes:
    """HMAC-SHA256 over ``header || IV || 0x00 || ciphertext`` (the datablob, spec 1.6)."""
    h = _hmac.HMAC(auth_key, _SHA256)
    h.update(header)
    h.update(iv)
    # The gap byte after the IV is zero in the kernel's buffer and is covered.
    h.update(b"\x00")
    h.update(ciphertext)
    return h.finalize()


def encrypt(enc_key: Bytes, iv: bytes, data: Bytes) -> bytes:
    """AES-256-CBC of ``data`` zero-padded to the block size (spec 1.5)."""
    enc = Cipher(_AES_KEY_MODE(enc_key), modes.CBC(iv)).encryptor()
    n = len(data)
    full = n - n % BLOCK_SIZE
    if full == n:
        return enc.update(data) + enc.finalize()
    head = enc.update(memoryview(data)[:full]) if full else b""
    # The last partial block is padded in a scratch buffer we can wipe.
    last = bytearray(BLOCK_SIZE)
    last[: n - full] = memoryview(data)[full:]
    try:
        return head + enc.update(last) + enc.finalize()
    finally:
        last[:] = bytes(BLOCK_SIZE)


def decrypt_padded(enc_key: Bytes, iv: bytes, ciphertext: Bytes) -> SecretBuffer:
    """AES-256-CBC decryption into a new SecretBuffer of ``len(ciphertext) + 15`` bytes.

    The plaintext (with its zero pad) is the first ``len(ciphertext)`` bytes; the
    extra room is what ``update_into`` needs.  The pad is never checked, as in
    the kernel (spec 1.5).  Decrypting in place avoids a second secret copy.
    """
    dec = Cipher(_AES_KEY_MODE(enc_key), modes.CBC(iv)).decryptor()
    out = SecretBuffer(len(ciphertext) + BLOCK_SIZE - 1)
    mv = out.writable()
    try:
        dec.update_into(ciphertext, mv)
        dec.finalize()
    except BaseException:
        out.wipe()
        raise
    finally:
        mv.release()
    return out


@attrs.frozen
class Sealed:
    """The three binary fields of an exported blob."""

    iv: bytes = attrs.field(repr=lambda v: v.hex())
    ciphertext: bytes = attrs.field(repr=lambda v: f"<{len(v)} bytes>")
    mac: bytes = attrs.field(repr=lambda v: v.hex())


def seal(master: Bytes, fmt: str, master_desc: str, datalen_str: str, iv: bytes, data: Bytes) -> Sealed:
    """Encrypt ``data`` under ``master`` and MAC it, as the kernel's read does.

    ``fmt`` is always written (a legacy-loaded key re-exports as ``default``).
    ``EINVAL`` if the IV is not 16 bytes.
    """
    return seal_with(derive_enc_key(master), derive_auth_key(master), fmt, master_desc, datalen_str, iv, data)


def seal_with(
    enc_key: Bytes, auth_key: Bytes, fmt: str, master_desc: str, datalen_str: str, iv: bytes, data: Bytes
) -> Sealed:
    """:func:`seal` with the two derived keys already at hand; ``EINVAL`` for a bad IV size."""
    if len(iv) != IV_SIZE:
        raise error(errno.EINVAL, f"the IV must be {IV_SIZE} bytes, got {len(iv)}")
    ct = encrypt(enc_key, iv, data)
    mac = compute_hmac(auth_key, datablob_header(fmt, master_desc, datalen_str), iv, ct)
    return Sealed(iv, ct, mac)


def verify(auth_key: Bytes, fmt: str | None, master_desc: str, datalen_str: str, datalen: int, sealed: Sealed) -> None:
    """Check the blob's HMAC under ``auth_key`` in constant time (``fmt=None``: legacy layout).

    ``EINVAL`` when it does not match or the field sizes are wrong.
    """
    if len(sealed.iv) != IV_SIZE or len(sealed.ciphertext) != padded_len(datalen) or len(sealed.mac) != HASH_SIZE:
        raise error(errno.EINVAL, "encrypted key blob fields have the wrong length")
    h = _hmac.HMAC(auth_key, _SHA256)
    h.update(datablob_header(fmt, master_desc, datalen_str))
    h.update(sealed.iv)
    h.update(b"\x00")
    h.update(sealed.ciphertext)
    try:
        h.verify(sealed.mac)  # constant time
    except InvalidSignature:
        raise error(errno.EINVAL, "encrypted key blob failed HMAC verification (wrong master key or tampered blob)") from None


def unseal(
    master: Bytes,
    fmt: str | None,
    master_desc: str,
    datalen_str: str,
    datalen: int,
    sealed: Sealed,
) -> SecretBuffer:
    """Verify the HMAC and decrypt; the plaintext (``datalen`` bytes) in a new SecretBuffer.

    ``fmt=None`` verifies a legacy blob (HMAC without the format row).  ``EINVAL``
    when the HMAC does not match (wrong master, tampered IV/ciphertext/MAC, or a
    legacy MAC on a blob that names its format) or the field sizes are wrong.
    """
    verify(derive_auth_key(master), fmt, master_desc, datalen_str, datalen, sealed)
    padded = decrypt_padded(derive_enc_key(master), sealed.iv, sealed.ciphertext)
    try:
        return SecretBuffer.from_bytes(padded.view()[:datalen])
    finally:
        padded.wipe()


def export(fmt: str, master_desc: str, datalen_str: str, sealed: Sealed) -> bytes:
    """The exact bytes of ``keyctl pipe``: ``fmt master datalen hex`` (no newline, no NUL)."""
    return b"%s %s %s %s%s%s" % (
        fmt.encode(),
        master_desc.encode("utf-8", "surrogateescape"),
        datalen_str.encode("utf-8", "surrogateescape"),
        binascii.hexlify(sealed.iv),
        b"00",
        binascii.hexlify(sealed.ciphertext + sealed.mac),
    )


def parse_hex_blob(text: bytes, datalen: int) -> Sealed:
    """Parse the hex field of a ``load`` payload for ``datalen`` bytes of data.

    The length must be exact; hex digits of either case; the two characters of
    the separator after the IV are skipped unchecked, as the kernel does.
    ``EINVAL`` for a wrong length or a non-hex digit.
    """
    if not isinstance(text, (bytes, str)) or type(datalen) is not int:
        raise error(errno.EINVAL, "an encrypted key blob is hex text, with an int data length")
    want = hex_blob_len(datalen)
    if len(text) != want:
        raise error(errno.EINVAL, f"encrypted key blob must be {want} hex characters for {datalen} bytes, got {len(text)}")
    iv_hex = text[: 2 * IV_SIZE]
    rest = text[2 * IV_SIZE + 2 :]
    ct_chars = 2 * padded_len(datalen)
    try:
        # binascii (unlike bytes.fromhex) rejects embedded whitespace.
        iv = binascii.unhexlify(iv_hex)
        ct = binascii.unhexlify(rest[:ct_chars])
        mac = binascii.unhexlify(rest[ct_chars:])
    except (binascii.Error, ValueError):
        raise error(errno.EINVAL, "encrypted key blob contains a non-hex character") from None
    return Sealed(iv, ct, mac)


def parse_datalen(token: str | bytes) -> int | None:
    """The kernel's ``kstrtol(token, 10)``: digits with an optional ``+`` and one trailing newline.

    Returns None where the kernel's parse fails, ``ERANGE`` included (the caller
    raises ``EINVAL``, as ``encrypted_key_alloc`` does).  A leading ``-`` can only
    give a value below every limit, so it is refused here.
    """
    if not isinstance(token, (str, bytes)):
        return None
    if token.isascii() and token.isdigit():
        # Plain digits, the usual spelling.  int() refuses more than 4300 digits,
        # and leading zeros are the only way to write that many and stay in range.
        if len(token) > 19:
            token = (token.lstrip("0") if isinstance(token, str) else token.lstrip(b"0")) or "0"
            if len(token) > 19:
                return None
        value = int(token)
        return value if value < 1 << 63 else None
    try:
        value = kstrtol(token, 10, "the data length")
    except OSError:
        return None
    return value if value >= 0 else None


def valid_ecryptfs_desc(description: str) -> bool:
    """An eCryptfs key description is exactly 16 hex digits (either case)."""
    # Stripping every hex digit from both ends leaves nothing only when all 16 are
    # hex digits: the regex's answer, several times cheaper.
    return len(description) == 16 and not description.strip(_HEX_DIGITS)


def ecryptfs_auth_tok(description: str, key: Bytes) -> SecretBuffer:
    """The 740-byte ``struct ecryptfs_auth_tok`` the kernel keeps for an ecryptfs key.

    Fields as ``ecryptfs_fill_auth_tok`` sets them (spec 1.7): version 0x0004,
    password token, SHA-512 hash id, 64-byte key at offset 648, the 16-character
    signature after it.  ``EINVAL`` for a bad description or key length.
    """
    if len(key) != ECRYPTFS_KEY_BYTES:
        if not valid_ecryptfs_desc(description):
            raise error(errno.EINVAL, f"ecryptfs key description must be 16 hex digits, got {description!r}")
        raise error(errno.EINVAL, f"ecryptfs key must be {ECRYPTFS_KEY_BYTES} bytes, got {len(key)}")
    tok = ecryptfs_auth_tok_empty(description)
    mv = tok.writable()
    try:
        mv[ECRYPTFS_KEY_OFFSET : ECRYPTFS_KEY_OFFSET + ECRYPTFS_KEY_BYTES] = key
    finally:
        mv.release()
    return tok


def ecryptfs_auth_tok_empty(description: str) -> SecretBuffer:
    """:func:`ecryptfs_auth_tok` with the 64 key bytes still zero, for code that
    writes the key in place (at ``ECRYPTFS_KEY_OFFSET``).  ``EINVAL`` for a bad description."""
    if not valid_ecryptfs_desc(description):
        raise error(errno.EINVAL, f"ecryptfs key description must be 16 hex digits, got {description!r}")
    # Nothing secret yet (the key bytes are still zero), so the token is put together
    # in ordinary memory and copied into secret memory in one call.
    return SecretBuffer.from_bytes(b"".join((_AUTH_TOK_HEAD, description.encode("ascii"), _AUTH_TOK_TAIL)))


def _auth_tok_fixed() -> bytes:
    # The token's fields that are the same for every key (no secret in them).
    tok = bytearray(ECRYPTFS_AUTH_TOK_SIZE)
    struct.pack_into("<HH", tok, 0, 0x0004, 0)  # version (major 0, minor 4), ECRYPTFS_PASSWORD
    # password: bytes, hash_algo (PGP SHA-512), iterations, key bytes, flags (KEY_SET)
    struct.pack_into("<IiIII", tok, 628, 0, 10, 0, ECRYPTFS_KEY_BYTES, 0x02)
    return bytes(tok)


#: An auth token with every field that is the same for every key, key and signature zero.
AUTH_TOK_TEMPLATE = _auth_tok_fixed()
#: The fixed fields before and after the 16-character signature at offset 712.
_AUTH_TOK_HEAD, _AUTH_TOK_TAIL = AUTH_TOK_TEMPLATE[:712], AUTH_TOK_TEMPLATE[728:]


def ecryptfs_key_view(tok: SecretBuffer) -> memoryview:
    """The 64 key bytes inside an auth token, as a read-only view (no copy)."""
    return tok.view()[ECRYPTFS_KEY_OFFSET : ECRYPTFS_KEY_OFFSET + ECRYPTFS_KEY_BYTES]
