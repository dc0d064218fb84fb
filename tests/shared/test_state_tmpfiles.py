"""Secret-file creation leaves nothing behind when the writer is killed (issue 12)."""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from keyring_types import state
from keyring_types.secret import SecretBuffer
from keyring_types.state import (
    create_secret_file,
    load_or_create_secret,
    load_secret_file,
)

#: Runs create_secret_file in a child that SIGKILLs itself at the fsync of the key
#: material, after the bytes are written and before the file gets its name.
KILL_AT_FSYNC = """
import os, signal, stat, sys
from pathlib import Path
from keyring_types import state
from keyring_types.secret import SecretBuffer
if sys.argv[2] == "named":
    state._create_unnamed = lambda dfd, name, data: None
real_fsync = os.fsync
def fsync(fd):
    if stat.S_ISREG(os.fstat(fd).st_mode):
        print(oct(stat.S_IMODE(os.fstat(fd).st_mode)), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)
os.fsync = fsync
state.create_secret_file(Path(sys.argv[1]), SecretBuffer.from_bytes(b"K" * 32))
"""


def _kill_during_creation(path: Path, how: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT_FSYNC, str(path), how], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc.stdout.strip()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_kill_9_during_creation_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "host.key"
    mode = _kill_during_creation(path, "default")
    assert mode == "0o400", "the file under construction is never readable by others"
    assert _leftovers(tmp_path) == [], "no temporary file holding key material"
    key = load_or_create_secret(path, 32)
    assert key != b"K" * 32
    assert _leftovers(tmp_path) == ["host.key"]


def test_named_fallback_leftovers_are_removed_on_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "host.key"
    mode = _kill_during_creation(path, "named")
    assert mode == "0o400"
    left = _leftovers(tmp_path)
    assert len(left) == 1 and left[0].startswith(".host.key.") and left[0].endswith(".tmp")
    assert stat.S_IMODE((tmp_path / left[0]).stat().st_mode) == 0o400
    # The next start, even one that only loads, removes it.
    with pytest.raises(OSError):
        load_secret_file(path, 32)
    assert _leftovers(tmp_path) == []


def test_a_live_writers_temporary_file_is_left_alone(tmp_path: Path) -> None:
    busy = tmp_path / f".host.key.{os.getpid()}.0123456789ab.tmp"
    stale = tmp_path / ".host.key.1.abcdefabcdef.tmp"
    unrelated = tmp_path / "notes.tmp"
    for p in (busy, stale, unrelated):
        p.write_bytes(b"x")
        p.chmod(0o400)
    fd = os.open(busy, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a writer in another process holds it
        create_secret_file(tmp_path / "host.key", SecretBuffer.from_bytes(os.urandom(32)))
        assert sorted(_leftovers(tmp_path)) == sorted(["host.key", busy.name, unrelated.name])
    finally:
        os.close(fd)


def test_named_fallback_creates_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "_create_unnamed", lambda dfd, name, data: None)
    path = tmp_path / "k"
    assert create_secret_file(path, SecretBuffer.from_bytes(b"A" * 32)) is True
    assert create_secret_file(path, SecretBuffer.from_bytes(b"B" * 32)) is False
    assert load_secret_file(path, 32) == b"A" * 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert _leftovers(tmp_path) == ["k"]
