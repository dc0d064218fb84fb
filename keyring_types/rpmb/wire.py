"""The socket protocol spoken with the emulated RPMB device, and the MMC command model.

Shared by the client transport (:mod:`keyring_types.rpmb.transport`), the emulator
(:mod:`keyring_types.rpmb.emulator`) and the C ``LD_PRELOAD`` harness
(``_native/rpmb_harness.c``), so none reaches into another.

The emulator is an eMMC seen from below the kernel's RPMB character device: it
takes the same MMC command lists a program hands ``MMC_IOC_MULTI_CMD`` (CMD25
with the reliable-write bit for key programming and data writes, CMD25 for the
other requests, CMD18 to read responses; spec ``rpmb.md`` section 2.3), so an
unmodified ``mmc`` relayed by the harness and our own client drive one device
model.  Everything on the wire is little endian::

    message  := u32 length | body                        (length <= MAX_MESSAGE)
    request  := u32 op | op fields
      MMC    (1): u32 ncmds | ncmds x (u32 write_flag | u32 opcode | u32 blocks | u32 blksz
                  | blocks*blksz data bytes when write_flag != 0)
      INFO   (2): nothing
      VENDOR (3): packet bytes                          (an authenticated vendor command)
    response := u32 errno (0 = the command list ran) | op results
      MMC    : for each command with write_flag == 0, in order, blocks*blksz bytes
      INFO   : INFO_FIELDS (see :class:`DeviceInfo`)
      VENDOR : the device's response packet

An errno in a response is what the kernel's ioctl would fail with (``EINVAL``
for a malformed command list, ``EIO`` when the card does not answer a read,
``EOVERFLOW`` for a command above ``MMC_IOC_MAX_BYTES``); an RPMB operation that
the card refuses is *not* an errno but a result code inside the response frame.
"""

from __future__ import annotations

import errno
import socket
import struct

import attrs

from keyring_types.errors import error

__all__ = [
    "PROTOCOL_VERSION",
    "OP_MMC",
    "OP_INFO",
    "OP_VENDOR",
    "MAX_MESSAGE",
    "MMC_IOC_MAX_BYTES",
    "MMC_IOC_MAX_CMDS",
    "MMC_READ_MULTIPLE_BLOCK",
    "MMC_WRITE_MULTIPLE_BLOCK",
    "RELIABLE_WRITE",
    "BLOCK_SIZE",
    "MmcCmd",
    "DeviceInfo",
    "check_mmc",
    "encode_mmc",
    "encode_mmc_message",
    "decode_mmc",
    "wipe",
    "send_message",
    "recv_message",
]

PROTOCOL_VERSION = 1
OP_MMC, OP_INFO, OP_VENDOR = 1, 2, 3

# The kernel's limits on one ioctl (include/uapi/linux/mmc/ioctl.h; spec 2.2).
MMC_IOC_MAX_BYTES = 512 * 1024
MMC_IOC_MAX_CMDS = 255
#: Largest message either side accepts: a full command list at the per-command limit
#: would be 128 MiB, far beyond any RPMB partition (16 MiB), so the cap is the partition size.
MAX_MESSAGE = 16 * 1024 * 1024 + 64 * 1024

MMC_READ_MULTIPLE_BLOCK = 18
MMC_WRITE_MULTIPLE_BLOCK = 25
#: Bit 31 of write_flag: the reliable-write request the kernel copies into CMD23.
RELIABLE_WRITE = 1 << 31
#: RPMB transfers 512-byte frames.
BLOCK_SIZE = 512

U32 = struct.Struct("<I")
_CMD = struct.Struct("<IIII")
INFO_FIELDS = struct.Struct("<IIIIII")


Buffer = bytes | bytearray | memoryview


@attrs.frozen
class MmcCmd:
    """One ``struct mmc_ioc_cmd`` as far as RPMB needs it: data out when ``write_flag`` is non-zero.

    ``secret`` marks ``data`` that holds a key (the key-programming frame, handed in
    as a view of a :class:`~keyring_types.secret.SecretBuffer`): a transport copies
    it only into memory it wipes once the command list has gone to the device."""

    write_flag: int
    opcode: int
    blocks: int
    blksz: int = BLOCK_SIZE
    data: Buffer = b""
    secret: bool = False

    @property
    def is_write(self) -> bool:
        """Host-to-card data."""
        return self.write_flag != 0

    @property
    def reliable(self) -> bool:
        """The reliable-write bit (CMD23 argument bit 31) is set."""
        return bool(self.write_flag & RELIABLE_WRITE)


@attrs.frozen
class DeviceInfo:
    """What the emulated card reports about itself (EXT_CSD fields a host reads)."""

    protocol: int
    ext_csd_rev: int  #: EXT_CSD[192]; 8 is eMMC 5.1
    size_mult: int  #: EXT_CSD[168] RPMB_SIZE_MULT, 128 KiB units
    rel_wr_sec_c: int  #: EXT_CSD[222], 512-byte sectors (two RPMB blocks each) per reliable write
    max_read_blocks: int  #: largest authenticated read the card answers (0 = only the transport's limit)
    flags: int  #: bit 0: the counter advances once per block (a known emulator deviation)

    def pack(self) -> bytes:
        """The INFO reply body after the errno."""
        return INFO_FIELDS.pack(
            self.protocol, self.ext_csd_rev, self.size_mult, self.rel_wr_sec_c, self.max_read_blocks, self.flags
        )

    @classmethod
    def unpack(cls, body: bytes) -> DeviceInfo:
        """``EBADMSG`` when the reply is not an INFO reply."""
        if len(body) != INFO_FIELDS.size:
            raise error(errno.EBADMSG, f"emulated RPMB INFO reply is {len(body)} bytes, expected {INFO_FIELDS.size}")
        return cls(*INFO_FIELDS.unpack(body))


def check_mmc(cmds: list[MmcCmd]) -> int:
    """Check ``cmds`` against the kernel's limits without copying any data; the size of
    their MMC request body.  ``EINVAL`` for an empty or too long list, or data that does
    not match ``blocks * blksz``; ``EOVERFLOW`` above ``MMC_IOC_MAX_BYTES`` per command."""
    if not 1 <= len(cmds) <= MMC_IOC_MAX_CMDS:
        raise error(errno.EINVAL, f"an MMC command list holds 1..{MMC_IOC_MAX_CMDS} commands, got {len(cmds)}")
    total = 8
    for c in cmds:
        size = c.blocks * c.blksz
        if size > MMC_IOC_MAX_BYTES:
            raise error(errno.EOVERFLOW, f"an MMC command moves at most {MMC_IOC_MAX_BYTES} bytes, got {size}")
        if c.is_write and len(c.data) != size:
            raise error(errno.EINVAL, f"MMC write command carries {len(c.data)} bytes, its blocks say {size}")
        total += _CMD.size + (size if c.is_write else 0)
    return total


def encode_mmc_message(cmds: list[MmcCmd]) -> bytearray:
    """The whole MMC request message (``u32 length | body``) in one ``bytearray``, which
    the caller wipes (:func:`wipe`) when a command is ``secret``.  Errors as :func:`check_mmc`."""
    n = check_mmc(cmds)
    msg = bytearray(4 + n)
    U32.pack_into(msg, 0, n)
    U32.pack_into(msg, 4, OP_MMC)
    U32.pack_into(msg, 8, len(cmds))
    off = 12
    for c in cmds:
        _CMD.pack_into(msg, off, c.write_flag & 0xFFFFFFFF, c.opcode, c.blocks, c.blksz)
        off += _CMD.size
        if c.is_write:
            msg[off : off + len(c.data)] = c.data
            off += len(c.data)
    return msg


def encode_mmc(cmds: list[MmcCmd]) -> bytes:
    """The MMC request body for ``cmds`` (an immutable copy: for commands without secrets).
    Errors as :func:`check_mmc`."""
    msg = encode_mmc_message(cmds)
    try:
        return bytes(memoryview(msg)[4:])
    finally:
        if any(c.secret for c in cmds):
            wipe(msg)


def wipe(buf: bytearray | memoryview) -> None:
    """Zero a mutable buffer in place."""
    buf[:] = bytes(len(buf))


def decode_mmc(body: bytes | memoryview) -> list[MmcCmd]:
    """Parse an MMC request body (after the op word).  ``EINVAL`` when it is malformed,
    ``EOVERFLOW`` for a command above ``MMC_IOC_MAX_BYTES``."""
    mv = memoryview(body)
    if len(mv) < 4:
        raise error(errno.EINVAL, "MMC request is truncated")
    (n,) = U32.unpack_from(mv, 0)
    if not 1 <= n <= MMC_IOC_MAX_CMDS:
        raise error(errno.EINVAL, f"an MMC command list holds 1..{MMC_IOC_MAX_CMDS} commands, got {n}")
    off = 4
    cmds = []
    for _ in range(n):
        if off + _CMD.size > len(mv):
            raise error(errno.EINVAL, "MMC request is truncated")
        wf, opcode, blocks, blksz = _CMD.unpack_from(mv, off)
        off += _CMD.size
        size = blocks * blksz
        if size > MMC_IOC_MAX_BYTES:
            raise error(errno.EOVERFLOW, f"an MMC command moves at most {MMC_IOC_MAX_BYTES} bytes, got {size}")
        data = b""
        if wf:
            if off + size > len(mv):
                raise error(errno.EINVAL, "MMC request data is truncated")
            data = bytes(mv[off : off + size])
            off += size
        cmds.append(MmcCmd(wf, opcode, blocks, blksz, data))
    if off != len(mv):
        raise error(errno.EINVAL, "MMC request has trailing bytes")
    return cmds


def send_message(sock: socket.socket, body: bytes) -> None:
    """Send one length-prefixed message."""
    sock.sendall(U32.pack(len(body)) + body)


def recv_message(sock: socket.socket) -> bytes | None:
    """One message, or ``None`` when the peer closed before its first byte.
    ``ConnectionError`` when it closes mid-message, ``EMSGSIZE`` above ``MAX_MESSAGE``."""
    head = _recv_exact(sock, 4, allow_eof=True)
    if head is None:
        return None
    (n,) = U32.unpack(head)
    if n > MAX_MESSAGE:
        raise error(errno.EMSGSIZE, f"emulated RPMB message of {n} bytes exceeds {MAX_MESSAGE}")
    body = _recv_exact(sock, n, allow_eof=False)
    assert body is not None
    return body


def _recv_exact(sock: socket.socket, n: int, *, allow_eof: bool) -> bytes | None:
    buf = bytearray(n)
    mv = memoryview(buf)
    done = 0
    while done < n:
        got = sock.recv_into(mv[done:])
        if got == 0:
            if done == 0 and allow_eof:
                return None
            raise ConnectionResetError(errno.ECONNRESET, "emulated RPMB connection closed mid-message")
        done += got
    return bytes(buf)
