"""Secret memory: :class:`SecretBuffer` and constant-time comparison.

Key material lives in native memory from ``_native/secmem.c``: outside the
Python heap, ``mlock``ed where the OS allows, excluded from core dumps, wiped
with an explicit wipe on :meth:`SecretBuffer.wipe`, on garbage collection and
at interpreter exit, and zero in a forked child.

A buffer's memory belongs to the cffi pointer in ``_ptr`` (``ffi.gc``): every
view of the buffer holds that pointer, so the memory goes back to the allocator
only when the buffer *and* every view and slice of it are gone, and is wiped
again then.  :meth:`SecretBuffer.wipe` zeroes the memory at once; a view kept
past it reads zeros from then on, and writing through a kept writable view
touches only that dead block, never another secret or the allocator's lists.

A forked child inherits no secret: the memory is marked ``MADV_WIPEONFORK``
(``MADV_DONTFORK`` on kernels without it, with zero pages mapped back in the
child), so every SecretBuffer, view and address the child inherited reads zeros
(same length, not ``mlock``ed).  The child may wipe them, write to them (its own
pages) and make new SecretBuffers, which work as in any process; keys of an
in-process Keyspace it inherited read as zeros, so it should make its own.
"""

from __future__ import annotations

import atexit
import errno
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from keyring_types.bindings._secmem import ffi, lib
from keyring_types.errors import error

__all__ = ["SecretBuffer", "ct_memcmp", "live_secret_bytes"]

atexit.register(lib.kt_secure_wipe_all)

Buffer = bytes | bytearray | memoryview

_gc = ffi.gc
_release = lib.kt_secure_release
_wipe = lib.kt_wipe
_refs = sys.getrefcount


def ct_memcmp(a: Buffer, b: Buffer) -> bool:
    """Compare two buffers in time independent of their contents.

    Returns ``True`` when equal.  Lengths are not secret: different lengths
    return ``False`` at once.
    """
    if len(a) != len(b):
        return False
    if not a:
        return True
    equal: bool = lib.kt_ct_memcmp(ffi.from_buffer(a), ffi.from_buffer(b), len(a)) == 0
    return equal


def live_secret_bytes() -> int:
    """Bytes of secret memory currently allocated (for leak tests)."""
    return int(lib.kt_secure_live_bytes())


class SecretBuffer:
    """A fixed-size buffer of secret bytes in locked, wiped-on-free memory.

    ``repr()`` never shows the contents.  Use :meth:`view` for a read-only
    ``memoryview`` and :meth:`wipe` (or let it be collected) to destroy it.
    """

    __slots__ = ("__weakref__", "_ptr", "_size")

    def __init__(self, size: int) -> None:
        """Allocate ``size`` zeroed bytes; ``EINVAL`` for a negative size, ``ENOMEM``
        if secret memory is exhausted."""
        if size < 0:
            raise error(errno.EINVAL, f"secret buffer size must not be negative, got {size}")
        ptr = lib.kt_secure_alloc(size)
        if not ptr:  # NULL; cheaper than comparing with ffi.NULL
            raise error(errno.ENOMEM, f"cannot allocate {size} bytes of secret memory")
        # The block is released (wiped, then reused) when the last holder of this
        # pointer, the buffer or a view of it, is gone.
        self._ptr: Any = _gc(ptr, _release)
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
        buf._ptr = _gc(ptr, _release)
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
        """True when the pages holding this buffer are ``mlock``ed (never in a
        forked child for a buffer it inherited: memory locks are not inherited)."""
        ptr = self._ptr
        if ptr is None:
            return False
        return bool(lib.kt_secure_is_locked(ptr, max(self._size, 1)))

    def _live(self) -> Any:
        ptr = self._ptr
        if ptr is None:
            raise error(errno.EKEYREVOKED, "secret buffer has been wiped")
        return ptr

    def view(self) -> memoryview:
        """A read-only view of the secret; ``EKEYREVOKED`` once wiped.

        The view stays safe to hold past :meth:`wipe`: from then on it reads zeros.
        """
        return memoryview(ffi.buffer(self._live(), self._size)).toreadonly()

    def writable(self) -> memoryview:
        """A writable view, for code that fills the buffer in place; ``EKEYREVOKED``
        once wiped.  Writes through it after :meth:`wipe` reach no other secret."""
        return memoryview(ffi.buffer(self._live(), self._size))

    @contextmanager
    def _reading(self) -> Iterator[memoryview]:
        mv = self.view()
        try:
            yield mv
        finally:
            mv.release()

    def tobytes(self) -> bytes:
        """Copy the secret out into an ordinary ``bytes`` (for ``read()`` of plain
        types); ``EKEYREVOKED`` once wiped."""
        ptr = self._ptr
        if ptr is None:
            ptr = self._live()
        # One call for the copy (ffi.unpack would need a cast to char * first).
        out: bytes = ffi.buffer(ptr, self._size)[:]
        return out

    @property
    def address(self) -> Any:
        """The cffi pointer, for native code that consumes the secret in place;
        ``EKEYREVOKED`` once wiped.  Holding it keeps the memory from reuse."""
        ptr = self._ptr
        if ptr is None:
            ptr = self._live()
        return ptr

    def wipe(self) -> None:
        """Zero the memory now and release it once no view holds it.  Idempotent."""
        ptr = self._ptr
        if ptr is None:
            return
        # Anyone else holding the pointer (a view, a handed-out address, another
        # thread inside a method or this same wipe) must find zeros by the time
        # this returns, so it is zeroed here: before the buffer reads as wiped,
        # so that a racing wipe() that returns early also leaves zeros, and once
        # more after, for a view made in between.  With no other holder (the
        # usual case) the release below wipes the block, and the zeroing call
        # is saved.  getrefcount counts its own argument: 3 is self, ptr, arg.
        zeroed = _refs(ptr) > 3
        if zeroed:
            _wipe(ptr, self._size)
        self._ptr = None
        if not zeroed and _refs(ptr) > 2:
            _wipe(ptr, self._size)
        # The last reference to ptr going releases the block (wiped again there).
