"""NVMe RPMB: the bytes of the admin passthrough commands and of the little-endian frames.

No NVMe controller is on the test machine, so nothing here reaches a device: a recording
``ioctl`` stands in for the kernel, and the controller's answers are built by an
independent struct/cryptography reference of spec section 4.1.  Not run: any real
Security Send/Receive, Identify Controller on hardware, multi-target controllers.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

import pytest
from conftest import errno_of
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac

from keyring_types.rpmb import nvme
from keyring_types.rpmb.device import RpmbDevice

KEY = bytes(range(200, 232))
PASSTHRU = struct.Struct("<BBHIIIQQIIIIIIIIII")  # struct nvme_passthru_cmd, linux/nvme_ioctl.h


def ioc(direction: int, typ: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (typ << 8) | nr


def ref_mac(key: bytes, frame: bytes) -> bytes:
    h = c_hmac.HMAC(key, hashes.SHA256())
    h.update(frame[223:])
    return h.finalize()


def ref_frame(typ: int, *, nonce: bytes = bytes(16), counter: int = 0, address: int = 0, sectors: int = 0,
              result: int = 0, target: int = 0, data: bytes = b"", key: bytes | None = KEY) -> bytes:
    head = bytes(191) + bytes(32) + bytes([target]) + nonce + struct.pack("<IIIHH", counter, address, sectors, result, typ)
    f = head + data
    if key is not None:
        f = f[:191] + ref_mac(key, f) + f[223:]
    return f


class FakeController:
    """Records every admin command; answers Security Receive from ``answers`` and Identify with RPMBS."""

    def __init__(self, rpmbs: int = 0x0F1F0009) -> None:
        self.sent: list[tuple[dict[str, int], bytes]] = []
        self.answers: list[bytes] = []
        self.rpmbs = rpmbs

    def __call__(self, fd: int, request: int, arg: bytearray) -> int:
        assert request == nvme.NVME_IOCTL_ADMIN_CMD
        names = ("opcode", "flags", "rsvd1", "nsid", "cdw2", "cdw3", "metadata", "addr", "metadata_len", "data_len",
                 "cdw10", "cdw11", "cdw12", "cdw13", "cdw14", "cdw15", "timeout_ms", "result")
        cmd = dict(zip(names, PASSTHRU.unpack(bytes(arg)), strict=True))
        if cmd["opcode"] == nvme.NVME_ADMIN_SECURITY_SEND:
            self.sent.append((cmd, ctypes.string_at(cmd["addr"], cmd["data_len"])))
        elif cmd["opcode"] == nvme.NVME_ADMIN_SECURITY_RECV:
            self.sent.append((cmd, b""))
            answer = self.answers.pop(0)
            assert len(answer) == cmd["data_len"]
            ctypes.memmove(cmd["addr"], answer, len(answer))
        elif cmd["opcode"] == nvme.NVME_ADMIN_IDENTIFY:
            buf = bytearray(4096)
            struct.pack_into("<I", buf, 272, self.rpmbs)
            ctypes.memmove(cmd["addr"], bytes(buf), 4096)
        return 0


@pytest.fixture
def ctl() -> FakeController:
    return FakeController()


def device(ctl: FakeController, target: int = 0) -> RpmbDevice:
    return RpmbDevice(nvme.NvmeTransport("/dev/nvme0", ioctl=ctl, fd=-1, target=target))


def test_ioctl_number_and_passthru_layout() -> None:
    assert nvme.NVME_IOCTL_ADMIN_CMD == ioc(3, ord("N"), 0x41, 72)
    cmd = nvme.passthru(nvme.NVME_ADMIN_SECURITY_SEND, target=2, length=768, addr=0x1234)
    assert len(cmd) == 72
    assert cmd[0] == 0x81
    assert struct.unpack_from("<Q", cmd, 24)[0] == 0x1234  # addr
    assert struct.unpack_from("<I", cmd, 36)[0] == 768  # data_len
    assert struct.unpack_from("<I", cmd, 40)[0] == 0xEA000102  # CDW10: SECP 0xEA, SPSP 0x0001, NSSF 2
    assert struct.unpack_from("<I", cmd, 44)[0] == 768  # CDW11: transfer length


def test_frame_layout_and_mac_coverage() -> None:
    f = nvme.build_frame(0x0003, target=1, nonce=b"n" * 16, write_counter=0x01020304, address=5, sectors=1,
                         data=b"d" * 512)
    nvme.sign(type("H", (), {"mac": staticmethod(lambda m: ref_mac(KEY, b"\0" * 223 + m))})(), f)
    assert bytes(f) == ref_frame(3, target=1, nonce=b"n" * 16, counter=0x01020304, address=5, sectors=1, data=b"d" * 512)
    assert f[240:244] == b"\x04\x03\x02\x01"  # little endian
    assert errno_of(nvme.build_frame, 3, data=b"x" * 256) == errno.EINVAL  # 512-byte sectors only
    assert errno_of(nvme.build_frame, 3, target=7) == errno.EINVAL


def test_capabilities_from_rpmbs(ctl: FakeController) -> None:
    caps = device(ctl).capabilities()
    # RPMBS 0x0F1F0009: 1 target, HMAC-SHA256, total (0x1F+1) x 128 KiB, access (0x0F+1) sectors.
    assert (caps.device_type, caps.capacity, caps.block_size, caps.max_write_blocks) == ("nvme", 32, 512, 16)
    assert device(ctl).version().transport == "nvme"


def test_counter_read_bytes_and_checks(ctl: FakeController) -> None:
    d = device(ctl)

    ctl.answers.append(b"")  # filled in once the request's nonce is known
    original = ctl.__call__

    def respond(fd: int, request: int, arg: bytearray) -> int:
        cmd = PASSTHRU.unpack(bytes(arg))
        if cmd[0] == nvme.NVME_ADMIN_SECURITY_RECV:
            sent = ctl.sent[-1][1]
            ctl.answers[0] = ref_frame(0x0200, nonce=sent[224:240], counter=41)
        return original(fd, request, arg)

    t = d._t
    t._ioctl = respond
    assert d.counter(KEY) == 41
    (send, frame), (recv, _) = ctl.sent
    assert (send["opcode"], send["cdw10"], send["data_len"], recv["opcode"], recv["data_len"]) == (0x81, 0xEA000100, 256, 0x82, 256)
    assert struct.unpack_from("<H", frame, 254)[0] == 2 and frame[240:254] == bytes(14)
    # A wrong key, a changed nonce or type: refused.
    ctl.answers.append(b"")
    assert errno_of(d.counter, bytes(32)) == errno.EBADMSG


def test_write_sends_signed_le_frame_then_result_read(ctl: FakeController) -> None:
    d = device(ctl, target=0)
    data = os.urandom(1024)
    ctl.answers = [ref_frame(0x0200, counter=7), ref_frame(0x0300, counter=8, address=3)]

    def respond(fd: int, request: int, arg: bytearray) -> int:
        cmd = PASSTHRU.unpack(bytes(arg))
        if cmd[0] == nvme.NVME_ADMIN_SECURITY_RECV and len(ctl.answers) == 2:
            ctl.answers[0] = ref_frame(0x0200, nonce=ctl.sent[-1][1][224:240], counter=7)
        return ctl(fd, request, arg)

    d._t._ioctl = respond
    assert d.write_blocks(3, data, KEY) == 8
    sends = [f for c, f in ctl.sent if c["opcode"] == 0x81]
    write, result_read = sends[1], sends[2]
    assert len(write) == 256 + 1024 and write[256:] == data
    assert struct.unpack_from("<IIIHH", write, 240) == (7, 3, 2, 0, 3)
    assert write[191:223] == ref_mac(KEY, write)  # MAC over target byte .. end of data
    assert struct.unpack_from("<H", result_read, 254)[0] == 5 and len(result_read) == 256


def test_read_and_failures(ctl: FakeController) -> None:
    d = device(ctl)
    data = os.urandom(512 * 2)

    def respond(fd: int, request: int, arg: bytearray) -> int:
        cmd = PASSTHRU.unpack(bytes(arg))
        if cmd[0] == nvme.NVME_ADMIN_SECURITY_RECV:
            req = ctl.sent[-1][1]
            typ = struct.unpack_from("<H", req, 254)[0]
            nonce = req[224:240]
            if typ == 4:
                ctl.answers = [ref_frame(0x0400, nonce=nonce, address=9, sectors=2, data=data)]
            else:
                ctl.answers = [ref_frame(0x0200, nonce=nonce, result=7, key=None)]
        return ctl(fd, request, arg)

    d._t._ioctl = respond
    assert d.read_blocks(9, 2, KEY) == data
    req = [f for c, f in ctl.sent if c["opcode"] == 0x81][-1]
    assert struct.unpack_from("<IIIHH", req, 240) == (0, 9, 2, 0, 4)
    recv = [c for c, f in ctl.sent if c["opcode"] == 0x82][-1]
    assert recv["data_len"] == 256 + 1024
    assert errno_of(d.counter, KEY) == errno.ENOKEY
    assert errno_of(d.submit, b"x" * 512) == errno.EOPNOTSUPP


def test_program_key_sends_the_key_right_aligned_then_a_result_read(ctl: FakeController) -> None:
    d = device(ctl, target=1)

    def respond(fd: int, request: int, arg: bytearray) -> int:
        cmd = PASSTHRU.unpack(bytes(arg))
        if cmd[0] == nvme.NVME_ADMIN_SECURITY_RECV:
            last = ctl.sent[-1][1]
            typ = struct.unpack_from("<H", last, 254)[0]
            ctl.answers = [ref_frame(0x0200, result=7, target=1, key=None) if typ == 2 else
                           ref_frame(0x0100, target=1, key=None)]
        return ctl(fd, request, arg)

    d._t._ioctl = respond
    assert errno_of(d.program_key, KEY) == errno.EPERM
    d.program_key(KEY, confirm=True)
    sends = [(c, f) for c, f in ctl.sent if c["opcode"] == 0x81]
    (_, counter_req), (c2, key_frame), (_, result_read) = sends
    assert struct.unpack_from("<H", counter_req, 254)[0] == 2  # the programmed check comes first
    assert c2["cdw10"] == 0xEA000101  # NSSF = target 1
    assert key_frame[191:223] == KEY and key_frame[223] == 1 and struct.unpack_from("<H", key_frame, 254)[0] == 1
    assert struct.unpack_from("<H", result_read, 254)[0] == 5
