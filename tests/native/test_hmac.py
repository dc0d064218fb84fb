"""HmacSha256: RFC 4231 vectors, agreement with `cryptography`, errors, key wiping, GIL release."""

from __future__ import annotations

import ctypes
import errno
import itertools
import mmap
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from hypothesis import given, settings
from hypothesis import strategies as st
from vector_data import load_vectors

from keyring_types.hmac import HmacSha256, batch_lanes
from keyring_types.secret import SecretBuffer, live_secret_bytes


def ref_mac(key: bytes, data: bytes) -> bytes:
    h = c_hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


# RFC 4231 section 4: (key, data, HMAC-SHA-256, compare only the first n bytes).
RFC4231 = [
    pytest.param(bytes.fromhex(v["key"]), bytes.fromhex(v["data"]), v["hmac_sha256"], v["compare_bytes"], id=f"case{v['case']}")
    for v in load_vectors("hmac_sha256_rfc4231")
]


LANES = [1, 2, 16]


@pytest.fixture(params=LANES, ids=[f"lanes{n}" for n in LANES])
def lanes(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run a test on each batch kernel.  A CPU without SHA-NI or AVX-512 falls
    back to a narrower kernel; the MACs must be right whichever runs."""
    was = batch_lanes(request.param)
    try:
        yield batch_lanes(None)
    finally:
        batch_lanes(was)


@pytest.mark.parametrize("key,data,expect,n", RFC4231)
def test_rfc4231(key: bytes, data: bytes, expect: str, n: int) -> None:
    h = HmacSha256(key)
    assert h.mac(data)[:n].hex() == expect
    assert h.mac_parts([data[:3], bytearray(data[3:]), b""])[:n].hex() == expect
    assert h.mac_batch(data * 3, len(data))[32 : 32 + n].hex() == expect
    assert h.verify(data, h.mac(data))


@pytest.mark.parametrize("key,data,expect,n", RFC4231)
def test_rfc4231_batch_every_kernel(lanes: int, key: bytes, data: bytes, expect: str, n: int) -> None:
    tags = HmacSha256(key).mac_batch(data * 37, len(data))  # 16 + 16 + 2 + 2 + 1
    assert all(tags[32 * i : 32 * i + n].hex() == expect for i in range(37))


@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=200), data=st.binary(max_size=700), cut=st.lists(st.integers(0, 700), max_size=6))
def test_matches_cryptography(key: bytes, data: bytes, cut: list[int]) -> None:
    h = HmacSha256(key)
    expect = ref_mac(key, data)
    assert h.mac(data) == expect
    assert h.mac(bytearray(data)) == expect
    assert h.mac(memoryview(data)) == expect
    points = sorted({0, len(data), *(c for c in cut if c <= len(data))})
    parts = [memoryview(data)[a:b] for a, b in itertools.pairwise(points)]
    assert h.mac_parts(parts) == expect
    assert h.verify(data, expect)


@settings(max_examples=100, deadline=None)
@given(
    key=st.binary(min_size=1, max_size=80),
    msg_len=st.integers(1, 300),
    n=st.integers(0, 40),
    seed=st.binary(min_size=1, max_size=64),
    lanes=st.sampled_from(LANES),
)
def test_batch_matches_cryptography(key: bytes, msg_len: int, n: int, seed: bytes, lanes: int) -> None:
    buf = (seed * (msg_len * n // len(seed) + 1))[: msg_len * n]
    was = batch_lanes(lanes)
    try:
        tags = HmacSha256(key).mac_batch(buf, msg_len)
    finally:
        batch_lanes(was)
    assert tags == b"".join(ref_mac(key, buf[i * msg_len : (i + 1) * msg_len]) for i in range(n))


@pytest.mark.parametrize("msg_len", [*range(1, 130), 191, 192, 255, 256, 284, 300, 511, 512])
def test_every_tail_length_on_every_kernel(lanes: int, msg_len: int) -> None:
    """Every remainder mod 64 (the AVX-512 kernel reads tails with masked loads
    and pads them in registers; >= 56 needs an extra length block) and whole
    groups of 16 plus leftovers for the narrower kernels."""
    key = bytes(range(7, 7 + 45))
    n = 35
    buf = bytes((i * 131 + 17) % 251 for i in range(msg_len * n))
    tags = HmacSha256(key).mac_batch(buf, msg_len)
    assert tags == b"".join(ref_mac(key, buf[i * msg_len : (i + 1) * msg_len]) for i in range(n))


@pytest.mark.parametrize("n", [16, 17, 31, 32, 48, 160, 163])
def test_many_groups_of_rpmb_inputs(lanes: int, n: int) -> None:
    """284-byte messages (the RPMB MAC input) in several groups of 16: the
    AVX-512 kernel fetches each group's first block during the previous
    group's outer hash, so every message must still get its own tag."""
    key = b"rpmb-key" * 4
    buf = b"".join(bytes([i % 256, (i >> 8) % 256]) * 142 for i in range(n))
    tags = HmacSha256(key).mac_batch(buf, 284)
    assert tags == b"".join(ref_mac(key, buf[i * 284 : (i + 1) * 284]) for i in range(n))
    assert len(set(tags[i * 32 : (i + 1) * 32] for i in range(n))) == n


def _guarded(size: int) -> tuple[mmap.mmap, memoryview]:
    """``size`` writable bytes that end exactly where an inaccessible page begins."""
    page = mmap.PAGESIZE
    pages = (size + page - 1) // page
    m = mmap.mmap(-1, (pages + 1) * page)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    assert libc.mprotect(base + pages * page, page, 0) == 0  # PROT_NONE
    return m, memoryview(m)[pages * page - size : pages * page]


@pytest.mark.parametrize("msg_len", [1, 28, 55, 56, 63, 64, 284])
def test_batch_never_reads_past_the_last_message(lanes: int, msg_len: int) -> None:
    """The last message ends at a PROT_NONE page: a kernel reading one byte
    too many would crash the test process."""
    n = 32
    m, view = _guarded(msg_len * n)
    data = bytes((i * 7 + 3) % 256 for i in range(msg_len * n))
    view[:] = data
    key = b"guard" * 7
    tags = HmacSha256(key).mac_batch(view, msg_len)
    assert tags == b"".join(ref_mac(key, data[i * msg_len : (i + 1) * msg_len]) for i in range(n))
    view.release()
    m.close()


def test_batch_into_out_buffer() -> None:
    h = HmacSha256(b"k" * 32)
    buf = bytes(range(256)) * 4
    out = bytearray(4 * 32 + 7)
    assert h.mac_batch(buf, 256, out=out) is None
    assert bytes(out[:128]) == h.mac_batch(buf, 256)
    assert out[128:] == bytes(7)


def test_verify_rejects_every_bit_flip_of_tag_and_data() -> None:
    h = HmacSha256(b"\x42" * 32)
    data = bytes(range(100))
    tag = h.mac(data)
    assert h.verify(data, tag)
    for i in range(len(tag) * 8):
        bad = bytearray(tag)
        bad[i // 8] ^= 1 << (i % 8)
        assert not h.verify(data, bad)
    for i in range(len(data) * 8):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        assert not h.verify(bad, tag)


@pytest.mark.parametrize("msg_len", [0, -1, 2.5, None])
def test_batch_bad_message_length(msg_len: object) -> None:
    with pytest.raises(OSError) as ei:
        HmacSha256(b"k").mac_batch(b"abcd", msg_len)  # type: ignore[arg-type]
    assert ei.value.errno == errno.EINVAL


def test_malformed_lengths_and_buffers_are_einval() -> None:
    h = HmacSha256(b"k" * 32)
    cases = [
        lambda: h.mac_batch(b"abcde", 2),  # not whole messages
        lambda: h.verify(b"x", bytes(31)),  # short tag
        lambda: h.verify(b"x", bytes(33)),  # long tag
        lambda: h.mac("text"),  # type: ignore[arg-type]  # not bytes-like
        lambda: h.mac(memoryview(b"abcdef")[::2]),  # not contiguous
        lambda: h.mac_parts([b"a", 3]),  # type: ignore[list-item]
        lambda: h.mac_batch(b"abcd", 2, out=bytearray(63)),  # out too small
        lambda: h.mac_batch(b"abcd", 2, out=bytes(64)),  # type: ignore[arg-type]  # read-only out
    ]
    for case in cases:
        with pytest.raises(OSError) as ei:
            case()
        assert ei.value.errno == errno.EINVAL, case


def test_batch_lanes_rejects_unknown_kernels() -> None:
    for bad in (3, -1, 32):
        with pytest.raises(OSError) as ei:
            batch_lanes(bad)
        assert ei.value.errno == errno.EINVAL
    assert batch_lanes(None) in (1, 2, 16)


def test_empty_batch_and_parts() -> None:
    h = HmacSha256(b"key")
    assert h.mac_batch(b"", 16) == b""
    assert h.mac_parts([]) == ref_mac(b"key", b"")


def test_key_state_lives_in_secret_memory_and_is_wiped(quiet_secret_memory: None) -> None:
    before = live_secret_bytes()
    h = HmacSha256(b"s" * 32)
    assert live_secret_bytes() > before
    assert "s" not in repr(h)
    h.wipe()
    assert live_secret_bytes() == before
    for call in (lambda: h.mac(b"x"), lambda: h.mac_batch(b"xx", 1), lambda: h.verify(b"x", bytes(32))):
        with pytest.raises(OSError) as ei:
            call()
        assert ei.value.errno == errno.EKEYREVOKED
    h.wipe()  # idempotent


def test_destroying_the_object_frees_the_state(quiet_secret_memory: None) -> None:
    before = live_secret_bytes()
    h = HmacSha256(b"t" * 32)
    assert live_secret_bytes() > before
    del h
    assert live_secret_bytes() == before
    with HmacSha256(b"u" * 32) as h2:
        h2.mac(b"")
    assert live_secret_bytes() == before


def test_key_from_secret_buffer_and_key_like_object() -> None:
    key = bytes(range(32))
    sb = SecretBuffer.from_bytes(key)
    assert HmacSha256(sb).mac(b"m") == ref_mac(key, b"m")

    class KeyLike:
        @contextmanager
        def secret(self) -> Iterator[memoryview]:
            mv = sb.view()
            try:
                yield mv
            finally:
                mv.release()  # fails if HmacSha256 kept an export of the view

    assert HmacSha256.from_key(KeyLike()).mac(b"m") == ref_mac(key, b"m")
    sb.wipe()


def test_key_from_keyspace_user_key() -> None:
    import keyring_types as kt

    ks = kt.Keyspace()
    key = bytes(range(32, 64))
    k = ks.add_key("user", "rpmb:test", key, kt.KEY_SPEC_SESSION_KEYRING)
    assert HmacSha256.from_key(k).mac(b"frame") == ref_mac(key, b"frame")


def test_threads_share_one_key() -> None:
    h = HmacSha256(b"shared" * 6)
    bufs = [bytes([i]) * (284 * 500) for i in range(4)]
    expect = [b"".join(ref_mac(b"shared" * 6, b[j * 284 : (j + 1) * 284]) for j in range(500)) for b in bufs]
    got: dict[int, bytes] = {}

    def work(i: int) -> None:
        for _ in range(5):
            got[i] = h.mac_batch(bufs[i], 284)  # type: ignore[assignment]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(4)] == expect


def test_long_batch_releases_the_gil() -> None:
    """Another thread runs Python code while one is inside mac_batch.

    With a switch interval far longer than the test, the interpreter never
    forces a thread switch, so the main thread can only run before the worker
    finishes if the worker gives the GIL up itself, i.e. inside the C call.
    """
    h = HmacSha256(b"g" * 32)
    buf = bytes(284 * 14_000)  # ~4 MB; 20 calls of a few ms each
    started = threading.Event()
    done = threading.Event()

    def work() -> None:
        started.set()
        for _ in range(20):
            h.mac_batch(buf, 284)
        done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        t = threading.Thread(target=work)
        t.start()
        started.wait()
        ran_while_worker_busy = not done.is_set()
        t.join()
    finally:
        sys.setswitchinterval(old)
    assert ran_while_worker_busy


@pytest.mark.slow
def test_verify_is_constant_time_dudect() -> None:
    """Welch t-test between tags wrong in the first and in the last byte
    (benchmarks/ct_verify.py), for HmacSha256.verify and rpmb frames.verify."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "ct_verify.py"
    run = subprocess.run(
        [sys.executable, str(script), "--samples", "60000"], capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout + run.stderr
