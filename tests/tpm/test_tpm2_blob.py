"""The kernel's TPM 2.0 trusted-key blob (spec §2.4): encoding vectors, BER decoding, old format."""

from __future__ import annotations

import errno
import re
import shutil
import struct
import subprocess

import pytest
from conftest import require
from vector_data import load_vector_file

from keyring_types.trust.tpm2_blob import (
    Tpm2Blob,
    decode,
    decode_old_format,
    decode_tpmkey,
    encode_tpmkey,
)

# The kernel's TPMKey encoding (spec 2.4): tests/vectors/tpm2_tpmkey_der.json.
DER = load_vector_file("tpm2_tpmkey_der")
OID_HEX, EMPTY_AUTH_HEX = DER["sealed_data_oid"], DER["empty_auth"]
PARENT_81000001_HEX = next(v["integer"] for v in DER["vectors"] if v["parent"] == 0x81000001)


def tpm2b(body: bytes) -> bytes:
    return struct.pack(">H", len(body)) + body


def public_area(attributes: int, name_alg: int = 0x000B, policy: bytes = b"", unique: bytes = b"") -> bytes:
    """A marshalled TPM2B_PUBLIC of a KEYEDHASH sealed-data object, laid out as Part 2 12.2.4."""
    body = struct.pack(">HHI", 0x0008, name_alg, attributes) + tpm2b(policy) + struct.pack(">H", 0x0010) + tpm2b(unique)
    return tpm2b(body)


PUB = public_area(0x40, unique=bytes(range(32)))
PRIV = tpm2b(bytes(range(100, 200)))  # stands in for integrity || encrypted sensitive


# ---------------------------------------------------------------- encoder vectors


def test_spec_der_prefix_with_empty_auth() -> None:
    blob = encode_tpmkey(0x81000001, PUB, PRIV, empty_auth=True)
    body_len = 8 + 5 + 7 + (2 + len(PUB)) + (2 + len(PRIV))
    assert body_len >= 0x80  # so the container needs the 81 form, as in the spec's example
    expected_prefix = bytes.fromhex("3081") + bytes([body_len]) + bytes.fromhex(
        OID_HEX + EMPTY_AUTH_HEX + PARENT_81000001_HEX + "04"
    )
    assert blob.startswith(expected_prefix)
    # pub first, then priv, each with its size prefix kept inside the OCTET STRING
    pub_at = len(expected_prefix) + 1
    assert blob[pub_at - 2 : pub_at] == bytes([0x04, len(PUB)])
    assert blob[pub_at : pub_at + len(PUB)] == PUB
    rest = blob[pub_at + len(PUB) :]
    assert rest == bytes([0x04, len(PRIV)]) + PRIV
    assert len(blob) == 3 + body_len


def test_empty_auth_boolean_is_01_not_der_ff() -> None:
    blob = encode_tpmkey(0x81000001, PUB, PRIV, empty_auth=True)
    assert bytes.fromhex(EMPTY_AUTH_HEX) in blob
    assert b"\xa0\x03\x01\x01\xff" not in blob


def test_empty_auth_absent_when_blobauth_given() -> None:
    with_auth = encode_tpmkey(0x81000001, PUB, PRIV, empty_auth=False)
    without = encode_tpmkey(0x81000001, PUB, PRIV, empty_auth=True)
    assert b"\xa0" not in with_auth[:16]
    assert len(without) - len(with_auth) == 5
    assert with_auth[3:11] == bytes.fromhex(OID_HEX)
    assert with_auth[11:18] == bytes.fromhex(PARENT_81000001_HEX)


@pytest.mark.parametrize(
    ("parent", "encoded"),
    [(v["parent"], v["integer"]) for v in DER["vectors"]],
)
def test_parent_integer_is_minimal_with_leading_zero(parent: int, encoded: str) -> None:
    blob = encode_tpmkey(parent, PUB, PRIV, empty_auth=False)
    assert blob[11 : 11 + len(encoded) // 2] == bytes.fromhex(encoded)
    assert decode_tpmkey(blob).parent == parent


@pytest.mark.parametrize(
    ("priv_len", "header"),
    [
        (10, None),  # short form: the whole SEQUENCE body < 0x80
        (100, "3081"),
        (300, "3082"),
    ],
)
def test_length_forms(priv_len: int, header: str | None) -> None:
    pub = public_area(0x40)
    priv = tpm2b(b"\x55" * priv_len)
    blob = encode_tpmkey(0x81000001, pub, priv, empty_auth=True)
    body = len(blob) - (2 if header is None else len(header) // 2 + (1 if header == "3081" else 2))
    if header is None:
        assert blob[0] == 0x30 and blob[1] == body and body < 0x80
    elif header == "3081":
        assert blob[:2] == b"\x30\x81" and blob[2] == body
    else:
        assert blob[:2] == b"\x30\x82" and int.from_bytes(blob[2:4], "big") == body
    # the privkey OCTET STRING uses the same length rules
    octet_len = len(priv)
    if octet_len < 0x80:
        assert blob.endswith(bytes([0x04, octet_len]) + priv)
    elif octet_len <= 0xFF:
        assert blob.endswith(bytes([0x04, 0x81, octet_len]) + priv)
    else:
        assert blob.endswith(bytes([0x04, 0x82]) + octet_len.to_bytes(2, "big") + priv)
    assert decode(blob) == Tpm2Blob(public=pub, private=priv, parent=0x81000001, empty_auth=True, old_format=False)


def test_independent_der_parser_reads_our_blob() -> None:
    """openssl's ASN.1 parser (an implementation we did not write) sees the same structure."""
    require(shutil.which("openssl") is not None, "the openssl command")
    blob = encode_tpmkey(0x81000001, PUB, PRIV, empty_auth=True)
    out = subprocess.run(
        ["openssl", "asn1parse", "-inform", "DER"], input=blob, capture_output=True, check=True
    ).stdout.decode()
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*(\d+):d=(\d+)\s+hl=\d+ l=\s*\d+ (?:prim|cons): (.*)$", line)
        assert m, line
        head, _, value = m[3].partition(":")
        rows.append((int(m[1]), int(m[2]), head.replace("[HEX DUMP]", "").strip(), value.strip()))
    assert [(depth, kind) for _, depth, kind, _ in rows] == [
        (0, "SEQUENCE"),
        (1, "OBJECT"),
        (1, "cont [ 0 ]"),
        (2, "BOOLEAN"),
        (1, "INTEGER"),
        (1, "OCTET STRING"),
        (1, "OCTET STRING"),
    ]
    assert rows[1][3] == "2.23.133.10.1.5"
    assert rows[3][3] == "1"  # openssl prints the content byte: 01, the kernel's TRUE
    assert rows[4][3] == "81000001"
    assert rows[5][3] == PUB.hex().upper()
    assert rows[6][3] == PRIV.hex().upper()


def test_encoder_rejects_bad_input() -> None:
    with pytest.raises(OSError) as exc:
        encode_tpmkey(1 << 32, PUB, PRIV, empty_auth=True)
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        encode_tpmkey(0x81000001, PUB[:-1], PRIV, empty_auth=True)
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        encode_tpmkey(0x81000001, PUB, tpm2b(b"\x00" * 500), empty_auth=True)
    assert exc.value.errno == errno.E2BIG


# ---------------------------------------------------------------- decoder


def test_roundtrip_both_auth_forms() -> None:
    for empty in (True, False):
        got = decode(encode_tpmkey(0x81000002, PUB, PRIV, empty_auth=empty))
        assert got == Tpm2Blob(public=PUB, private=PRIV, parent=0x81000002, empty_auth=empty, old_format=False)


def _tlv(tag: int, body: bytes, long: bool = False) -> bytes:
    if long:
        return bytes([tag, 0x82]) + len(body).to_bytes(2, "big") + body
    return bytes([tag, len(body)]) + body if len(body) < 0x80 else bytes([tag, 0x81, len(body)]) + body


def test_decodes_ber_a_der_writer_or_old_kernel_might_produce() -> None:
    """DER TRUE (ff), non-minimal long lengths and indefinite-length constructed elements all load."""
    oid = bytes.fromhex(OID_HEX)
    explicit_indef = b"\xa0\x80" + b"\x01\x01\xff" + b"\x00\x00"
    body = oid + explicit_indef + _tlv(0x02, b"\x00\x81\x00\x00\x01", long=True) + _tlv(0x04, PUB, long=True)
    body += _tlv(0x04, PRIV)
    blob = b"\x30\x80" + body + b"\x00\x00"
    got = decode(blob)
    assert got == Tpm2Blob(public=PUB, private=PRIV, parent=0x81000001, empty_auth=True, old_format=False)


def test_old_format_decodes_priv_then_pub() -> None:
    raw = PRIV + PUB
    got = decode(raw)
    assert got == Tpm2Blob(public=PUB, private=PRIV, parent=None, empty_auth=False, old_format=True)
    assert decode_old_format(raw) == got


def test_other_oid_is_treated_as_old_format() -> None:
    # 2.23.133.10.1.3 is the TSS2 *loadable key* OID, not sealed data
    blob = bytearray(encode_tpmkey(0x81000001, PUB, PRIV, empty_auth=True))
    blob[10] = 0x03
    with pytest.raises(OSError) as exc:
        decode_tpmkey(bytes(blob))
    assert exc.value.errno == errno.EBADMSG
    with pytest.raises(OSError) as exc:
        decode(bytes(blob))  # not TPMKey -> old format -> sizes make no sense
    assert exc.value.errno == errno.E2BIG


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00", b"\x00\x01\x02", b"\x00\x05abc", b"\x00\x00\x00\x05ab", PRIV + PUB + b"\x00", PRIV + PUB[:-1]],
)
def test_old_format_size_checks_give_e2big(raw: bytes) -> None:
    with pytest.raises(OSError) as exc:
        decode(raw)
    assert exc.value.errno == errno.E2BIG


def test_oversize_blob_is_e2big() -> None:
    with pytest.raises(OSError) as exc:
        decode(b"\x00" * 513)
    assert exc.value.errno == errno.E2BIG


def test_inner_size_must_match_octet_string() -> None:
    blob = bytearray(encode_tpmkey(0x81000001, PUB, PRIV, empty_auth=True))
    pub_at = bytes(blob).index(PUB)
    blob[pub_at + 1] ^= 0x01  # TPM2B_PUBLIC size no longer equals its OCTET STRING
    with pytest.raises(OSError) as exc:
        decode(bytes(blob))
    assert exc.value.errno == errno.E2BIG


def test_every_single_bit_flip_in_the_container_is_refused_or_detectable() -> None:
    """A flipped bit either fails to decode or changes what the TPM is given.

    The TPM's integrity check covers the pub/priv contents (tests on swtpm);
    here every flip outside them must fail outright, and no flip may decode to
    the original parent/pub/priv.
    """
    blob = encode_tpmkey(0x81000001, PUB, PRIV, empty_auth=True)
    original = decode(blob)
    pub_at = blob.index(PUB)
    priv_at = blob.index(PRIV)
    parent_at = blob.index(bytes.fromhex(PARENT_81000001_HEX)) + 3  # the four handle bytes
    inner = set(range(pub_at + 2, pub_at + len(PUB))) | set(range(priv_at + 2, priv_at + len(PRIV)))
    inner |= set(range(parent_at, parent_at + 4))  # another handle: the TPM refuses (swtpm tests)
    for i in range(len(blob)):
        for bit in range(8):
            flipped = bytearray(blob)
            flipped[i] ^= 1 << bit
            try:
                got = decode(bytes(flipped))
            except OSError:
                continue
            assert i in inner, f"flip at byte {i} bit {bit} decoded"
            assert (got.parent, got.public, got.private) != (original.parent, original.public, original.private)


@pytest.mark.parametrize(
    ("attributes", "migratable"),
    [(0x00000040, True), (0x00000052, False), (0x00000000, True), (0x00000012, False), (0x00000042, True)],
)
def test_migratable_from_object_attributes(attributes: int, migratable: bool) -> None:
    blob = decode(encode_tpmkey(0x81000001, public_area(attributes), PRIV, empty_auth=True))
    assert blob.object_attributes == attributes
    assert blob.migratable is migratable


# ---------------------------------------------------------------- malformed input: always an errno


def test_nested_indefinite_lengths_are_ebadmsg_not_recursion_error() -> None:
    """Regression: each ``30 80`` opened a recursion level until RecursionError escaped."""
    for depth in (20, 600, 5000):
        for tail in (b"", b"\x00\x00" * depth):
            blob = b"\x30\x80" * depth + tail
            with pytest.raises(OSError) as exc:
                decode_tpmkey(blob)
            assert exc.value.errno == errno.EBADMSG
            with pytest.raises(OSError) as exc:
                decode(blob)
            assert exc.value.errno == errno.E2BIG


def test_shallow_indefinite_nesting_still_decodes() -> None:
    """The depth bound leaves room for what a BER writer produces: SEQUENCE and [0] both indefinite."""
    oid = bytes.fromhex(OID_HEX)
    body = oid + b"\xa0\x80\x01\x01\x01\x00\x00" + bytes.fromhex(PARENT_81000001_HEX)
    body += b"\x04" + bytes([len(PUB)]) + PUB + b"\x04" + bytes([len(PRIV)]) + PRIV
    got = decode_tpmkey(b"\x30\x80" + body + b"\x00\x00")
    assert (got.parent, got.public, got.private, got.empty_auth) == (0x81000001, PUB, PRIV, True)


@pytest.mark.parametrize("value", [None, 7, "30820101", ["a"], 1.5])
def test_wrong_typed_blob_is_einval(value: object) -> None:
    for fn in (decode, decode_tpmkey, decode_old_format):
        with pytest.raises(OSError) as exc:
            fn(value)  # type: ignore[arg-type]
        assert exc.value.errno == errno.EINVAL


def test_encoder_wrong_types_are_einval() -> None:
    for args in [("0x81000001", PUB, PRIV), (None, PUB, PRIV), (0x81000001, None, PRIV), (0x81000001, PUB, "ab")]:
        with pytest.raises(OSError) as exc:
            encode_tpmkey(*args, empty_auth=True)  # type: ignore[arg-type]
        assert exc.value.errno == errno.EINVAL


def _decoders_give_an_errno(data: bytes) -> None:
    for fn in (decode, decode_tpmkey, decode_old_format):
        try:
            got = fn(data)
        except OSError as exc:
            assert exc.errno in (errno.EBADMSG, errno.E2BIG, errno.EINVAL), (fn.__name__, exc)
        else:
            assert isinstance(got, Tpm2Blob)


def test_fuzz_decoders_only_raise_oserror() -> None:
    """Random bytes, and a valid blob with random bytes spliced in: never a non-OSError exception."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    valid = encode_tpmkey(0x81000001, PUB, PRIV, empty_auth=True)
    ber = st.sampled_from([b"\x30\x80", b"\xa0\x80", b"\x00\x00", b"\x30\x82\xff\xff", b"\x06\x00", b"\x02\x00", b"\x81"])

    @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.binary(max_size=600))
    def random_bytes(data: bytes) -> None:
        _decoders_give_an_errno(data)

    @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.integers(0, len(valid)), st.integers(0, 40), st.lists(ber | st.binary(max_size=6), max_size=30))
    def spliced(at: int, cut: int, pieces: list[bytes]) -> None:
        _decoders_give_an_errno(valid[:at] + b"".join(pieces) + valid[at + cut :])

    random_bytes()
    spliced()
