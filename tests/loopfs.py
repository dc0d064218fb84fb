"""Small ext4 filesystems on loop devices for the fscrypt tests (root only).

Each one is unmounted and its loop device detached when the generator ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import require


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def make_fs(base: Path, name: str, features: list[str]) -> Iterator[Path]:
    """A mounted 16 MiB ext4 on a loop device; unmounted and detached afterwards."""
    image, mnt = base / f"{name}.img", base / name
    with open(image, "wb") as f:
        f.truncate(16 << 20)  # sparse
    mnt.mkdir()
    loop = _run("losetup", "-f", "--show", str(image))
    mounted = False
    try:
        _run("mkfs.ext4", "-q", *features, loop)
        _run("mount", loop, str(mnt))
        mounted = True
        yield mnt
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)
        subprocess.run(["losetup", "-d", loop], check=False)


def require_loop_fs() -> None:
    """Skip (fail under CI=true) unless loop devices, mkfs.ext4 and mount are usable."""
    require(os.geteuid() == 0, "root (loop devices, mount, FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS)")
    require(os.path.exists("/dev/loop-control"), "a loop device (/dev/loop-control)")
    for tool in ("mkfs.ext4", "losetup", "mount", "umount"):
        require(shutil.which(tool) is not None, f"{tool} (e2fsprogs / util-linux)")


@contextmanager
def open_dir() -> Iterator[Path]:
    """A private directory that other users may traverse (pytest's is 0700 under
    root's), so tests that switch to uid 65534 reach the mount."""
    base = Path(tempfile.mkdtemp(prefix="kt-fscrypt-"))
    try:
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)
