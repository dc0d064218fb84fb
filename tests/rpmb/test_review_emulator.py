"""Regression found in review: the emulator takes over only a stale socket, never another file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rpmb_util import child_env


def test_emulate_refuses_a_socket_path_that_is_a_file(tmp_path: Path) -> None:
    victim = tmp_path / "notes.txt"
    victim.write_bytes(b"precious")
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyring_types", "rpmb", "emulate", "--socket", str(victim), "--state", str(tmp_path / "st")],
        env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()  # it took the path over and is serving on it
        _, err = proc.communicate()
    assert victim.is_file() and victim.read_bytes() == b"precious", "the emulator deleted a file that was not its socket"
    assert proc.returncode == 1
    assert "is not a socket" in err.decode(), err.decode()
