"""An EMULATED eMMC RPMB partition, served as its own process on a Unix socket.

``python -m keyring_types.rpmb.emulator --socket PATH --state DIR [options]``
(also ``ktctl rpmb emulate``).

The device model takes the MMC command lists of :mod:`keyring_types.rpmb.wire`
exactly as a card below the kernel's ``/dev/mmcblkNrpmb`` does (spec ``rpmb.md``
sections 1 and 2.3): a CMD25 delivers request frames (key programming and data
writes must carry the reliable-write bit), a CMD18 reads the response, a
result-read request (type 5) fetches the outcome of the last key programming or
write.  It programs its key once, keeps the write counter, answers the result
codes of spec 1.5 in a selectable check order (1.10), enforces the reliable-write
limit and the capacity, and keeps key, data and counter in a crash-safe state
directory (:mod:`keyring_types.rpmb.emulator_store`).

Behaviours that differ between real parts and known emulators are options
(:class:`Behaviour`): the result for re-programming a key (0x01 as a real eMMC
reports, or 0x05 as rpmb_sim, QEMU and Trusty answer), the counter advancing per
write (JEDEC) or per block (OP-TEE's RPMB_EMU), the block count echoed in
responses (N, 0, or N in host byte order as OP-TEE's emulator does), and the
order of the write checks (virtio's or rpmb_sim's).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import socketserver
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from keyring_types.errors import error
from keyring_types.hmac import HmacSha256
from keyring_types.rpmb import frames as fr
from keyring_types.rpmb.codes import COUNTER_EXPIRED, RequestType, ResponseType, Result
from keyring_types.rpmb.emulator_options import CHECK_ORDERS, ECHO_MODES, add_arguments
from keyring_types.rpmb.emulator_store import OutcomeUnknown, RpmbStore
from keyring_types.rpmb.wire import (
    BLOCK_SIZE,
    MMC_READ_MULTIPLE_BLOCK,
    MMC_WRITE_MULTIPLE_BLOCK,
    OP_INFO,
    OP_MMC,
    OP_VENDOR,
    PROTOCOL_VERSION,
    U32,
    DeviceInfo,
    MmcCmd,
    decode_mmc,
    recv_message,
    send_message,
)
from keyring_types.secret import SecretBuffer

__all__ = ["Behaviour", "EmulatedEmmcRpmb", "serve", "spawn_emulator", "run_from_args", "main", "socket_alive"]

EXT_CSD_REV = 8  # eMMC 5.1
MAX_COUNTER = 0xFFFFFFFF


@attrs.frozen
class Behaviour:
    """Selectable device behaviours (see the module docstring)."""

    rekey_result: int = Result.GENERAL_FAILURE
    counter_per_block: bool = False
    block_count_echo: str = "count"
    check_order: str = "virtio"
    max_write_blocks: int = 32
    max_read_blocks: int = 0  # 0: only the transport's limit

    def __attrs_post_init__(self) -> None:
        if self.rekey_result not in (Result.GENERAL_FAILURE, Result.WRITE_FAILURE):
            raise error(errno.EINVAL, "re-key result must be 0x01 (general failure) or 0x05 (write failure)")
        if self.block_count_echo not in ECHO_MODES:
            raise error(errno.EINVAL, f"block-count echo must be one of {', '.join(ECHO_MODES)}")
        if self.check_order not in CHECK_ORDERS:
            raise error(errno.EINVAL, f"check order must be one of {', '.join(CHECK_ORDERS)}")
        if not 2 <= self.max_write_blocks <= 510 or self.max_write_blocks % 2:
            # EXT_CSD[222] counts 512-byte sectors, two RPMB blocks each, 1..255.
            raise error(errno.EINVAL, "max write blocks must be an even number in 2..510")
        if not 0 <= self.max_read_blocks <= 65535:
            raise error(errno.EINVAL, "max read blocks must be in 0..65535")


class EmulatedEmmcRpmb:
    """The card: runs MMC command lists against a :class:`RpmbStore`.  Thread-safe."""

    def __init__(self, store: RpmbStore, behaviour: Behaviour) -> None:
        self.store = store
        self.b = behaviour
        self._lock = threading.Lock()
        self._hmac: HmacSha256 | None = None
        key = store.key()
        if key is not None:
            self._hmac = HmacSha256(key)
            key.wipe()
        # What the next CMD18 reads: set by a read-type request, taken by the read.
        self._pending: tuple[str, bytes] | None = None
        # The response frame a result-read request returns (spec 1.6).
        self._last_result: bytes = bytes(fr.build(ResponseType.AUTH_WRITE, result=Result.GENERAL_FAILURE))

    def info(self) -> DeviceInfo:
        """What the card reports (EXT_CSD rev, RPMB_SIZE_MULT, REL_WR_SEC_C)."""
        return DeviceInfo(
            PROTOCOL_VERSION,
            EXT_CSD_REV,
            self.store.size_mult,
            self.b.max_write_blocks // 2,
            self.b.max_read_blocks,
            1 if self.b.counter_per_block else 0,
        )

    # -- the command list -------------------------------------------------------

    def run(self, cmds: list[MmcCmd]) -> list[bytes]:
        """Run one ioctl's command list atomically; returns the data of each read
        command.  ``EINVAL`` for a command a card would reject, ``EIO`` for a read
        with no response to give, and for every command once a failed write could
        not be rolled back (until the emulator restarts and its recovery decides)."""
        with self._lock:
            self.store.check()
            out = []
            for c in cmds:
                if c.blksz != BLOCK_SIZE or c.blocks == 0:
                    raise error(errno.EINVAL, f"RPMB transfers whole 512-byte frames (blksz {c.blksz}, blocks {c.blocks})")
                if c.opcode == MMC_WRITE_MULTIPLE_BLOCK and c.is_write:
                    self._request(c)
                elif c.opcode == MMC_READ_MULTIPLE_BLOCK and not c.is_write:
                    out.append(self._respond(c.blocks))
                else:
                    raise error(errno.EINVAL, f"emulated eMMC RPMB takes CMD25 writes and CMD18 reads, not CMD{c.opcode}")
            return out

    def _flag(self, result: int) -> int:
        return result | COUNTER_EXPIRED if self.store.counter >= MAX_COUNTER else result

    def _request(self, c: MmcCmd) -> None:
        buf = c.data
        types = {int.from_bytes(buf[i + fr.OFF_TYPE : i + fr.OFF_TYPE + 2], "big") for i in range(0, len(buf), 512)}
        rtype = next(iter(types)) if len(types) == 1 else -1
        self._pending = None
        if rtype == RequestType.PROGRAM_KEY:
            self._last_result = self._program_key(c)
        elif rtype == RequestType.AUTH_WRITE:
            self._last_result = self._write(c)
        elif rtype == RequestType.RESULT_READ:
            self._pending = ("result", b"")
        elif rtype == RequestType.READ_COUNTER and c.blocks == 1:
            self._pending = ("counter", bytes(buf))
        elif rtype == RequestType.AUTH_READ and c.blocks == 1:
            self._pending = ("read", bytes(buf))
        else:
            # Mixed types, an unknown or unsupported request (device configuration is
            # not emulated), or a read request of several frames: general failure.
            resp = (rtype & 0xFF) << 8 if rtype > 0 else 0
            self._last_result = bytes(fr.build(resp, result=self._flag(Result.GENERAL_FAILURE)))
            self._pending = ("frame", self._last_result)

    def _program_key(self, c: MmcCmd) -> bytes:
        result: int
        if not c.reliable or c.blocks != 1:
            result = Result.GENERAL_FAILURE  # JEDEC: key programming is one reliable-write frame
        elif self._hmac is not None:
            result = self.b.rekey_result
        else:
            key = SecretBuffer(32)
            mv = key.writable()
            try:
                mv[:] = c.data[fr.OFF_KEY_MAC : fr.OFF_KEY_MAC + 32]
            finally:
                mv.release()
            try:
                stored = self.store.program_key(key)
                if stored:
                    self._hmac = HmacSha256(key)
                result = Result.OK if stored else self.b.rekey_result
            except OSError:
                result = self._key_after_failure(key)
            finally:
                key.wipe()
        return bytes(fr.program_key_response(self._flag(result)))

    def _key_after_failure(self, key: SecretBuffer) -> int:
        """The result of a key programming whose store failed: if the key file was made
        (a sync after it failed), the key is programmed, as a restart will find it."""
        try:
            have = self.store.key()
        except OSError:
            have = None
        if have is None:
            return Result.WRITE_FAILURE
        try:
            self._hmac = HmacSha256(have)
            return Result.OK if have == key else self.b.rekey_result
        finally:
            have.wipe()

    def _echo(self, n: int) -> int:
        if self.b.block_count_echo == "zero":
            return 0
        if self.b.block_count_echo == "host-endian":
            return int.from_bytes(n.to_bytes(2, "big"), "little")  # the value stored without htons
        return n

    def _write(self, c: MmcCmd) -> bytes:
        buf = c.data
        first = fr.Frame(buf[:512])
        address, counter, count = first.address, first.write_counter, first.block_count
        n = c.blocks
        # Counter, address and block count (bytes 500..509) are the same in every frame.
        same = len({buf[i + fr.OFF_COUNTER : i + 510] for i in range(0, len(buf), 512)}) == 1

        def reply(result: int, new_counter: int | None = None) -> bytes:
            if self._hmac is None:
                return bytes(fr.build(ResponseType.AUTH_WRITE, address=address, result=self._flag(result)))
            ctr = self.store.counter if new_counter is None else new_counter
            echo = self._echo(n) if result == Result.OK else 0
            return bytes(fr.write_response(self._hmac, address=address, write_counter=ctr,
                                           result=self._flag(result), block_count=echo))

        if not c.reliable or not same or count != n:
            # Writes must be reliable writes whose frames agree and whose block count
            # matches the frames sent (spec 1.3, 1.8).
            return reply(Result.GENERAL_FAILURE)
        size = self.store.blocks
        for check in CHECK_ORDERS[self.b.check_order]:
            if check == "key" and self._hmac is None:
                return reply(Result.KEY_NOT_PROGRAMMED)
            if check == "blocks" and not 1 <= n <= self.b.max_write_blocks:
                return reply(Result.GENERAL_FAILURE)
            if check == "expired" and self.store.counter >= MAX_COUNTER:
                return reply(Result.WRITE_FAILURE)
            if check == "address" and address + n > size:
                return reply(Result.ADDRESS_FAILURE)
            if check == "address-start" and address >= size:
                return reply(Result.ADDRESS_FAILURE)
            if check == "mac" and not (self._hmac is not None and fr.verify(self._hmac, buf)):
                return reply(Result.AUTH_FAILURE)
            if check == "counter" and counter != self.store.counter:
                return reply(Result.COUNTER_FAILURE)
            if check == "address-end" and address + n > size:
                return reply(Result.WRITE_FAILURE)
        step = n if self.b.counter_per_block else 1
        new = min(self.store.counter + step, MAX_COUNTER)
        mv = memoryview(buf)
        data = b"".join([mv[i + fr.OFF_DATA : i + fr.OFF_NONCE] for i in range(0, len(buf), 512)])
        try:
            self.store.write(address, data, new)
        except OutcomeUnknown:
            raise  # no result frame can be true: the ioctl fails (EIO), as a card that stops answering
        except OSError:
            return reply(Result.WRITE_FAILURE)  # rolled back: not written, the counter unchanged
        return reply(Result.OK, new)

    def _respond(self, blocks: int) -> bytes:
        pending, self._pending = self._pending, None
        if pending is None:
            raise error(errno.EIO, "emulated eMMC has no RPMB response to read (no request before CMD18)")
        kind, req = pending
        if kind in ("result", "frame"):
            frame = self._last_result if kind == "result" else req
            return frame + bytes(512 * (blocks - 1))
        nonce = req[fr.OFF_NONCE : fr.OFF_COUNTER]
        h = self._hmac
        if kind == "counter":
            if h is None:
                resp = fr.build(ResponseType.READ_COUNTER, nonce=nonce, result=self._flag(Result.KEY_NOT_PROGRAMMED))
            else:
                resp = fr.counter_read_response(h, nonce=nonce, write_counter=self.store.counter, result=self._flag(Result.OK))
            return bytes(resp) + bytes(512 * (blocks - 1))
        address = int.from_bytes(req[fr.OFF_ADDRESS : fr.OFF_ADDRESS + 2], "big")
        if h is None:
            return bytes(fr.build(ResponseType.AUTH_READ, blocks, nonce=nonce, address=address,
                                  result=self._flag(Result.KEY_NOT_PROGRAMMED)))
        result: int
        if self.b.max_read_blocks and blocks > self.b.max_read_blocks:
            result = Result.GENERAL_FAILURE
        elif address + blocks > self.store.blocks:
            result = Result.ADDRESS_FAILURE
        else:
            result = Result.OK
        data = self.store.read(address, blocks) if result == Result.OK else bytes(256 * blocks)
        out = fr.build(ResponseType.AUTH_READ, blocks, nonce=nonce, address=address,
                       block_count=self._echo(blocks), result=self._flag(result), data=data)
        fr.sign(h, out)
        return bytes(out)


# -- the server ------------------------------------------------------------------------


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        while True:
            try:
                body = recv_message(self.request)
            except OSError:
                return
            if body is None or len(body) < 4:
                return
            (op,) = U32.unpack_from(body)
            try:
                if op == OP_MMC:
                    cmds = decode_mmc(memoryview(body)[4:])
                    reply = U32.pack(0) + b"".join(self.server.device.run(cmds))
                elif op == OP_INFO:
                    reply = U32.pack(0) + self.server.device.info().pack()
                elif op == OP_VENDOR and self.server.vendor is not None:
                    reply = U32.pack(0) + self.server.vendor(body[4:])
                else:
                    reply = U32.pack(errno.ENOTTY)
            except OSError as exc:
                reply = U32.pack(exc.errno or errno.EIO)
            send_message(self.request, reply)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, device: EmulatedEmmcRpmb) -> None:
        self.device = device
        self.vendor: Callable[[bytes], bytes] | None = None
        old = os.umask(0o177)
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)

    def handle_error(self, request: object, client_address: object) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            print(f"rpmb emulator: error serving a client: {exc!r}", file=sys.stderr)


def socket_alive(path: Path) -> bool:
    """Something accepts connections on ``path``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(os.fspath(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _crash_hook(stage: str | None) -> Callable[[str], None]:
    def hook(at: str) -> None:
        if at == stage:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def serve(socket_path: Path, state: Path, behaviour: Behaviour, *, size_mult: int = 2,
          crash_at: str | None = None, ready: threading.Event | None = None) -> int:
    """Run the emulator until SIGTERM/SIGINT.  Starts over a stale socket file
    (one nobody accepts on); returns 1 when a live emulator already serves it.
    ``EADDRINUSE`` when ``socket_path`` is a file other than a socket (left as it
    is); ``EBUSY`` when another emulator serves ``state``; ``EINVAL`` for a geometry
    that differs from the state's; ``EACCES`` from the directory checks."""
    if not 1 <= size_mult <= 128:
        raise error(errno.EINVAL, "size_mult (RPMB_SIZE_MULT, 128 KiB units) must be in 1..128")
    try:
        mode = os.lstat(socket_path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            # Only a stale socket is taken over: a file of another kind is left alone, as bind() would.
            raise error(errno.EADDRINUSE, f"{socket_path} exists and is not a socket")
        if socket_alive(socket_path):
            print(f"rpmb emulator: {socket_path} already has a running emulator", file=sys.stderr)
            return 1
        socket_path.unlink()
    hook = _crash_hook(crash_at)
    store = RpmbStore(state, size_mult=size_mult, slot_blocks=behaviour.max_write_blocks, crash=hook)
    device = EmulatedEmmcRpmb(store, behaviour)
    server = _Server(os.fspath(socket_path), device)
    from keyring_types.rpmb.vendor_emulator import EmulatedAuthFlash

    server.vendor = EmulatedAuthFlash(state).handle
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    if ready is not None:
        ready.set()
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        store.close()
        try:
            socket_path.unlink()
        except FileNotFoundError:
            pass
    return 0


def spawn_emulator(socket_path: Path, state: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start an emulator process (extra command-line ``args``) and wait until it
    accepts connections.  ``OSError`` naming its error output if it does not."""
    cmd = [sys.executable, "-m", "keyring_types.rpmb.emulator", "--socket", os.fspath(socket_path),
           "--state", os.fspath(state), *args]
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errfile,
                                start_new_session=True, env=env)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                errfile.seek(0)
                err = errfile.read(4096).decode(errors="replace").strip()
                raise OSError(errno.EIO, f"emulated RPMB exited with status {proc.returncode}: {err}")
            if socket_alive(socket_path):
                return proc
            time.sleep(0.01)
        proc.kill()
        proc.wait()
    raise OSError(errno.ETIMEDOUT, "emulated RPMB did not start listening within 20 s")


def run_from_args(args: argparse.Namespace) -> int:
    """Build the behaviour from parsed options and serve (errors as :func:`serve`)."""
    behaviour = Behaviour(
        rekey_result=Result.GENERAL_FAILURE if args.rekey_result == "general" else Result.WRITE_FAILURE,
        counter_per_block=args.counter == "per-block",
        block_count_echo=args.block_count_echo,
        check_order=args.check_order,
        max_write_blocks=args.max_write_blocks,
        max_read_blocks=args.max_read_blocks,
    )
    return serve(args.socket, args.state, behaviour, size_mult=args.size_mult, crash_at=args.crash_at)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m keyring_types.rpmb.emulator", description="Emulated eMMC RPMB partition")
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run_from_args(args)
    except OSError as exc:
        print(f"rpmb emulator: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
