"""The encrypted-key blob functions: the kernel's known-answer vectors and each quirk (spec §1.4-§1.8)."""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import random
import re
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from vector_data import load_vectors

from keyring_types.types import encrypted_blob as eb

# Spec 1.4's vectors, tests/vectors/encrypted_blobs.json.
# Vector 1: kernel-made key, master = bytes 00..1f, "default user:kmk 32".
_V1, _V2 = load_vectors("encrypted_blobs")
V1_MASTER = bytes.fromhex(_V1["master"])
V1_ENC = _V1["enc_key"]
V1_AUTH = _V1["auth_key"]
V1_IV = _V1["iv"]
V1_CT = _V1["ciphertext"]
V1_MAC = _V1["mac"]
V1_HEX = V1_IV + "00" + V1_CT + V1_MAC
assert V1_HEX == _V1["blob_hex"]
V1_PLAIN = _V1["plaintext"]

# Vector 2: short master "password" (both derivation inputs padded to 32), datalen 20.
V2_MASTER = bytes.fromhex(_V2["master"])
V2_ENC = _V2["enc_key"]
V2_AUTH = _V2["auth_key"]
V2_HEX = _V2["blob_hex"]
V2_PLAIN = _V2["plaintext"]


def _unseal(master: bytes, fmt: str | None, mdesc: str, dstr: str, n: int, hexblob: str) -> bytes:
    buf = eb.unseal(master, fmt, mdesc, dstr, n, eb.parse_hex_blob(hexblob.encode(), n))
    try:
        return buf.tobytes()
    finally:
        buf.wipe()


# -- known answers --------------------------------------------------------------------------


def test_vector1_derived_keys() -> None:
    assert eb.derive_enc_key(V1_MASTER).hex() == V1_ENC
    assert eb.derive_auth_key(V1_MASTER).hex() == V1_AUTH


def test_vector1_decrypts_and_reseals_byte_for_byte() -> None:
    assert _unseal(V1_MASTER, "default", "user:kmk", "32", 32, V1_HEX).hex() == V1_PLAIN
    sealed = eb.seal(V1_MASTER, "default", "user:kmk", "32", bytes.fromhex(V1_IV), bytes.fromhex(V1_PLAIN))
    assert eb.export("default", "user:kmk", "32", sealed) == f"default user:kmk 32 {V1_HEX}".encode()
    assert eb.export_len("default", "user:kmk", "32", 32) == 182  # spec 1.3's length example


def test_vector2_short_master() -> None:
    assert eb.derive_enc_key(V2_MASTER).hex() == V2_ENC
    assert eb.derive_auth_key(V2_MASTER).hex() == V2_AUTH
    assert _unseal(V2_MASTER, "default", "user:tvm", "20", 20, V2_HEX).hex() == V2_PLAIN
    sealed = eb.seal(V2_MASTER, "default", "user:tvm", "20", bytes.fromhex(V2_HEX[:32]), bytes.fromhex(V2_PLAIN))
    assert eb.export("default", "user:tvm", "20", sealed).decode().split(" ")[3] == V2_HEX


def test_vector2_pad_bytes_are_zero() -> None:
    # The kernel pads with zeros (no PKCS#7): decrypt the raw ciphertext to see the pad.
    ct = bytes.fromhex(V2_HEX[34 : 34 + 64])
    dec = Cipher(algorithms.AES(bytes.fromhex(V2_ENC)), modes.CBC(bytes.fromhex(V2_HEX[:32]))).decryptor()
    raw = dec.update(ct) + dec.finalize()
    assert raw == bytes.fromhex(V2_PLAIN) + bytes(12)


# -- quirk: derivation ------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 8, 22, 23, 24, 32, 64, 300])
def test_derivation_buffer_rule(length: int) -> None:
    master = os.urandom(length)
    buflen = max(9 + length, 32)
    enc_in = (b"ENC_KEY\x00" + master).ljust(buflen, b"\x00")
    auth_in = (b"AUTH_KEY\x00" + master).ljust(buflen, b"\x00")
    assert eb.derive_enc_key(master) == hashlib.sha256(enc_in).digest()
    assert eb.derive_auth_key(master) == hashlib.sha256(auth_in).digest()


def test_enc_key_has_the_extra_zero_byte() -> None:
    # Naive label||0||master (no trailing zero) gives a different key for a 32-byte master.
    naive = hashlib.sha256(b"ENC_KEY\x00" + V1_MASTER).digest()
    assert eb.derive_enc_key(V1_MASTER) != naive
    assert eb.derive_enc_key(V1_MASTER) == hashlib.sha256(b"ENC_KEY\x00" + V1_MASTER + b"\x00").digest()
    # The AUTH label is the longer one, so its input has no trailing zero.
    assert eb.derive_auth_key(V1_MASTER) == hashlib.sha256(b"AUTH_KEY\x00" + V1_MASTER).digest()


def test_short_master_is_padded_to_32_bytes() -> None:
    unpadded = hashlib.sha256(b"AUTH_KEY\x00password").digest()
    assert eb.derive_auth_key(V2_MASTER) != unpadded
    assert eb.derive_auth_key(V2_MASTER) == hashlib.sha256(b"AUTH_KEY\x00password".ljust(32, b"\x00")).digest()
    # A consequence: trailing zeros on a short master do not change the keys.
    assert eb.derive_enc_key(b"password\x00") == eb.derive_enc_key(b"password")


def test_derivation_accepts_secret_views() -> None:
    from keyring_types.secret import SecretBuffer

    sb = SecretBuffer.from_bytes(V1_MASTER)
    try:
        assert eb.derive_enc_key(sb.view()).hex() == V1_ENC
    finally:
        sb.wipe()


# -- quirk: padding and lengths ----------------------------------------------------------------


@pytest.mark.parametrize(("n", "ct"), [(20, 32), (32, 32), (33, 48), (64, 64), (4096, 4096)])
def test_zero_padding_without_extra_block(n: int, ct: int) -> None:
    assert eb.padded_len(n) == ct
    sealed = eb.seal(V1_MASTER, "default", "user:k", str(n), os.urandom(16), os.urandom(n))
    assert len(sealed.ciphertext) == ct
    assert eb.hex_blob_len(n) == 2 * (16 + 1 + ct + 32)


def test_pad_is_not_checked_on_decrypt() -> None:
    # Garbage ciphertext with a valid HMAC decrypts without complaint (spec 1.5).
    iv, ct = os.urandom(16), os.urandom(32)
    header = eb.datablob_header("default", "user:k", "20")
    mac = eb.compute_hmac(eb.derive_auth_key(V1_MASTER), header, iv, ct)
    out = eb.unseal(V1_MASTER, "default", "user:k", "20", 20, eb.Sealed(iv, ct, mac))
    assert len(out) == 20
    out.wipe()


# -- quirk: separator byte ----------------------------------------------------------------------


def test_separator_is_skipped_on_parse_and_emitted_as_00() -> None:
    bad_sep = V1_HEX[:32] + "zz" + V1_HEX[34:]
    assert _unseal(V1_MASTER, "default", "user:kmk", "32", 32, bad_sep).hex() == V1_PLAIN
    sealed = eb.parse_hex_blob(bad_sep.encode(), 32)
    assert eb.export("default", "user:kmk", "32", sealed).decode().endswith(V1_HEX)


def test_gap_byte_is_covered_by_the_hmac() -> None:
    auth = eb.derive_auth_key(V1_MASTER)
    header = eb.datablob_header("default", "user:kmk", "32")
    iv, ct = bytes.fromhex(V1_IV), bytes.fromhex(V1_CT)
    assert eb.compute_hmac(auth, header, iv, ct).hex() == V1_MAC
    assert hmac.digest(auth, header + iv + ct, "sha256").hex() != V1_MAC
    assert hmac.digest(auth, header + iv + b"\x00" + ct, "sha256").hex() == V1_MAC


# -- quirk: the length word is echoed verbatim ------------------------------------------------


@pytest.mark.parametrize("word", ["+32", "032", "32\n"])
def test_length_word_is_macd_and_emitted_verbatim(word: str) -> None:
    assert eb.parse_datalen(word) == 32
    iv, data = os.urandom(16), os.urandom(32)
    sealed = eb.seal(V1_MASTER, "default", "user:kmk", word, iv, data)
    plain = eb.seal(V1_MASTER, "default", "user:kmk", "32", iv, data)
    assert sealed.ciphertext == plain.ciphertext and sealed.mac != plain.mac
    text = eb.export("default", "user:kmk", word, sealed)
    assert text.startswith(f"default user:kmk {word} ".encode())
    with pytest.raises(OSError) as ei:  # the MAC binds the exact spelling
        eb.unseal(V1_MASTER, "default", "user:kmk", "32", 32, sealed)
    assert ei.value.errno == errno.EINVAL


@pytest.mark.parametrize("word", ["0x20", "abc", "", " 32", "32 ", "32\n\n", "-32", "+-32", "3 2"])
def test_length_words_the_kernel_refuses(word: str) -> None:
    value = eb.parse_datalen(word)
    assert value is None or not 20 <= value <= 4096


# -- quirk: legacy (format-less) blobs --------------------------------------------------------


def test_legacy_hmac_excludes_the_format_row() -> None:
    iv, data = os.urandom(16), os.urandom(32)
    ct = eb.encrypt(eb.derive_enc_key(V1_MASTER), iv, data)
    auth = eb.derive_auth_key(V1_MASTER)
    legacy_mac = eb.compute_hmac(auth, eb.datablob_header(None, "user:kmk", "32"), iv, ct)
    assert eb.datablob_header(None, "user:kmk", "32") == b"user:kmk\x0032\x00"
    legacy = eb.Sealed(iv, ct, legacy_mac)
    out = eb.unseal(V1_MASTER, None, "user:kmk", "32", 32, legacy)
    assert out.tobytes() == data
    out.wipe()
    # A blob that names its format must carry the new-style MAC, and vice versa.
    with pytest.raises(OSError) as ei:
        eb.unseal(V1_MASTER, "default", "user:kmk", "32", 32, legacy)
    assert ei.value.errno == errno.EINVAL
    new_style = eb.seal(V1_MASTER, "default", "user:kmk", "32", iv, data)
    with pytest.raises(OSError):
        eb.unseal(V1_MASTER, None, "user:kmk", "32", 32, new_style)
    # Re-exported with the format word and the new-style MAC.
    assert eb.export("default", "user:kmk", "32", new_style).startswith(b"default ")


# -- parsing and tampering ---------------------------------------------------------------------


def test_hex_parse_accepts_uppercase() -> None:
    assert _unseal(V1_MASTER, "default", "user:kmk", "32", 32, V1_HEX.upper()).hex() == V1_PLAIN


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h[:-2],
        lambda h: h + "00",
        lambda h: "",
        lambda h: h[:40] + "g" + h[41:],
        lambda h: h[:40] + " " + h[41:],
        lambda h: h[:40] + "\n" + h[41:],
        lambda h: h[:-1] + "\n",
    ],
)
def test_hex_parse_rejects(mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as ei:
        eb.parse_hex_blob(mutate(V1_HEX).encode(), 32)
    assert ei.value.errno == errno.EINVAL


def test_every_byte_of_iv_ciphertext_and_mac_is_authenticated() -> None:
    raw = bytes.fromhex(V1_HEX)
    for i in range(len(raw)):
        if i == 16:
            continue  # the separator is not part of what is parsed
        flipped = bytearray(raw)
        flipped[i] ^= 0x01 << (i % 8)
        with pytest.raises(OSError) as ei:
            _unseal(V1_MASTER, "default", "user:kmk", "32", 32, flipped.hex())
        assert ei.value.errno == errno.EINVAL, i


def test_wrong_master_or_header_fails_hmac() -> None:
    for master, fmt, mdesc, dstr in [
        (bytes(range(1, 33)), "default", "user:kmk", "32"),
        (V1_MASTER, "enc32", "user:kmk", "32"),
        (V1_MASTER, "default", "user:kmx", "32"),
        (V1_MASTER, "default", "trusted:kmk", "32"),
    ]:
        with pytest.raises(OSError) as ei:
            _unseal(master, fmt, mdesc, dstr, 32, V1_HEX)
        assert ei.value.errno == errno.EINVAL


def test_roundtrip_many_lengths_and_formats() -> None:
    for fmt, n in [("default", 20), ("default", 33), ("default", 4096), ("enc32", 32), ("ecryptfs", 64)]:
        master = os.urandom(n % 50 + 1)
        data, iv = os.urandom(n), os.urandom(16)
        sealed = eb.seal(master, fmt, "user:m", str(n), iv, data)
        text = eb.export(fmt, "user:m", str(n), sealed)
        assert len(text) == eb.export_len(fmt, "user:m", str(n), n)
        word, mdesc, dstr, hexblob = text.decode().split(" ")
        assert (word, mdesc, dstr) == (fmt, "user:m", str(n))
        assert _unseal(master, fmt, mdesc, dstr, n, hexblob) == data


# -- ecryptfs auth token ------------------------------------------------------------------------


def test_ecryptfs_auth_token_layout() -> None:
    key = os.urandom(64)
    tok = eb.ecryptfs_auth_tok("0123456789ABCDEF", key)
    raw = tok.tobytes()
    assert len(raw) == 740
    assert struct.unpack_from("<HHI", raw, 0) == (0x0004, 0, 0)
    assert raw[8:628] == bytes(620)  # session key and reserved: zero
    assert struct.unpack_from("<IiIII", raw, 628) == (0, 10, 0, 64, 0x02)
    assert raw[648:712] == key
    assert raw[712:729] == b"0123456789ABCDEF\x00"
    assert raw[729:740] == bytes(11)
    assert eb.ecryptfs_key_view(tok).tobytes() == key
    tok.wipe()


@pytest.mark.parametrize("desc", ["0123456789abcde", "0123456789abcdef0", "0123456789abcdeg", ""])
def test_ecryptfs_description_rule(desc: str) -> None:
    assert not eb.valid_ecryptfs_desc(desc)
    with pytest.raises(OSError) as ei:
        eb.ecryptfs_auth_tok(desc, bytes(64))
    assert ei.value.errno == errno.EINVAL


def test_ecryptfs_description_rule_is_sixteen_hex_digits_on_random_strings() -> None:
    # The rule as the regex [0-9A-Fa-f]{16} states it, against the cheaper check.
    rng = random.Random("ecryptfs-desc")
    alphabet = "0123456789abcdefABCDEF" * 4 + "gGzZ \t\n-+\u00e9\u0660\uff10x"
    for _ in range(5000):
        desc = "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 15, 16, 16, 16, 17, 32])))
        assert eb.valid_ecryptfs_desc(desc) == (re.fullmatch("[0-9A-Fa-f]{16}", desc) is not None), desc


def test_ecryptfs_description_accepts_either_case() -> None:
    assert eb.valid_ecryptfs_desc("1000100010001000")
    assert eb.valid_ecryptfs_desc("abcdefABCDEF0123")


def test_parse_datalen_is_kstrtol_whatever_the_input() -> None:
    # Before the grammar module a length past int()'s 4300-digit limit raised ValueError.
    assert eb.parse_datalen("0" * 5000 + "32") == 32
    assert eb.parse_datalen("+" + "0" * 5000 + "32") == 32
    assert eb.parse_datalen(b"32\n") == 32
    for bad in ("9" * 5000, "-32", "0x20", "32 ", "", "\udcff", 32, None):
        assert eb.parse_datalen(bad) is None  # type: ignore[arg-type]


def test_parse_hex_blob_wrong_types_are_einval() -> None:
    for text, n in ((32, 32), (None, 32), (b"00" * 81, "32")):
        with pytest.raises(OSError) as info:
            eb.parse_hex_blob(text, n)  # type: ignore[arg-type]
        assert info.value.errno == errno.EINVAL
