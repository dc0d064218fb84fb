"""An EMULATED OP-TEE running the trusted-keys TA, as a separate process.

``python -m keyring_types.trust.tee_emulator --socket PATH --state PATH [--idle-timeout S]``

It stands in for the secure world: it owns a hardware-unique key (HUK) in its
own state file (32 random bytes, created 0400, atomically, by the first SEAL:
an UNSEAL never makes one, it answers ``TEE_ERROR_ITEM_NOT_FOUND``), derives the TA's
unique key from it, and answers the trusted-keys protocol (see
:mod:`keyring_types.trust.tee_wire`) over a Unix socket (mode 0600).  The client
process never sees the HUK or the derived key — only blobs, as with a real TEE.

As the OP-TEE TA does, it accepts only sessions opened with the REE-kernel login,
checks every command's parameter types, seals with AES-256-GCM under a random
16-byte IV (``0x00 | IV | tag | ciphertext``) and answers
``TEE_ERROR_SHORT_BUFFER`` with the size it needs.  One deliberate difference:
a blob whose reserved first byte is not zero is refused
(``TEE_ERROR_BAD_PARAMETERS``) so that no bit of a blob is unchecked.

The TA key derivation is the emulator's own: HMAC-SHA256(HUK, label ‖ TA UUID),
in the spirit of OP-TEE's ``huk_subkey_derive`` for TA-unique keys.
"""

from __future__ import annotations

import argparse
import errno
import os
import secrets
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyring_types.hmac import HmacSha256
from keyring_types.secret import SecretBuffer
from keyring_types.state import load_or_create_secret, load_secret_file, private_dir
from keyring_types.trust.tee_wire import (
    ATTR_MEMREF_INOUT,
    ATTR_MEMREF_INPUT,
    ATTR_MEMREF_OUTPUT,
    ATTR_NONE,
    LOGIN_REE_KERNEL,
    MAX_FRAME,
    MEMREF_ATTRS,
    NUM_PARAMS,
    OP_CLOSE,
    OP_INVOKE,
    OP_OPEN,
    TA_CMD_GET_RANDOM,
    TA_CMD_SEAL,
    TA_CMD_UNSEAL,
    TA_MAX_BUF_SIZE,
    TA_TRUSTED_KEYS_UUID,
    TEE_BLOB_OVERHEAD,
    TEE_ERROR_ACCESS_DENIED,
    TEE_ERROR_BAD_FORMAT,
    TEE_ERROR_BAD_PARAMETERS,
    TEE_ERROR_BAD_STATE,
    TEE_ERROR_ITEM_NOT_FOUND,
    TEE_ERROR_MAC_INVALID,
    TEE_ERROR_NOT_SUPPORTED,
    TEE_ERROR_OUT_OF_MEMORY,
    TEE_ERROR_SECURITY,
    TEE_ERROR_SHORT_BUFFER,
    TEE_IV_SIZE,
    TEE_ORIGIN_TEE,
    TEE_ORIGIN_TRUSTED_APP,
    TEE_SUCCESS,
    TEE_TAG_SIZE,
    U32,
    WIRE_PARAM,
)

__all__ = ["EmulatedTrustedKeysTA", "ensure_emulator", "main", "serve", "spawn_emulator", "stop_spawned"]

HUK_SIZE = 32
_spawned: list[subprocess.Popen[bytes]] = []
#: The TA refuses blobs it could not have made (MAX_BLOB_SIZE in the kernel).
MAX_BLOB = TA_MAX_BUF_SIZE
#: The largest GET_RANDOM answered.  OP-TEE's trusted_keys TA stages the random
#: bytes in a TEE_Malloc'ed buffer from its heap, which its TA_DATA_SIZE sets to
#: 16 KiB, and answers TEE_ERROR_OUT_OF_MEMORY when that allocation fails; so no
#: request above 16 KiB can succeed there (the real limit is a little lower, the
#: heap's own bookkeeping taking some of it).  The kernel asks for at most 128.
MAX_RANDOM = 16 * 1024
_MEMREFS = MEMREF_ATTRS


class _WireParam:
    __slots__ = ("a", "attr", "b", "data", "out")

    def __init__(self, attr: int, a: int, b: int, data: bytes) -> None:
        self.attr, self.a, self.b, self.data = attr, a, b, data
        self.out = b""


class EmulatedTrustedKeysTA:
    """The trusted-keys TA's command handling, keyed by the emulated device's HUK."""

    def __init__(self, huk_path: Path) -> None:
        self._huk_path = huk_path
        self._lock = threading.Lock()
        self._aead: AESGCM | None = None
        # A HUK already there is checked and loaded now, so a bad one stops the
        # start-up; a missing one is made by the first SEAL, never by an UNSEAL
        # (a new HUK opens none of the old blobs).
        try:
            self._ta_key(create=False)
        except OSError as exc:
            if exc.errno != errno.ENOKEY:
                raise

    def _ta_key(self, create: bool) -> AESGCM:
        """The TA's AEAD under HMAC-SHA256(HUK, label ‖ TA UUID); ``ENOKEY`` if there is no HUK."""
        with self._lock:
            if self._aead is None:
                if create:
                    huk = load_or_create_secret(self._huk_path, HUK_SIZE, "hardware-unique key")
                else:
                    huk = load_secret_file(self._huk_path, HUK_SIZE, "hardware-unique key")
                key = SecretBuffer(32)
                try:
                    label = b"emulated OP-TEE TA unique key\0" + TA_TRUSTED_KEYS_UUID.bytes
                    out = key.writable()
                    try:
                        with HmacSha256(huk) as mac:
                            mac.mac_batch(label, len(label), out=out)
                        self._aead = AESGCM(out)
                    finally:
                        out.release()
                finally:
                    huk.wipe()
                    key.wipe()
            return self._aead

    def _aead_for(self, create: bool) -> AESGCM | int:
        """The AEAD, or the GP error to answer with (reported on stderr, naming the file)."""
        try:
            return self._ta_key(create)
        except OSError as exc:
            print(f"tee_emulator: {exc}", file=sys.stderr)
            return TEE_ERROR_ITEM_NOT_FOUND if exc.errno == errno.ENOKEY else TEE_ERROR_SECURITY

    @staticmethod
    def _types(params: list[_WireParam]) -> tuple[int, ...]:
        return tuple(p.attr for p in params)

    def invoke(self, func: int, params: list[_WireParam]) -> int:
        """Run one command; returns the GP result and fills output params."""
        expected = (ATTR_MEMREF_INPUT, ATTR_MEMREF_OUTPUT, ATTR_NONE, ATTR_NONE)
        if func == TA_CMD_GET_RANDOM:
            if self._types(params) != (ATTR_MEMREF_OUTPUT, ATTR_NONE, ATTR_NONE, ATTR_NONE) or not params[0].b:
                return TEE_ERROR_BAD_PARAMETERS
            if params[0].b > MAX_RANDOM:
                return TEE_ERROR_OUT_OF_MEMORY  # what the TA's failed TEE_Malloc answers
            params[0].out = secrets.token_bytes(params[0].b)
            return TEE_SUCCESS
        if func not in (TA_CMD_SEAL, TA_CMD_UNSEAL):
            return TEE_ERROR_NOT_SUPPORTED
        if self._types(params) != expected:
            return TEE_ERROR_BAD_PARAMETERS
        src, dst = params[0], params[1]
        if dst.b > TA_MAX_BUF_SIZE:
            return TEE_ERROR_BAD_PARAMETERS  # as the TA: no output buffer above MAX_BUF_SIZE
        if func == TA_CMD_SEAL:
            need = len(src.data) + TEE_BLOB_OVERHEAD
            if not src.data or need > MAX_BLOB:
                return TEE_ERROR_BAD_PARAMETERS
            if dst.b < need:
                dst.b = need
                return TEE_ERROR_SHORT_BUFFER
            aead = self._aead_for(create=True)
            if isinstance(aead, int):
                return aead
            iv = secrets.token_bytes(TEE_IV_SIZE)
            sealed = aead.encrypt(iv, src.data, None)
            dst.out = b"\x00" + iv + sealed[-TEE_TAG_SIZE:] + sealed[:-TEE_TAG_SIZE]
            dst.b = len(dst.out)
            return TEE_SUCCESS
        blob = src.data
        if len(blob) <= TEE_BLOB_OVERHEAD or len(blob) > MAX_BLOB or blob[0] != 0:
            return TEE_ERROR_BAD_PARAMETERS
        need = len(blob) - TEE_BLOB_OVERHEAD
        if dst.b < need:
            dst.b = need
            return TEE_ERROR_SHORT_BUFFER
        aead = self._aead_for(create=False)
        if isinstance(aead, int):
            return aead
        iv = blob[1 : 1 + TEE_IV_SIZE]
        tag = blob[1 + TEE_IV_SIZE : TEE_BLOB_OVERHEAD]
        try:
            dst.out = aead.decrypt(iv, blob[TEE_BLOB_OVERHEAD:] + tag, None)
        except InvalidTag:
            return TEE_ERROR_MAC_INVALID
        dst.b = len(dst.out)
        return TEE_SUCCESS


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sessions: set[int] = set()
        self.server.active += 1
        try:
            while True:
                head = _recv_exact(self.request, 4)
                if head is None:
                    return
                (length,) = U32.unpack(head)
                if length > MAX_FRAME:
                    return
                body = _recv_exact(self.request, length)
                if body is None:
                    return
                self.server.touch()
                reply = self._dispatch(body, sessions)
                if reply is None:
                    return
                self.request.sendall(U32.pack(len(reply)) + reply)
        finally:
            self.server.active -= 1
            self.server.touch()

    def _parse_params(self, body: bytes, off: int, count: int) -> list[_WireParam] | None:
        params = []
        for _ in range(count):
            if off + WIRE_PARAM.size > len(body):
                return None
            attr, a, b, _c = WIRE_PARAM.unpack_from(body, off)
            off += WIRE_PARAM.size
            data = b""
            if attr in (ATTR_MEMREF_INPUT, ATTR_MEMREF_INOUT):
                if off + b > len(body):
                    return None
                data = body[off : off + b]
                off += b
            params.append(_WireParam(attr, a, b, data))
        return params if off == len(body) else None

    @staticmethod
    def _reply(ret: int, origin: int, session: int, params: list[_WireParam]) -> bytes:
        out = bytearray(U32.pack(ret) + U32.pack(origin) + U32.pack(session) + U32.pack(len(params)))
        for p in params:
            if p.attr in _MEMREFS:
                size = len(p.out) if ret == TEE_SUCCESS and p.attr != ATTR_MEMREF_INPUT else p.b
                out += WIRE_PARAM.pack(p.attr, p.a, size, 0)
                if ret == TEE_SUCCESS and p.attr in (ATTR_MEMREF_OUTPUT, ATTR_MEMREF_INOUT):
                    out += p.out
            else:
                out += WIRE_PARAM.pack(p.attr, p.a, p.b, 0)
        return bytes(out)

    def _dispatch(self, body: bytes, sessions: set[int]) -> bytes | None:
        if len(body) < 4:
            return None
        (op,) = U32.unpack_from(body)
        if op == OP_OPEN:
            if len(body) < 28:
                return None
            ta, login, count = body[4:20], U32.unpack_from(body, 20)[0], U32.unpack_from(body, 24)[0]
            params = self._parse_params(body, 28, count)
            if params is None or count != NUM_PARAMS:
                return self._reply(TEE_ERROR_BAD_FORMAT, TEE_ORIGIN_TEE, 0, params or [])
            if ta != TA_TRUSTED_KEYS_UUID.bytes:
                return self._reply(TEE_ERROR_ITEM_NOT_FOUND, TEE_ORIGIN_TEE, 0, params)
            if login != LOGIN_REE_KERNEL:
                return self._reply(TEE_ERROR_ACCESS_DENIED, TEE_ORIGIN_TRUSTED_APP, 0, params)
            session = self.server.new_session()
            sessions.add(session)
            return self._reply(TEE_SUCCESS, TEE_ORIGIN_TRUSTED_APP, session, params)
        if op == OP_INVOKE:
            if len(body) < 16:
                return None
            session, func, count = (U32.unpack_from(body, o)[0] for o in (4, 8, 12))
            params = self._parse_params(body, 16, count)
            if params is None or count != NUM_PARAMS:
                return self._reply(TEE_ERROR_BAD_FORMAT, TEE_ORIGIN_TEE, session, params or [])
            if session not in sessions:
                return self._reply(TEE_ERROR_BAD_STATE, TEE_ORIGIN_TEE, session, params)
            ret = self.server.ta.invoke(func, params)
            return self._reply(ret, TEE_ORIGIN_TRUSTED_APP, session, params)
        if op == OP_CLOSE:
            if len(body) != 8:
                return None
            (session,) = U32.unpack_from(body, 4)
            sessions.discard(session)
            return self._reply(TEE_SUCCESS, TEE_ORIGIN_TEE, session, [])
        return None


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, ta: EmulatedTrustedKeysTA) -> None:
        self.ta = ta
        self.active = 0
        self._last = time.monotonic()
        self._next = secrets.randbelow(1 << 30) + 1
        self._sess_lock = threading.Lock()
        old = os.umask(0o177)
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that goes away mid-exchange is normal; anything else gets one line.
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            print(f"tee_emulator: error serving a client: {exc!r}", file=sys.stderr)

    def touch(self) -> None:
        self._last = time.monotonic()

    def idle_for(self) -> float:
        return 0.0 if self.active else time.monotonic() - self._last

    def new_session(self) -> int:
        with self._sess_lock:
            self._next += 1
            return self._next


def _socket_alive(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(os.fspath(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def serve(socket_path: Path, state_path: Path, idle_timeout: float | None = None) -> int:
    """Run the emulator until SIGTERM/SIGINT (or ``idle_timeout`` seconds without clients).

    ``EACCES`` when the socket's or the HUK's directory fails the checks of
    :mod:`keyring_types.state` (nobody else may plant or replace them).
    """
    private_dir(socket_path.parent, create=False)
    ta = EmulatedTrustedKeysTA(state_path)
    if socket_path.exists():
        if _socket_alive(socket_path):
            print(f"tee_emulator: {socket_path} already has a running emulator", file=sys.stderr)
            return 1
        socket_path.unlink()
    server = _Server(os.fspath(socket_path), ta)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        while not stop.wait(0.2):
            if idle_timeout is not None and server.idle_for() > idle_timeout:
                break
    finally:
        server.shutdown()
        server.server_close()
        try:
            socket_path.unlink()
        except FileNotFoundError:
            pass
    return 0


def spawn_emulator(socket_path: Path, state_path: Path, idle_timeout: float | None = None) -> subprocess.Popen[bytes]:
    """Start an emulator process and wait until it accepts connections (``OSError`` if it does not)."""
    cmd = [sys.executable, "-m", "keyring_types.trust.tee_emulator"]
    cmd += ["--socket", os.fspath(socket_path), "--state", os.fspath(state_path)]
    if idle_timeout is not None:
        cmd += ["--idle-timeout", str(idle_timeout)]
    # stderr goes to an unlinked file, not a pipe: a long-lived emulator must never
    # block on a full pipe nobody reads; we read the file only if start-up fails.
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errfile, start_new_session=True
        )
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            if _socket_alive(socket_path):
                return proc
            if proc.poll() is not None:
                if _socket_alive(socket_path):
                    return proc  # lost a start-up race to another emulator: use that one
                errfile.seek(0)
                err = errfile.read(4096).decode(errors="replace").strip()
                raise OSError(f"emulated TEE exited with status {proc.returncode}: {err}")
            time.sleep(0.02)
        proc.terminate()
        proc.wait()
    raise OSError("emulated TEE did not start listening within 15 s")


def ensure_emulator(socket_path: Path, state_path: Path, idle_timeout: float = 60.0) -> None:
    """Make sure an emulator is listening on ``socket_path``, starting one (idle-exiting) if not."""
    if not _socket_alive(socket_path):
        # Kept so the child is reaped (and not reported as leaked) while we run.
        _spawned.append(spawn_emulator(socket_path, state_path, idle_timeout))


def stop_spawned(timeout: float = 10.0) -> None:
    """Stop every emulator that :func:`ensure_emulator` started from this process."""
    while _spawned:
        proc = _spawned.pop()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m keyring_types.trust.tee_emulator", description="Emulated OP-TEE trusted-keys TA")
    ap.add_argument("--socket", required=True, type=Path, help="Unix socket to listen on (created 0600)")
    ap.add_argument("--state", required=True, type=Path, help="hardware-unique key file (created 0400 if missing)")
    ap.add_argument("--idle-timeout", type=float, default=None, help="exit after this many seconds without clients")
    args = ap.parse_args(argv)
    return serve(args.socket, args.state, args.idle_timeout)


if __name__ == "__main__":
    sys.exit(main())
