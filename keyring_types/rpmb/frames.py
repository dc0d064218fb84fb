"""RPMB data frames: build, sign, parse and verify (packing and MACs run in C).

A frame is 512 bytes (spec ``rpmb.md`` section 1.1, memory offsets)::

      0..195  stuff (zero)           484..499  nonce
    196..227  key / MAC              500..503  write counter (u32 BE)
    228..483  data (256 bytes)       504..505  address       (u16 BE)
                                     506..507  block count   (u16 BE)
                                     508..509  result        (u16 BE)
                                     510..511  request/response type (u16 BE)

The MAC is HMAC-SHA256 over bytes 228..511 of every frame of a transfer, in
order, and sits in the key/MAC field of the last frame only.

Every function takes ``bytes``, ``bytearray`` or ``memoryview`` and never
copies the frames; functions that write (``sign``, builders with ``out=``)
need a writable buffer.  A MAC key (``key_or_hmac``) is an
:class:`~keyring_types.hmac.HmacSha256`, the 32 raw key bytes, a
:class:`~keyring_types.secret.SecretBuffer`, or anything with a ``secret()``
context manager yielding them (a keyring_types ``Key`` handle).

Errors: ``EINVAL`` for malformed buffers and arguments; :func:`check_response`
raises ``EBADMSG`` when a response does not match the request or does not
authenticate, and the errno of :func:`~keyring_types.rpmb.codes.result_errno`
when the device reports a failure.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator
from typing import Any

from keyring_types.bindings._hmac import ffi, lib
from keyring_types.errors import error
from keyring_types.hmac import HmacSha256, cbuf, cbuf_writable
from keyring_types.rpmb.codes import (
    RequestType,
    ResponseType,
    Result,
    counter_expired,
    result_code,
    result_errno,
    result_name,
)
from keyring_types.secret import SecretBuffer

__all__ = [
    "FRAME_SIZE",
    "DATA_SIZE",
    "MAC_SIZE",
    "KEY_SIZE",
    "NONCE_SIZE",
    "MAC_INPUT_SIZE",
    "OFF_KEY_MAC",
    "OFF_DATA",
    "OFF_NONCE",
    "OFF_COUNTER",
    "OFF_ADDRESS",
    "OFF_BLOCK_COUNT",
    "OFF_RESULT",
    "OFF_TYPE",
    "MAX_BLOCKS",
    "Frame",
    "Response",
    "iter_frames",
    "request_type",
    "unpack",
    "result_of",
    "frame_count",
    "parse",
    "build",
    "sign",
    "sign_each",
    "verify",
    "program_key_request",
    "counter_read_request",
    "write_request",
    "read_request",
    "result_read_request",
    "program_key_response",
    "counter_read_response",
    "write_response",
    "read_response",
    "check_response",
    "check_program_key_response",
    "check_counter_response",
    "check_write_response",
    "check_read_response",
]

Buffer = bytes | bytearray | memoryview

FRAME_SIZE = int(lib.KT_RPMB_FRAME_SIZE)
DATA_SIZE = int(lib.KT_RPMB_DATA_LEN)
MAC_SIZE = int(lib.KT_RPMB_KEY_MAC_LEN)
KEY_SIZE = MAC_SIZE
NONCE_SIZE = int(lib.KT_RPMB_NONCE_LEN)
MAC_INPUT_SIZE = int(lib.KT_RPMB_MAC_INPUT_LEN)
OFF_KEY_MAC = int(lib.KT_RPMB_OFF_KEY_MAC)
OFF_DATA = int(lib.KT_RPMB_OFF_DATA)
OFF_NONCE = int(lib.KT_RPMB_OFF_NONCE)
OFF_COUNTER = int(lib.KT_RPMB_OFF_COUNTER)
OFF_ADDRESS = int(lib.KT_RPMB_OFF_ADDRESS)
OFF_BLOCK_COUNT = int(lib.KT_RPMB_OFF_BLOCK_COUNT)
OFF_RESULT = int(lib.KT_RPMB_OFF_RESULT)
OFF_TYPE = int(lib.KT_RPMB_OFF_TYPE)

# Largest block count the u16 field can carry.
MAX_BLOCKS = 0xFFFF


# -- small validators ---------------------------------------------------------


def frame_count(buf: Buffer, what: str = "RPMB buffer") -> int:
    """How many frames ``buf`` holds; ``EINVAL`` unless it is a positive multiple of 512 bytes."""
    n = len(cbuf(buf, what))
    if n == 0 or n % FRAME_SIZE:
        raise error(errno.EINVAL, f"{what} is {n} bytes, not a positive multiple of {FRAME_SIZE}")
    return n // FRAME_SIZE


def _uint(value: Any, bits: int, name: str) -> int:
    if type(value) is int and 0 <= value < (1 << bits):
        return value
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise error(errno.EINVAL, f"{name} must be an integer in 0..{(1 << bits) - 1}, got {value!r}")
    return value


def _exact(buf: Any, size: int, name: str) -> Any:
    p = cbuf(buf, name)
    n = len(p)
    if n != size:
        # Drop the buffer export now: a traceback keeping it alive would make
        # a Key's secret() view fail to release.
        ffi.release(p)
        del p
        raise error(errno.EINVAL, f"{name} must be {size} bytes, got {n}")
    return p


# -- MAC keys -----------------------------------------------------------------


def _rpmb_secret(key: Any) -> Any:
    """``key.secret()`` as the ``rpmb`` consumer when the object knows use bindings
    (a ``Key`` handle has ``usage``), plain ``secret()`` for other duck types."""
    return key.secret(consumer="rpmb") if hasattr(key, "usage") else key.secret()


def _resolve_key(key_or_hmac: Any) -> tuple[HmacSha256, bool]:
    """The HMAC to use and whether we made it (and must wipe it)."""
    if isinstance(key_or_hmac, HmacSha256):
        return key_or_hmac, False
    if isinstance(key_or_hmac, (bytes, bytearray, memoryview, SecretBuffer)):
        if len(key_or_hmac) != KEY_SIZE:
            raise error(errno.EINVAL, f"an RPMB authentication key is {KEY_SIZE} bytes, got {len(key_or_hmac)}")
        return HmacSha256(key_or_hmac), True
    if hasattr(key_or_hmac, "secret"):
        with _rpmb_secret(key_or_hmac) as mv:
            if len(mv) != KEY_SIZE:
                raise error(errno.EINVAL, f"an RPMB authentication key is {KEY_SIZE} bytes, got {len(mv)}")
            return HmacSha256(mv), True
    raise error(
        errno.EINVAL,
        f"RPMB MAC key must be HmacSha256, 32 key bytes or a key with secret(), got {type(key_or_hmac).__name__}",
    )


# -- frame view ---------------------------------------------------------------


class Frame:
    """A view of one 512-byte frame with named fields.

    Reading a field reads the underlying buffer; assigning one writes it (the
    buffer must be writable, else ``EINVAL``; so must the value's range and size).  Byte fields are returned as ``memoryview``
    slices of the buffer, not copies.
    """

    __slots__ = ("_mv",)

    def __init__(self, buf: Buffer) -> None:
        """``EINVAL`` unless ``buf`` is exactly one 512-byte frame."""
        cbuf(buf, "RPMB frame")  # EINVAL for non-buffers and non-contiguous views
        mv = memoryview(buf)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        if len(mv) != FRAME_SIZE:
            raise error(errno.EINVAL, f"an RPMB frame is {FRAME_SIZE} bytes, got {len(mv)}")
        self._mv = mv

    @property
    def buffer(self) -> memoryview:
        """The whole 512-byte frame."""
        return self._mv

    def _int(self, off: int, size: int) -> int:
        return int.from_bytes(self._mv[off : off + size], "big")

    def _writable(self, name: str) -> memoryview:
        if self._mv.readonly:
            raise error(errno.EINVAL, f"cannot set {name}: the frame's buffer is read-only")
        return self._mv

    def _set_int(self, off: int, size: int, value: int, name: str) -> None:
        mv = self._writable(name)
        mv[off : off + size] = _uint(value, 8 * size, name).to_bytes(size, "big")

    def _set_bytes(self, off: int, size: int, value: Buffer, name: str) -> None:
        mv = self._writable(name)
        mv[off : off + size] = ffi.buffer(_exact(value, size, name))

    @property
    def stuff(self) -> memoryview:
        """Bytes 0..195 (padding, not authenticated)."""
        return self._mv[:OFF_KEY_MAC]

    @property
    def key_mac(self) -> memoryview:
        """Bytes 196..227: the key in a key-programming request, else the MAC."""
        return self._mv[OFF_KEY_MAC:OFF_DATA]

    @key_mac.setter
    def key_mac(self, value: Buffer) -> None:
        self._set_bytes(OFF_KEY_MAC, MAC_SIZE, value, "key/MAC")

    @property
    def data(self) -> memoryview:
        """Bytes 228..483: one 256-byte block."""
        return self._mv[OFF_DATA:OFF_NONCE]

    @data.setter
    def data(self, value: Buffer) -> None:
        self._set_bytes(OFF_DATA, DATA_SIZE, value, "data")

    @property
    def nonce(self) -> memoryview:
        """Bytes 484..499."""
        return self._mv[OFF_NONCE:OFF_COUNTER]

    @nonce.setter
    def nonce(self, value: Buffer) -> None:
        self._set_bytes(OFF_NONCE, NONCE_SIZE, value, "nonce")

    @property
    def write_counter(self) -> int:
        """Bytes 500..503, u32 big-endian."""
        return self._int(OFF_COUNTER, 4)

    @write_counter.setter
    def write_counter(self, value: int) -> None:
        self._set_int(OFF_COUNTER, 4, value, "write counter")

    @property
    def address(self) -> int:
        """Bytes 504..505: index of the 256-byte block."""
        return self._int(OFF_ADDRESS, 2)

    @address.setter
    def address(self, value: int) -> None:
        self._set_int(OFF_ADDRESS, 2, value, "address")

    @property
    def block_count(self) -> int:
        """Bytes 506..507."""
        return self._int(OFF_BLOCK_COUNT, 2)

    @block_count.setter
    def block_count(self, value: int) -> None:
        self._set_int(OFF_BLOCK_COUNT, 2, value, "block count")

    @property
    def result(self) -> int:
        """Bytes 508..509, the raw result field (code | 0x80 when the counter expired)."""
        return self._int(OFF_RESULT, 2)

    @result.setter
    def result(self, value: int) -> None:
        self._set_int(OFF_RESULT, 2, value, "result")

    @property
    def req_resp(self) -> int:
        """Bytes 510..511, the request or response type."""
        return self._int(OFF_TYPE, 2)

    @req_resp.setter
    def req_resp(self, value: int) -> None:
        self._set_int(OFF_TYPE, 2, value, "request/response type")

    @property
    def mac_input(self) -> memoryview:
        """Bytes 228..511, what the MAC covers."""
        return self._mv[OFF_DATA:]

    def __repr__(self) -> str:
        return (
            f"<Frame type={self.req_resp:#06x} result={result_name(self.result)} "
            f"counter={self.write_counter} address={self.address} blocks={self.block_count}>"
        )


def parse(buf: Buffer) -> list[Frame]:
    """Views of the frames in ``buf``.  ``EINVAL`` unless ``buf`` is a positive
    multiple of 512 bytes."""
    n = frame_count(buf)
    mv = memoryview(buf).cast("B")
    return [Frame(mv[i * FRAME_SIZE : (i + 1) * FRAME_SIZE]) for i in range(n)]


def iter_frames(buf: Buffer) -> Iterator[Frame]:
    """Like :func:`parse`, lazily."""
    n = frame_count(buf)
    mv = memoryview(buf).cast("B")
    for i in range(n):
        yield Frame(mv[i * FRAME_SIZE : (i + 1) * FRAME_SIZE])


# -- signing ------------------------------------------------------------------


def _frames_ptr(buf: Any, writable: bool, what: str = "RPMB buffer") -> tuple[Any, int]:
    """One cffi view of ``buf`` and its frame count (the hot path takes one view only)."""
    try:
        # Positional: the keyword form costs ~200 ns more per call here.
        p = ffi.from_buffer("char[]", buf, writable)
    except (TypeError, BufferError) as exc:
        kind = "writable contiguous buffer" if writable else "contiguous bytes-like object"
        raise error(errno.EINVAL, f"{what} must be a {kind} ({exc})") from None
    size = len(p)
    if size == 0 or size % FRAME_SIZE:
        ffi.release(p)
        raise error(errno.EINVAL, f"{what} is {size} bytes, not a positive multiple of {FRAME_SIZE}")
    return p, size // FRAME_SIZE


def _run(key_or_hmac: Any, fn: Any, p: Any, n: int) -> int:
    """Call ``fn(state, p, n)`` with the key's native state, wiping a key made here."""
    if type(key_or_hmac) is HmacSha256:
        return int(fn(key_or_hmac.state_address, p, n) or 0)
    h, owned = _resolve_key(key_or_hmac)
    try:
        return int(fn(h.state_address, p, n) or 0)
    finally:
        if owned:
            h.wipe()


def sign(key_or_hmac: Any, buf: bytearray | memoryview) -> None:
    """Write the MAC over bytes 228..511 of every frame into the last frame's
    key/MAC field.  ``EINVAL`` for a bad length, a read-only buffer or a bad key;
    ``EKEYREVOKED`` for a wiped HmacSha256."""
    p, n = _frames_ptr(buf, True)
    _run(key_or_hmac, lib.kt_rpmb_sign, p, n)


def sign_each(key_or_hmac: Any, buf: bytearray | memoryview) -> None:
    """Give every frame in ``buf`` its own MAC, as N independent single-frame
    messages (e.g. a batch of responses).  One C call for all of them with the
    GIL released, using the batch kernels of
    :meth:`~keyring_types.hmac.HmacSha256.mac_batch`.  Errors as :func:`sign`."""
    p, n = _frames_ptr(buf, True)
    _run(key_or_hmac, lib.kt_rpmb_sign_each, p, n)


def verify(key_or_hmac: Any, buf: Buffer) -> bool:
    """True when the last frame's MAC authenticates all frames of ``buf``
    (constant-time compare).  ``EINVAL`` for a bad length or key;
    ``EKEYREVOKED`` for a wiped HmacSha256."""
    p, n = _frames_ptr(buf, False)
    return bool(_run(key_or_hmac, lib.kt_rpmb_verify, p, n))


# -- builders -----------------------------------------------------------------


def build(
    req_resp: int,
    frames: int = 1,
    *,
    write_counter: int = 0,
    address: int = 0,
    block_count: int = 0,
    result: int = 0,
    nonce: Buffer | None = None,
    data: Buffer | None = None,
    key_mac: Buffer | None = None,
    out: bytearray | memoryview | None = None,
) -> bytearray | memoryview:
    """Lay out ``frames`` frames that share one type, counter, address, block
    count, result and nonce; frame i gets data block i (``data`` is
    ``frames * 256`` bytes) and the last frame gets ``key_mac``.  Everything
    else is zero.  Fills ``out`` (exactly ``frames * 512`` bytes) in place and
    returns it, or returns a new ``bytearray``.  ``EINVAL`` for out-of-range
    fields or wrong-sized buffers.
    """
    if not isinstance(frames, int) or not 1 <= frames <= MAX_BLOCKS:
        raise error(errno.EINVAL, f"frame count must be 1..{MAX_BLOCKS}, got {frames!r}")
    f = ffi.new("struct kt_rpmb_fields *")
    f.type = _uint(req_resp, 16, "request/response type")
    f.counter = _uint(write_counter, 32, "write counter")
    f.address = _uint(address, 16, "address")
    f.block_count = _uint(block_count, 16, "block count")
    f.result = _uint(result, 16, "result")
    np = _exact(nonce, NONCE_SIZE, "nonce") if nonce is not None else ffi.NULL
    dp = _exact(data, frames * DATA_SIZE, "data") if data is not None else ffi.NULL
    kp = _exact(key_mac, MAC_SIZE, "key/MAC") if key_mac is not None else ffi.NULL
    size = frames * FRAME_SIZE
    if out is None:
        out = bytearray(size)
    op = cbuf_writable(out, size, "out")
    if len(op) != size:
        raise error(errno.EINVAL, f"out must be exactly {size} bytes for {frames} frames, got {len(op)}")
    lib.kt_rpmb_fill(op, frames, f, np, dp, kp)
    return out


def _blocks_of(data: Buffer) -> int:
    n = len(cbuf(data, "data"))
    if n == 0 or n % DATA_SIZE or n // DATA_SIZE > MAX_BLOCKS:
        raise error(
            errno.EINVAL, f"data is {n} bytes, not 1..{MAX_BLOCKS} whole {DATA_SIZE}-byte blocks"
        )
    return n // DATA_SIZE


def _check_span(address: int, blocks: int) -> None:
    # Addresses are u16 block indices; a transfer may not run past the last one.
    if _uint(address, 16, "address") + blocks > MAX_BLOCKS + 1:
        raise error(errno.EINVAL, f"{blocks} blocks from address {address} run past block {MAX_BLOCKS}")


def program_key_request(key: Any, *, out: bytearray | memoryview | None = None) -> bytearray | memoryview:
    """One key-programming frame (type 0x0001) carrying the 32-byte key.

    ``key`` is bytes-like, a SecretBuffer or a ``Key`` handle.  Pass ``out``
    (e.g. a SecretBuffer's ``writable()`` view) to keep the key out of the
    Python heap.  ``EINVAL`` unless the key is 32 bytes."""
    if hasattr(key, "secret") and not isinstance(key, (bytes, bytearray, memoryview, SecretBuffer)):
        with _rpmb_secret(key) as mv:
            if len(mv) != KEY_SIZE:
                raise error(errno.EINVAL, f"an RPMB authentication key is {KEY_SIZE} bytes, got {len(mv)}")
            return build(RequestType.PROGRAM_KEY, key_mac=mv, out=out)
    if isinstance(key, SecretBuffer):
        return build(RequestType.PROGRAM_KEY, key_mac=key.view(), out=out)
    return build(RequestType.PROGRAM_KEY, key_mac=key, out=out)


def counter_read_request(nonce: Buffer, *, out: bytearray | memoryview | None = None) -> bytearray | memoryview:
    """One write-counter read request (type 0x0002) with a 16-byte nonce.  ``EINVAL``
    for a nonce of another size."""
    return build(RequestType.READ_COUNTER, nonce=nonce, out=out)


def write_request(
    key_or_hmac: Any,
    data: Buffer,
    *,
    address: int,
    write_counter: int,
    out: bytearray | memoryview | None = None,
) -> bytearray | memoryview:
    """N signed authenticated-write frames (type 0x0003), N = ``len(data) / 256``:
    every frame carries ``address`` (the start block), block count N and the
    current ``write_counter``; the MAC over all N goes in the last frame.
    ``EINVAL`` for data that is not 1..65535 whole blocks, a span past block
    65535, out-of-range fields or a bad key."""
    n = _blocks_of(data)
    _check_span(address, n)
    h, owned = _resolve_key(key_or_hmac)
    try:
        buf = build(
            RequestType.AUTH_WRITE, n, write_counter=write_counter, address=address, block_count=n, data=data, out=out
        )
        lib.kt_rpmb_sign(h.state_address, cbuf_writable(buf, n * FRAME_SIZE, "out"), n)
    finally:
        if owned:
            h.wipe()
    return buf


def read_request(
    nonce: Buffer, *, address: int, block_count: int = 0, out: bytearray | memoryview | None = None
) -> bytearray | memoryview:
    """One authenticated-read request (type 0x0004).  eMMC leaves the block
    count 0 (the transfer length says how many frames come back); UFS puts N
    there.  ``EINVAL`` for out-of-range fields or a nonce not 16 bytes."""
    if block_count:
        _check_span(address, block_count)
    return build(RequestType.AUTH_READ, address=address, block_count=block_count, nonce=nonce, out=out)


def result_read_request(*, block_count: int = 0, out: bytearray | memoryview | None = None) -> bytearray | memoryview:
    """The result-read request (type 0x0005) sent after a key programming or
    write: all zero but the type (virtio asks for block count 1)."""
    return build(RequestType.RESULT_READ, block_count=block_count, out=out)


def program_key_response(result: int = Result.OK, *, out: bytearray | memoryview | None = None) -> bytearray | memoryview:
    """A device's key-programming result frame (type 0x0100, no MAC)."""
    return build(ResponseType.PROGRAM_KEY, result=result, out=out)


def counter_read_response(
    key_or_hmac: Any,
    *,
    nonce: Buffer,
    write_counter: int,
    result: int = Result.OK,
    out: bytearray | memoryview | None = None,
) -> bytearray | memoryview:
    """A device's signed counter-read response (type 0x0200) echoing ``nonce``."""
    buf = build(ResponseType.READ_COUNTER, write_counter=write_counter, result=result, nonce=nonce, out=out)
    sign(key_or_hmac, buf)
    return buf


def write_response(
    key_or_hmac: Any,
    *,
    address: int,
    write_counter: int,
    result: int = Result.OK,
    block_count: int = 0,
    out: bytearray | memoryview | None = None,
) -> bytearray | memoryview:
    """A device's signed write result (type 0x0300) with the new counter."""
    buf = build(
        ResponseType.AUTH_WRITE, write_counter=write_counter, address=address, block_count=block_count, result=result, out=out
    )
    sign(key_or_hmac, buf)
    return buf


def read_response(
    key_or_hmac: Any,
    data: Buffer,
    *,
    nonce: Buffer,
    address: int,
    result: int = Result.OK,
    out: bytearray | memoryview | None = None,
) -> bytearray | memoryview:
    """A device's N signed read-response frames (type 0x0400), one per 256-byte
    block of ``data``, each echoing ``nonce``, ``address`` and block count N."""
    n = _blocks_of(data)
    _check_span(address, n)
    buf = build(ResponseType.AUTH_READ, n, address=address, block_count=n, result=result, nonce=nonce, data=data, out=out)
    sign(key_or_hmac, buf)
    return buf


# -- response checks ----------------------------------------------------------


class Response:
    """A response that passed :func:`check_response`; fields come from its last frame.

    Read-only: ``req_resp``, ``result``, ``write_counter``, ``address``,
    ``block_count``, ``nonce`` (of the last frame), ``raw`` (the frames as
    checked), ``authenticated``, ``expired``, ``frames`` and ``data()``.  Built
    from one unpack of the last frame's tail: a check pays for nothing more.
    """

    __slots__ = ("_auth", "_raw", "_tail")

    def __init__(self, raw: Buffer, authenticated: bool, tail: tuple[bytes, int, int, int, int, int]) -> None:
        self._raw = raw
        self._auth = authenticated
        self._tail = tail  # nonce, write counter, address, block count, result, type

    @property
    def req_resp(self) -> int:
        """Response type."""
        return self._tail[5]

    @property
    def result(self) -> int:
        """Raw result field (code | 0x80 when the counter expired)."""
        return self._tail[4]

    @property
    def write_counter(self) -> int:
        """Write counter."""
        return self._tail[1]

    @property
    def address(self) -> int:
        """Address (first block)."""
        return self._tail[2]

    @property
    def block_count(self) -> int:
        """Block count."""
        return self._tail[3]

    @property
    def nonce(self) -> bytes:
        """Nonce."""
        return self._tail[0]

    @property
    def raw(self) -> Buffer:
        """The response frames as checked."""
        return self._raw

    @property
    def authenticated(self) -> bool:
        """The MAC was checked and verified."""
        return self._auth

    @property
    def expired(self) -> bool:
        """The device flags its write counter as expired."""
        return counter_expired(self.result)

    @property
    def frames(self) -> tuple[Frame, ...]:
        """Views of every frame (made on first use: a check does not pay for them)."""
        return tuple(parse(self._raw))

    def data(self) -> bytes:
        """The data blocks of all frames, in order (one copy)."""
        mv = memoryview(self._raw).cast("B")
        return b"".join([mv[i + OFF_DATA : i + OFF_NONCE] for i in range(0, len(mv), FRAME_SIZE)])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (self._tail, self._auth, bytes(self._raw)) == (other._tail, other._auth, bytes(other._raw))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Response(req_resp={self.req_resp:#06x}, result={self.result:#06x}, write_counter={self.write_counter}, "
            f"address={self.address}, block_count={self.block_count}, authenticated={self.authenticated})"
        )


# The check bits as plain ints (an attribute of the cffi lib costs a lookup per use).
_C_MAC = int(lib.KT_RPMB_CHECK_MAC)
_C_TYPE = int(lib.KT_RPMB_CHECK_TYPE)
_C_NONCE = int(lib.KT_RPMB_CHECK_NONCE)
_C_COUNTER = int(lib.KT_RPMB_CHECK_COUNTER)
_C_ADDRESS = int(lib.KT_RPMB_CHECK_ADDRESS)
_C_BLOCK_COUNT = int(lib.KT_RPMB_CHECK_BLOCK_COUNT)
_C_RESULT = int(lib.KT_RPMB_CHECK_RESULT)

# nonce, write counter, address, block count, result, type: bytes 484..511 of a frame.
_TAIL = struct.Struct(">16sIHHHH")

_FIELD_NAMES = (
    (lib.KT_RPMB_CHECK_NONCE, "nonce"),
    (lib.KT_RPMB_CHECK_COUNTER, "write counter"),
    (lib.KT_RPMB_CHECK_ADDRESS, "address"),
    (lib.KT_RPMB_CHECK_BLOCK_COUNT, "block count"),
)


def check_response(
    key_or_hmac: Any,
    buf: Buffer,
    *,
    expect: int,
    nonce: Buffer | None = None,
    write_counter: int | None = None,
    address: int | None = None,
    block_count: int | None = None,
    frames: int | None = None,
    authenticate: bool = True,
) -> Response:
    """Verify a device response in one native call and return its fields.

    Checks, all evaluated without early exit: every frame's type is
    ``expect``; the last frame's result code is OK; the MAC authenticates all
    frames (unless ``authenticate`` is false, as for key-programming
    results); and, where given, the last frame's nonce (constant-time),
    write counter, address and block count.  ``frames`` pins the frame count.

    Raises ``EINVAL`` for a malformed buffer or arguments; ``EBADMSG`` when the
    type is wrong, the MAC does not verify (wrong key or altered frame) or a
    field differs from the request; for a device failure the errno of
    :func:`~keyring_types.rpmb.codes.result_errno` (``ENOKEY`` key not
    programmed, ``EKEYREJECTED`` the device rejected our MAC, ``ESTALE``
    counter mismatch, ``EINVAL`` address, ``EIO`` otherwise).
    """
    p = cbuf(buf, "RPMB response")
    size = len(p)
    if size == 0 or size % FRAME_SIZE:
        raise error(errno.EINVAL, f"RPMB response is {size} bytes, not a positive multiple of {FRAME_SIZE}")
    n = size // FRAME_SIZE
    if frames is not None and n != frames:
        raise error(errno.EINVAL, f"expected {frames} response frames, got {n}")
    checks = _C_TYPE | _C_RESULT
    etype = _uint(expect, 16, "expected response type")
    nonce_arg: Any = ffi.NULL
    if nonce is not None:
        if type(nonce) is bytes and len(nonce) == NONCE_SIZE:
            nonce_arg = nonce  # passed as it is: no buffer export
        else:
            nonce_arg = _exact(nonce, NONCE_SIZE, "nonce")
        checks |= _C_NONCE
    ecounter = eaddress = eblocks = 0
    if write_counter is not None:
        ecounter = _uint(write_counter, 32, "write counter")
        checks |= _C_COUNTER
    if address is not None:
        eaddress = _uint(address, 16, "address")
        checks |= _C_ADDRESS
    if block_count is not None:
        eblocks = _uint(block_count, 16, "block count")
        checks |= _C_BLOCK_COUNT
    h: HmacSha256 | None = None
    owned = False
    if authenticate:
        if type(key_or_hmac) is HmacSha256:
            h = key_or_hmac
        else:
            h, owned = _resolve_key(key_or_hmac)
        checks |= _C_MAC
    try:
        failed = lib.kt_rpmb_check_args(
            h.state_address if h is not None else ffi.NULL, p, n, checks, etype, nonce_arg, ecounter, eaddress, eblocks
        )
    finally:
        if owned and h is not None:
            h.wipe()

    if not failed:
        # The common path: one unpack of the last frame's tail instead of five field reads.
        return Response(buf, authenticate, _TAIL.unpack_from(buf, (n - 1) * FRAME_SIZE + OFF_NONCE))
    last = Frame(memoryview(buf).cast("B")[(n - 1) * FRAME_SIZE :])
    if failed & lib.KT_RPMB_CHECK_TYPE:
        types = sorted({f.req_resp for f in iter_frames(buf)})
        raise error(
            errno.EBADMSG,
            f"RPMB response type is {', '.join(f'{t:#06x}' for t in types)}, expected {expect:#06x}",
        )
    mac_ok = authenticate and not failed & lib.KT_RPMB_CHECK_MAC
    if failed & lib.KT_RPMB_CHECK_RESULT:
        res = last.result
        how = "authenticated" if mac_ok else "unauthenticated"
        raise error(result_errno(res), f"RPMB device reported {result_name(res)} (result {res:#06x}, {how})")
    if failed & lib.KT_RPMB_CHECK_MAC:
        raise error(errno.EBADMSG, "RPMB response MAC does not verify (wrong key or altered frame)")
    bad = [name for bit, name in _FIELD_NAMES if failed & bit]
    if bad:
        raise error(errno.EBADMSG, f"RPMB response {', '.join(bad)} do not match the request")
    return Response(buf, bool(mac_ok), _TAIL.unpack_from(buf, (n - 1) * FRAME_SIZE + OFF_NONCE))


def check_program_key_response(buf: Buffer) -> Response:
    """Check a key-programming result frame (type 0x0100; hosts do not verify
    a MAC on it, spec 1.6).  Errors as :func:`check_response`."""
    return check_response(None, buf, expect=ResponseType.PROGRAM_KEY, frames=1, authenticate=False)


def check_counter_response(key_or_hmac: Any, buf: Buffer, *, nonce: Buffer) -> Response:
    """Check a counter-read response: type 0x0200, OK, MAC, nonce echoed.
    The counter is ``.write_counter`` of the result.  Errors as :func:`check_response`."""
    return check_response(key_or_hmac, buf, expect=ResponseType.READ_COUNTER, nonce=nonce, frames=1)


def check_write_response(key_or_hmac: Any, buf: Buffer, *, address: int, write_counter: int) -> Response:
    """Check the result of a write sent with ``write_counter``: type 0x0300, OK,
    MAC, same address, counter advanced by exactly one (spec 1.6, 1.9).
    Errors as :func:`check_response`."""
    nxt = _uint(write_counter, 32, "write counter") + 1
    if nxt > 0xFFFFFFFF:
        raise error(errno.EINVAL, "write counter 0xffffffff is expired: no write can follow it")
    return check_response(
        key_or_hmac, buf, expect=ResponseType.AUTH_WRITE, address=address, write_counter=nxt, frames=1
    )


def check_read_response(
    key_or_hmac: Any, buf: Buffer, *, nonce: Buffer, address: int, blocks: int | None = None
) -> Response:
    """Check an N-frame read response: every frame type 0x0400, OK, one MAC
    over all frames, nonce and address echoed in the last frame; ``blocks``
    pins N.  The data is ``.data()`` of the result.  Errors as :func:`check_response`."""
    return check_response(
        key_or_hmac, buf, expect=ResponseType.AUTH_READ, nonce=nonce, address=address, frames=blocks
    )


def request_type(buf: Buffer) -> int:
    """The request code shared by all frames of ``buf``.  ``EINVAL`` when the
    frames disagree (devices reject mixed requests) or the length is bad."""
    types = {f.req_resp for f in iter_frames(buf)}
    if len(types) != 1:
        raise error(errno.EINVAL, f"RPMB request frames carry different types: {sorted(types)}")
    return types.pop()


def unpack(frame: Frame | Buffer) -> dict[str, int]:
    """The integer fields of one frame (a :class:`Frame` from :func:`parse`, or its
    bytes), unpacked in C (``EINVAL`` unless 512 bytes)."""
    p = _exact(frame.buffer if isinstance(frame, Frame) else frame, FRAME_SIZE, "RPMB frame")
    f = ffi.new("struct kt_rpmb_fields *")
    lib.kt_rpmb_unpack(p, f)
    return {
        "write_counter": f.counter,
        "address": f.address,
        "block_count": f.block_count,
        "result": f.result,
        "req_resp": f.type,
    }


def result_of(frame: Frame) -> tuple[int, bool]:
    """``(code, expired)`` of a frame's result field."""
    return result_code(frame.result), counter_expired(frame.result)
