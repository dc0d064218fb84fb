"""Regression found in review: the LD_PRELOAD harness never reads a reply out of step."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from conftest import require
from rpmb_util import child_env, emulator, need_harness

from keyring_types.rpmb.harness import harness_env
from keyring_types.rpmb.wire import U32, recv_message, send_message

CHILD = textwrap.dedent(
    """
    import sys
    from keyring_types.rpmb.transport import MmcTransport
    from keyring_types.rpmb.wire import MmcCmd, MMC_READ_MULTIPLE_BLOCK
    t = MmcTransport(sys.argv[1])
    for _ in range(2):
        try:
            data = t.mmc([MmcCmd(0, MMC_READ_MULTIPLE_BLOCK, 1)])[0]
            print("data", data[:1].hex())
        except OSError as exc:
            print("errno", exc.errno)
    """
)


def test_a_bad_reply_ends_the_connection(tmp_path: Path) -> None:
    need_harness()
    path = tmp_path / "fake.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            try:
                assert recv_message(conn) is not None
                # Two frames where the command list reads one: the harness must not
                # leave the second frame in the stream for the next ioctl.
                send_message(conn, U32.pack(0) + b"\xaa" * 1024)
                if recv_message(conn) is not None:
                    send_message(conn, U32.pack(0) + b"\xbb" * 512)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    dev = tmp_path / "mmcblk9rpmb"
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, str(dev)], env=child_env(**harness_env(path, dev)),
                           capture_output=True, timeout=60, check=False)
    finally:
        thread.join(5)
        server.close()
    lines = r.stdout.decode().split()
    assert r.returncode == 0, r.stderr.decode()
    assert lines[:2] == ["errno", "71"]  # EPROTO: the reply's size is not what the reads ask
    # The second call fails (the connection is gone) or gets its own reply; never the stale frame.
    assert lines[2:] in (["errno", "104"], ["errno", "32"], ["data", "bb"]), lines


CHILD_MANY_FDS = textwrap.dedent(
    """
    import os, resource, sys
    from keyring_types.rpmb.transport import MmcTransport
    from keyring_types.rpmb.wire import MmcCmd, MMC_READ_MULTIPLE_BLOCK
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        print("skip"); sys.exit(0)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    held = [os.dup(0) for _ in range(1100)]  # the harness's socket gets a descriptor above 1023
    try:
        t = MmcTransport(sys.argv[1])
    except OSError as exc:
        print("open", exc.errno); sys.exit(0)
    try:
        t.mmc([MmcCmd(0, MMC_READ_MULTIPLE_BLOCK, 1)])
        print("ok")
    except OSError as exc:
        print("ioctl", exc.errno)
    """
)


def test_a_descriptor_the_harness_cannot_track_is_refused(tmp_path: Path) -> None:
    need_harness()
    path = tmp_path / "fake.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    dev = tmp_path / "mmcblk9rpmb"
    try:
        r = subprocess.run([sys.executable, "-c", CHILD_MANY_FDS, str(dev)], env=child_env(**harness_env(path, dev)),
                           capture_output=True, timeout=60, check=False)
    finally:
        server.close()
    out = r.stdout.decode().split()
    assert r.returncode == 0, r.stderr.decode()
    if out == ["skip"]:
        require(False, "RLIMIT_NOFILE of at least 1200 descriptors")
    # Refused at open with EMFILE, not handed out as a socket whose ioctls go to the kernel (ENOTTY).
    assert out == ["open", str(errno.EMFILE)], out


CHILD_DUP = textwrap.dedent(
    """
    import fcntl, os, sys
    from keyring_types.rpmb import frames as fr
    from keyring_types.rpmb.transport import MmcTransport
    from keyring_types.rpmb.wire import MmcCmd, MMC_READ_MULTIPLE_BLOCK, MMC_WRITE_MULTIPLE_BLOCK

    REQ = bytes(fr.counter_read_request(b"n" * 16))

    def ask(t, fd, label):
        t._fd = fd
        try:
            resp = t.mmc([MmcCmd(1, MMC_WRITE_MULTIPLE_BLOCK, 1, data=REQ), MmcCmd(0, MMC_READ_MULTIPLE_BLOCK, 1)])[0]
            print(label, "type", hex(fr.Frame(resp).req_resp))
        except OSError as exc:
            print(label, "errno", exc.errno)

    t = MmcTransport(sys.argv[1])
    first = t._fd
    d = os.dup(first)                                 # CPython: fcntl64(F_DUPFD_CLOEXEC)
    os.close(first)                                   # the copy outlives the original
    ask(t, d, "dup")
    ask(t, os.dup2(d, 600), "dup2")                   # dup2
    ask(t, os.dup2(d, 601, inheritable=False), "dup3")  # dup3(O_CLOEXEC)
    ask(t, fcntl.fcntl(d, fcntl.F_DUPFD, 700), "fcntl")
    # A duplicate closed, its number reused by a plain file: that file is no device.
    os.close(600)
    f = os.open(sys.argv[2], os.O_RDWR | os.O_CREAT, 0o600)
    plain = os.dup2(f, 600)
    ask(t, plain, "reused")
    # dup2 of a plain file over a live copy of the device: no longer the device.
    os.dup2(f, 601)
    ask(t, 601, "replaced")
    ask(t, d, "still")
    """
)


def test_duplicates_of_the_device_descriptor_reach_the_emulator(tdir: Path) -> None:
    need_harness()
    with emulator(tdir) as emu:
        dev = tdir / "mmcblk9rpmb"
        r = subprocess.run([sys.executable, "-c", CHILD_DUP, str(dev), str(tdir / "plain")],
                           env=child_env(**harness_env(emu.sock, dev)), capture_output=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr.decode()
    got = dict(line.split(" ", 1) for line in r.stdout.decode().splitlines())
    # Before the harness tracked them, a duplicate's ioctl went to the kernel: ENOTTY on a socket.
    for label in ("dup", "dup2", "dup3", "fcntl", "still"):
        assert got[label] == "type 0x200", (label, got)
    for label in ("reused", "replaced"):
        assert got[label] == f"errno {errno.ENOTTY}", (label, got)
