"""A real mount of the emulated configfs-tsm tree (``keyring_types.attest.configfs_fuse``) for tests.

``mounted(state, *args)`` starts the FUSE server in its own process on a fresh directory, waits
for the mount, and on exit stops the server and makes sure the mount is gone.  Without FUSE
(``/dev/fuse``, libfuse 3, the ``mfusepy`` package) it skips, naming what is missing (fails
under ``CI=true``).
"""

from __future__ import annotations

import contextlib
import ctypes.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
from conftest import require

REPO = Path(__file__).resolve().parents[2]


def fuse_missing() -> str | None:
    """What FUSE needs that this machine lacks, or ``None``."""
    if not os.path.exists("/dev/fuse"):
        return "FUSE (/dev/fuse)"
    if ctypes.util.find_library("fuse3") is None and ctypes.util.find_library("fuse") is None:
        return "FUSE's libfuse 3 (Debian package fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError):
        return "FUSE's Python binding mfusepy (pip install keyring_types[test])"
    return None


@attrs.define
class Mount:
    path: Path
    proc: subprocess.Popen[bytes]

    def set_provider(self, loaded: bool) -> None:
        """Load or unload the emulated kernel provider, and wait until the tree shows it."""
        self.proc.send_signal(signal.SIGUSR2 if loaded else signal.SIGUSR1)
        probe = self.path / f"probe-{os.getpid()}"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.mkdir(probe)
                os.rmdir(probe)
                if loaded:
                    return
            except OSError:
                if not loaded:
                    return
            time.sleep(0.02)
        raise AssertionError("the emulated provider did not change state")


def _unmount(path: Path) -> None:
    for cmd in (["fusermount3", "-u", "-z", str(path)], ["umount", "-l", str(path)]):
        if shutil.which(cmd[0]) and subprocess.run(cmd, capture_output=True, check=False).returncode == 0:
            return


@contextlib.contextmanager
def mounted(state: Path, *args: str) -> Iterator[Mount]:
    missing = fuse_missing()
    require(missing is None, missing or "")
    path = Path(tempfile.mkdtemp(prefix="kt-tsm-"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyring_types.attest.configfs_fuse", str(path), "--state-dir", str(state), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(path):
            if proc.poll() is not None:
                log.seek(0)
                err = log.read().decode(errors="replace")
                raise AssertionError(f"the emulated configfs-tsm server exited: {err[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the emulated configfs-tsm tree was not mounted within 20 s")
            time.sleep(0.02)
        yield Mount(path, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        if os.path.ismount(path):
            _unmount(path)
        with contextlib.suppress(OSError):
            path.rmdir()
