"""How RPMB command lists reach an eMMC: the emulator's socket, or ``/dev/mmcblkNrpmb``.

Both take the MMC command lists of :mod:`keyring_types.rpmb.wire` (spec ``rpmb.md``
section 2.3) and return the data of the read commands, so the client above them
does not know which it talks to.  NVMe is in :mod:`keyring_types.rpmb.nvme`.

Errors: ``ECONNREFUSED``/``ENOENT`` when no emulator listens, ``ECONNRESET`` when it
goes away mid-call, ``ETIMEDOUT`` when it stops answering; for a device node the
errno of ``open``/``ioctl``.  ``EROFS`` for a write-class command list on a
transport opened read-only.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keyring_types.errors import error
from keyring_types.rpmb.wire import (
    OP_INFO,
    OP_VENDOR,
    U32,
    DeviceInfo,
    MmcCmd,
    check_mmc,
    encode_mmc_message,
    recv_message,
    send_message,
    wipe,
)

__all__ = [
    "Transport",
    "EmulatorTransport",
    "MmcTransport",
    "MMC_IOC_CMD",
    "MMC_IOC_MULTI_CMD",
    "MMC_RPMB_FLAGS",
    "pack_multi_cmd",
    "wipe_multi_cmd",
    "HARNESS_SOCKET_ENV",
    "HARNESS_DEVICE_ENV",
]

# include/uapi/linux/mmc/ioctl.h (spec 2.2): _IOWR(179, 0/1, ...).
MMC_IOC_CMD = 0xC048B300
MMC_IOC_MULTI_CMD = 0xC008B301
#: MMC_RSP_R1 | MMC_CMD_ADTC (PRESENT | CRC | OPCODE | ADTC), what the kernel itself uses for RPMB.
MMC_RPMB_FLAGS = 0x35
# write_flag, is_acmd, opcode, arg, response[4], flags, blksz, blocks, postsleep min/max,
# data_timeout_ns, cmd_timeout_ms, pad, data_ptr: 72 bytes.
_IOC_CMD = struct.Struct("<iiII4IIIIIIIIIQ")
assert _IOC_CMD.size == 72

#: Set by ``ktctl rpmb harness-env``: a program under the harness reaches the emulator here.
HARNESS_SOCKET_ENV = "KT_RPMB_HARNESS_SOCKET"
HARNESS_DEVICE_ENV = "KT_RPMB_HARNESS_DEVICE"


class Transport(ABC):
    """An eMMC RPMB partition that runs MMC command lists."""

    kind: str = ""
    readonly: bool = False

    @abstractmethod
    def mmc(self, cmds: list[MmcCmd]) -> list[bytes]:
        """Run ``cmds`` as one ``MMC_IOC_MULTI_CMD``; the data of each read command, in order."""

    @abstractmethod
    def info(self) -> DeviceInfo:
        """The card's RPMB geometry (``ENODEV`` when it cannot be found out)."""

    def vendor(self, packet: bytes) -> bytes:
        """Relay one authenticated vendor command packet (``EOPNOTSUPP`` by default)."""
        raise error(errno.EOPNOTSUPP, f"{self.kind} transport has no vendor command channel")

    @abstractmethod
    def close(self) -> None:
        """Release the connection or device node."""


class EmulatorTransport(Transport):
    """The Unix socket of a running emulator (:mod:`keyring_types.rpmb.emulator`)."""

    kind = "emulator"

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False, timeout: float = 30.0) -> None:
        self.path = os.fspath(path)
        self.readonly = readonly
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock.settimeout(timeout)
        #: Set once an exchange failed part-way: a late reply may still come, so the
        #: connection is out of step and is never used again.
        self._broken = False
        try:
            self._sock.connect(self.path)
        except OSError as exc:
            self._sock.close()
            raise error(exc.errno or errno.ECONNREFUSED, f"no emulated RPMB device answers on {self.path}: {exc.strerror}") from None

    def _call(self, body: bytes) -> bytes:
        return self._exchange(body, framed=False)

    def _exchange(self, msg: bytes | bytearray, *, framed: bool) -> bytes:
        """Send ``msg`` (a body, or with ``framed`` a whole length-prefixed message) and
        return the reply's body after its errno word."""
        if self._broken:
            raise error(errno.ECONNRESET, f"the connection to the emulated RPMB device on {self.path} was dropped "
                        "after an earlier call failed; open the device again")
        try:
            if framed:
                self._sock.sendall(msg)
            else:
                send_message(self._sock, bytes(msg))
            reply = recv_message(self._sock)
        except TimeoutError:
            self._drop()
            raise error(errno.ETIMEDOUT, f"emulated RPMB device on {self.path} did not answer in time") from None
        except OSError as exc:
            self._drop()
            if getattr(exc, "errno", None) == errno.EMSGSIZE:
                raise
            raise error(errno.ECONNRESET, f"emulated RPMB device on {self.path} went away: {exc.strerror or exc}") from None
        if reply is None:
            self._drop()
            raise error(errno.ECONNRESET, f"emulated RPMB device on {self.path} closed the connection")
        if len(reply) < 4:
            raise error(errno.EBADMSG, "emulated RPMB reply is truncated")
        (err,) = U32.unpack_from(reply)
        if err:
            raise error(err, f"emulated RPMB device refused the command: {os.strerror(err)}")
        return reply[4:]

    def mmc(self, cmds: list[MmcCmd]) -> list[bytes]:
        """See :meth:`Transport.mmc`; ``EBADMSG`` when the reply's size is not what the reads ask."""
        msg = encode_mmc_message(cmds)
        try:
            body = self._exchange(msg, framed=True)
        finally:
            if any(c.secret for c in cmds):
                wipe(msg)  # the key-programming frame: gone from this process once sent
        out = []
        off = 0
        for c in cmds:
            if not c.is_write:
                size = c.blocks * c.blksz
                out.append(body[off : off + size])
                off += size
        if off != len(body):
            raise error(errno.EBADMSG, f"emulated RPMB reply is {len(body)} bytes, the reads ask for {off}")
        return out

    def info(self) -> DeviceInfo:
        """The emulator's INFO reply."""
        return DeviceInfo.unpack(self._call(U32.pack(OP_INFO)))

    def vendor(self, packet: bytes) -> bytes:
        """Relay a vendor packet to the emulated flash device behind the socket."""
        return self._call(U32.pack(OP_VENDOR) + packet)

    def _drop(self) -> None:
        """Give up the connection after a failed exchange (its replies would be out of step)."""
        self._broken = True
        self._sock.close()

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()


def pack_multi_cmd(cmds: list[MmcCmd]) -> tuple[bytearray, list[Any]]:
    """The ``struct mmc_ioc_multi_cmd`` for ``cmds`` and the ctypes buffers its
    ``data_ptr`` fields point into (keep them alive across the ioctl; wipe those of
    ``secret`` commands after it, :func:`wipe_multi_cmd`)."""
    buf = bytearray(8 + _IOC_CMD.size * len(cmds))
    struct.pack_into("<Q", buf, 0, len(cmds))
    keep = []
    for i, c in enumerate(cmds):
        size = c.blocks * c.blksz
        # from_buffer_copy takes any buffer (a SecretBuffer's view too) with no bytes in between.
        data = (ctypes.c_char * size).from_buffer_copy(c.data) if c.is_write else ctypes.create_string_buffer(size)
        keep.append(data)
        _IOC_CMD.pack_into(
            buf, 8 + i * _IOC_CMD.size,
            c.write_flag if c.write_flag < 1 << 31 else c.write_flag - (1 << 32),
            0, c.opcode, 0, 0, 0, 0, 0, MMC_RPMB_FLAGS, c.blksz, c.blocks, 0, 0, 0, 0, 0, ctypes.addressof(data),
        )
    return buf, keep


def wipe_multi_cmd(cmds: list[MmcCmd], keep: list[Any]) -> None:
    """Zero the ctypes copies :func:`pack_multi_cmd` made of ``secret`` commands' data."""
    for c, k in zip(cmds, keep, strict=True):
        if c.secret:
            ctypes.memset(k, 0, ctypes.sizeof(k))


class MmcTransport(Transport):
    """``/dev/mmcblkNrpmb``: command lists through ``MMC_IOC_MULTI_CMD``."""

    kind = "mmc"

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False,
                 ioctl: Callable[[int, int, bytearray], Any] | None = None) -> None:
        self.path = os.fspath(path)
        self.readonly = readonly
        # The kernel's RPMB ioctls need the node open for writing (mmc-utils opens O_RDWR).
        self._fd = os.open(self.path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        self._ioctl = ioctl or (lambda fd, req, arg: fcntl.ioctl(fd, req, arg, True))

    def mmc(self, cmds: list[MmcCmd]) -> list[bytes]:
        """One ``MMC_IOC_MULTI_CMD``; errno of the ioctl on failure."""
        check_mmc(cmds)  # the same limits as the emulator's wire
        buf, keep = pack_multi_cmd(cmds)
        try:
            self._ioctl(self._fd, MMC_IOC_MULTI_CMD, buf)
        except OSError as exc:
            raise error(exc.errno or errno.EIO, f"MMC_IOC_MULTI_CMD on {self.path} failed: {exc.strerror}") from None
        finally:
            wipe_multi_cmd(cmds, keep)
        return [bytes(k.raw) for c, k in zip(cmds, keep, strict=True) if not c.is_write]

    def info(self) -> DeviceInfo:
        """RPMB_SIZE_MULT and REL_WR_SEC_C from sysfs; under the harness, from its emulator."""
        name = Path(self.path).name
        card = Path("/sys/class/mmc_rpmb") / name / "device"
        try:
            mult = int((card / "raw_rpmb_size_mult").read_text(), 16)
            rel = int((card / "rel_sectors").read_text(), 16)
            rev_text = (card / "rev").read_text() if (card / "rev").exists() else "0"
            return DeviceInfo(0, int(rev_text, 16), mult, rel, 0, 0)
        except (OSError, ValueError):
            pass
        sock, dev = os.environ.get(HARNESS_SOCKET_ENV), os.environ.get(HARNESS_DEVICE_ENV)
        if sock and dev and os.path.abspath(dev) == os.path.abspath(self.path):
            t = EmulatorTransport(sock)
            try:
                return t.info()
            finally:
                t.close()
        raise error(errno.ENODEV, f"no sysfs geometry for {self.path} (expected {card})")

    def close(self) -> None:
        """Close the device node."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
