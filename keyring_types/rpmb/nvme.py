"""NVMe RPMB: little-endian frames through admin Security Send / Security Receive.

Facts from spec ``rpmb.md`` section 4.1.  A frame is a 256-byte header followed by
the data in 512-byte sectors::

      0..190  stuff                      240..243  write counter  (u32 LE)
    191..222  key / MAC (right-aligned)  244..247  address        (u32 LE, 512-byte sectors)
         223  RPMB target                248..251  sector count   (u32 LE)
    224..239  nonce                      252..253  result         (u16 LE)
                                         254..255  request/response type (u16 LE)
    256..     data, 512 x sector count

The MAC is HMAC-SHA256 over everything from the target byte (223) to the end of the
data, in one piece.  Frames go to the controller with Security Send (admin opcode
0x81) and come back with Security Receive (0x82), SECP 0xEA, SPSP 0x0001, NSSF =
target, through ``NVME_IOCTL_ADMIN_CMD`` (``struct nvme_passthru_cmd``, 72 bytes).
Key programming and writes are followed by a result-read request (type 5) and
answered by one 256-byte header; counter reads by one header; reads by a header
and the data.

Only the command layout is tested here (there is no NVMe controller on the test
machine): the bytes of the passthrough commands and of the frames, and the checks
of responses built independently.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from collections.abc import Callable
from typing import Any

from keyring_types.errors import error
from keyring_types.rpmb.codes import RequestType, Result, result_code, result_errno, result_name
from keyring_types.rpmb.keys import MacKey, rpmb_secret
from keyring_types.secret import SecretBuffer, ct_memcmp

__all__ = [
    "HEADER_SIZE",
    "SECTOR_SIZE",
    "OFF_MAC",
    "OFF_TARGET",
    "NVME_IOCTL_ADMIN_CMD",
    "NVME_ADMIN_SECURITY_SEND",
    "NVME_ADMIN_SECURITY_RECV",
    "NVME_ADMIN_IDENTIFY",
    "SECP_RPMB",
    "SPSP_RPMB",
    "build_frame",
    "parse_header",
    "sign",
    "passthru",
    "NvmeTransport",
]

HEADER_SIZE = 256
SECTOR_SIZE = 512
OFF_MAC = 191
OFF_TARGET = 223
OFF_NONCE = 224
# counter, address, sector count, result, type
_FIELDS = struct.Struct("<IIIHH")
OFF_FIELDS = 240

NVME_IOCTL_ADMIN_CMD = 0xC0484E41  # _IOWR('N', 0x41, struct nvme_admin_cmd)
NVME_ADMIN_IDENTIFY = 0x06
NVME_ADMIN_SECURITY_SEND = 0x81
NVME_ADMIN_SECURITY_RECV = 0x82
SECP_RPMB = 0xEA
SPSP_RPMB = 0x0001
#: Identify Controller: RPMBS (RPMB support) at bytes 272..275.
_IDENTIFY_RPMBS = 272
# opcode, flags, rsvd1, nsid, cdw2, cdw3, metadata, addr, metadata_len, data_len,
# cdw10..cdw15, timeout_ms, result: struct nvme_passthru_cmd (linux/nvme_ioctl.h).
_PASSTHRU = struct.Struct("<BBHIIIQQIIIIIIIIII")
assert _PASSTHRU.size == 72


def build_frame(req_resp: int, *, target: int = 0, nonce: bytes = bytes(16), write_counter: int = 0,
                address: int = 0, sectors: int = 0, result: int = 0, data: bytes = b"", key_mac: bytes | None = None) -> bytearray:
    """One NVMe RPMB frame (header + ``data``).  ``EINVAL`` for fields out of range
    or data that is not whole sectors."""
    if len(data) % SECTOR_SIZE or len(nonce) != 16 or not 0 <= target <= 6:
        raise error(errno.EINVAL, "NVMe RPMB data is whole 512-byte sectors, the nonce 16 bytes, the target 0..6")
    buf = bytearray(HEADER_SIZE + len(data))
    if key_mac is not None:
        if len(key_mac) != 32:
            raise error(errno.EINVAL, "an NVMe RPMB key/MAC is 32 bytes")
        buf[OFF_MAC:OFF_TARGET] = key_mac
    buf[OFF_TARGET] = target
    buf[OFF_NONCE : OFF_NONCE + 16] = nonce
    try:
        _FIELDS.pack_into(buf, OFF_FIELDS, write_counter, address, sectors, result, req_resp)
    except struct.error:
        raise error(errno.EINVAL, "NVMe RPMB field out of range") from None
    buf[HEADER_SIZE:] = data
    return buf


def parse_header(buf: bytes | bytearray) -> dict[str, Any]:
    """The fields of a frame's header.  ``EBADMSG`` when shorter than a header."""
    if len(buf) < HEADER_SIZE:
        raise error(errno.EBADMSG, f"NVMe RPMB frame is {len(buf)} bytes, shorter than its {HEADER_SIZE}-byte header")
    counter, address, sectors, result, rtype = _FIELDS.unpack_from(buf, OFF_FIELDS)
    return {
        "mac": bytes(buf[OFF_MAC:OFF_TARGET]),
        "target": buf[OFF_TARGET],
        "nonce": bytes(buf[OFF_NONCE : OFF_NONCE + 16]),
        "write_counter": counter,
        "address": address,
        "sectors": sectors,
        "result": result,
        "req_resp": rtype,
    }


def sign(h: Any, buf: bytearray) -> None:
    """Write HMAC-SHA256 over bytes 223.. into the key/MAC field."""
    buf[OFF_MAC:OFF_TARGET] = h.mac(bytes(buf[OFF_TARGET:]))


def passthru(opcode: int, *, target: int, length: int, addr: int, nsid: int = 0, cdw10: int | None = None) -> bytearray:
    """A ``struct nvme_passthru_cmd`` for Security Send/Receive of ``length`` bytes at
    ``addr`` (CDW10 = SECP << 24 | SPSP << 8 | NSSF, CDW11 = length)."""
    if cdw10 is None:
        cdw10 = (SECP_RPMB << 24) | (SPSP_RPMB << 8) | target
    cdw11 = length
    return bytearray(_PASSTHRU.pack(opcode, 0, 0, nsid, 0, 0, 0, addr, 0, length, cdw10, cdw11, 0, 0, 0, 0, 0, 0))


class NvmeTransport:
    """An NVMe controller node ``/dev/nvmeN``.  ``ioctl`` may be replaced (tests
    capture the commands); the default is ``fcntl.ioctl``."""

    kind = "nvme"

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False, target: int = 0,
                 ioctl: Callable[[int, int, bytearray], Any] | None = None, fd: int | None = None) -> None:
        self.path = os.fspath(path)
        self.readonly = readonly
        self.target = target
        self._fd = fd if fd is not None else os.open(self.path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        self._ioctl = ioctl or (lambda fd, req, arg: fcntl.ioctl(fd, req, arg, True))

    # -- the admin commands ------------------------------------------------------

    def _admin(self, cmd: bytearray, what: str) -> None:
        try:
            self._ioctl(self._fd, NVME_IOCTL_ADMIN_CMD, cmd)
        except OSError as exc:
            raise error(exc.errno or errno.EIO, f"NVMe {what} on {self.path} failed: {exc.strerror}") from None
        status = struct.unpack_from("<I", cmd, 68)[0]
        if status:
            raise error(errno.EIO, f"NVMe {what} on {self.path} completed with status {status:#x}")

    def send(self, frame: bytes | bytearray | memoryview) -> None:
        """Security Send of one frame.  The copy handed to the kernel is zeroed after the
        command (a key-programming frame holds the key)."""
        n = len(frame)
        buf = (ctypes.c_char * n).from_buffer_copy(frame)  # any buffer, no bytes in between
        try:
            self._admin(passthru(NVME_ADMIN_SECURITY_SEND, target=self.target, length=n, addr=ctypes.addressof(buf)),
                        "Security Send")
        finally:
            ctypes.memset(buf, 0, n)

    def receive(self, length: int) -> bytes:
        """Security Receive of ``length`` bytes."""
        buf = ctypes.create_string_buffer(length)
        self._admin(passthru(NVME_ADMIN_SECURITY_RECV, target=self.target, length=length, addr=ctypes.addressof(buf)),
                    "Security Receive")
        return bytes(buf.raw)

    def rpmbs(self) -> int:
        """The controller's RPMBS word from Identify Controller (CNS 1)."""
        buf = ctypes.create_string_buffer(4096)
        cmd = passthru(NVME_ADMIN_IDENTIFY, target=0, length=4096, addr=ctypes.addressof(buf), cdw10=1)
        self._admin(cmd, "Identify Controller")
        return int(struct.unpack_from("<I", buf.raw, _IDENTIFY_RPMBS)[0])

    # -- what RpmbDevice asks of a transport ------------------------------------

    def info(self) -> Any:
        """The RPMB geometry from RPMBS (``ENODEV`` when the controller has no RPMB)."""
        from keyring_types.rpmb.wire import DeviceInfo

        r = self.rpmbs()
        if not r & 0x7:
            raise error(errno.ENODEV, f"{self.path} reports no RPMB targets")
        return DeviceInfo(0, 0, ((r >> 16) & 0xFF) + 1, ((r >> 24) & 0xFF) + 1, 0, 0)

    def capabilities(self) -> Any:
        """RPMBS decoded: targets, total size (128 KiB units), access size (sectors)."""
        from keyring_types.rpmb.device import Capabilities

        r = self.rpmbs()
        size = ((r >> 16) & 0xFF) + 1
        access = ((r >> 24) & 0xFF) + 1
        return Capabilities("nvme", False, self.target, size, size * 256, SECTOR_SIZE, access, access)

    def _exchange(self, frame: bytes | bytearray | memoryview, reply_len: int, with_result_read: bool) -> bytes:
        self.send(frame)
        if with_result_read:
            self.send(build_frame(RequestType.RESULT_READ, target=self.target))
        return self.receive(reply_len)

    def _check(self, resp: bytes, h: Any, expect: int, *, nonce: bytes | None = None,
               counter: int | None = None, address: int | None = None, mac: bool = True) -> dict[str, Any]:
        f = parse_header(resp)
        if f["req_resp"] != expect:
            raise error(errno.EBADMSG, f"NVMe RPMB response type is {f['req_resp']:#06x}, expected {expect:#06x}")
        mac_ok = mac and ct_memcmp(h.mac(bytes(resp[OFF_TARGET:])), f["mac"])
        if result_code(f["result"]) != Result.OK:
            how = "authenticated" if mac_ok else "unauthenticated"
            raise error(result_errno(f["result"]), f"NVMe RPMB device reported {result_name(f['result'])} ({how})")
        if mac and not mac_ok:
            raise error(errno.EBADMSG, "NVMe RPMB response MAC does not verify (wrong key or altered frame)")
        bad = [name for name, want in (("nonce", nonce), ("write counter", counter), ("address", address))
               if want is not None and f[name.replace("write counter", "write_counter")] != want]
        if f["target"] != self.target:
            bad.append("target")
        if bad:
            raise error(errno.EBADMSG, f"NVMe RPMB response {', '.join(bad)} do not match the request")
        return f

    def program_key(self, key: Any) -> None:
        """Program the target's key (the device layer asked for confirmation)."""
        with MacKey(key):
            pass  # readable and 32 bytes: EOPNOTSUPP / EINVAL before any I/O
        if not isinstance(key, (bytes, bytearray, memoryview)) and not hasattr(key, "secret"):
            raise error(errno.EINVAL, "programming needs the key itself (raw bytes or a Key handle), not an HmacSha256")
        # The frame holds the key: built in secret memory, wiped after the call.
        frame = SecretBuffer(HEADER_SIZE)
        mv = frame.writable()
        try:
            mv[:] = build_frame(RequestType.PROGRAM_KEY, target=self.target)
            if hasattr(key, "secret") and not isinstance(key, (bytes, bytearray, memoryview)):
                with rpmb_secret(key) as kv:
                    mv[OFF_MAC:OFF_TARGET] = kv
            else:
                mv[OFF_MAC:OFF_TARGET] = memoryview(key).cast("B")
            if self._key_programmed():
                raise error(errno.EEXIST, "the NVMe RPMB target already has an authentication key")
            resp = self._exchange(mv, HEADER_SIZE, True)
        finally:
            mv.release()
            frame.wipe()
        self._check(resp, None, 0x0100, mac=False)

    def _key_programmed(self) -> bool:
        resp = self._exchange(build_frame(RequestType.READ_COUNTER, target=self.target, nonce=os.urandom(16)), HEADER_SIZE, False)
        return result_code(parse_header(resp)["result"]) != Result.KEY_NOT_PROGRAMMED

    def counter(self, key: Any) -> int:
        """The target's write counter, MAC and nonce checked."""
        nonce = os.urandom(16)
        with MacKey(key) as h:
            resp = self._exchange(build_frame(RequestType.READ_COUNTER, target=self.target, nonce=nonce), HEADER_SIZE, False)
            return int(self._check(resp, h, 0x0200, nonce=nonce)["write_counter"])

    def write_blocks(self, address: int, data: bytes, key: Any) -> int:
        """``data`` (whole 512-byte sectors on NVMe) at sector ``address``."""
        if len(data) % SECTOR_SIZE:
            raise error(errno.EINVAL, "NVMe RPMB writes whole 512-byte sectors")
        with MacKey(key) as h:
            counter = self.counter(h)
            frame = build_frame(RequestType.AUTH_WRITE, target=self.target, write_counter=counter, address=address,
                                sectors=len(data) // SECTOR_SIZE, data=data)
            sign(h, frame)
            resp = self._exchange(frame, HEADER_SIZE, True)
            return int(self._check(resp, h, 0x0300, counter=counter + 1, address=address)["write_counter"])

    def read_blocks(self, address: int, count: int, key: Any) -> bytes:
        """``count`` sectors from sector ``address``."""
        nonce = os.urandom(16)
        with MacKey(key) as h:
            frame = build_frame(RequestType.AUTH_READ, target=self.target, nonce=nonce, address=address, sectors=count)
            resp = self._exchange(frame, HEADER_SIZE + count * SECTOR_SIZE, False)
            self._check(resp, h, 0x0400, nonce=nonce, address=address)
            return resp[HEADER_SIZE:]

    def submit(self, frame: bytes, rtype: int, response_frames: int | None) -> bytes:
        """Relay one pre-signed NVMe frame; the response unchecked but for its type."""
        raise error(errno.EOPNOTSUPP, "pre-signed NVMe frames are not relayed (JEDEC frames only)")

    def close(self) -> None:
        """Close the controller node."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
