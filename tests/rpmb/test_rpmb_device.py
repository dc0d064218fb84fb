"""RpmbDevice against the emulator in its own process: key models, every response check,
pre-signed frames, read-only opens, and what a client sees when the emulator dies or hangs."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import errno_of, kernel_keyring_reachable, require
from rpmb_util import Emulator, Spy, emulator

import keyring_types as kt
from keyring_types.hmac import HmacSha256
from keyring_types.rpmb import RpmbDevice
from keyring_types.rpmb import frames as F
from keyring_types.rpmb.wire import MmcCmd

KEY = bytes(range(100, 132))


@pytest.fixture
def emu(tdir: Path) -> Iterator[Emulator]:
    with emulator(tdir) as e:
        yield e


@pytest.fixture
def dev(emu: Emulator) -> Iterator[RpmbDevice]:
    d = RpmbDevice.open(emu.sock)
    yield d
    d.close()


def test_open_tells_devices_apart(tdir: Path, emu: Emulator) -> None:
    assert errno_of(RpmbDevice.open, tdir / "missing") == errno.ENOENT
    (tdir / "plain").write_bytes(b"")
    assert errno_of(RpmbDevice.open, tdir / "plain") == errno.ENODEV
    with RpmbDevice.open(emu.sock) as d:
        v = d.version()
        assert (v.api, v.transport) == (1, "emulator") and "emulated" in v.device
        c = d.capabilities()
        assert (c.device_type, c.emulated, c.capacity, c.capacity_blocks, c.block_size) == ("emmc", True, 2, 1024, 256)
        assert (c.max_write_blocks, c.max_read_blocks) == (32, 1024)


def test_lifecycle_with_raw_bytes(dev: RpmbDevice) -> None:
    assert errno_of(dev.counter, KEY) == errno.ENOKEY
    assert errno_of(dev.program_key, KEY) == errno.EPERM  # no confirmation
    assert errno_of(dev.program_key, KEY, confirm="yes") == errno.EPERM
    dev.program_key(KEY, confirm=True)
    assert dev.counter(KEY) == 0
    data = os.urandom(256 * 5)
    assert dev.write_blocks(7, data, KEY) == 1
    assert dev.read_blocks(7, 5, KEY) == data
    assert dev.read_blocks(8, 2, HmacSha256(KEY)) == data[256:768]
    assert dev.counter(HmacSha256(KEY)) == 1


def test_programming_is_refused_once_programmed_without_sending_the_key(emu: Emulator) -> None:
    with RpmbDevice.open(emu.sock) as d:
        d.program_key(KEY, confirm=True)
        spy = Spy(d._t)
        d._t = spy
        assert errno_of(d.program_key, bytes(32), confirm=True) == errno.EEXIST
        # Only the counter read went out: no key-programming frame.
        assert [c.data[510:512] for cmds in spy.calls for c in cmds if c.is_write] == [b"\x00\x02"]
        assert d.counter(KEY) == 0


def test_programming_is_never_retried(emu: Emulator) -> None:
    with RpmbDevice.open(emu.sock) as d:
        spy = Spy(d._t)
        d._t = spy
        spy.fail_on = lambda cmds: ConnectionResetError(errno.ECONNRESET, "lost") if cmds[0].reliable else None
        assert errno_of(d.program_key, KEY, confirm=True) == errno.ECONNRESET
        assert sum(1 for cmds in spy.calls if cmds[0].reliable) == 1
    with RpmbDevice.open(emu.sock) as d:
        assert errno_of(d.counter, KEY) == errno.ENOKEY  # the lost request never reached the device


def test_key_handles(dev: RpmbDevice) -> None:
    ks = kt.Keyspace()
    k = ks.add_key("user", "rpmb:key", KEY, "@s")
    dev.program_key(k, confirm=True)
    assert dev.counter(KEY) == 0
    assert dev.write_blocks(0, b"a" * 256, k) == 1
    assert dev.read_blocks(0, 1, k) == b"a" * 256
    short = ks.add_key("user", "rpmb:short", b"x" * 16, "@s")
    assert errno_of(dev.counter, short) == errno.EINVAL
    k.revoke()
    assert errno_of(dev.counter, k) == errno.EKEYREVOKED
    assert errno_of(dev.counter, b"x" * 31) == errno.EINVAL
    assert errno_of(dev.counter, 42) == errno.EINVAL


def test_kernel_keys_user_readable_logon_not(dev: RpmbDevice) -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    kk = kt.KernelKeyspace(new_session=True)
    user = kk.add_key("user", "rpmb:k", KEY, "@s")
    dev.program_key(user, confirm=True)
    assert dev.write_blocks(3, b"u" * 256, user) == 1
    logon = kk.add_key("logon", "rpmb:logon", KEY, "@s")
    with pytest.raises(OSError) as info:
        dev.counter(logon)
    assert info.value.errno == errno.EOPNOTSUPP
    assert "cannot be read from user space" in str(info.value)
    assert errno_of(dev.program_key, logon, confirm=True) == errno.EOPNOTSUPP


def _flip(offset: int, frame_index: int = -1) -> Callable[[list[MmcCmd], list[bytes]], list[bytes]]:
    def alter(cmds: list[MmcCmd], out: list[bytes]) -> list[bytes]:
        b = bytearray(out[0])
        i = (len(b) // 512 + frame_index) % (len(b) // 512) * 512 + offset
        b[i] ^= 0x01
        return [bytes(b), *out[1:]]

    return alter


def _resign(offset: int, value: bytes) -> Callable[[list[MmcCmd], list[bytes]], list[bytes]]:
    """Change a field and sign again with the right key: only the field check can catch it."""

    def alter(cmds: list[MmcCmd], out: list[bytes]) -> list[bytes]:
        b = bytearray(out[0])
        last = len(b) - 512
        b[last + offset : last + offset + len(value)] = value
        F.sign(KEY, b)
        return [bytes(b), *out[1:]]

    return alter


@pytest.mark.parametrize(
    ("op", "alter", "want", "words"),
    [
        ("counter", _flip(F.OFF_KEY_MAC), errno.EBADMSG, "MAC"),
        ("counter", _flip(F.OFF_COUNTER + 3), errno.EBADMSG, "MAC"),
        ("counter", _resign(F.OFF_NONCE, b"\xee" * 16), errno.EBADMSG, "nonce"),
        ("counter", _resign(F.OFF_TYPE, b"\x03\x00"), errno.EBADMSG, "type"),
        ("counter", _resign(F.OFF_RESULT, b"\x00\x06"), errno.EIO, "READ_FAILURE"),
        ("counter", _resign(F.OFF_ADDRESS, b"\x00\x09"), errno.EBADMSG, "address"),
        ("read", _flip(F.OFF_DATA + 5, 0), errno.EBADMSG, "MAC"),
        ("read", _resign(F.OFF_ADDRESS, b"\x00\x09"), errno.EBADMSG, "address"),
        ("read", _resign(F.OFF_NONCE, b"\x01" * 16), errno.EBADMSG, "nonce"),
        ("read", _resign(F.OFF_BLOCK_COUNT, b"\x00\x07"), errno.EBADMSG, "block count"),
        ("write", _resign(F.OFF_COUNTER, b"\x00\x00\x00\x05"), errno.EBADMSG, "write counter"),
        ("write", _resign(F.OFF_ADDRESS, b"\x00\x01"), errno.EBADMSG, "address"),
        ("write", _resign(F.OFF_RESULT, b"\x00\x03"), errno.ESTALE, "COUNTER_FAILURE"),
        ("write", _resign(F.OFF_BLOCK_COUNT, b"\x01\x00"), errno.EBADMSG, "block count"),
        ("write", _flip(F.OFF_KEY_MAC + 31), errno.EBADMSG, "MAC"),
    ],
)
def test_every_response_field_is_checked(
    emu: Emulator, op: str, alter: Callable[[list[MmcCmd], list[bytes]], list[bytes]], want: int, words: str
) -> None:
    with RpmbDevice.open(emu.sock) as d:
        d.program_key(KEY, confirm=True)
        d.write_blocks(0, bytes(512), KEY)
        inner = d._t

        def only_last(cmds: list[MmcCmd], out: list[bytes]) -> list[bytes]:
            # Alter the response of the operation under test, not the counter read a write makes first.
            kind = cmds[0].data[511]
            target = {"counter": 2, "read": 4, "write": 3}[op]
            return alter(cmds, out) if kind == target else out

        d._t = Spy(inner, only_last)
        call = {"counter": lambda: d.counter(KEY), "read": lambda: d.read_blocks(0, 2, KEY),
                "write": lambda: d.write_blocks(0, bytes(512), KEY)}[op]
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == want, info.value
        assert words in str(info.value)


def test_device_refusals_map_to_errnos(dev: RpmbDevice) -> None:
    dev.program_key(KEY, confirm=True)
    assert errno_of(dev.write_blocks, 1020, bytes(256 * 8), KEY) == errno.EINVAL  # checked before sending
    # The device's own address check (a raw request the client would not build).
    nonce = os.urandom(16)
    resp = dev.submit(F.read_request(nonce, address=1023), response_frames=2)
    assert F.Frame(resp[512:]).result == 0x0004
    assert errno_of(F.check_read_response, KEY, resp, nonce=nonce, address=1023) == errno.EINVAL
    assert errno_of(dev.write_blocks, 0, bytes(256), b"\x01" * 32) == errno.EBADMSG  # wrong key: counter MAC fails


def test_large_writes_and_reads_are_split(tdir: Path) -> None:
    with emulator(tdir, "--max-write-blocks", "4", "--max-read-blocks", "3") as e, RpmbDevice.open(e.sock) as d:
        assert (d.capabilities().max_write_blocks, d.capabilities().max_read_blocks) == (4, 3)
        d.program_key(KEY, confirm=True)
        data = os.urandom(256 * 10)
        assert d.write_blocks(100, data, KEY) == 3  # 4 + 4 + 2 blocks: three writes
        assert d.read_blocks(100, 10, KEY) == data


def test_presigned_frames(dev: RpmbDevice) -> None:
    # The signer holds the key; the host relays frames and never sees it.
    signer = HmacSha256(KEY)
    resp = dev.submit(F.program_key_request(KEY))
    F.check_program_key_response(resp)
    nonce = os.urandom(16)
    c = F.check_counter_response(signer, dev.submit(F.counter_read_request(nonce)), nonce=nonce)
    w = dev.submit(F.write_request(signer, b"p" * 512, address=9, write_counter=c.write_counter))
    assert F.check_write_response(signer, w, address=9, write_counter=0).write_counter == 1
    nonce = os.urandom(16)
    r = dev.submit(F.read_request(nonce, address=9, block_count=2))  # N from the frame (UFS style)
    assert F.check_read_response(signer, r, nonce=nonce, address=9, blocks=2).data() == b"p" * 512
    r = dev.submit(F.read_request(nonce, address=9), response_frames=1)
    assert len(r) == 512
    assert errno_of(dev.submit, F.result_read_request()) == errno.EINVAL
    assert errno_of(dev.submit, bytes(F.counter_read_request(nonce)) + bytes(F.read_request(nonce, address=0))) == errno.EINVAL
    assert errno_of(dev.submit, b"short") == errno.EINVAL


def test_read_only_open_refuses_write_class(emu: Emulator) -> None:
    with RpmbDevice.open(emu.sock) as d:
        d.program_key(KEY, confirm=True)
    with RpmbDevice.open(emu.sock, readonly=True) as ro:
        assert ro.counter(KEY) == 0
        assert errno_of(ro.write_blocks, 0, bytes(256), KEY) == errno.EROFS
        assert errno_of(ro.program_key, KEY, confirm=True) == errno.EROFS
        assert errno_of(ro.submit, F.write_request(KEY, bytes(256), address=0, write_counter=0)) == errno.EROFS
        assert ro.read_blocks(0, 1, KEY) == bytes(256)


def test_a_dead_emulator_gives_errnos_and_a_new_one_starts_over_its_socket(emu: Emulator) -> None:
    d = RpmbDevice.open(emu.sock)
    d.program_key(KEY, confirm=True)
    emu.kill9()
    assert emu.sock.exists()  # kill -9 leaves the socket file behind
    assert errno_of(d.counter, KEY) == errno.ECONNRESET
    d.close()
    assert errno_of(RpmbDevice.open, emu.sock) == errno.ECONNREFUSED
    emu.start()  # over the stale socket
    with RpmbDevice.open(emu.sock) as d2:
        assert d2.counter(KEY) == 0


def test_a_hung_emulator_times_out(emu: Emulator) -> None:
    assert emu.proc is not None
    with RpmbDevice.open(emu.sock, timeout=0.5) as d:
        os.kill(emu.proc.pid, signal.SIGSTOP)
        try:
            t = time.monotonic()
            assert errno_of(d.counter, KEY) == errno.ETIMEDOUT
            assert time.monotonic() - t < 5
        finally:
            os.kill(emu.proc.pid, signal.SIGCONT)


def test_a_live_emulator_is_not_replaced(emu: Emulator) -> None:
    from keyring_types.rpmb.emulator import Behaviour, serve

    assert serve(emu.sock, emu.state.parent / "other", Behaviour()) == 1
    with RpmbDevice.open(emu.sock) as d:
        assert errno_of(d.counter, KEY) == errno.ENOKEY


def test_strict_client_sees_emulator_deviations(tdir: Path) -> None:
    (tdir / "a").mkdir(mode=0o700)
    with emulator(tdir / "a", "--counter", "per-block") as e:
        with RpmbDevice.open(e.sock) as d:
            d.program_key(KEY, confirm=True)
            assert d.write_blocks(0, bytes(256), KEY) == 1  # one block: +1 either way
            assert errno_of(d.write_blocks, 0, bytes(512), KEY) == errno.EBADMSG  # +2: not JEDEC
    (tdir / "b").mkdir(mode=0o700)
    with emulator(tdir / "b", "--block-count-echo", "host-endian") as e, RpmbDevice.open(e.sock) as d:
        d.program_key(KEY, confirm=True)
        assert errno_of(d.read_blocks, 0, 2, KEY) == errno.EBADMSG
    (tdir / "c").mkdir(mode=0o700)
    with emulator(tdir / "c", "--block-count-echo", "zero") as e, RpmbDevice.open(e.sock) as d:
        d.program_key(KEY, confirm=True)
        d.write_blocks(0, bytes(512), KEY)
        assert d.read_blocks(0, 2, KEY) == bytes(512)  # 0 is what eMMC hosts accept


def test_two_writers_a_stale_cached_counter_is_refreshed(emu: Emulator) -> None:
    with RpmbDevice.open(emu.sock) as a, RpmbDevice.open(emu.sock) as b:
        a.program_key(KEY, confirm=True)
        assert a.write_blocks(0, b"a" * 256, KEY) == 1
        assert b.write_blocks(1, b"b" * 256, KEY) == 2
        spy = Spy(a._t)
        a._t = spy
        # a's counter (1) is stale: the device refuses, a reads the counter and writes again.
        assert a.write_blocks(2, b"c" * 256, KEY) == 3
        sent = [cmds[0].data[511] for cmds in spy.calls]
        assert sent == [3, 2, 3]
        assert a.read_blocks(0, 3, KEY) == b"a" * 256 + b"b" * 256 + b"c" * 256


def test_use_bindings(dev: RpmbDevice) -> None:
    ks = kt.Keyspace()
    bound = ks.add_key("user", "rpmb:bound", KEY, "@s", usage="rpmb")
    dev.program_key(bound, confirm=True)
    assert dev.write_blocks(0, b"b" * 256, bound) == 1
    other = ks.add_key("user", "rpmb:fscrypt", KEY, "@s", usage="fscrypt")
    assert errno_of(dev.counter, other) == errno.EKEYREJECTED


def test_the_emulator_answers_malformed_messages_with_errnos(emu: Emulator) -> None:
    import socket
    import struct

    from keyring_types.rpmb.wire import recv_message, send_message

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(emu.sock))
    try:
        send_message(s, struct.pack("<I", 99))
        assert recv_message(s) == struct.pack("<I", errno.ENOTTY)
        send_message(s, struct.pack("<II", 1, 1) + struct.pack("<IIII", 1, 25, 1, 512) + b"short")
        assert recv_message(s) == struct.pack("<I", errno.EINVAL)
        send_message(s, struct.pack("<II", 1, 1) + struct.pack("<IIII", 0, 18, 2048, 512))
        assert recv_message(s) == struct.pack("<I", errno.EOVERFLOW)  # above MMC_IOC_MAX_BYTES
        s.sendall(struct.pack("<I", 1 << 30))  # a length no message may have: the emulator hangs up
        assert s.recv(1) == b""
    finally:
        s.close()
    with RpmbDevice.open(emu.sock) as d:  # and serves the next client
        assert errno_of(d.counter, KEY) == errno.ENOKEY
