"""Numbers and strings at the public API mean what the kernel's C types say, on both backends.

The kernel reads each system-call argument as a C type (``key_serial_t`` int32,
``uid_t``/``gid_t`` u32 with -1 for "unchanged", an ``unsigned`` timeout, a u32
permission mask, NUL-terminated strings).  A value that does not fit is refused
with ``EINVAL`` before anything happens, on the in-process ``Keyspace`` and on
the real kernel alike; an in-range value does what the kernel does with it.
"""

from __future__ import annotations

import errno
import os
import time

import pytest
from conftest import require

import keyring_types as kt
from keyring_types.errors import KeyringError


def errno_of(fn: object, *args: object, **kwargs: object) -> int:
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    assert isinstance(info.value, KeyringError), f"{type(info.value).__name__}: errors must come from errors.error"
    assert info.value.errno is not None
    return info.value.errno


def owner(key: kt.Key) -> list[str]:
    return key.describe().split(";")[1:3]


def proc_timeout(space: kt.KeyspaceAPI, key: kt.Key) -> str:
    """The timeout column of ``key``'s /proc/keys line (the kernel's or the Keyspace's)."""
    if isinstance(space, kt.Keyspace):
        lines = space.proc_keys()
    else:
        with open("/proc/keys") as f:
            lines = f.read().splitlines()
    for line in lines:
        if int(line.split()[0], 16) == key.serial:
            return line.split()[3]
    raise AssertionError(f"key {key.serial} not in /proc/keys")


# -- uid_t / gid_t -------------------------------------------------------------------


@pytest.mark.parametrize("uid", [2**40, 2**32, -2, -(2**40)])
def test_chown_uid_that_does_not_fit_uid_t_is_einval(space: kt.KeyspaceAPI, uid: int) -> None:
    k = space.add_key("user", "fid:chown", b"x", "@s")
    before = owner(k)
    # The kernel would truncate 2**40 to uid 0 (root) and 2**32 to 0 as well.
    assert errno_of(k.chown, uid, -1) == errno.EINVAL
    assert errno_of(k.chown, -1, uid) == errno.EINVAL
    assert owner(k) == before


def test_chown_all_ones_is_unchanged(space: kt.KeyspaceAPI) -> None:
    require(os.geteuid() == 0, "root (chgrp to a group the caller is not in)")
    k = space.add_key("user", "fid:chown-1", b"x", "@s")
    before = owner(k)
    k.chown(2**32 - 1, 2**32 - 1)  # (uid_t)-1, (gid_t)-1: nothing changes
    assert owner(k) == before
    k.chown(-1, 4242)
    assert owner(k) == [before[0], "4242"]


def test_describe_prints_ids_as_the_kernel_does(request: pytest.FixtureRequest, space: kt.KeyspaceAPI) -> None:
    require(os.geteuid() == 0, "root (chgrp to a group the caller is not in)")
    k = space.add_key("user", "fid:gid-max", b"x", "@s")
    k.chown(-1, 2**32 - 2)  # the largest real gid is an ordinary in-range value ...
    assert owner(k)[1] == "-2"  # ... that keyctl_describe_key prints with %d


# -- unsigned timeout ------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [-1, -(2**31), 2**32, 2**40])
def test_timeout_outside_unsigned_int_is_einval(space: kt.KeyspaceAPI, seconds: int) -> None:
    k = space.add_key("user", "fid:timeout", b"x", "@s")
    k.set_timeout(60)
    # -1 meant "never" in the Keyspace and 136 years in the kernel; 2**32 would clear it there.
    assert errno_of(k.set_timeout, seconds) == errno.EINVAL
    assert proc_timeout(space, k) in ("1m", "59s")


def test_largest_timeout_means_what_the_kernel_says(space: kt.KeyspaceAPI) -> None:
    k = space.add_key("user", "fid:timeout-max", b"x", "@s")
    k.set_timeout(2**32 - 1)
    assert proc_timeout(space, k) == f"{(2**32 - 1) // 604800}w"
    assert k.read() == b"x"
    k.set_timeout(0)
    assert proc_timeout(space, k) == "perm"


# -- key_perm_t --------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [2**32 + 0x3F010000, -1, 2**64])
def test_perm_outside_u32_is_einval(space: kt.KeyspaceAPI, mask: int) -> None:
    k = space.add_key("user", "fid:perm", b"x", "@s")
    before = k.describe()
    assert errno_of(k.set_perm, mask) == errno.EINVAL
    assert k.describe() == before


# -- key_serial_t ----------------------------------------------------------------------------


def test_serial_outside_int32_is_einval_not_another_key(space: kt.KeyspaceAPI) -> None:
    k = space.add_key("user", "fid:serial", b"x", "@s")
    ring = space.add_key("keyring", "fid:ring", None, "@s")
    assert isinstance(ring, kt.Keyring)
    # On the kernel, 2**32 + serial truncated to serial: the same key under another number.
    for bad in (2**32 + k.serial, 2**31, -(2**31) - 1, 2**64):
        assert errno_of(space.key, bad) == errno.EINVAL
        assert errno_of(ring.link, bad) == errno.EINVAL
        assert errno_of(space.add_key, "user", "fid:other", b"y", bad) == errno.EINVAL
        assert errno_of(space.request_key, "user", "fid:serial", None, bad) == errno.EINVAL
        assert errno_of(ring.search, "user", "fid:serial", bad) == errno.EINVAL
        assert errno_of(space.handle, bad) == errno.EINVAL
    assert ring.keys() == []


@pytest.mark.parametrize("bad", ["abc", 3.0, True, None, b"5", [5]])
def test_wrong_typed_key_ids_are_einval(space: kt.KeyspaceAPI, bad: object) -> None:
    k = space.add_key("user", "fid:ids", b"x", "@s")
    ring = space.add_key("keyring", "fid:ids-ring", None, "@s")
    assert isinstance(ring, kt.Keyring)
    assert errno_of(ring.link, bad) == errno.EINVAL
    assert errno_of(ring.unlink, bad) == errno.EINVAL
    assert errno_of(space.key, bad) == errno.EINVAL
    assert errno_of(space.keyring, bad) == errno.EINVAL
    assert errno_of(space.add_key, "user", "fid:ids2", b"x", bad) == errno.EINVAL
    assert ring.keys() == [] and k.read() == b"x"


def test_a_handle_of_another_keyspace_is_einval() -> None:
    a, b = kt.Keyspace(), kt.Keyspace()
    ring_a = a.add_key("keyring", "fid:a", None, "@s")
    assert isinstance(ring_a, kt.Keyring)
    k_b = b.add_key("user", "fid:b", b"x", "@s")
    assert errno_of(ring_a.link, k_b) == errno.EINVAL  # its serial would name some key of a
    assert errno_of(a.add_key, "user", "fid:c", b"x", b.session) == errno.EINVAL
    # A view of the same keyspace is the same world.
    view = a.as_user(os.geteuid(), os.getegid())
    assert view.resolve(ring_a) == ring_a.serial


@pytest.mark.parametrize("value", ["10", 1.5, None, True, b"1"])
def test_wrong_typed_numbers_are_einval(space: kt.KeyspaceAPI, value: object) -> None:
    k = space.add_key("user", "fid:num", b"x", "@s")
    before = k.describe()
    assert errno_of(k.set_timeout, value) == errno.EINVAL
    assert errno_of(k.set_perm, value) == errno.EINVAL
    assert errno_of(k.chown, value) == errno.EINVAL
    assert errno_of(k.chown, -1, value) == errno.EINVAL
    assert errno_of(space.keyring, "@s", value if value is not True else "x") == errno.EINVAL
    assert k.describe() == before and proc_timeout(space, k) == "perm"


def test_chown_by_name_is_einval(space: kt.KeyspaceAPI) -> None:
    k = space.add_key("user", "fid:root", b"x", "@s")
    assert errno_of(k.chown, "root") == errno.EINVAL


# -- C strings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "desc",
    [5, b"fid", "\udc80", "fid\ud800", "a\0b", ["d"]],
    ids=["int", "bytes", "low-surrogate", "high-surrogate", "nul", "list"],
)
def test_descriptions_that_are_not_c_strings_are_einval(space: kt.KeyspaceAPI, desc: object) -> None:
    ring = space.add_key("keyring", "fid:descs", None, "@s")
    assert isinstance(ring, kt.Keyring)
    assert errno_of(space.add_key, "user", desc, b"x", ring) == errno.EINVAL
    assert errno_of(space.add_key, desc, "d", b"x", ring) == errno.EINVAL
    assert errno_of(space.request_key, "user", desc) == errno.EINVAL
    assert errno_of(ring.search, "user", desc) == errno.EINVAL
    assert errno_of(ring.search, desc, "d") == errno.EINVAL
    assert errno_of(space.join_session_keyring, desc) == errno.EINVAL
    assert ring.keys() == []


def test_embedded_nul_would_name_another_key_in_the_kernel(space: kt.KeyspaceAPI) -> None:
    # C stops at the NUL: the kernel would have made (or updated) key "a".
    a = space.add_key("user", "a", b"original", "@s")
    assert errno_of(space.add_key, "user", "a\0b", b"other", "@s") == errno.EINVAL
    assert a.read() == b"original"


def test_null_strings_are_efault_where_the_kernel_reads_them(space: kt.KeyspaceAPI) -> None:
    ring = space.session
    assert errno_of(space.add_key, None, "d", b"x", "@s") == errno.EFAULT
    assert errno_of(space.request_key, "user", None) == errno.EFAULT
    assert errno_of(space.request_key, None, "d") == errno.EFAULT
    assert errno_of(ring.search, "user", None) == errno.EFAULT
    assert errno_of(ring.search, None, "d") == errno.EFAULT
    # add_key may have no description: the type decides (a user key needs one).
    assert errno_of(space.add_key, "user", None, b"x", "@s") == errno.EINVAL


# -- payloads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [5, 2**40, 1.0, [1, 2], object(), "\udc80"], ids=repr)
def test_payload_that_is_not_bytes_or_text_is_einval(space: kt.KeyspaceAPI, payload: object) -> None:
    # bytes(5) is five zero bytes: an int payload used to store them.
    assert errno_of(space.add_key, "user", "fid:int", payload, "@s") == errno.EINVAL
    assert errno_of(space.session.search, "user", "fid:int") == errno.ENOKEY
    k = space.add_key("user", "fid:upd", b"keep", "@s")
    assert errno_of(k.update, payload) == errno.EINVAL
    assert k.read() == b"keep"
    assert errno_of(space.request_key, "user", "fid:upd", payload) == errno.EINVAL


def test_bytes_like_payloads_still_work(space: kt.KeyspaceAPI) -> None:
    k = space.add_key("user", "fid:bl", bytearray(b"ab"), "@s")
    assert k.read() == b"ab"
    k.update(memoryview(b"cd"))
    assert k.read() == b"cd"
    k.update("é")
    assert k.read() == "é".encode()


# -- join_session_keyring -------------------------------------------------------------------------


def test_joining_the_current_named_session_returns_its_serial(space: kt.KeyspaceAPI) -> None:
    name = f"fid-join-{os.getpid()}-{time.monotonic_ns()}"
    ring = space.join_session_keyring(name)
    ring.set_perm(0x3F3F0000)  # searchable by its owner, so joining by name finds it again
    again = space.join_session_keyring(name)
    assert again.serial == ring.serial != 0
    assert again == space.session
    assert again.describe().split(";")[-1] == name


# -- as_user ----------------------------------------------------------------------------------


def _as_user_cases(space: kt.KeyspaceAPI) -> list[tuple[object, object, object]]:
    return [
        (2**40, 0, ()),
        (0, 2**32, ()),
        (-1, 0, ()),
        (0, -1, ()),
        ("root", 0, ()),
        (0, 0, "abc"),
        (0, 0, [2**33]),
        (0, 0, 5),
    ]


def test_as_user_ids_that_do_not_fit_are_einval(request: pytest.FixtureRequest, space: kt.KeyspaceAPI) -> None:
    for uid, gid, groups in _as_user_cases(space):
        assert errno_of(space.as_user, uid, gid, groups) == errno.EINVAL, (uid, gid, groups)
