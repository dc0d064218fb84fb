"""Find copies of a secret left anywhere in this process's writable memory.

For tests run in a child interpreter: make the secret with :func:`random_secret` (its only
other copy, the needle, lives in an anonymous mapping the scan skips), hand the returned
``bytearray`` to the code under test, wipe it, then :func:`leftovers` lists every place the
secret is still found: freed ``bytes`` the allocator has not reused, buffers never wiped,
stack copies.  Nothing on the way makes a Python ``bytes`` of the secret or of the memory
it reads (the reads land in a second skipped mapping), so the scan finds only what the code
under test left behind.
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import os

_CHUNK = 1 << 20


class Needle:
    """A secret of ``size`` random bytes: ``secret`` (a bytearray to use and wipe) and the needle."""

    def __init__(self, size: int = 32, *, copy_of: object = None) -> None:
        """A random secret of ``size`` bytes; with ``copy_of`` (a buffer, e.g. a SecretBuffer's
        view) the needle is a copy of that instead and ``secret`` is empty."""
        self._map = mmap.mmap(-1, mmap.PAGESIZE)
        self._buf = mmap.mmap(-1, _CHUNK)
        if copy_of is not None:
            src = memoryview(copy_of)  # type: ignore[arg-type]
            self.size = src.nbytes
            self.secret = bytearray()
            self._map[: self.size] = src
            self.needle = memoryview(self._map)[: self.size]
            return
        self.size = size
        self.secret = bytearray(size)
        fd = os.open("/dev/urandom", os.O_RDONLY | os.O_CLOEXEC)
        try:
            while True:
                os.readv(fd, [self.secret])
                # No run of zeros: a wiped buffer never looks like the secret.
                if all(self.secret):
                    break
        finally:
            os.close(fd)
        self._map[:size] = self.secret
        self.needle = memoryview(self._map)[:size]

    def _skip(self) -> list[tuple[int, int]]:
        spans = []
        for m in (self._map, self._buf):
            start = ctypes.addressof(ctypes.c_char.from_buffer(m))
            spans.append((start, start + len(m)))
        return spans

    def leftovers(self) -> list[str]:
        """Where the secret is found (``"addr mapping"``), the skipped mappings aside."""
        gc.collect()
        skip = self._skip()
        found = []
        buf = memoryview(self._buf)
        mem = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)
        try:
            with open("/proc/self/maps") as maps:
                regions = maps.read().splitlines()
            for line in regions:
                parts = line.split()
                if not parts[1].startswith("rw"):
                    continue
                name = parts[5] if len(parts) > 5 else "[anon]"
                if name in ("[vvar]", "[vsyscall]", "[vdso]"):
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if any(lo < e and s < hi for s, e in skip):
                    continue
                at = lo
                while at < hi:
                    n = min(_CHUNK, hi - at)
                    try:
                        got = os.preadv(mem, [buf[:n]], at)
                    except OSError:
                        got = 0
                    pos = self._buf.find(self.needle, 0, got) if got else -1
                    while pos >= 0:
                        found.append(f"{at + pos:#x} {name}")
                        pos = self._buf.find(self.needle, pos + 1, got)
                    if at + n >= hi:
                        break
                    at += n - (self.size - 1)  # overlap: a copy across two chunks is found too
        finally:
            os.close(mem)
        return found
