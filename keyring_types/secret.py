"""Secret memory: :class:`SecretBuffer` and constant-time comparison.

Key material lives in native memory from ``_native/secmem.c``: outside the
Python heap, ``mlock``ed where the OS allows, excluded from core dumps, wiped
with an explicit wipe on :meth:`SecretBuffer.wipe`, on garbage collection and
at interpreter exit.
"""

from __future__ import annotations

import atexit
import errno
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from keyring_types.bindings._secmem import ffi, lib
from keyring_types.errors import error

__all__ = ["SecretBuffer", "ct_memcmp", "live_secret_bytes"]

atexit.register(lib.kt_secure_wipe_all)

Buffer = bytes | bytearray | memoryview

_WIPE_LOCK = threading.Lock()


def ct_memcmp(a: Buffer, b: Buffer) -> bool:
    """Compare two buffers in time independent of their contents.

    Returns ``True`` when equal.  Lengths are not secret: different lengths
    return ``False`` at once.
    """
    if len(a) != len(b):
        return False
    if not a:
        return True
    return lib.kt_ct_memcmp(ffi.from_buffer(a), ffi.from_buffer(b), len(a)) == 0


def live_secret_bytes() -> int:
    """Bytes of secret memory currently allocated (for leak tests)."""
    return int(lib.kt_secure_live_bytes())


class SecretBuffer:
    """A fixed-size buffer of secret bytes in locked, wiped-on-free memory.

    ``repr()`` never shows the contents.  Use :meth:`view` for a read-only
    ``memoryview`` and :meth:`wipe` (or let it be collected) to destroy it.
    """

    __slots__ = ("_ptr", "_size", "__weakref__")

    def __init__(self, size: int) -> None:
        """Allocate ``size`` zeroed bytes; ``ENOMEM`` if secret memory is exhausted."""
        if size < 0:
            raise error(errno.EINVAL, f"secret buffer size must not be negative, got {size}")
        ptr = lib.kt_secure_alloc(size)
        if not ptr:  # NULL; cheaper than comparing with ffi.NULL
            raise error(errno.ENOMEM, f"cannot allocate {size} bytes of secret memory")
        self._ptr: Any = ptr
        self._size = size

    @classmethod
    def from_bytes(cls, data: Buffer) -> SecretBuffer:
        """Copy ``data`` into a new secret buffer (the caller should drop ``data``); ``ENOMEM``."""
        n = len(data)
        # cffi passes a bytes object to a char * without wrapping it; other buffers need from_buffer.
        src = data if type(data) is bytes else ffi.from_buffer(data)
        ptr = lib.kt_secure_dup(src, n) if n else lib.kt_secure_alloc(0)
        if not ptr:  # NULL; cheaper than comparing with ffi.NULL
            raise error(errno.ENOMEM, f"cannot allocate {n} bytes of secret memory")
        buf = cls.__new__(cls)
        buf._ptr = ptr
        buf._size = n
        return buf

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        state = "wiped" if self._ptr is None else f"{self._size} bytes"
        return f"<SecretBuffer {state}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretBuffer):
            with other._reading() as ov:
                return self._ct_equal(ov)
        if isinstance(other, (bytes, bytearray, memoryview)):
            return self._ct_equal(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable secret: never a dict key

    def _ct_equal(self, other: Buffer) -> bool:
        with self._reading() as mv:
            return ct_memcmp(mv, other)

    @property
    def wiped(self) -> bool:
        """True once the buffer has been destroyed."""
        return self._ptr is None

    @property
    def locked(self) -> bool:
        """True when the pages holding this buffer are ``mlock``ed."""
        if self._ptr is None:
            return False
        return bool(lib.kt_secure_is_locked(self._ptr, max(self._size, 1)))

    def _check(self) -> None:
        if self._ptr is None:
            raise error(errno.EKEYREVOKED, "secret buffer has been wiped")

    def view(self) -> memoryview:
        """A read-only view of the secret; valid until :meth:`wipe`."""
        self._check()
        return memoryview(ffi.buffer(self._ptr, self._size)).toreadonly()

    def writable(self) -> memoryview:
        """A writable view, for code that fills the buffer in place."""
        self._check()
        return memoryview(ffi.buffer(self._ptr, self._size))

    @contextmanager
    def _reading(self) -> Iterator[memoryview]:
        mv = self.view()
        try:
            yield mv
        finally:
            mv.release()

    def tobytes(self) -> bytes:
        """Copy the secret out into an ordinary ``bytes`` (for ``read()`` of plain types)."""
        if self._ptr is None:
            self._check()
        # One call for the copy (ffi.unpack would need a cast to char * first).
        return ffi.buffer(self._ptr, self._size)[:]

    @property
    def address(self) -> Any:
        """The cffi pointer, for native code that consumes the secret in place."""
        if self._ptr is None:
            self._check()
        return self._ptr

    def wipe(self) -> None:
        """Zero and release the memory.  Idempotent."""
        # Two threads wiping at once must not free twice; nothing between acquire
        # and release can raise, so no with-block is needed.
        _WIPE_LOCK.acquire()
        ptr, self._ptr = self._ptr, None
        _WIPE_LOCK.release()
        if ptr is not None:
            lib.kt_secure_free(ptr, self._size)

    def __del__(self) -> None:
        if self._ptr is None:
            return
        try:
            self.wipe()
        except Exception:  # interpreter shutdown: the atexit wipe already ran
            pass
