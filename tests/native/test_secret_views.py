"""Views of a SecretBuffer kept past its wipe (issue 12).

A wiped buffer's block used to go straight back to the allocator: a view or slice
kept past ``with k.secret()`` then showed the next secret stored there, and a
writable one, written to, overwrote the free list and crashed the process.  Now
the block is zeroed at wipe and handed back only when the last view of it is
gone, wiped again then.
"""

from __future__ import annotations

import threading

from isolated import run_isolated
from keyring_types.bindings._secmem import ffi

import keyring_types as kt
from keyring_types.secret import SecretBuffer, live_secret_bytes


def _addr(buf: SecretBuffer) -> int:
    return int(ffi.cast("uintptr_t", buf.address))


def test_a_stale_view_and_its_slice_read_zeros_while_new_secrets_are_made() -> None:
    a = SecretBuffer.from_bytes(b"A" * 32)
    view = a.view()
    piece = view[4:12]
    old = _addr(a)
    a.wipe()
    others = [SecretBuffer.from_bytes(b"B" * 32) for _ in range(200)]
    try:
        assert old not in {_addr(b) for b in others}, "a block a view still shows was handed out again"
        assert bytes(view) == bytes(32) and bytes(piece) == bytes(8)
    finally:
        for b in others:
            b.wipe()


def test_a_slice_kept_past_secret_shows_zeros_not_the_next_key(quiet_secret_memory: None) -> None:
    ks = kt.Keyspace()
    mine = ks.add_key("user", "mine", b"m" * 40, "@s")
    with mine.secret() as mv:
        kept = mv[:]  # a slice outlives the with block's release of mv
    theirs = ks.add_key("user", "theirs", b"t" * 40, "@s")
    with theirs.secret() as tv:
        assert bytes(tv) == b"t" * 40
        assert bytes(kept) == bytes(40)
    assert bytes(kept) == bytes(40)


def test_the_block_goes_back_only_when_the_last_view_is_gone(quiet_secret_memory: None) -> None:
    base = live_secret_bytes()
    a = SecretBuffer(32)
    piece = a.view()[2:5]
    a.wipe()
    assert live_secret_bytes() == base + 32, "the block is still shown by a view"
    del piece
    assert live_secret_bytes() == base


def test_a_collected_buffer_is_released_and_wiped(quiet_secret_memory: None) -> None:
    base = live_secret_bytes()
    a = SecretBuffer.from_bytes(b"z" * 64)
    old = _addr(a)
    del a
    assert live_secret_bytes() == base
    b = SecretBuffer(64)  # the size class's free list hands back the newest block first
    try:
        assert _addr(b) == old and b.tobytes() == bytes(64)
    finally:
        b.wipe()


def test_writes_through_a_stale_view_are_wiped_when_the_block_is_released() -> None:
    # Isolated: before the fix this write hit the free list of this very process.
    proc = run_isolated(
        """
        from keyring_types.bindings._secmem import ffi
        from keyring_types.secret import SecretBuffer
        a = SecretBuffer(32)
        w = a.writable()
        old = int(ffi.cast("uintptr_t", a.address))
        a.wipe()
        w[:] = b"w" * 32
        assert bytes(w) == b"w" * 32  # the dead block is the writer's own
        del w
        b = SecretBuffer(32)  # the newest free block of the class comes back first
        assert int(ffi.cast("uintptr_t", b.address)) == old and b.tobytes() == bytes(32)
        print("ok")
        """
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


def test_a_writable_stale_view_cannot_corrupt_other_secrets_or_the_allocator() -> None:
    # Before: the write landed on the free list's next pointer; the next allocations
    # handed out 0xffff... and the process died.  Isolated so a crash fails this test.
    proc = run_isolated(
        """
        from keyring_types.secret import SecretBuffer
        for size in (16, 32, 100, 4096, 9000):
            a = SecretBuffer(size)
            w = a.writable()
            a.wipe()
            live = []
            for i in range(300):
                w[:] = b"\\xff" * size
                live.append(SecretBuffer.from_bytes(bytes([i % 251 + 1]) * size))
                if i % 3 == 0:
                    live.pop(0).wipe()
            for b in live:
                first = b.tobytes()[:1]
                assert b.tobytes() == first * size and first != b"\\xff", size
            assert bytes(w) == b"\\xff" * size
            del w
            fresh = [SecretBuffer(size) for _ in range(50)]
            assert all(f.tobytes() == bytes(size) for f in fresh), size
        print("ok")
        """
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


def test_threads_wiping_one_buffer_while_others_read_it(quiet_secret_memory: None) -> None:
    base = live_secret_bytes()
    errors: list[BaseException] = []
    seen: list[bytes] = []

    def worker(bufs: list[SecretBuffer]) -> None:
        try:
            for b in bufs:
                try:
                    v = b.view()
                except OSError:
                    continue  # already wiped by the other thread
                b.wipe()
                seen.append(bytes(v[:1]))
        except BaseException as e:  # reported below
            errors.append(e)

    bufs = [SecretBuffer.from_bytes(b"s" * 48) for _ in range(3000)]
    threads = [threading.Thread(target=worker, args=(bufs,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert set(seen) <= {b"\x00"}, "a view read after its own wipe shows zeros"
    assert all(b.wiped for b in bufs)
    del bufs
    assert live_secret_bytes() == base


def test_an_address_kept_past_wipe_reads_zeros_and_is_not_handed_out() -> None:
    # Native code given SecretBuffer.address (a seal in another thread, an HMAC
    # state) keeps the block: a wipe meanwhile zeroes it but frees nothing.
    a = SecretBuffer.from_bytes(b"k" * 24)
    ptr = a.address
    old = _addr(a)
    a.wipe()
    others = [SecretBuffer.from_bytes(b"o" * 24) for _ in range(100)]
    try:
        assert old not in {_addr(b) for b in others}
        assert ffi.buffer(ptr, 24)[:] == bytes(24)
    finally:
        for b in others:
            b.wipe()
