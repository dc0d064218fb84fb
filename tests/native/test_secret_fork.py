"""Secret memory across fork() (issue 12).

A forked child used to inherit every secret readable; now the arenas are marked
MADV_WIPEONFORK (or MADV_DONTFORK, with zero pages mapped in their place in the
child), so the child reads zeros wherever a secret was, and can still wipe what
it inherited and make new secrets.  And fork() while another thread was inside
the allocator could leave the child waiting forever on the allocator's mutex;
a pthread_atfork handler now holds the mutex across fork().
"""

from __future__ import annotations

import os
from collections.abc import Callable

from isolated import run_isolated
from keyring_types.bindings._secmem import ffi, lib

import keyring_types as kt
from keyring_types.secret import SecretBuffer


def in_child(body: Callable[[], bytes]) -> tuple[int, bytes]:
    """Fork, run ``body`` in the child and return (exit status, what it returned)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            os.close(r)
            os.write(w, body())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return status, out


def test_a_child_reads_zeros_where_its_parent_keeps_secrets() -> None:
    secret = bytes(range(1, 49))
    buf = SecretBuffer.from_bytes(secret)
    big = SecretBuffer.from_bytes(secret * 200)  # a large region of its own
    view = buf.view()
    try:
        assert lib.kt_secure_fork_mode(buf.address) == 2, "this kernel has MADV_WIPEONFORK"

        def child() -> bytes:
            seen = [
                bytes(view),
                buf.tobytes(),
                ffi.buffer(buf.address, len(buf))[:],
                big.tobytes()[:48],
                b"L" if buf.locked else b"-",
            ]
            buf.writable()[:] = b"c" * 48  # lands in the child's own zero page
            fresh = SecretBuffer.from_bytes(b"child secret")
            seen.append(fresh.tobytes())
            seen.append(b"L" if fresh.locked else b"-")
            fresh.wipe()
            buf.wipe()
            big.wipe()
            return b"|".join(seen)

        status, out = in_child(child)
        assert status == 0
        parts = out.split(b"|")
        assert parts[:4] == [bytes(48)] * 3 + [bytes(48)], "the child must not read the parent's secrets"
        assert parts[4] == b"-"  # memory locks are not inherited
        assert parts[5:] == [b"child secret", b"L" if buf.locked else b"-"]
        assert bytes(view) == secret and buf.tobytes() == secret, "the parent's secret is untouched"
        assert big.tobytes() == secret * 200
    finally:
        view.release()
        buf.wipe()
        big.wipe()


def test_an_in_process_key_read_in_a_child_is_zeros() -> None:
    ks = kt.Keyspace()
    k = ks.add_key("user", "forked", b"parent only", "@s")
    status, out = in_child(lambda: k.read() + b"|" + ks.add_key("user", "new", b"made here", "@s").read())
    assert status == 0 and out == bytes(11) + b"|made here"
    assert k.read() == b"parent only"


def test_the_dontfork_fallback_maps_zeros_in_the_child() -> None:
    # Kernels before 4.14 have no MADV_WIPEONFORK: the arenas are then not mapped in
    # the child at all, and the child maps zero pages where they were (a stale
    # pointer reads zeros instead of faulting).  Forced here through the test knob.
    proc = run_isolated(
        """
        import os
        from keyring_types.bindings._secmem import ffi, lib
        from keyring_types.secret import SecretBuffer
        lib.kt_secure_set_fork_mode(1)
        small = SecretBuffer.from_bytes(b"s" * 40)
        big = SecretBuffer.from_bytes(b"b" * 10000)
        assert lib.kt_secure_fork_mode(small.address) == 1
        assert lib.kt_secure_fork_mode(big.address) == 1
        view = small.view()
        pid = os.fork()
        if pid == 0:
            ok = bytes(view) == bytes(40) and big.tobytes() == bytes(10000)
            small.wipe()
            big.wipe()
            ok = ok and SecretBuffer.from_bytes(b"new").tobytes() == b"new"
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert bytes(view) == b"s" * 40 and big.tobytes() == b"b" * 10000
        print("ok")
        """
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


def test_fork_while_another_thread_allocates_never_hangs_the_child() -> None:
    # 200 forks while a thread allocates and frees secrets of every size class (and
    # large ones, whose mmap keeps the allocator's mutex longest).  Before the
    # atfork handler a child forked while that thread held the mutex waited on it
    # forever.  Each child makes a secret and exits; one that has not within 10 s
    # is killed and counted.
    proc = run_isolated(
        """
        import os, sys, threading, time
        from keyring_types.secret import SecretBuffer

        stop = False

        def hammer():
            sizes = [16, 32, 33, 200, 1000, 4096, 5000, 12000, 70000]
            i = 0
            while not stop:
                bufs = [SecretBuffer(sizes[(i + j) % len(sizes)]) for j in range(8)]
                for b in bufs:
                    b.wipe()
                i += 1

        t = threading.Thread(target=hammer, daemon=True)
        t.start()
        hung = 0
        for _ in range(200):
            pid = os.fork()
            if pid == 0:
                SecretBuffer.from_bytes(b"child").wipe()
                os._exit(0)
            deadline = time.monotonic() + 10
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert os.waitstatus_to_exitcode(status) == 0, status
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    hung += 1
                    break
                time.sleep(0.001)
        stop = True
        t.join()
        print("hung", hung)
        """,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "hung 0"
