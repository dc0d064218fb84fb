"""fork() while another thread is inside a Keyspace operation leaves the child a usable Keyspace."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

import keyring_types as kt

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

FORKS = 100
TIMEOUT = 30.0


def _reap(pids: list[int], deadline: float) -> tuple[list[int], list[int]]:
    """Wait for ``pids`` until ``deadline``; (exit codes, pids still running, then killed)."""
    codes: list[int] = []
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                pending.remove(pid)
                codes.append(os.waitstatus_to_exitcode(status))
        time.sleep(0.01)
    for pid in pending:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return codes, pending


def test_fork_while_another_thread_hammers_the_keyspace() -> None:
    ks = kt.Keyspace()
    stop = threading.Event()

    def hammer() -> None:
        i = 0
        while not stop.is_set():
            k = ks.add_key("user", f"core:fork:{i}", b"payload", "@s")
            k.read()
            k.invalidate()
            i += 1

    t = threading.Thread(target=hammer, daemon=True)
    t.start()
    pids = []
    try:
        for i in range(FORKS):
            pid = os.fork()
            if pid == 0:  # the child: one operation, then out without cleanup
                code = 1
                try:
                    k = ks.add_key("user", f"core:child:{i}", b"c", "@s")
                    code = 0 if k.read() == b"c" else 2
                finally:
                    os._exit(code)
            pids.append(pid)
            time.sleep(0.001)
    finally:
        stop.set()
        t.join()
    codes, hung = _reap(pids, time.monotonic() + TIMEOUT)
    assert not hung, f"{len(hung)} of {FORKS} children hung"
    assert codes == [0] * FORKS
    # The parent's keyspace still works after all those forks.
    assert ks.add_key("user", "core:after", b"ok", "@s").read() == b"ok"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
