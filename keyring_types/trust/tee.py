"""The ``tee`` trust source: the OP-TEE trusted-keys protocol behind a transport.

The protocol is the kernel's (``trusted_tee.c``) with the OP-TEE
``trusted_keys`` TA: a session to TA ``f04a0fe7-1f5d-4b9b-abf7-619b85b4ce8c``
opened with the REE-kernel login, then three commands, each with four GP
parameters:

=====================  ====================================  =============================
command                param 0                               param 1
=====================  ====================================  =============================
``TA_CMD_GET_RANDOM``  memref OUTPUT: KEYLEN random bytes    —
``TA_CMD_SEAL``        memref INPUT: the key                 memref OUTPUT: blob (512 offered)
``TA_CMD_UNSEAL``      memref INPUT: the blob                memref OUTPUT: key (129 offered)
=====================  ====================================  =============================

The TA's blob is ``0x00 | IV (16) | GCM tag (16) | ciphertext (KEYLEN)``, KEYLEN + 33
bytes, AES-256-GCM under a key only the TA can derive from the device's
hardware-unique key.  Any TEE failure is ``EFAULT``, as in the kernel.

Transports (:class:`TeeTransport`) carry the GP calls:

* :class:`SocketTransport` — to the **emulated** TEE (``tee_emulator``), a separate
  process with its own hardware-unique key, over a Unix socket.  This is the
  default (``KEYRING_TYPES_TEE_TRANSPORT=emulated``): the emulator is started on
  demand under the state directory and exits after a minute of idleness.
  ``socket:PATH`` uses an emulator you started yourself.
* :class:`DeviceTransport` — the real ``/dev/tee0`` ioctls (``include/uapi/linux/tee.h``)
  with ``KEYRING_TYPES_TEE_TRANSPORT=device[:PATH]``.  User space cannot use the
  REE-kernel login (the TEE driver refuses it with ``EPERM``), and the upstream
  trusted-keys TA accepts no other, so against a stock OP-TEE this transport
  reaches the TA and is refused; it serves TAs that accept user-space clients.
  On such machines, use the kernel's own ``trusted`` type through ``KernelKeyspace``.
"""

from __future__ import annotations

import abc
import ctypes
import errno
import fcntl
import mmap
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, TypeVar

import attrs

from keyring_types.errors import KeyringError, error
from keyring_types.secret import SecretBuffer
from keyring_types.state import private_dir, state_dir
from keyring_types.trust.base import TrustedOptions, TrustSource, Unsealed
from keyring_types.trust.options import check_supported
from keyring_types.trust.tee_wire import (
    ATTR_MEMREF_INOUT,
    ATTR_MEMREF_INPUT,
    ATTR_MEMREF_OUTPUT,
    ATTR_NONE,
    LOGIN_REE_KERNEL,
    LOGIN_USER,
    MAX_FRAME,
    NUM_PARAMS,
    OP_CLOSE,
    OP_INVOKE,
    OP_OPEN,
    RESP_HEAD,
    RESULT_NAMES,
    SEAL_OUTPUT_SIZE,
    TA_CMD_GET_RANDOM,
    TA_CMD_SEAL,
    TA_CMD_UNSEAL,
    TA_TRUSTED_KEYS_UUID,
    TEE_BLOB_OVERHEAD,
    TEE_ERROR_ITEM_NOT_FOUND,
    TEE_SUCCESS,
    U32,
    UNSEAL_OUTPUT_SIZE,
    WIRE_PARAM,
    recv_exact,
    recv_into_exact,
)

__all__ = [
    "TA_CMD_GET_RANDOM",
    "TA_CMD_SEAL",
    "TA_CMD_UNSEAL",
    "TA_TRUSTED_KEYS_UUID",
    "TEE_BLOB_OVERHEAD",
    "DeviceTransport",
    "Param",
    "SocketTransport",
    "TeeError",
    "TeeSource",
    "TeeTransport",
    "TrustedKeysClient",
]

MIN_KEY, MAX_KEY = 32, 128
_T = TypeVar("_T")

# ioctl numbers: _IOR/_IOWR(0xa4, n, struct ...) on Linux's generic encoding.
_IOC_READ, _IOC_WRITE = 2, 1


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (0xA4 << 8) | nr


_VERSION_DATA = struct.Struct("=III")
_SHM_ALLOC_DATA = struct.Struct("=QIi")
_BUF_DATA = struct.Struct("=QQ")
_CLOSE_SESSION_ARG = struct.Struct("=I")
_OPEN_SESSION_ARG = struct.Struct("=16s16sIIIIII")
_INVOKE_ARG = struct.Struct("=IIIIII")
_PARAM = struct.Struct("=QQQQ")
TEE_IOC_VERSION = _ioc(_IOC_READ, 0, _VERSION_DATA.size)
TEE_IOC_SHM_ALLOC = _ioc(_IOC_READ | _IOC_WRITE, 1, _SHM_ALLOC_DATA.size)
TEE_IOC_OPEN_SESSION = _ioc(_IOC_READ, 2, _BUF_DATA.size)
TEE_IOC_INVOKE = _ioc(_IOC_READ, 3, _BUF_DATA.size)
TEE_IOC_CLOSE_SESSION = _ioc(_IOC_READ, 5, _CLOSE_SESSION_ARG.size)


class TeeError(Exception):
    """A GP TEE result other than TEE_SUCCESS (mapped to ``EFAULT`` by the source)."""

    def __init__(self, ret: int, origin: int, what: str) -> None:
        super().__init__(f"{what}: {RESULT_NAMES.get(ret, hex(ret))} (origin {origin})")
        self.ret = ret
        self.origin = origin


@attrs.define
class Param:
    """One GP parameter.

    For an input memref, ``data`` is its content and ``size`` its length.  For an
    output memref, ``size`` is the space offered and ``out`` (if given) is where
    the result lands; after the call ``size`` is what the TA returned (or, on
    ``TEE_ERROR_SHORT_BUFFER``, what it needs).
    """

    attr: int = ATTR_NONE
    a: int = 0
    b: int = 0
    size: int = 0
    data: bytes | memoryview | None = None
    out: memoryview | None = None
    #: Output content received when no ``out`` buffer was supplied.
    result: bytes = b""

    @classmethod
    def memref_input(cls, data: bytes | memoryview) -> Param:
        return cls(attr=ATTR_MEMREF_INPUT, size=len(data), data=data)

    @classmethod
    def memref_output(cls, size: int, out: memoryview | None = None) -> Param:
        return cls(attr=ATTR_MEMREF_OUTPUT, size=size, out=out)

    @property
    def is_memref(self) -> bool:
        return self.attr in (ATTR_MEMREF_INPUT, ATTR_MEMREF_OUTPUT, ATTR_MEMREF_INOUT)

    @property
    def carries_input(self) -> bool:
        return self.attr in (ATTR_MEMREF_INPUT, ATTR_MEMREF_INOUT)

    @property
    def carries_output(self) -> bool:
        return self.attr in (ATTR_MEMREF_OUTPUT, ATTR_MEMREF_INOUT)


def _pad(params: list[Param]) -> list[Param]:
    if len(params) > NUM_PARAMS:
        raise ValueError("at most four GP parameters")
    return params + [Param() for _ in range(NUM_PARAMS - len(params))]


class TeeTransport(abc.ABC):
    """GP TEE Client API calls: open a session, invoke a command, close it."""

    @abc.abstractmethod
    def open_session(self, ta: uuid.UUID, login: int) -> int:
        """Open a session to ``ta``; returns its id.  :class:`TeeError` from the TEE, ``OSError`` from transport."""

    @abc.abstractmethod
    def invoke(self, session: int, func: int, params: list[Param]) -> None:
        """Invoke ``func``; fills output params; :class:`TeeError` on a GP error."""

    @abc.abstractmethod
    def close_session(self, session: int) -> None:
        """Close a session."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the transport."""


def encode_params(params: list[Param], with_input: bool) -> list[bytes | memoryview]:
    """Parameter headers, each followed by its memref content when ``with_input`` says so."""
    parts: list[bytes | memoryview] = []
    for p in params:
        if p.is_memref:
            parts.append(WIRE_PARAM.pack(p.attr, p.a, p.size, 0))
            if with_input and p.carries_input and p.data is not None:
                parts.append(p.data)
        else:
            parts.append(WIRE_PARAM.pack(p.attr, p.a, p.b, 0))
    return parts


_UCRED = struct.Struct("=iII")  # struct ucred: pid, uid, gid


def check_peer(sock: socket.socket, path: str) -> None:
    """``EACCES`` unless the process behind ``sock`` runs as our effective uid or as root.

    Keys travel in plaintext to the TEE, so a socket someone else serves (a
    planted emulator, a path another user controls) must get nothing.  The
    kernel vouches for the peer's credentials (``SO_PEERCRED``, taken at connect).
    """
    _pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    if uid not in (os.geteuid(), 0):
        raise error(
            errno.EACCES,
            f"refusing the TEE at {path}: it runs as uid {uid}, not as uid {os.geteuid()} or root",
        )


class SocketTransport(TeeTransport):
    """GP calls over a Unix stream socket to the emulated TEE (one connection per transport).

    ``EACCES`` at construction when the peer is not our euid or root (see :func:`check_peer`);
    nothing is sent before that check.
    """

    def __init__(self, path: str | os.PathLike[str], connect_timeout: float = 5.0) -> None:
        self._path = os.fspath(path)
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(30.0)
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self._sock.connect(self._path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() >= deadline:
                    self._sock.close()
                    raise
                time.sleep(0.02)
        try:
            check_peer(self._sock, self._path)
        except BaseException:
            self._sock.close()
            raise

    def _call(self, body: list[bytes | memoryview], params: list[Param]) -> tuple[int, int, int]:
        length = sum(len(p) for p in body)
        if length > MAX_FRAME:
            raise error(errno.EINVAL, "TEE request too large")
        with self._lock:
            self._sock.sendall(U32.pack(length))
            for part in body:
                self._sock.sendall(part)
            (rlen,) = U32.unpack(recv_exact(self._sock, 4))
            ret, origin, session, nparams = RESP_HEAD.unpack(recv_exact(self._sock, RESP_HEAD.size))
            got = RESP_HEAD.size
            if nparams != len(params):
                raise ConnectionError(f"TEE answered {nparams} parameters for {len(params)}")
            for p in params:
                attr, a, b, _c = WIRE_PARAM.unpack(recv_exact(self._sock, WIRE_PARAM.size))
                got += WIRE_PARAM.size
                if attr != p.attr:
                    raise ConnectionError("TEE changed a parameter's type")
                if p.is_memref:
                    if p.carries_output:
                        offered = p.size
                        p.size = b
                        if ret == TEE_SUCCESS:
                            if b > offered:
                                raise ConnectionError("TEE returned more than the buffer offered")
                            if p.out is not None:
                                recv_into_exact(self._sock, p.out[:b])
                            else:
                                p.result = recv_exact(self._sock, b)
                            got += b
                else:
                    p.a, p.b = a, b
            if got != rlen:
                raise ConnectionError("TEE response length mismatch")
        return ret, origin, session

    def open_session(self, ta: uuid.UUID, login: int) -> int:
        params = _pad([])
        body = [U32.pack(OP_OPEN), ta.bytes, U32.pack(login), U32.pack(NUM_PARAMS), *encode_params(params, True)]
        ret, origin, session = self._call(body, params)
        if ret != TEE_SUCCESS:
            raise TeeError(ret, origin, f"open session to TA {ta}")
        return session

    def invoke(self, session: int, func: int, params: list[Param]) -> None:
        params = _pad(params)
        body = [
            U32.pack(OP_INVOKE),
            U32.pack(session),
            U32.pack(func),
            U32.pack(NUM_PARAMS),
            *encode_params(params, True),
        ]
        ret, origin, _ = self._call(body, params)
        if ret != TEE_SUCCESS:
            raise TeeError(ret, origin, f"invoke command {func}")

    def close_session(self, session: int) -> None:
        self._call([U32.pack(OP_CLOSE), U32.pack(session)], [])

    def close(self) -> None:
        self._sock.close()


class DeviceTransport(TeeTransport):
    """GP calls through the TEE subsystem's ``/dev/teeN`` ioctls (``include/uapi/linux/tee.h``).

    Memrefs travel in shared memory from ``TEE_IOC_SHM_ALLOC`` (mapped, filled,
    read back and zeroed here).  ``OSError`` from the driver; :class:`TeeError`
    from the TEE.
    """

    def __init__(self, path: str = "/dev/tee0") -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._lock = threading.Lock()

    def version(self) -> tuple[int, int, int]:
        """(impl_id, impl_caps, gen_caps) from ``TEE_IOC_VERSION``; impl_id 1 is OP-TEE."""
        buf = bytearray(_VERSION_DATA.size)
        fcntl.ioctl(self._fd, TEE_IOC_VERSION, buf, True)
        return _VERSION_DATA.unpack(buf)

    def _shm(self, size: int) -> tuple[int, int, mmap.mmap]:
        req = bytearray(_SHM_ALLOC_DATA.pack(max(size, 1), 0, 0))
        shm_fd = fcntl.ioctl(self._fd, TEE_IOC_SHM_ALLOC, req, True)
        real_size, _flags, shm_id = _SHM_ALLOC_DATA.unpack(req)
        return shm_fd, shm_id, mmap.mmap(shm_fd, real_size)

    def _buf_call(self, request: int, arg: bytearray) -> None:
        # The ioctl argument is {pointer, length} to a buffer the driver reads
        # and writes back, so the buffer must stay put: a ctypes view of ``arg``.
        cbuf = (ctypes.c_char * len(arg)).from_buffer(arg)
        fcntl.ioctl(self._fd, request, _BUF_DATA.pack(ctypes.addressof(cbuf), len(arg)))
        del cbuf

    def _run(self, head: bytes, params: list[Param], request: int) -> bytearray:
        shms: list[tuple[int, mmap.mmap] | None] = []
        try:
            packed = bytearray(head)
            for p in params:
                if p.is_memref:
                    fd, shm_id, mem = self._shm(p.size)
                    shms.append((fd, mem))
                    if p.carries_input and p.data is not None:
                        mem[: p.size] = bytes(p.data)
                    packed += _PARAM.pack(p.attr, 0, p.size, shm_id)
                else:
                    shms.append(None)
                    packed += _PARAM.pack(p.attr, p.a, p.b, 0)
            self._buf_call(request, packed)
            for i, p in enumerate(params):
                _attr, a, b, _c = _PARAM.unpack_from(packed, len(head) + i * _PARAM.size)
                shm = shms[i]
                if p.carries_output and shm is not None:
                    offered, p.size = p.size, b
                    if b <= offered:
                        content = shm[1][:b]
                        if p.out is not None:
                            p.out[:b] = content
                        else:
                            p.result = content
                elif not p.is_memref:
                    p.a, p.b = a, b
            return packed
        finally:
            for shm in shms:
                if shm is not None:
                    fd, mem = shm
                    mem[:] = bytes(len(mem))
                    mem.close()
                    os.close(fd)

    def open_session(self, ta: uuid.UUID, login: int) -> int:
        params = _pad([])
        head = _OPEN_SESSION_ARG.pack(ta.bytes, bytes(16), login, 0, 0, 0, 0, NUM_PARAMS)
        with self._lock:
            out = self._run(head, params, TEE_IOC_OPEN_SESSION)
        _u, _c, _l, _cancel, session, ret, origin, _n = _OPEN_SESSION_ARG.unpack_from(out)
        if ret != TEE_SUCCESS:
            raise TeeError(ret, origin, f"open session to TA {ta}")
        return int(session)

    def invoke(self, session: int, func: int, params: list[Param]) -> None:
        params = _pad(params)
        head = _INVOKE_ARG.pack(func, session, 0, 0, 0, NUM_PARAMS)
        with self._lock:
            out = self._run(head, params, TEE_IOC_INVOKE)
        _f, _s, _cancel, ret, origin, _n = _INVOKE_ARG.unpack_from(out)
        if ret != TEE_SUCCESS:
            raise TeeError(ret, origin, f"invoke command {func}")

    def close_session(self, session: int) -> None:
        with self._lock:
            fcntl.ioctl(self._fd, TEE_IOC_CLOSE_SESSION, _CLOSE_SESSION_ARG.pack(session))

    def close(self) -> None:
        os.close(self._fd)


class TrustedKeysClient:
    """The kernel side of the trusted-keys TA protocol over any :class:`TeeTransport`."""

    def __init__(self, transport: TeeTransport, login: int = LOGIN_REE_KERNEL) -> None:
        self.transport = transport
        self.session = transport.open_session(TA_TRUSTED_KEYS_UUID, login)

    def get_random(self, n: int) -> bytes:
        """``TA_CMD_GET_RANDOM``: ``n`` bytes from the TEE's RNG."""
        p = Param.memref_output(n)
        self.transport.invoke(self.session, TA_CMD_GET_RANDOM, [p])
        return p.result

    def seal(self, key: memoryview) -> bytes:
        """``TA_CMD_SEAL``: the blob for ``key``."""
        blob = Param.memref_output(SEAL_OUTPUT_SIZE)
        self.transport.invoke(self.session, TA_CMD_SEAL, [Param.memref_input(key), blob])
        return blob.result

    def unseal(self, blob: bytes) -> SecretBuffer:
        """``TA_CMD_UNSEAL``: the key, received straight into secret memory."""
        scratch = SecretBuffer(UNSEAL_OUTPUT_SIZE)
        try:
            mv = scratch.writable()
            out = Param.memref_output(UNSEAL_OUTPUT_SIZE, out=mv)
            self.transport.invoke(self.session, TA_CMD_UNSEAL, [Param.memref_input(blob), out])
            result = SecretBuffer.from_bytes(mv[: out.size])
            mv.release()
            return result
        finally:
            scratch.wipe()

    def close(self) -> None:
        try:
            self.transport.close_session(self.session)
        except (OSError, TeeError):
            pass
        self.transport.close()


def _default_emulator_paths() -> tuple[Path, Path]:
    # Checked (owner, mode) before anything in it is trusted; see keyring_types.state.
    base = private_dir(state_dir() / "tee")
    return base / "emulated-tee.sock", base / "emulated-huk"


class TeeSource(TrustSource):
    """Trusted keys sealed by the OP-TEE trusted-keys TA (emulated by default).

    Configuration, ``KEYRING_TYPES_TEE_TRANSPORT``: ``emulated`` (default),
    ``socket:PATH`` (a running emulator), ``device`` or ``device:PATH``.
    """

    name: ClassVar[str] = "tee"
    migratable: ClassVar[bool] = False
    supported_options: ClassVar[frozenset[str]] = frozenset()
    has_rng: ClassVar[bool] = True

    def __init__(self, transport: TeeTransport | None = None, login: int = LOGIN_REE_KERNEL) -> None:
        self._given = transport
        self._login = login
        self._client: TrustedKeysClient | None = None
        self._lock = threading.Lock()
        #: The emulated TEE's HUK file, when this source started the emulator.
        self._huk: Path | None = None

    @staticmethod
    def _setting() -> str:
        return os.environ.get("KEYRING_TYPES_TEE_TRANSPORT", "emulated")

    @classmethod
    def available(cls) -> bool:
        setting = cls._setting()
        if setting.startswith("device"):
            return os.path.exists(setting.partition(":")[2] or "/dev/tee0")
        return setting == "emulated" or setting.startswith("socket:")

    def _connect(self) -> TrustedKeysClient:
        if self._given is not None:
            return TrustedKeysClient(self._given, self._login)
        setting = self._setting()
        if setting.startswith("socket:"):
            return TrustedKeysClient(SocketTransport(setting[len("socket:") :]), self._login)
        if setting.startswith("device"):
            # User space may not claim the REE-kernel login (see the module docstring).
            return TrustedKeysClient(DeviceTransport(setting.partition(":")[2] or "/dev/tee0"), LOGIN_USER)
        if setting != "emulated":
            raise error(errno.EINVAL, f"KEYRING_TYPES_TEE_TRANSPORT={setting!r}: use emulated, socket:PATH or device[:PATH]")
        from keyring_types.trust.tee_emulator import ensure_emulator

        sock, huk = _default_emulator_paths()
        ensure_emulator(sock, huk)
        self._huk = huk
        return TrustedKeysClient(SocketTransport(sock), self._login)

    def _call(self, what: str, fn: Callable[[TrustedKeysClient], _T]) -> _T:
        with self._lock:
            retried = False
            while True:
                try:
                    return self._attempt(fn)
                except TeeError as exc:
                    hint = ""
                    if exc.ret == TEE_ERROR_ITEM_NOT_FOUND and self._huk is not None:
                        # Our own emulator has no HUK (never made, or deleted: a new one
                        # would open none of the old blobs, so an unseal never makes one).
                        hint = f"; the emulated TEE has no hardware-unique key: {self._huk} does not exist"
                    raise error(errno.EFAULT, f"TEE {what} failed: {exc}{hint}") from None
                except KeyringError:
                    raise
                except OSError as exc:  # includes ConnectionError
                    self._drop()
                    if retried:
                        raise error(errno.EFAULT, f"TEE {what} failed: cannot reach the TEE ({exc})") from None
                    # The emulator may have exited while idle (or been restarted): reconnect once.
                    retried = True

    def _attempt(self, fn: Callable[[TrustedKeysClient], _T]) -> _T:
        if self._client is None:
            self._client = self._connect()
        return fn(self._client)

    def _drop(self) -> None:
        if self._client is not None:
            self._client.transport.close()
            self._client = None

    def seal(self, secret: SecretBuffer, options: TrustedOptions) -> bytes:
        """Seal with ``TA_CMD_SEAL``; ``EINVAL`` for any option, ``EFAULT`` if the TEE fails."""
        check_supported(options, self)
        if not MIN_KEY <= len(secret) <= MAX_KEY:
            raise error(errno.EINVAL, f"key length {len(secret)} is outside {MIN_KEY}..{MAX_KEY}")

        def run(client: TrustedKeysClient) -> bytes:
            mv = secret.view()
            try:
                return client.seal(mv)
            finally:
                mv.release()

        return self._call("seal", run)

    def unseal(self, blob: bytes, options: TrustedOptions) -> Unsealed:
        """Unseal with ``TA_CMD_UNSEAL``.

        ``EINVAL`` for any option; ``EFAULT`` when the TA refuses the blob (another
        TEE's, altered, or not a TEE blob: the TA reports ``TEE_ERROR_MAC_INVALID``
        or ``TEE_ERROR_BAD_PARAMETERS``) or the TEE cannot be reached, and when the
        emulated TEE this source started has no hardware-unique key file (the
        message names it; an unseal never creates one); ``EACCES`` when the TEE
        socket's peer is another user.
        """
        check_supported(options, self)
        blob = bytes(blob)
        result: SecretBuffer = self._call("unseal", lambda c: c.unseal(blob))
        if not MIN_KEY <= len(result) <= MAX_KEY:
            result.wipe()
            raise error(errno.EFAULT, "TEE unsealed a key of impossible length")
        return Unsealed(secret=result, migratable=False)

    def get_random(self, n: int) -> bytes:
        """``n`` bytes from ``TA_CMD_GET_RANDOM``; ``EFAULT`` if the TEE fails."""
        return self._call("get_random", lambda c: c.get_random(n))

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
