"""The RPMB client: :class:`RpmbDevice`.

``RpmbDevice.open(path)`` opens ``/dev/mmcblkNrpmb`` (or a node of that name that the
``LD_PRELOAD`` harness relays), an NVMe controller ``/dev/nvmeN``, or the Unix socket
of a running emulator, told apart by the file's type and name.

Two key models:

* **key handles**: ``key`` is a keyring_types ``Key`` whose plaintext the caller may
  use (user, trusted, encrypted, derived, an in-process logon key), 32 raw bytes, or
  an :class:`~keyring_types.hmac.HmacSha256`.  The client signs requests and checks
  every response: type, result, MAC, nonce, counter, address and block count.
* **pre-signed frames**: :meth:`RpmbDevice.submit` relays request frames signed
  elsewhere (a TEE, a factory server) and returns the response frames for the
  signer to check; the host never holds the key.

Errors (``OSError``): the device's result code as :func:`keyring_types.rpmb.codes.result_errno`
maps it (``ENOKEY``, ``EKEYREJECTED``, ``ESTALE``, ``EINVAL``, ``EIO``); ``EBADMSG``
for a response that does not authenticate or does not match the request;
``EEXIST`` when a key is already programmed; ``EPERM`` for key programming
without confirmation; ``EOPNOTSUPP`` for a key whose plaintext user space cannot
read (a kernel logon key); ``EROFS`` for a write on a read-only open; the
transport's errno (``ECONNRESET``, ``ETIMEDOUT``, ...) when the device goes away.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any, Self

import attrs

from keyring_types.errors import error
from keyring_types.hmac import HmacSha256
from keyring_types.rpmb import frames as fr
from keyring_types.rpmb.codes import RequestType, ResponseType, Result, result_code
from keyring_types.rpmb.keys import MacKey
from keyring_types.rpmb.transport import HARNESS_DEVICE_ENV, EmulatorTransport, MmcTransport
from keyring_types.rpmb.wire import (
    MMC_READ_MULTIPLE_BLOCK,
    MMC_WRITE_MULTIPLE_BLOCK,
    RELIABLE_WRITE,
    MmcCmd,
)
from keyring_types.secret import SecretBuffer

__all__ = ["RpmbDevice", "Capabilities", "Version", "API_VERSION", "CONFIRM"]

#: The client's API version, reported by :meth:`RpmbDevice.version`.
API_VERSION = 1
#: What ``program_key(confirm=...)`` must be given: programming is once in a device's life.
CONFIRM = True
#: The result-read request (type 5, all else zero): the same bytes every time.
_RESULT_READ = bytes(fr.result_read_request())
#: The transport's limit on one read command (MMC_IOC_MAX_BYTES / 512).
_MAX_READ_FRAMES = 1024


@attrs.frozen
class Version:
    """What :meth:`RpmbDevice.version` reports."""

    api: int  #: this client's API version
    transport: str  #: "emulator", "mmc" or "nvme"
    device: str  #: the device's own revision, as far as the transport tells it


@attrs.frozen
class Capabilities:
    """What :meth:`RpmbDevice.capabilities` reports."""

    device_type: str  #: "emmc" or "nvme"
    emulated: bool
    target: int  #: RPMB target (NVMe) / region; 0 on eMMC
    capacity: int  #: in 128 KiB units
    capacity_blocks: int  #: in blocks of ``block_size`` bytes
    block_size: int  #: 256 (eMMC half sectors) or 512 (NVMe sectors): the unit of addresses and counts
    max_write_blocks: int  #: largest authenticated write (the client splits larger ones)
    max_read_blocks: int  #: largest authenticated read (the client splits larger ones)


def _is_mmc_name(path: str) -> bool:
    name = Path(path).name
    return name.startswith("mmcblk") and name.endswith("rpmb")


def _harnessed(path: str) -> bool:
    """``path`` is the device the LD_PRELOAD harness relays in this process (any name)."""
    dev = os.environ.get(HARNESS_DEVICE_ENV)
    if not dev:
        return False
    return os.path.abspath(dev) == os.path.abspath(path)


def _is_nvme_name(path: str) -> bool:
    name = Path(path).name
    return name.startswith("nvme") and name[4:].isdigit()


class RpmbDevice:
    """One RPMB partition (see the module docstring).  Use :meth:`open`."""

    def __init__(self, transport: Any) -> None:
        self._t = transport
        self._nvme = getattr(transport, "kind", "") == "nvme"
        self._caps: Capabilities | None = None
        self._counter: int | None = None  # from the last authenticated response

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False, timeout: float = 30.0) -> RpmbDevice:
        """Open a device node or an emulator's socket.  ``ENOENT`` when ``path`` is
        missing, ``ENODEV`` when it is neither an RPMB node nor a socket, the errno of
        the connection or ``open`` otherwise."""
        p = os.fspath(path)
        try:
            mode = os.stat(p).st_mode
        except FileNotFoundError:
            mode = 0  # the LD_PRELOAD harness answers open() of a path that need not exist
        if stat.S_ISSOCK(mode):
            return cls(EmulatorTransport(p, readonly=readonly, timeout=timeout))
        if _is_nvme_name(p) and stat.S_ISCHR(mode):
            from keyring_types.rpmb.nvme import NvmeTransport

            return cls(NvmeTransport(p, readonly=readonly))
        if _is_mmc_name(p) or _harnessed(p):
            # A character device, or a path the LD_PRELOAD harness relays (which need not exist).
            try:
                return cls(MmcTransport(p, readonly=readonly))
            except OSError as exc:
                raise error(exc.errno or errno.EIO, f"cannot open {p}: {exc.strerror}") from None
        if not mode:
            raise error(errno.ENOENT, f"no RPMB device at {p}")
        raise error(errno.ENODEV, f"{p} is not an RPMB device node (mmcblkNrpmb, nvmeN) or an emulator socket")

    def close(self) -> None:
        """Release the transport."""
        self._t.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the device is -------------------------------------------------------

    def version(self) -> Version:
        """The client API version, the transport and the device revision."""
        info = self._t.info()
        if self._nvme:
            return Version(API_VERSION, "nvme", "NVMe RPMB (Security Send/Receive, SECP 0xEA)")
        rev = f"eMMC EXT_CSD_REV {info.ext_csd_rev}"
        if self._t.kind == "emulator":
            rev = f"emulated {rev} (protocol {info.protocol})"
        return Version(API_VERSION, self._t.kind, rev)

    def capabilities(self) -> Capabilities:
        """Device type, target, capacity and the largest write/read (``ENODEV``
        when the geometry cannot be found).  Asked once per open: it does not change."""
        if self._caps is not None:
            return self._caps
        self._caps = self._capabilities()
        return self._caps

    def _capabilities(self) -> Capabilities:
        info = self._t.info()
        if self._nvme:
            return self._t.capabilities()  # type: ignore[no-any-return]
        max_read = info.max_read_blocks or _MAX_READ_FRAMES
        return Capabilities(
            device_type="emmc",
            emulated=self._t.kind == "emulator",
            target=0,
            capacity=info.size_mult,
            capacity_blocks=info.size_mult * 512,
            block_size=256,
            max_write_blocks=max(1, info.rel_wr_sec_c * 2),
            max_read_blocks=min(max_read, _MAX_READ_FRAMES),
        )

    # -- the JEDEC sequences (spec 2.3) -------------------------------------------

    def _write_sequence(self, request: bytes | memoryview, *, secret: bool = False) -> bytes:
        """Reliable write of ``request``, result read, one response frame.  A ``secret``
        request (the key-programming frame, a view of secret memory) goes as it is:
        the transport copies it only into memory it wipes."""
        n = len(request) // fr.FRAME_SIZE
        cmds = [
            MmcCmd(RELIABLE_WRITE | 1, MMC_WRITE_MULTIPLE_BLOCK, n, data=request if secret else bytes(request),
                   secret=secret),
            MmcCmd(1, MMC_WRITE_MULTIPLE_BLOCK, 1, data=_RESULT_READ),
            MmcCmd(0, MMC_READ_MULTIPLE_BLOCK, 1),
        ]
        return self._t.mmc(cmds)[0]  # type: ignore[no-any-return]

    def _read_sequence(self, request: bytes, frames: int) -> bytes:
        """Request frame, then ``frames`` response frames."""
        cmds = [
            MmcCmd(1, MMC_WRITE_MULTIPLE_BLOCK, 1, data=bytes(request)),
            MmcCmd(0, MMC_READ_MULTIPLE_BLOCK, frames),
        ]
        return self._t.mmc(cmds)[0]  # type: ignore[no-any-return]

    def _writable(self, what: str) -> None:
        if self._t.readonly:
            raise error(errno.EROFS, f"{what} needs the RPMB device opened for writing")

    # -- operations -------------------------------------------------------------------

    def program_key(self, key: Any, *, confirm: object = False) -> None:
        """Program the device's authentication key: once in its life, irreversible.

        ``confirm`` must be ``True``.  The device's counter is read first and a
        programmed device is refused (``EEXIST``) without sending the key; the
        programming request is sent once and never retried: when its outcome is
        unknown (``ECONNRESET``, ``ETIMEDOUT``, ``EIO``) read the counter with the
        key to find out.  ``EPERM`` without confirmation, ``EROFS`` read-only,
        ``EOPNOTSUPP`` for an unreadable key, ``EINVAL`` for a key not 32 bytes.
        """
        if confirm is not True:
            raise error(errno.EPERM, "programming an RPMB key is irreversible: pass confirm=True")
        self._writable("programming the key")
        if self._nvme:
            self._t.program_key(key)
            return
        with MacKey(key):
            pass  # the key is readable and 32 bytes (EOPNOTSUPP / EINVAL before any I/O)
        request = _program_key_frame(key)
        try:
            if self._key_programmed():
                raise error(errno.EEXIST, "the RPMB device already has an authentication key (it can be programmed once)")
            # Sent once: a lost answer is reported, never retried (a retry could meet a
            # device that took the first one and answer with a confusing failure).
            view = request.view()
            try:
                resp = self._write_sequence(view, secret=True)
            finally:
                view.release()
        finally:
            request.wipe()
        r = fr.Frame(resp)
        if r.req_resp != ResponseType.PROGRAM_KEY:
            raise error(errno.EBADMSG, f"RPMB key-programming response has type {r.req_resp:#06x}, expected 0x0100")
        if result_code(r.result) != Result.OK:
            code = result_code(r.result)
            if code in (Result.GENERAL_FAILURE, Result.WRITE_FAILURE) and self._key_programmed():
                raise error(errno.EEXIST, "the RPMB device refused the key: it already has one")
            fr.check_program_key_response(resp)

    def _key_programmed(self) -> bool:
        """Whether the device has a key: its counter-read result says so without one."""
        nonce = os.urandom(fr.NONCE_SIZE)
        resp = self._read_sequence(bytes(fr.counter_read_request(nonce)), 1)
        f = fr.Frame(resp)
        if f.req_resp != ResponseType.READ_COUNTER:
            raise error(errno.EBADMSG, f"RPMB counter response has type {f.req_resp:#06x}, expected 0x0200")
        return result_code(f.result) != Result.KEY_NOT_PROGRAMMED

    def counter(self, key: Any) -> int:
        """The write counter, from a response whose MAC and nonce are checked."""
        if self._nvme:
            return self._t.counter(key)  # type: ignore[no-any-return]
        nonce = os.urandom(fr.NONCE_SIZE)
        with MacKey(key) as h:
            resp = self._read_sequence(bytes(fr.counter_read_request(nonce)), 1)
            r = fr.check_counter_response(h, resp, nonce=nonce)
            _check_echo(r.block_count, 1, "counter read", allow=(0,))
            if r.address != 0:
                raise error(errno.EBADMSG, "RPMB counter response address does not match the request")
            self._counter = r.write_counter
            return r.write_counter

    def write_blocks(self, address: int, data: bytes | bytearray | memoryview, key: Any) -> int:
        """Write ``data`` (whole 256-byte blocks) from block ``address``; returns the new
        counter.  A write above the device's reliable-write limit goes as several
        authenticated writes in address order, each atomic on its own.  ``EINVAL`` for
        a bad span, the device's result errno, ``EBADMSG`` for a response that does
        not authenticate or match."""
        self._writable("an authenticated write")
        data = bytes(data)
        if not data or len(data) % fr.DATA_SIZE:
            raise error(errno.EINVAL, f"RPMB data is whole {fr.DATA_SIZE}-byte blocks, got {len(data)} bytes")
        if self._nvme:
            return self._t.write_blocks(address, data, key)  # type: ignore[no-any-return]
        caps = self.capabilities()
        blocks = len(data) // fr.DATA_SIZE
        if not isinstance(address, int) or address < 0 or address + blocks > caps.capacity_blocks:
            raise error(errno.EINVAL, f"{blocks} blocks at {address} do not fit the partition of {caps.capacity_blocks} blocks")
        with MacKey(key) as h:
            # The counter of our last authenticated answer saves a round trip; if another
            # writer moved it since, the device refuses the write (COUNTER_FAILURE, nothing
            # written) and the write is sent once more with the counter read afresh.
            counter = self._counter if self._counter is not None else self.counter(h)
            step = caps.max_write_blocks
            for i in range(0, blocks, step):
                chunk = data[i * fr.DATA_SIZE : (i + step) * fr.DATA_SIZE]
                try:
                    counter = self._write_one(h, chunk, address + i, counter)
                except OSError as exc:
                    self._counter = None
                    if exc.errno != errno.ESTALE:
                        raise
                    counter = self._write_one(h, chunk, address + i, self.counter(h))
                self._counter = counter
        return counter

    def _write_one(self, h: HmacSha256, chunk: bytes, address: int, counter: int) -> int:
        request = fr.write_request(h, chunk, address=address, write_counter=counter)
        resp = self._write_sequence(bytes(request))
        r = fr.check_write_response(h, resp, address=address, write_counter=counter)
        _check_echo(r.block_count, len(chunk) // fr.DATA_SIZE, "write")
        return r.write_counter

    def read_blocks(self, address: int, count: int, key: Any) -> bytes:
        """``count`` blocks from ``address``, every response frame authenticated (one
        MAC over each read), nonce, address, result and block count checked."""
        if not isinstance(count, int) or count < 1 or not isinstance(address, int) or address < 0:
            raise error(errno.EINVAL, "read needs a block address >= 0 and a count >= 1")
        if self._nvme:
            return self._t.read_blocks(address, count, key)  # type: ignore[no-any-return]
        step = self.capabilities().max_read_blocks
        out = []
        with MacKey(key) as h:
            for i in range(0, count, step):
                n = min(step, count - i)
                nonce = os.urandom(fr.NONCE_SIZE)
                resp = self._read_sequence(bytes(fr.read_request(nonce, address=address + i)), n)
                r = fr.check_read_response(h, resp, nonce=nonce, address=address + i, blocks=n)
                _check_echo(r.block_count, n, "read")
                out.append(r.data())
        return b"".join(out)

    def submit(self, frames: bytes | bytearray | memoryview, *, response_frames: int | None = None) -> bytes:
        """Relay pre-signed request frames and return the response frames unchecked
        but for their type (the signer checks the MAC).  Key programming and writes
        go as reliable write + result read, counter reads and reads as request + N
        response frames (N = ``response_frames``, else the request's block count,
        else 1).  ``EINVAL`` for mixed or unknown request types, ``EROFS`` for a
        write-class request on a read-only open, ``EBADMSG`` when the response type
        is not the request's."""
        buf = bytes(frames)
        if self._nvme:
            return self._t.submit(buf, 0, response_frames)  # type: ignore[no-any-return]
        rtype = fr.request_type(buf)
        n = len(buf) // fr.FRAME_SIZE
        if rtype in (RequestType.PROGRAM_KEY, RequestType.AUTH_WRITE):
            self._writable("a write-class RPMB request")
            resp = self._write_sequence(buf)
        elif rtype in (RequestType.READ_COUNTER, RequestType.AUTH_READ):
            if n != 1:
                raise error(errno.EINVAL, "a read-class RPMB request is one frame")
            want = response_frames or fr.Frame(buf).block_count or 1
            if rtype == RequestType.READ_COUNTER:
                want = 1
            resp = self._read_sequence(buf, want)
        else:
            raise error(errno.EINVAL, f"RPMB request type {rtype:#06x} cannot be relayed (1-4 only)")
        expect = (rtype & 0xFF) << 8
        bad = {f.req_resp for f in fr.iter_frames(resp)} - {expect}
        if bad:
            raise error(errno.EBADMSG, f"RPMB response type {sorted(bad)} does not answer request {rtype:#06x}")
        return resp


def _check_echo(value: int, n: int, what: str, allow: tuple[int, ...] | None = None) -> None:
    ok = allow if allow is not None else (0, n)
    if value not in ok:
        raise error(errno.EBADMSG, f"RPMB {what} response block count {value} does not match the request ({n})")


def _program_key_frame(key: Any) -> SecretBuffer:
    """The key-programming frame for any accepted key form, in secret memory (it holds
    the key): the caller wipes it."""
    if isinstance(key, HmacSha256):
        raise error(errno.EINVAL, "programming needs the key itself (raw bytes or a Key handle), not an HmacSha256")
    frame = SecretBuffer(fr.FRAME_SIZE)
    out = frame.writable()
    try:
        fr.program_key_request(key, out=out)
    except BaseException:
        out.release()
        frame.wipe()
        raise
    out.release()
    return frame
