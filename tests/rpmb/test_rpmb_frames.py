"""RPMB frames: spec vectors, a pure-Python reference of the layout, bit flips, errors."""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from hypothesis import given, settings
from hypothesis import strategies as st
from vector_data import load_vector_file

from keyring_types.hmac import HmacSha256, batch_lanes
from keyring_types.rpmb import RequestType, ResponseType, Result, codes
from keyring_types.rpmb import frames as F
from keyring_types.secret import SecretBuffer

# The spec's RPMB vectors and OP-TEE's public test key: tests/vectors/rpmb_frames.json.
RPMB_VECTORS = load_vector_file("rpmb_frames")
OPTEE_TEST_KEY = bytes.fromhex(RPMB_VECTORS["optee_test_key"])
TV = {v["id"]: v for v in RPMB_VECTORS["vectors"]}
_DATA_PATTERNS = {"ascending": bytes(range(256)), "descending": bytes(range(255, -1, -1)), "zero": bytes(256)}

# -- an independent reference of the layout (spec section 1.1) ---------------

LAYOUT = struct.Struct(">196s32s256s16sIHHHH")
assert LAYOUT.size == 512


def ref_frame(
    *,
    key_mac: bytes = bytes(32),
    data: bytes = bytes(256),
    nonce: bytes = bytes(16),
    counter: int = 0,
    address: int = 0,
    blocks: int = 0,
    result: int = 0,
    req_resp: int = 0,
) -> bytes:
    return LAYOUT.pack(bytes(196), key_mac, data, nonce, counter, address, blocks, result, req_resp)


def ref_mac(key: bytes, frames: bytes) -> bytes:
    h = c_hmac.HMAC(key, hashes.SHA256())
    for i in range(0, len(frames), 512):
        h.update(frames[i + 228 : i + 512])
    return h.finalize()


def ref_sign(key: bytes, frames: bytes) -> bytes:
    mac = ref_mac(key, frames)
    last = len(frames) - 512
    return frames[: last + 196] + mac + frames[last + 228 :]


# -- spec section 5 test vectors ------------------------------------------------


def tv_key(tv: dict[str, Any]) -> bytes:
    return OPTEE_TEST_KEY if tv["key"] == "optee_test_key" else bytes.fromhex(tv["key"])


def tv_data(tv: dict[str, Any]) -> bytes:
    return b"".join(_DATA_PATTERNS[name] for name in tv["data"])


TV3_DATA = tv_data(TV["TV3"])


@pytest.mark.parametrize("tv", RPMB_VECTORS["vectors"], ids=lambda tv: tv["id"])
def test_spec_vector(tv: dict[str, Any]) -> None:
    key, n = tv_key(tv), tv["frames"]
    fields = {k: tv[k] for k in ("write_counter", "address", "block_count", "result")}
    buf = F.build(tv["req_resp"], n, nonce=bytes.fromhex(tv["nonce"]), data=tv_data(tv), **fields)
    F.sign(key, buf)
    last = (n - 1) * 512
    assert bytes(buf[last + 196 : last + 228]).hex() == tv["mac"]
    assert all(bytes(buf[i * 512 + 196 : i * 512 + 228]) == bytes(32) for i in range(n - 1))  # only the last carries it
    assert F.verify(key, buf)
    if "covered_tail" in tv:
        # The tail of the covered region pins field order and endianness.
        assert bytes(buf[last + 484 : last + 512]).hex() == tv["covered_tail"]
    # The independent struct-based reference gives the same frames.
    ref = b"".join(
        ref_frame(
            data=tv_data(tv)[i * 256 : (i + 1) * 256], nonce=bytes.fromhex(tv["nonce"]), counter=tv["write_counter"],
            address=tv["address"], blocks=tv["block_count"], result=tv["result"], req_resp=tv["req_resp"],
        )
        for i in range(n)
    )
    assert bytes(buf) == ref_sign(key, ref)


def test_spec_vectors_through_the_builders() -> None:
    # TV1 and TV3 are authenticated-write requests, TV2 a device's counter-read response.
    tv1 = F.write_request(OPTEE_TEST_KEY, tv_data(TV["TV1"]), address=0, write_counter=0)
    assert bytes(tv1[196:228]).hex() == TV["TV1"]["mac"]
    tv2 = F.counter_read_response(OPTEE_TEST_KEY, nonce=bytes.fromhex(TV["TV2"]["nonce"]), write_counter=1)
    assert bytes(tv2[196:228]).hex() == TV["TV2"]["mac"]
    tv3 = F.write_request(OPTEE_TEST_KEY, TV3_DATA, address=0x0010, write_counter=7)
    assert len(tv3) == 1024
    assert bytes(tv3[512 + 196 : 512 + 228]).hex() == TV["TV3"]["mac"]
    assert bytes(tv3[196:228]) == bytes(32)
    tv4 = bytearray(512)
    F.sign(bytes(32), tv4)
    assert bytes(tv4[196:228]).hex() == TV["TV4"]["mac"]


# -- builders against the reference --------------------------------------------

keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=16, max_size=16)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def data_blocks(draw: Any, max_blocks: int = 8) -> bytes:
    n = draw(st.integers(1, max_blocks))
    seed = draw(st.binary(min_size=1, max_size=64))
    return (seed * (256 * n // len(seed) + 1))[: 256 * n]


@settings(max_examples=150, deadline=None)
@given(key=keys, data=data_blocks(), counter=u32, address=st.integers(0, 0xFFF0))
def test_write_request_matches_reference(key: bytes, data: bytes, counter: int, address: int) -> None:
    n = len(data) // 256
    got = F.write_request(key, data, address=address, write_counter=counter)
    ref = b"".join(
        ref_frame(data=data[256 * i : 256 * (i + 1)], counter=counter, address=address, blocks=n, req_resp=3)
        for i in range(n)
    )
    assert bytes(got) == ref_sign(key, ref)
    assert F.verify(key, got)
    assert F.verify(HmacSha256(key), bytes(got))


# The C side copies the covered regions into a 4 KiB buffer and hashes it
# whenever it fills: 14 regions fit, the 15th straddles the first refill, and
# 64 frames refill four times with a region split at each.
@pytest.mark.parametrize("n", [1, 14, 15, 16, 28, 29, 30, 64, 65, 200])
def test_sign_and_verify_across_the_gather_buffer(n: int) -> None:
    key = bytes(range(32))
    frames = bytes((i * 131 + (i >> 9)) & 0xFF for i in range(512 * n))
    buf = bytearray(frames)
    F.sign(key, buf)
    assert bytes(buf) == ref_sign(key, frames)
    assert F.verify(key, buf)
    assert HmacSha256(key).mac_parts(bytes(buf[i + 228 : i + 512]) for i in range(0, 512 * n, 512)) == (
        ref_mac(key, frames)
    )
    buf[512 * (n // 2) + 300] ^= 1
    assert not F.verify(key, buf)


@settings(max_examples=100, deadline=None)
@given(key=keys, data=data_blocks(), nonce=nonces, address=st.integers(0, 0xFFF0), result=st.sampled_from([0, 0x80]))
def test_read_response_matches_reference_and_checks(
    key: bytes, data: bytes, nonce: bytes, address: int, result: int
) -> None:
    n = len(data) // 256
    got = F.read_response(key, data, nonce=nonce, address=address, result=result)
    ref = b"".join(
        ref_frame(
            data=data[256 * i : 256 * (i + 1)], nonce=nonce, address=address, blocks=n, result=result, req_resp=0x400
        )
        for i in range(n)
    )
    assert bytes(got) == ref_sign(key, ref)
    resp = F.check_read_response(key, got, nonce=nonce, address=address, blocks=n)
    assert resp.data() == data
    assert resp.block_count == n and resp.authenticated
    assert resp.expired == bool(result & 0x80)


@settings(max_examples=100, deadline=None)
@given(key=keys, nonce=nonces, counter=u32)
def test_counter_read_exchange(key: bytes, nonce: bytes, counter: int) -> None:
    req = F.counter_read_request(nonce)
    assert bytes(req) == ref_frame(nonce=nonce, req_resp=2)
    resp = F.counter_read_response(key, nonce=nonce, write_counter=counter)
    assert bytes(resp) == ref_sign(key, ref_frame(nonce=nonce, counter=counter, req_resp=0x200))
    assert F.check_counter_response(key, resp, nonce=nonce).write_counter == counter


@settings(max_examples=100, deadline=None)
@given(key=keys, counter=st.integers(0, 0xFFFFFFFE), address=u16)
def test_write_result_exchange(key: bytes, counter: int, address: int) -> None:
    resp = F.write_response(key, address=address, write_counter=counter + 1)
    assert bytes(resp) == ref_sign(key, ref_frame(counter=counter + 1, address=address, req_resp=0x300))
    assert F.check_write_response(key, resp, address=address, write_counter=counter).write_counter == counter + 1
    stale = F.write_response(key, address=address, write_counter=counter)  # counter did not advance
    with pytest.raises(OSError) as ei:
        F.check_write_response(key, stale, address=address, write_counter=counter)
    assert ei.value.errno == errno.EBADMSG and "write counter" in str(ei.value)


@settings(max_examples=100, deadline=None)
@given(
    key_mac=st.binary(min_size=32, max_size=32),
    data=st.binary(min_size=256, max_size=256),
    nonce=nonces,
    counter=u32,
    address=u16,
    blocks=u16,
    result=u16,
    req_resp=u16,
)
def test_frame_view_and_unpack_match_reference(
    key_mac: bytes, data: bytes, nonce: bytes, counter: int, address: int, blocks: int, result: int, req_resp: int
) -> None:
    raw = ref_frame(
        key_mac=key_mac, data=data, nonce=nonce, counter=counter, address=address, blocks=blocks,
        result=result, req_resp=req_resp,
    )
    fr = F.Frame(raw)
    assert (bytes(fr.key_mac), bytes(fr.data), bytes(fr.nonce)) == (key_mac, data, nonce)
    assert (fr.write_counter, fr.address, fr.block_count, fr.result, fr.req_resp) == (
        counter, address, blocks, result, req_resp,
    )
    assert bytes(fr.stuff) == bytes(196) and bytes(fr.mac_input) == raw[228:]
    assert F.unpack(raw) == {
        "write_counter": counter, "address": address, "block_count": blocks, "result": result, "req_resp": req_resp,
    }
    # Writing through the view reproduces the reference bytes.
    out = bytearray(512)
    w = F.Frame(out)
    w.key_mac, w.data, w.nonce = key_mac, data, nonce
    w.write_counter, w.address, w.block_count, w.result, w.req_resp = counter, address, blocks, result, req_resp
    assert bytes(out) == raw
    assert bytes(F.build(req_resp, write_counter=counter, address=address, block_count=blocks, result=result,
                         nonce=nonce, data=data, key_mac=key_mac)) == raw


def test_unpack_takes_a_parsed_frame() -> None:
    # docs/rpmb.md pairs parse(buf) -> list[Frame] with unpack(frame): a Frame is accepted.
    buf = F.write_request(OPTEE_TEST_KEY, TV3_DATA, address=0x0010, write_counter=7)
    fields = [F.unpack(fr) for fr in F.parse(buf)]
    assert fields == [F.unpack(bytes(buf[i : i + 512])) for i in (0, 512)]
    assert fields[1] == {"write_counter": 7, "address": 0x10, "block_count": 2, "result": 0, "req_resp": 3}


def test_request_layouts() -> None:
    key = bytes(range(32))
    assert bytes(F.program_key_request(key)) == ref_frame(key_mac=key, req_resp=1)
    assert bytes(F.result_read_request()) == ref_frame(req_resp=5)
    assert bytes(F.result_read_request(block_count=1)) == ref_frame(blocks=1, req_resp=5)  # virtio flavour
    n = bytes(range(16, 32))
    assert bytes(F.read_request(n, address=9)) == ref_frame(nonce=n, address=9, req_resp=4)  # eMMC: count 0
    assert bytes(F.read_request(n, address=9, block_count=4)) == ref_frame(nonce=n, address=9, blocks=4, req_resp=4)
    assert bytes(F.program_key_response(Result.OK)) == ref_frame(req_resp=0x100)
    assert F.request_type(F.write_request(key, bytes(768), address=0, write_counter=0)) == RequestType.AUTH_WRITE


def test_program_key_into_secret_memory() -> None:
    key = bytes(range(100, 132))
    sb = SecretBuffer(512)
    F.program_key_request(SecretBuffer.from_bytes(key), out=sb.writable())
    assert bytes(sb.view()[196:228]) == key and sb.view()[510:512] == b"\x00\x01"
    sb.wipe()


@pytest.mark.parametrize("lanes", [1, 2, 16])
def test_sign_each_is_independent_single_frame_macs(lanes: int) -> None:
    key = b"\x5a" * 32
    frames = bytearray(
        b"".join(ref_frame(nonce=bytes([i]) * 16, counter=i, req_resp=0x200) for i in range(35))
    )
    was = batch_lanes(lanes)
    try:
        F.sign_each(key, frames)
    finally:
        batch_lanes(was)
    for i in range(35):
        one = bytes(frames[512 * i : 512 * (i + 1)])
        assert one[196:228] == ref_mac(key, one)
        assert F.verify(key, one)


# -- key sources ----------------------------------------------------------------


class FakeKey:
    """Anything with a secret() context manager, as keyring_types.Key has."""

    def __init__(self, key: bytes) -> None:
        self.sb = SecretBuffer.from_bytes(key)

    @contextmanager
    def secret(self) -> Iterator[memoryview]:
        mv = self.sb.view()
        try:
            yield mv
        finally:
            mv.release()  # raises if frames kept an export of the view


def test_key_sources_agree() -> None:
    key = bytes(range(7, 39))
    data = bytes(range(256)) * 2
    expect = F.write_request(key, data, address=3, write_counter=11)
    for source in (key, bytearray(key), memoryview(key), SecretBuffer.from_bytes(key), HmacSha256(key), FakeKey(key)):
        assert F.write_request(source, data, address=3, write_counter=11) == expect
        assert F.verify(source, expect)


def test_keyspace_user_key_signs_frames() -> None:
    import keyring_types as kt

    ks = kt.Keyspace()
    key = bytes(range(64, 96))
    k = ks.add_key("user", "rpmb:emmc0", key, kt.KEY_SPEC_SESSION_KEYRING)
    buf = F.write_request(k, bytes(256), address=0, write_counter=0)
    assert F.verify(key, buf)
    assert bytes(F.program_key_request(k)[196:228]) == key
    short = ks.add_key("user", "rpmb:short", bytes(16), kt.KEY_SPEC_SESSION_KEYRING)
    for call in (lambda: F.sign(short, bytearray(512)), lambda: F.program_key_request(short)):
        with pytest.raises(OSError) as ei:
            call()
        assert ei.value.errno == errno.EINVAL


def test_wrong_length_key_is_einval_and_releases_views() -> None:
    for key in (bytes(31), bytes(33), FakeKey(bytes(16)), SecretBuffer(20)):
        with pytest.raises(OSError) as ei:
            F.sign(key, bytearray(512))
        assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        F.program_key_request(FakeKey(bytes(31)))
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        F.sign(object(), bytearray(512))
    assert ei.value.errno == errno.EINVAL


# -- tampering: every covered bit and every MAC bit ------------------------------


def flips(buf: bytes, ranges: list[range]) -> Iterator[bytes]:
    for r in ranges:
        for byte in r:
            for bit in range(8):
                bad = bytearray(buf)
                bad[byte] ^= 1 << bit
                yield bytes(bad)


def covered_and_mac(n: int) -> list[range]:
    """The bytes a response's MAC protects, plus the MAC itself in the last frame."""
    rs = [range(512 * i + 228, 512 * (i + 1)) for i in range(n)]
    return [*rs, range(512 * (n - 1) + 196, 512 * (n - 1) + 228)]


@pytest.mark.parametrize(
    "make,check",
    [
        (
            lambda k: F.counter_read_response(k, nonce=b"N" * 16, write_counter=41),
            lambda k, b: F.check_counter_response(k, b, nonce=b"N" * 16),
        ),
        (
            lambda k: F.write_response(k, address=77, write_counter=42),
            lambda k, b: F.check_write_response(k, b, address=77, write_counter=41),
        ),
        (
            lambda k: F.read_response(k, bytes(range(256)) * 3, nonce=b"R" * 16, address=5),
            lambda k, b: F.check_read_response(k, b, nonce=b"R" * 16, address=5, blocks=3),
        ),
    ],
    ids=["counter", "write", "read3"],
)
def test_every_single_bit_flip_is_rejected(
    make: Callable[[bytes], bytearray], check: Callable[[Any, bytes], F.Response]
) -> None:
    key = OPTEE_TEST_KEY
    h = HmacSha256(key)
    good = bytes(make(key))
    check(h, good)
    n = len(good) // 512
    count = 0
    for bad in flips(good, covered_and_mac(n)):
        assert not F.verify(h, bad)
        with pytest.raises(OSError) as ei:
            check(h, bad)
        # A flipped result bit surfaces as the device error it now claims; all
        # else is a bad message.  Nothing passes.
        assert ei.value.errno in (errno.EBADMSG, errno.EIO, errno.EKEYREJECTED, errno.ESTALE,
                                  errno.EINVAL, errno.ENOKEY, errno.EOPNOTSUPP)
        count += 1
    assert count == (284 * n + 32) * 8


def test_stuff_bytes_and_early_mac_fields_are_not_covered() -> None:
    key = OPTEE_TEST_KEY
    good = bytes(F.read_response(key, bytes(512), nonce=bytes(16), address=0))
    for bad in flips(good, [range(0, 196), range(512, 512 + 196), range(196, 228)]):
        assert F.verify(key, bad)


# -- response check semantics -----------------------------------------------------


def test_check_reports_mac_type_result_and_fields() -> None:
    key = OPTEE_TEST_KEY
    nonce = bytes(range(16))
    good = F.counter_read_response(key, nonce=nonce, write_counter=3)

    with pytest.raises(OSError) as ei:
        F.check_counter_response(b"\x01" * 32, good, nonce=nonce)
    assert ei.value.errno == errno.EBADMSG and "MAC" in str(ei.value)

    with pytest.raises(OSError) as ei:
        F.check_counter_response(key, good, nonce=bytes(16))
    assert ei.value.errno == errno.EBADMSG and "nonce" in str(ei.value)

    with pytest.raises(OSError) as ei:
        F.check_response(key, good, expect=ResponseType.AUTH_WRITE)
    assert ei.value.errno == errno.EBADMSG and "0x0200" in str(ei.value)

    with pytest.raises(OSError) as ei:
        F.check_response(key, good, expect=ResponseType.READ_COUNTER, write_counter=4, address=1, block_count=1)
    assert ei.value.errno == errno.EBADMSG
    assert all(w in str(ei.value) for w in ("write counter", "address", "block count"))

    w = F.write_response(key, address=8, write_counter=10)
    with pytest.raises(OSError) as ei:
        F.check_write_response(key, w, address=9, write_counter=9)
    assert ei.value.errno == errno.EBADMSG and "address" in str(ei.value)


@pytest.mark.parametrize(
    "result,err",
    [
        (Result.GENERAL_FAILURE, errno.EIO),
        (Result.AUTH_FAILURE, errno.EKEYREJECTED),
        (Result.COUNTER_FAILURE, errno.ESTALE),
        (Result.ADDRESS_FAILURE, errno.EINVAL),
        (Result.WRITE_FAILURE | codes.COUNTER_EXPIRED, errno.EIO),
        (Result.KEY_NOT_PROGRAMMED, errno.ENOKEY),
        (0x3F, errno.EIO),
    ],
)
def test_device_results_map_to_errno(result: int, err: int) -> None:
    key = OPTEE_TEST_KEY
    resp = F.write_response(key, address=0, write_counter=1, result=result)
    with pytest.raises(OSError) as ei:
        F.check_write_response(key, resp, address=0, write_counter=0)
    assert ei.value.errno == err
    assert codes.result_name(result).split("+")[0] in str(ei.value)


def test_expired_flag_on_ok_result_passes() -> None:
    key = OPTEE_TEST_KEY
    resp = F.counter_read_response(key, nonce=bytes(16), write_counter=0xFFFFFFFF, result=codes.COUNTER_EXPIRED)
    r = F.check_counter_response(key, resp, nonce=bytes(16))
    assert r.expired and r.write_counter == 0xFFFFFFFF
    with pytest.raises(OSError) as ei:
        F.check_write_response(key, resp, address=0, write_counter=0xFFFFFFFF)
    assert ei.value.errno == errno.EINVAL


def test_program_key_response_needs_no_mac() -> None:
    r = F.check_program_key_response(F.program_key_response())
    assert r.req_resp == 0x100 and not r.authenticated
    with pytest.raises(OSError) as ei:
        F.check_program_key_response(F.program_key_response(Result.GENERAL_FAILURE))
    assert ei.value.errno == errno.EIO


def test_read_response_type_checked_on_every_frame() -> None:
    key = OPTEE_TEST_KEY
    buf = F.read_response(key, bytes(768), nonce=bytes(16), address=0)
    buf[510:512] = b"\x03\x00"  # first frame claims to be a write response
    F.sign(key, buf)  # even with a valid MAC
    with pytest.raises(OSError) as ei:
        F.check_read_response(key, buf, nonce=bytes(16), address=0)
    assert ei.value.errno == errno.EBADMSG


# -- malformed input -----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 511, 513, 1000, 1025])
def test_bad_lengths_are_einval(size: int) -> None:
    key = OPTEE_TEST_KEY
    buf = bytearray(size)
    calls: list[Callable[[], object]] = [
        lambda: F.sign(key, buf),
        lambda: F.sign_each(key, buf),
        lambda: F.verify(key, buf),
        lambda: F.parse(buf),
        lambda: F.check_response(key, buf, expect=0x200),
        lambda: F.unpack(buf),
    ]
    if size != 512:
        calls.append(lambda: F.Frame(buf))
    for call in calls:
        with pytest.raises(OSError) as ei:
            call()
        assert ei.value.errno == errno.EINVAL


def test_bad_arguments_are_einval_and_leave_out_untouched() -> None:
    key = OPTEE_TEST_KEY
    out = bytearray(b"\xee" * 512)
    calls: list[Callable[[], object]] = [
        lambda: F.sign(key, bytes(512)),  # read-only
        lambda: F.sign(key, memoryview(bytearray(1024))[::2]),  # not contiguous
        lambda: F.counter_read_request(bytes(15), out=out),
        lambda: F.counter_read_request(bytes(17), out=out),
        lambda: F.write_request(key, bytes(255), address=0, write_counter=0, out=out),
        lambda: F.write_request(key, b"", address=0, write_counter=0, out=out),
        lambda: F.write_request(key, bytes(512), address=0xFFFF, write_counter=0),  # runs past the last block
        lambda: F.write_request(key, bytes(256), address=0, write_counter=-1, out=out),
        lambda: F.write_request(key, bytes(256), address=0, write_counter=1 << 32, out=out),
        lambda: F.read_request(bytes(16), address=0x10000, out=out),
        lambda: F.build(0x10000, out=out),
        lambda: F.build(1, 0, out=out),
        lambda: F.build(1, out=bytearray(1024)),  # out is not exactly one frame
        lambda: F.program_key_request(bytes(31), out=out),
        lambda: F.check_response(key, bytes(512), expect=0x200, nonce=bytes(3)),
        lambda: F.check_response(key, bytes(1024), expect=0x400, frames=1),
        lambda: F.Frame(bytearray(512)).__setattr__("address", 70000),
        lambda: F.Frame(bytearray(512)).__setattr__("nonce", bytes(4)),
        lambda: F.Frame(bytes(512)).__setattr__("write_counter", 1),  # read-only frame
        lambda: F.parse(bytes(512))[0].__setattr__("data", bytes(256)),
    ]
    for call in calls:
        with pytest.raises(OSError) as ei:
            call()
        assert ei.value.errno == errno.EINVAL
    assert out == b"\xee" * 512


def test_mixed_request_types_rejected() -> None:
    buf = F.write_request(OPTEE_TEST_KEY, bytes(512), address=0, write_counter=0)
    F.Frame(memoryview(buf)[512:]).req_resp = RequestType.AUTH_READ
    with pytest.raises(OSError) as ei:
        F.request_type(buf)
    assert ei.value.errno == errno.EINVAL
