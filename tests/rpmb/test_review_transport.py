"""Regression found in review: an emulator connection that timed out is not reused out of step."""

from __future__ import annotations

import errno
import socket
import threading
import time
from pathlib import Path

import pytest

from keyring_types.rpmb.transport import EmulatorTransport
from keyring_types.rpmb.wire import U32, DeviceInfo, recv_message, send_message


def _info(size_mult: int) -> bytes:
    return U32.pack(0) + DeviceInfo(1, 8, size_mult, 1, 0, 0).pack()


def test_a_late_reply_is_never_taken_for_the_next_one(tmp_path: Path) -> None:
    path = tmp_path / "slow.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            n = 0
            try:
                while recv_message(conn) is not None:
                    n += 1
                    if n == 1:
                        time.sleep(0.6)  # answers the first request too late
                    send_message(conn, _info(n))
            except OSError:
                pass  # the client gave the connection up

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    t = EmulatorTransport(path, timeout=0.3)
    try:
        with pytest.raises(OSError) as first:
            t.info()
        assert first.value.errno == errno.ETIMEDOUT
        time.sleep(0.5)  # the first reply has arrived by now
        try:
            again = t.info()
        except OSError as exc:
            assert exc.errno in (errno.ECONNRESET, errno.ENOTCONN)
        else:
            assert again.size_mult == 2, "the reply to the timed-out request was taken as this one's"
    finally:
        t.close()
        thread.join(5)
        server.close()
