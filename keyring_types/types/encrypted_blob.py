"""The encrypted-key blob, byte for byte as the kernel's ``encrypted`` type makes it.

Pure functions, no keyspace knowledge: key derivation from the master key, the
internal "datablob" the HMAC covers, AES-256-CBC, the hex text that ``keyctl
pipe`` prints and its parser, and the eCryptfs auth-token payload.

References: ``/work/shared/spec/kernel-keytypes.md`` §1.3-§1.8 and the kernel's
``security/keys/encrypted-keys/encrypted.c`` / ``ecryptfs_format.c``.

Two implementations of the crypto live here.  The pure-Python functions
(``derive_*``, ``seal``, ``unseal``, ``export``, ...) are the readable reference.
The ``native_*`` functions do the same in one call into ``_native/encrypted.c``
(the hot path of the ``encrypted`` key type): the derived keys never reach the
Python heap and a seal costs well under a microsecond of crypto.  Tests hold
the two to the same bytes on random inputs.
"""

from __future__ import annotations

import binascii
import errno
import hashlib
import re
import struct
from typing import Any

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from keyring_types.bindings._encrypted import ffi as _nffi
from keyring_types.bindings._encrypted import lib as _nlib
from keyring_types.errors import error
from keyring_types.secret import SecretBuffer

__all__ = [
    "IV_SIZE",
    "HASH_SIZE",
    "BLOCK_SIZE",
    "MIN_DATA_SIZE",
    "MAX_DATA_SIZE",
    "ECRYPTFS_KEY_BYTES",
    "ENC32_KEY_BYTES",
    "ECRYPTFS_AUTH_TOK_SIZE",
    "ECRYPTFS_KEY_OFFSET",
    "FORMATS",
    "Sealed",
    "derive_enc_key",
    "derive_auth_key",
    "padded_len",
    "hex_blob_len",
    "export_len",
    "datablob_header",
    "compute_hmac",
    "encrypt",
    "seal",
    "seal_with",
    "verify",
    "decrypt_padded",
    "unseal",
    "export",
    "parse_hex_blob",
    "parse_datalen",
    "valid_ecryptfs_desc",
    "ecryptfs_auth_tok",
    "ecryptfs_key_view",
    "ecryptfs_auth_tok_empty",
    "native_seal",
    "native_export",
    "native_unseal_into",
    "native_unseal_joined_into",
    "native_random_into",
    "native_new_material",
    "native_new_secret",
    "native_new_ecryptfs",
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
_DATALEN = re.compile(r"\+?([0-9]+)\n?")
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
    except Exception:
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


def parse_datalen(token: str) -> int | None:
    """The kernel's ``kstrtol(token, 10)``: digits with an optional ``+`` and one trailing newline.

    Returns None where the kernel's parse fails (the caller raises ``EINVAL``).
    A leading ``-`` can only give a value below every limit, so it is refused here.
    """
    if token.isascii() and token.isdigit():
        value = int(token)
    else:
        m = _DATALEN.fullmatch(token)
        if m is None:
            return None
        value = int(m.group(1))
    return value if value < 1 << 63 else None


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


_AUTH_TOK_FIXED = _auth_tok_fixed()
#: The fixed fields before and after the 16-character signature at offset 712.
_AUTH_TOK_HEAD, _AUTH_TOK_TAIL = _AUTH_TOK_FIXED[:712], _AUTH_TOK_FIXED[728:]


def ecryptfs_key_view(tok: SecretBuffer) -> memoryview:
    """The 64 key bytes inside an auth token, as a read-only view (no copy)."""
    return tok.view()[ECRYPTFS_KEY_OFFSET : ECRYPTFS_KEY_OFFSET + ECRYPTFS_KEY_BYTES]


# -- the native one-shot path (_native/encrypted.c) ---------------------------------

#: A cffi pointer (e.g. ``SecretBuffer.address``) or a buffer.
Memory = Any


_CDATA = type(_nffi.NULL)


def _cptr(buf: Memory) -> Any:
    # bytes go to C as they are; other buffers (bytearray, memoryview) need a cffi view.
    if isinstance(buf, (bytearray, memoryview)):
        return _nffi.from_buffer(buf)
    return buf


def _native_error(rc: int) -> OSError:
    if rc == _nlib.KT_ENC_ERR_MAC:
        return error(errno.EINVAL, "encrypted key blob failed HMAC verification (wrong master key or tampered blob)")
    if rc == _nlib.KT_ENC_ERR_SIZE:
        return error(errno.EINVAL, f"encrypted key data must be at most {MAX_DATA_SIZE} bytes")
    return error(errno.ENOMEM, "libcrypto could not run AES-256-CBC / SHA-256 (out of memory?)")


def native_seal(master: Bytes, fmt: str, master_desc: str, datalen_str: str, iv: bytes, data: Bytes) -> Sealed:
    """:func:`seal` in one native call (same bytes); ``EINVAL`` for a bad IV or data size."""
    if len(iv) != IV_SIZE:
        raise error(errno.EINVAL, f"the IV must be {IV_SIZE} bytes, got {len(iv)}")
    header = datablob_header(fmt, master_desc, datalen_str)
    n = len(data)
    ct = _nffi.new("uint8_t[]", max(padded_len(n), 1))
    mac = _nffi.new("uint8_t[]", HASH_SIZE)
    rc = _nlib.kt_enc_seal(_cptr(master), len(master), header, len(header), iv, _cptr(data), n, ct, mac)
    if rc:
        raise _native_error(rc)
    return Sealed(iv, _nffi.buffer(ct, padded_len(n))[:], _nffi.buffer(mac, HASH_SIZE)[:])


def native_export(master: Memory, mlen: int, header: bytes, iv: bytes | Any, data: Memory, datalen: int) -> bytes:
    """Seal and format in one native call: the bytes of :func:`export` for ``header``'s
    format, master and length (``header`` from :func:`datablob_header`, never legacy).
    ``iv`` is 16 bytes, or the cffi ``char[16]`` from :func:`native_new_secret`.

    ``master``/``data`` may be cffi pointers (``SecretBuffer.address``) so that no
    secret is copied.  ``EINVAL`` for data over 4096 bytes, ``ENOMEM`` if libcrypto fails.
    """
    if len(iv) != IV_SIZE:
        raise error(errno.EINVAL, f"the IV must be {IV_SIZE} bytes, got {len(iv)}")
    n = len(header) + 2 * (IV_SIZE + 1 + padded_len(datalen) + HASH_SIZE)
    out = _nffi.new("uint8_t[]", n)
    rc = _nlib.kt_enc_seal_export(_cptr(master), mlen, header, len(header), iv, _cptr(data), datalen, out)
    if rc:
        raise _native_error(rc)
    return _nffi.buffer(out, n)[:]


def native_unseal_into(
    master: Memory, mlen: int, header: bytes, iv: bytes, ciphertext: bytes, mac: bytes, datalen: int, out: Memory
) -> None:
    """Verify the HMAC (constant time) and decrypt ``datalen`` bytes straight into ``out``.

    ``header`` is :func:`datablob_header` (``fmt=None`` for a legacy blob); ``out`` is
    a pointer to at least ``datalen`` writable bytes, normally a SecretBuffer's.  The
    zero pad is dropped in C.  ``EINVAL`` for a bad HMAC or field sizes, ``ENOMEM``
    if libcrypto fails; on error nothing is written to ``out``.
    """
    # padded_len(datalen), inline: this runs on every load.
    if len(iv) != IV_SIZE or len(ciphertext) != -(-datalen // BLOCK_SIZE) * BLOCK_SIZE or len(mac) != HASH_SIZE:
        raise error(errno.EINVAL, "encrypted key blob fields have the wrong length")
    # Pointers (the usual case: SecretBuffer addresses) need no conversion.
    if type(master) is not _CDATA:
        master = _cptr(master)
    if type(out) is not _CDATA:
        out = _cptr(out)
    rc = _nlib.kt_enc_unseal(master, mlen, header, len(header), iv, ciphertext, mac, datalen, out)
    if rc:
        raise _native_error(rc)


def native_unseal_joined_into(master: Memory, mlen: int, header: bytes, iv: bytes, ctmac: bytes, datalen: int, out: Memory) -> None:
    """:func:`native_unseal_into` with ciphertext and MAC in one buffer, as the blob has
    them (``padded_len(datalen) + 32`` bytes); ``master``/``out`` are cffi pointers.

    ``EINVAL`` for a bad HMAC or field sizes, ``ENOMEM`` if libcrypto fails; on error
    nothing is written to ``out``.
    """
    if len(iv) != IV_SIZE:
        raise error(errno.EINVAL, "encrypted key blob fields have the wrong length")
    rc = _nlib.kt_enc_unseal_joined(master, mlen, header, len(header), iv, ctmac, len(ctmac), datalen, out)
    if rc:
        if rc == _nlib.KT_ENC_ERR_SIZE and datalen <= MAX_DATA_SIZE:
            raise error(errno.EINVAL, "encrypted key blob fields have the wrong length")
        raise _native_error(rc)


def native_random_into(out: Memory, n: int) -> None:
    """Fill ``n`` bytes at ``out`` (e.g. a SecretBuffer's memory) with random bytes
    from the kernel CSPRNG (buffered in C, ``_native/rand.h``), with no copy on the
    Python heap.  ``EIO`` if the OS refuses."""
    if n and _nlib.kt_rand_fill(_cptr(out), n) != 0:
        raise error(errno.EIO, f"the OS RNG could not supply {n} bytes")


def native_new_secret(n: int) -> tuple[SecretBuffer, Any]:
    """A new key's ``n`` random data bytes in a new SecretBuffer, and its random IV,
    from one C call (see :func:`native_random_into`); ``ENOMEM``, ``EIO``.

    The IV comes back as the cffi ``char[16]`` it was drawn into: the native seal
    reads it in place, and ``bytes(ffi.buffer(iv))`` copies it out.
    """
    data = SecretBuffer(n)
    iv = _nffi.new("char[16]")
    # data._ptr rather than data.address: the buffer was made just above.
    if _nlib.kt_rand_fill2(iv, IV_SIZE, data._ptr, n):
        data.wipe()
        raise error(errno.EIO, f"the OS RNG could not supply {IV_SIZE + n} bytes")
    return data, iv


def native_new_ecryptfs(description: str) -> tuple[SecretBuffer, Any]:
    """A new ecryptfs key: its auth token (:func:`ecryptfs_auth_tok_empty`) with 64
    random key bytes, and its random IV (a cffi ``char[16]``), the random bytes from
    one C call.  ``EINVAL`` for a description that is not 16 hex digits, ``ENOMEM``, ``EIO``."""
    # valid_ecryptfs_desc(), inline.
    if len(description) != 16 or description.strip(_HEX_DIGITS):
        raise error(errno.EINVAL, f"ecryptfs key description must be 16 hex digits, got {description!r}")
    # C fills the whole token: fixed fields, signature, random key bytes (at tok._ptr,
    # not tok.address: the buffer is made just below).
    tok = SecretBuffer(ECRYPTFS_AUTH_TOK_SIZE)
    iv = _nffi.new("char[16]")
    if _nlib.kt_enc_ecryptfs_new(tok._ptr, _AUTH_TOK_FIXED, description.encode("ascii"), iv):
        tok.wipe()
        raise error(errno.EIO, f"the OS RNG could not supply {IV_SIZE + ECRYPTFS_KEY_BYTES} bytes")
    return tok, iv


def native_new_material(out: Memory, n: int) -> Any:
    """A new key's random IV (returned as the cffi ``char[16]`` it was drawn into, as
    :func:`native_new_secret` does) and ``n`` random data bytes written at ``out``, in
    one C call (see :func:`native_random_into`); ``EIO``."""
    iv = _nffi.new("char[16]")
    if _nlib.kt_rand_fill2(iv, IV_SIZE, out, n):
        raise error(errno.EIO, f"the OS RNG could not supply {IV_SIZE + n} bytes")
    return iv
