"""The only door to ``_native/encrypted.c``: one-shot seal and unseal of the kernel's
``encrypted`` key blob, and the random bytes new keys are made from.

This module owns ``ffi``/``lib`` of :mod:`keyring_types.bindings._encrypted`; the
key-type layer (``types/encrypted.py``, ``types/encrypted_blob.py``) calls these
functions and never sees a cffi object except as an opaque IV.  Every length C
is given is checked here against the buffer it describes, so no argument can
make C read or write past a buffer: memory arguments are
:class:`~keyring_types.secret.SecretBuffer` objects or Python buffers, never
raw pointers.

Errors: ``EINVAL`` for a wrong size, type or offset, or an HMAC that does not
match; ``EKEYREVOKED`` for a wiped SecretBuffer; ``ENOMEM`` if libcrypto
fails; ``EIO`` if the OS refuses random bytes.
"""

from __future__ import annotations

import errno
from typing import Any

from keyring_types.bindings._encrypted import ffi as _ffi
from keyring_types.bindings._encrypted import lib as _lib
from keyring_types.errors import error
from keyring_types.secret import SecretBuffer

__all__ = [
    "BLOCK_SIZE",
    "ECRYPTFS_AUTH_TOK_SIZE",
    "ECRYPTFS_SIG_SIZE",
    "HASH_SIZE",
    "IV",
    "IV_SIZE",
    "MAX_DATA",
    "Memory",
    "iv_bytes",
    "new_ecryptfs_token",
    "new_material",
    "new_secret",
    "random_into",
    "seal",
    "seal_export",
    "set_aesni",
    "unseal_into",
    "unseal_joined_into",
]

IV_SIZE: int = _lib.KT_ENC_IV_SIZE
HASH_SIZE: int = _lib.KT_ENC_HASH_SIZE
BLOCK_SIZE: int = _lib.KT_ENC_BLOCK
MAX_DATA: int = _lib.KT_ENC_MAX_DATA
ECRYPTFS_AUTH_TOK_SIZE: int = _lib.KT_ECRYPTFS_AUTH_TOK_SIZE
ECRYPTFS_SIG_SIZE: int = _lib.KT_ECRYPTFS_SIG_SIZE

#: Secret or plain memory: a SecretBuffer, or bytes / bytearray / memoryview.
Memory = SecretBuffer | bytes | bytearray | memoryview
#: An IV: 16 bytes, or the opaque native array :func:`new_secret` drew it into.
IV = Any

_CDATA = _ffi.CData


def _padded(n: int) -> int:
    return -(-n // BLOCK_SIZE) * BLOCK_SIZE


def _read_ptr(buf: object, offset: int, n: int, what: str) -> Any:
    """What C may read ``n`` bytes from, ``offset`` bytes into ``buf``; EINVAL if too short."""
    if type(buf) is SecretBuffer:
        # .address raises the wiped buffer's error (EKEYREVOKED).
        # One read of _ptr: another thread's wipe() may clear it at any moment, and the
        # pointer held here keeps the (then zeroed) block alive until C returns.
        ptr = buf._ptr
        if ptr is None:
            ptr = buf.address
        size = len(buf)
    elif type(buf) is bytes:
        ptr, size = buf, len(buf)
    elif isinstance(buf, (bytes, bytearray, memoryview)):
        ptr = _ffi.from_buffer(buf)
        size = _ffi.sizeof(ptr)
    else:
        raise error(errno.EINVAL, f"{what} must be a SecretBuffer or a bytes-like object, not {type(buf).__name__}")
    if offset < 0 or n < 0 or offset + n > size:
        raise error(errno.EINVAL, f"{what} holds {size} bytes, fewer than the {offset + n} asked for")
    if offset:
        return _ffi.cast("uint8_t *", ptr) + offset
    return ptr


def _whole(buf: object, what: str) -> tuple[Any, int]:
    """``(pointer, size)`` of all of ``buf`` for C to read; EINVAL for a wrong type."""
    if not isinstance(buf, (SecretBuffer, bytes, bytearray, memoryview)):
        raise error(errno.EINVAL, f"{what} must be a SecretBuffer or a bytes-like object, not {type(buf).__name__}")
    n = len(buf) if not isinstance(buf, memoryview) else buf.nbytes
    return _read_ptr(buf, 0, n, what), n


def _write_ptr(buf: object, offset: int, n: int, what: str) -> Any:
    """What C may write ``n`` bytes to, ``offset`` bytes into ``buf``; EINVAL if too short or read-only."""
    if type(buf) is SecretBuffer:
        return _read_ptr(buf, offset, n, what)
    if isinstance(buf, (bytearray, memoryview)):
        try:
            ptr = _ffi.from_buffer(buf, require_writable=True)
        except TypeError:
            raise error(errno.EINVAL, f"{what} is read-only") from None
        size = _ffi.sizeof(ptr)
        if offset < 0 or n < 0 or offset + n > size:
            raise error(errno.EINVAL, f"{what} holds {size} bytes, fewer than the {offset + n} asked for")
        return _ffi.cast("uint8_t *", ptr) + offset if offset else ptr
    raise error(errno.EINVAL, f"{what} must be a SecretBuffer, bytearray or writable memoryview, not {type(buf).__name__}")


def _check_iv(iv: IV) -> None:
    if type(iv) is bytes and len(iv) == IV_SIZE:
        return
    if isinstance(iv, _CDATA) and _ffi.typeof(iv).kind == "array" and _ffi.typeof(iv).length == IV_SIZE:
        return
    raise error(errno.EINVAL, f"the IV must be {IV_SIZE} bytes")


def _native_error(rc: int) -> OSError:
    if rc == _lib.KT_ENC_ERR_MAC:
        return error(errno.EINVAL, "encrypted key blob failed HMAC verification (wrong master key or tampered blob)")
    if rc == _lib.KT_ENC_ERR_SIZE:
        return error(errno.EINVAL, f"encrypted key data must be at most {MAX_DATA} bytes")
    return error(errno.ENOMEM, "libcrypto could not run AES-256-CBC / SHA-256 (out of memory?)")


def iv_bytes(iv: IV) -> bytes:
    """The IV as ``bytes``, whichever form it is held in; ``EINVAL`` if it is not an IV."""
    _check_iv(iv)
    if isinstance(iv, _CDATA):
        copy: bytes = _ffi.buffer(iv)[:]
        return copy
    return bytes(iv)


def seal(master: Memory, header: bytes, iv: bytes, data: Memory) -> tuple[bytes, bytes]:
    """AES-256-CBC of ``data`` (zero-padded) and its HMAC over ``header``: ``(ciphertext, mac)``.

    ``header`` is the datablob's ``fmt\\0master\\0datalen\\0`` rows.  ``EINVAL`` for
    a bad IV, data over 4096 bytes or a wrong argument type.
    """
    if type(iv) is not bytes:
        raise error(errno.EINVAL, f"the IV must be {IV_SIZE} bytes")
    _check_iv(iv)
    if type(header) is not bytes:
        raise error(errno.EINVAL, "the datablob header must be bytes")
    mptr, mlen = _whole(master, "the master key")
    dptr, n = _whole(data, "the data")
    ct = _ffi.new("uint8_t[]", max(_padded(n), 1))
    mac = _ffi.new("uint8_t[]", HASH_SIZE)
    rc = _lib.kt_enc_seal(mptr, mlen, header, len(header), iv, dptr, n, ct, mac)
    if rc:
        raise _native_error(rc)
    return _ffi.buffer(ct, _padded(n))[:], _ffi.buffer(mac, HASH_SIZE)[:]


def seal_export(master: Memory, header: bytes, iv: IV, data: Memory, datalen: int, offset: int = 0) -> bytes:
    """Seal ``datalen`` bytes of ``data`` (from ``offset``) under ``master`` and return
    what ``keyctl pipe`` prints for ``header``'s format, master and length.

    The master's length is the whole of ``master``.  ``EINVAL`` for a bad IV, data
    over 4096 bytes, a buffer shorter than asked or a wrong type; ``ENOMEM``.
    """
    # The read path of every encrypted key: SecretBuffers (the usual case) are
    # taken apart inline; everything else goes through the checked helpers.
    if type(master) is SecretBuffer and (mptr := master._ptr) is not None:
        mlen = master._size
    else:
        mptr, mlen = _whole(master, "the master key")
    if (
        type(data) is SecretBuffer
        and (dptr := data._ptr) is not None
        and 0 <= offset
        and 0 <= datalen
        and offset + datalen <= data._size
    ):
        if offset:
            dptr = _ffi.cast("uint8_t *", dptr) + offset
    else:
        dptr = _read_ptr(data, offset, datalen, "the data")
    # Inline, without a cffi call: 16 bytes, or a native array of 16 elements (len()
    # of a native pointer raises TypeError; C reads 16 bytes in either case).
    try:
        bad_iv = len(iv) != IV_SIZE or (type(iv) is not bytes and not isinstance(iv, _CDATA))
    except TypeError:
        bad_iv = True
    if bad_iv:
        _check_iv(iv)
    if type(header) is not bytes:
        raise error(errno.EINVAL, "the datablob header must be bytes")
    if datalen > MAX_DATA:
        raise _native_error(_lib.KT_ENC_ERR_SIZE)
    n = len(header) + 2 * (IV_SIZE + 1 + _padded(datalen) + HASH_SIZE)
    out = _ffi.new("uint8_t[]", n)
    rc = _lib.kt_enc_seal_export(mptr, mlen, header, len(header), iv, dptr, datalen, out)
    if rc:
        raise _native_error(rc)
    blob: bytes = _ffi.buffer(out, n)[:]
    return blob


def unseal_into(
    master: Memory, header: bytes, iv: bytes, ciphertext: bytes, mac: bytes, out: Memory, datalen: int, offset: int = 0
) -> None:
    """Verify the HMAC (constant time) and decrypt ``datalen`` bytes into ``out`` at ``offset``.

    ``header`` is the datablob rows (the legacy ones for a format-less blob).  The
    zero pad is dropped in C.  ``EINVAL`` for a bad HMAC, field sizes, a short
    ``out`` or a wrong type; ``ENOMEM``.  On error nothing is written to ``out``.
    """
    if len(iv) != IV_SIZE or len(ciphertext) != _padded(datalen) or len(mac) != HASH_SIZE:
        raise error(errno.EINVAL, "encrypted key blob fields have the wrong length")
    if type(iv) is not bytes or type(ciphertext) is not bytes or type(mac) is not bytes or type(header) is not bytes:
        raise error(errno.EINVAL, "the header, IV, ciphertext and MAC must be bytes")
    mptr, mlen = _whole(master, "the master key")
    optr = _write_ptr(out, offset, datalen, "the output buffer")
    rc = _lib.kt_enc_unseal(mptr, mlen, header, len(header), iv, ciphertext, mac, datalen, optr)
    if rc:
        raise _native_error(rc)


def unseal_joined_into(master: Memory, header: bytes, iv: bytes, ctmac: bytes, out: Memory, datalen: int, offset: int = 0) -> None:
    """:func:`unseal_into` with ciphertext and MAC in one buffer, as the blob holds them
    (``padded(datalen) + 32`` bytes).  Errors as :func:`unseal_into`."""
    # The load path of every encrypted key, SecretBuffers inline as in seal_export.
    if type(master) is SecretBuffer and (mptr := master._ptr) is not None:
        mlen = master._size
    else:
        mptr, mlen = _whole(master, "the master key")
    if (
        type(out) is SecretBuffer
        and (optr := out._ptr) is not None
        and 0 <= offset
        and 0 <= datalen
        and offset + datalen <= out._size
    ):
        if offset:
            optr = _ffi.cast("uint8_t *", optr) + offset
    else:
        optr = _write_ptr(out, offset, datalen, "the output buffer")
    if type(iv) is not bytes or len(iv) != IV_SIZE or type(ctmac) is not bytes or type(header) is not bytes:
        raise error(errno.EINVAL, "encrypted key blob fields have the wrong length")
    rc = _lib.kt_enc_unseal_joined(mptr, mlen, header, len(header), iv, ctmac, len(ctmac), datalen, optr)
    if rc:
        if rc == _lib.KT_ENC_ERR_SIZE and datalen <= MAX_DATA:
            raise error(errno.EINVAL, "encrypted key blob fields have the wrong length")
        raise _native_error(rc)


def random_into(out: Memory, n: int, offset: int = 0) -> None:
    """Fill ``n`` bytes of ``out`` at ``offset`` with random bytes from the kernel
    CSPRNG (buffered in C, ``_native/rand.h``), with no copy on the Python heap.

    ``EINVAL`` if ``out`` is shorter than ``offset + n`` or not writable memory;
    ``EIO`` if the OS refuses.
    """
    ptr = _write_ptr(out, offset, n, "the output buffer")
    if n and _lib.kt_rand_fill(ptr, n) != 0:
        raise error(errno.EIO, f"the OS RNG could not supply {n} bytes")


def new_secret(n: int) -> tuple[SecretBuffer, IV]:
    """A new key's ``n`` random data bytes in a new SecretBuffer, and its random IV,
    from one C call.  ``EINVAL`` for a negative ``n``, ``ENOMEM``, ``EIO``.

    The IV comes back as the native array it was drawn into: the seal reads it in
    place, and :func:`iv_bytes` copies it out.
    """
    data = SecretBuffer(n)
    iv = _ffi.new("char[16]")
    # data._ptr rather than data.address: the buffer was made just above.
    if _lib.kt_rand_fill2(iv, IV_SIZE, data._ptr, n):
        data.wipe()
        raise error(errno.EIO, f"the OS RNG could not supply {IV_SIZE + n} bytes")
    return data, iv


def new_material(out: Memory, n: int, offset: int = 0) -> IV:
    """``n`` random bytes written into ``out`` at ``offset`` and a new random IV (returned,
    as :func:`new_secret` returns it), from one C call.  ``EINVAL`` as :func:`random_into`, ``EIO``."""
    ptr = _write_ptr(out, offset, n, "the output buffer")
    iv = _ffi.new("char[16]")
    if _lib.kt_rand_fill2(iv, IV_SIZE, ptr, n):
        raise error(errno.EIO, f"the OS RNG could not supply {IV_SIZE + n} bytes")
    return iv


def new_ecryptfs_token(template: bytes, signature: bytes) -> tuple[SecretBuffer, IV]:
    """A new ecryptfs key's 740-byte auth token and its random IV, from one C call.

    C copies ``template`` (the token's fixed fields), writes ``signature`` (16
    characters) and 64 random key bytes in place.  ``EINVAL`` unless the two have
    exactly those sizes, ``ENOMEM``, ``EIO``.
    """
    if type(template) is not bytes or len(template) != ECRYPTFS_AUTH_TOK_SIZE:
        raise error(errno.EINVAL, f"the auth token template must be {ECRYPTFS_AUTH_TOK_SIZE} bytes")
    if type(signature) is not bytes or len(signature) != ECRYPTFS_SIG_SIZE:
        raise error(errno.EINVAL, f"an ecryptfs signature is {ECRYPTFS_SIG_SIZE} characters")
    tok = SecretBuffer(ECRYPTFS_AUTH_TOK_SIZE)
    iv = _ffi.new("char[16]")
    # tok._ptr, not tok.address: the buffer is made just above.
    if _lib.kt_enc_ecryptfs_new(tok._ptr, template, signature, iv):
        tok.wipe()
        raise error(errno.EIO, f"the OS RNG could not supply {IV_SIZE + _lib.KT_ECRYPTFS_KEY_BYTES} bytes")
    return tok, iv


def set_aesni(on: int) -> int:
    """Use the AES-NI path where the CPU has it (1), force libcrypto's EVP (0), or only
    ask (-1); returns whether AES-NI was in use before.  For tests that hold both
    paths to the reference.  ``EINVAL`` for any other value."""
    if on not in (-1, 0, 1) or isinstance(on, bool):
        raise error(errno.EINVAL, "set_aesni takes 1, 0 or -1")
    return int(_lib.kt_enc_set_aesni(on))
