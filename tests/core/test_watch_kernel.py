"""KEYCTL_WATCH_KEY on the kernel: KernelKeyspace answers what the kernel answers, honestly."""

from __future__ import annotations

import ctypes
import errno
import os
import platform

import pytest
from conftest import errno_of, kernel_keyring_reachable, require

import keyring_types as kt

_KEYCTL = {"x86_64": 250, "aarch64": 219}
KEYCTL_WATCH_KEY = 32
O_NOTIFICATION_PIPE = os.O_EXCL


@pytest.fixture
def kks() -> kt.KernelKeyspace:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    return kt.KernelKeyspace(new_session=True)


def _raw_watch_errno(keyid: int, fd: int, watch_id: int) -> int:
    """keyctl(KEYCTL_WATCH_KEY, ...) through libc's syscall(), not the project's bindings."""
    nr = _KEYCTL.get(platform.machine())
    require(nr is not None, f"the keyctl syscall number for {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    args = [ctypes.c_long(v) for v in (KEYCTL_WATCH_KEY, keyid, fd, watch_id, 0)]
    rc = libc.syscall(ctypes.c_long(nr), *args)
    return 0 if rc == 0 else ctypes.get_errno()


def test_kernel_without_notifications_says_eopnotsupp(kks: kt.KernelKeyspace) -> None:
    if "notify" in kks.capabilities():
        pytest.skip("this kernel has key notifications; the EOPNOTSUPP case cannot be seen here")
    key = kks.add_key("user", "watch-k", b"v", "@s")
    # CONFIG_KEY_NOTIFICATIONS off: the kernel's stub answers EOPNOTSUPP whatever the arguments.
    assert errno_of(key.watch, 0, 0) == errno.EOPNOTSUPP
    assert errno_of(key.watch, kt.WatchQueue(), 1) == errno.EOPNOTSUPP
    assert errno_of(kks.watch_key, key, -1, -1) == errno.EOPNOTSUPP
    assert _raw_watch_errno(key.serial, 0, 0) == errno.EOPNOTSUPP


def test_kernel_keyspace_errno_is_the_raw_syscalls(kks: kt.KernelKeyspace) -> None:
    key = kks.add_key("user", "watch-k2", b"v", "@s")
    for fd, watch_id in ((-1, 0), (0, 5), (0, 255), (0, -1)):
        assert errno_of(kks.watch_key, key, fd, watch_id) == _raw_watch_errno(key.serial, fd, watch_id)
    # Refused before the kernel sees it: an id that does not fit the C int.
    assert errno_of(kks.watch_key, key, 0, 2**40) == errno.EINVAL


def test_notification_pipe_needs_watch_queue_support(kks: kt.KernelKeyspace) -> None:
    """pipe2(O_NOTIFICATION_PIPE) says whether the kernel has watch queues at all."""
    libc = ctypes.CDLL(None, use_errno=True)
    fds = (ctypes.c_int * 2)()
    rc = libc.pipe2(fds, O_NOTIFICATION_PIPE)
    if rc == 0:
        os.close(fds[0])
        os.close(fds[1])
        pytest.skip("this kernel has watch queues (CONFIG_WATCH_QUEUE)")
    assert ctypes.get_errno() == errno.ENOPKG
    assert "notify" not in kks.capabilities()


def test_in_process_and_kernel_differ_only_in_support(kks: kt.KernelKeyspace) -> None:
    """The in-process keyspace claims `notify` because it implements it; the kernel says for itself."""
    assert "notify" in kt.Keyspace().capabilities()
    kernel_has = "notify" in kks.capabilities()
    key = kks.add_key("user", "watch-k3", b"v", "@s")
    err = _raw_watch_errno(key.serial, -1, 0)
    assert (err == errno.EOPNOTSUPP) == (not kernel_has)
