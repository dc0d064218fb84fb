"""HMAC-SHA256 with precomputed pads, over the native hot path.

:class:`HmacSha256` absorbs the key's inner and outer padded blocks once
(``_native/hmac.c``) and keeps the two SHA-256 midstates in a
:class:`~keyring_types.secret.SecretBuffer`: locked memory that is wiped when
the object is destroyed.  Every call works on ``bytes``, ``bytearray`` or
``memoryview`` without copying the input, and releases the GIL while the C
code runs (cffi does that around every call), so threads MAC in parallel.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from typing import Any

from keyring_types.bindings._hmac import ffi, lib
from keyring_types.errors import error
from keyring_types.secret import SecretBuffer

__all__ = ["HmacSha256", "DIGEST_SIZE", "BLOCK_SIZE", "SHA384_SIZE", "batch_lanes", "hmac_sha384_into"]

Buffer = bytes | bytearray | memoryview

# Batch results are fully overwritten by C, so skip cffi's zero fill.
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)

DIGEST_SIZE = 32
BLOCK_SIZE = 64


def cbuf(data: Any, what: str = "data") -> Any:
    """A cffi ``char[]`` over ``data`` without copying; ``len()`` of it is the byte size.

    ``EINVAL`` for objects that are not contiguous byte buffers."""
    try:
        return ffi.from_buffer(data)
    except (TypeError, BufferError) as exc:
        raise error(errno.EINVAL, f"{what} must be a contiguous bytes-like object ({exc})") from None


def cbuf_writable(out: Any, need: int, what: str) -> Any:
    """Like :func:`cbuf` for a buffer the C code writes into; ``EINVAL`` when
    ``out`` is read-only, not contiguous, or shorter than ``need`` bytes."""
    try:
        p = ffi.from_buffer("char[]", out, True)  # positional: cheaper than the keyword
    except (TypeError, BufferError) as exc:
        raise error(errno.EINVAL, f"{what} must be a writable contiguous buffer ({exc})") from None
    n = len(p)
    if n < need:
        ffi.release(p)
        raise error(errno.EINVAL, f"{what} holds {n} bytes, {need} are needed")
    return p


class HmacSha256:
    """An HMAC-SHA256 key with its pads precomputed.

    ``HmacSha256(key)`` accepts the key as ``bytes``, ``bytearray``,
    ``memoryview`` or :class:`SecretBuffer`; only the derived midstates are
    kept (in secret memory), never a copy of ``key`` on the Python heap.
    Raises ``ENOMEM`` when secret memory is exhausted.  After :meth:`wipe`
    (or ``with`` exit) every method raises ``EKEYREVOKED``.

    Safe to share between threads: calls only read the key state.
    """

    __slots__ = ("__weakref__", "_secret", "_state")

    digest_size = DIGEST_SIZE
    block_size = BLOCK_SIZE

    def __init__(self, key: Buffer | SecretBuffer) -> None:
        if isinstance(key, SecretBuffer):
            key = key.view()
        kp = cbuf(key, "HMAC key")
        secret = SecretBuffer(int(lib.kt_hmac_state_size()))
        state = secret.address
        rc = lib.kt_hmac_init(state, kp, len(kp))
        # Release the export at once so a caller's view (a Key's secret())
        # can be released right after this returns.
        ffi.release(kp)
        if rc != 0:
            secret.wipe()
            raise error(errno.ENOMEM, "libcrypto could not set up the HMAC-SHA256 key")
        self._secret = secret
        self._state: Any = state

    @classmethod
    def from_key(cls, key: Any, consumer: str | None = None) -> HmacSha256:
        """Build from anything with a ``secret()`` context manager yielding the key bytes
        (a keyring_types ``Key`` handle); ``consumer`` is handed to ``secret()`` (a
        key bound to one use, e.g. ``"rpmb"``).  Raises what ``secret()`` raises
        (``EACCES``, ``EKEYREVOKED``, ``EKEYEXPIRED``, ``EKEYREJECTED``, ...)."""
        with key.secret() if consumer is None else key.secret(consumer=consumer) as mv:
            return cls(mv)

    # -- lifetime ---------------------------------------------------------

    def wipe(self) -> None:
        """Destroy the key state (wiped, then freed).  Idempotent."""
        self._state = None
        secret = getattr(self, "_secret", None)
        if secret is not None:
            secret.wipe()

    close = wipe

    def __enter__(self) -> HmacSha256:  # noqa: PYI034  (a final class in practice; Self adds nothing here)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wipe()

    def __del__(self) -> None:
        try:
            self.wipe()
        except Exception:  # noqa: BLE001, S110  (interpreter shutdown: secret memory was wiped at exit)
            pass

    def __repr__(self) -> str:
        return "<HmacSha256 wiped>" if self._state is None else "<HmacSha256>"

    def _st(self) -> Any:
        st = self._state
        if st is None:
            raise error(errno.EKEYREVOKED, "HMAC key has been wiped")
        return st

    # -- MACs -------------------------------------------------------------

    def mac(self, data: Buffer) -> bytes:
        """The 32-byte HMAC-SHA256 of ``data``.  ``EKEYREVOKED`` after :meth:`wipe`."""
        st = self._st()
        p = cbuf(data)
        out = ffi.new("uint8_t[32]")
        lib.kt_hmac_mac(st, p, len(p), out)
        tag: bytes = ffi.buffer(out)[:]
        return tag

    def mac_parts(self, parts: Iterable[Buffer]) -> bytes:
        """One MAC over the concatenation of ``parts``, without joining them.

        ``EKEYREVOKED`` after :meth:`wipe`."""
        st = self._st()
        # Keep the from_buffer handles alive until the call returns.
        holders = [cbuf(p, "each part") for p in parts]
        n = len(holders)
        ptrs = ffi.new("const uint8_t *[]", holders) if n else ffi.NULL
        lens = ffi.new("size_t[]", [len(h) for h in holders]) if n else ffi.NULL
        out = ffi.new("uint8_t[32]")
        lib.kt_hmac_mac_parts(st, ptrs, lens, n, out)
        tag: bytes = ffi.buffer(out)[:]
        return tag

    def mac_batch(self, buf: Buffer, msg_len: int, out: bytearray | memoryview | None = None) -> bytes | None:
        """N independent MACs of the consecutive ``msg_len``-byte slices of ``buf``.

        Returns ``N * 32`` bytes (tag i at ``32*i``), or writes them into ``out``
        and returns ``None``.  ``EINVAL`` when ``msg_len`` is not positive, when
        ``len(buf)`` is not a multiple of it, or when ``out`` is read-only or
        too small; ``EKEYREVOKED`` after :meth:`wipe`.  The whole batch runs
        in C with the GIL released, sixteen or two messages at a time where the
        CPU allows (see :func:`batch_lanes`).
        """
        st = self._st()
        if not isinstance(msg_len, int) or msg_len <= 0:
            raise error(errno.EINVAL, f"message length must be a positive integer, got {msg_len!r}")
        p = cbuf(buf, "batch buffer")
        total = len(p)
        if total % msg_len:
            raise error(
                errno.EINVAL, f"buffer of {total} bytes is not a whole number of {msg_len}-byte messages"
            )
        n = total // msg_len
        if out is not None:
            lib.kt_hmac_batch(st, p, n, msg_len, msg_len, cbuf_writable(out, 32 * n, "out"), 32)
            return None
        if not n:
            return b""
        res = _new_uncleared("uint8_t[]", 32 * n)
        lib.kt_hmac_batch(st, p, n, msg_len, msg_len, res, 32)
        tags: bytes = ffi.buffer(res)[:]
        return tags

    def verify(self, data: Buffer, tag: Buffer) -> bool:
        """True when ``tag`` is the MAC of ``data``, compared in constant time.

        ``EINVAL`` when ``tag`` is not 32 bytes (tag length is public);
        ``EKEYREVOKED`` after :meth:`wipe`."""
        st = self._st()
        t = cbuf(tag, "tag")
        if len(t) != DIGEST_SIZE:
            raise error(errno.EINVAL, f"an HMAC-SHA256 tag is {DIGEST_SIZE} bytes, got {len(t)}")
        p = cbuf(data)
        return bool(lib.kt_hmac_verify(st, p, len(p), t))

    # The property calls _st itself rather than a getter that calls it: one
    # Python call less on every RPMB frame operation.
    state_address = property(
        _st, doc="The native key state, for other ``_native`` code (the RPMB frame functions)."
    )


def batch_lanes(lanes: int | None = None) -> int:
    """Query (``None``) or choose the kernel :meth:`HmacSha256.mac_batch` uses.

    ``0`` picks the best this CPU has; ``1`` is libcrypto one message at a
    time, ``2`` two interleaved SHA-NI lanes, ``16`` AVX-512 over sixteen
    messages at once.  A kernel the CPU lacks falls back to the next narrower
    one.  Returns the kernel in use before the call.  Every choice computes the
    same MACs; this exists so tests and benchmarks can compare them.
    ``EINVAL`` for other values."""
    if lanes is None:
        return int(lib.kt_hmac_batch_lanes(-1))
    if lanes not in (0, 1, 2, 16):
        raise error(errno.EINVAL, f"batch lanes must be 0, 1, 2 or 16, got {lanes!r}")
    return int(lib.kt_hmac_batch_lanes(lanes))


SHA384_SIZE = 48


def hmac_sha384_into(key: Buffer, msg: Buffer, out: bytearray | memoryview) -> None:
    """HMAC-SHA-384 of ``msg`` under ``key`` written into ``out[:48]`` (a SecretBuffer's
    writable view: no ``bytes`` of the result is ever made, as ``hmac.digest`` would).
    ``EINVAL`` when ``out`` is read-only or shorter than 48 bytes, or a buffer is not
    contiguous; ``EIO`` when libcrypto fails."""
    kp = cbuf(key, "HMAC key")
    mp = cbuf(msg, "message")
    op = cbuf_writable(out, SHA384_SIZE, "out")
    try:
        if lib.kt_hmac_sha384(kp, len(kp), mp, len(mp), op) != 0:
            raise error(errno.EIO, "libcrypto could not compute HMAC-SHA-384")
    finally:
        ffi.release(op)
        ffi.release(kp)
