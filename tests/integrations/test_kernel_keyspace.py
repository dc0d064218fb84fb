"""KernelKeyspace against the real kernel keyring of this machine.

Every expectation here was observed on the kernel (spec kernel-keytypes.md §3
marks the [V] rows); each test starts in a fresh anonymous session keyring so
that it sees an empty ``@s`` and leaves nothing behind in it.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from conftest import kernel_keyring_reachable, require

from keyring_types.constants import (
    KEY_SPEC_GROUP_KEYRING,
    KEY_SPEC_SESSION_KEYRING,
    KEY_SPEC_THREAD_KEYRING,
    KEY_SPEC_USER_KEYRING,
    KEY_SPEC_USER_SESSION_KEYRING,
)
from keyring_types.core.handle import Key, Keyring
from keyring_types.errors import KeyringError
from keyring_types.integrations import kernel_syscalls as sc
from keyring_types.integrations.kernel_keyspace import KernelKeyspace
from keyring_types.secret import SecretBuffer

pytestmark = pytest.mark.kernel

OTHER_UID = 4321
OTHER_GID = 4321


@pytest.fixture
def kk() -> KernelKeyspace:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    return KernelKeyspace(new_session=True)


@pytest.fixture
def root() -> None:
    require(os.geteuid() == 0, "root (to switch credentials in as_user children)")


def _invalidate_own_user_keyrings() -> None:
    """As the calling uid: invalidate its @u and @us (both looked up before either goes,
    since looking one up after the other is gone would make a new pair)."""
    rings = [sc.keyctl_get_keyring_id(spec, True) for spec in (KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING)]
    for serial in rings:
        sc.keyctl_invalidate(serial)


def _users_with_keys() -> set[int]:
    """The uids /proc/key-users lists, i.e. that still own at least one key."""
    with open("/proc/key-users") as f:
        return {int(line.split(":", 1)[0]) for line in f if ":" in line}


@pytest.fixture(scope="module", autouse=True)
def _release_other_uid() -> Iterator[None]:
    """Leave no key of OTHER_UID in the kernel once the module is done.

    as_user children make OTHER_UID's user keyrings, which the kernel keeps in its
    user namespace until reboot; only their owner can invalidate them, so a child
    running as OTHER_UID does.  Keys chowned to it go with the sessions holding them.
    """
    yield
    if os.geteuid() != 0 or not kernel_keyring_reachable():
        return
    KernelKeyspace(new_session=True)  # drop the last test's session and what it links
    KernelKeyspace().as_user(OTHER_UID, OTHER_GID)._call(_invalidate_own_user_keyrings)
    deadline = time.monotonic() + 30.0
    while OTHER_UID in _users_with_keys() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert OTHER_UID not in _users_with_keys(), f"uid {OTHER_UID} still owns kernel keys after the module"


def errno_of(fn: object, *args: object) -> int:
    """Run ``fn(*args)`` and return the errno it failed with (the test fails if it succeeds)."""
    with pytest.raises(OSError) as info:
        fn(*args)  # type: ignore[operator]
    assert isinstance(info.value, KeyringError), "errors must come through keyring_types.errors.error"
    assert info.value.errno is not None
    return info.value.errno


def serials(raw: bytes) -> list[int]:
    return list(struct.unpack(f"={len(raw) // 4}i", raw))


@contextmanager
def only_in_root_user_keyring(kk: KernelKeyspace, key: Key) -> Iterator[Key]:
    """Move ``key`` from @s into this uid's @u, where an as_user child cannot possess it."""
    kk.user_keyring.link(key)
    kk.session.unlink(key)
    try:
        yield key
    finally:
        kk.sys_unlink(key.serial, KEY_SPEC_USER_KEYRING)


# -- session and special ids ----------------------------------------------------


def test_new_session_starts_empty_and_is_anonymous(kk: KernelKeyspace) -> None:
    s = kk.session
    assert isinstance(s, Keyring)
    assert s.keys() == []
    typ, uid, gid, perm, desc = s.describe().split(";", 4)
    assert (typ, uid, gid, perm, desc) == ("keyring", str(os.geteuid()), str(os.getegid()), "3f030000", "_ses")
    other = KernelKeyspace(new_session=True)
    assert other.session.serial != s.serial


def test_get_keyring_id(kk: KernelKeyspace, root: None) -> None:
    session = kk.sys_get_keyring_id(KEY_SPEC_SESSION_KEYRING, False)
    assert session == kk.session.serial
    user = kk.sys_get_keyring_id(KEY_SPEC_USER_KEYRING, False)
    assert kk.sys_describe(user) == f"keyring;{os.geteuid()};65534;1f3f0000;_uid.{os.geteuid()}"
    assert errno_of(kk.sys_get_keyring_id, KEY_SPEC_GROUP_KEYRING, False) == errno.EINVAL
    assert errno_of(kk.sys_get_keyring_id, -9, True) == errno.EINVAL
    # A thread keyring exists only once created; do that in a child so it dies with it.
    child = kk.as_user(os.geteuid(), os.getegid(), os.getgroups())
    assert errno_of(child.sys_get_keyring_id, KEY_SPEC_THREAD_KEYRING, False) == errno.ENOKEY
    tid_ring = child.sys_get_keyring_id(KEY_SPEC_THREAD_KEYRING, True)
    assert tid_ring > 0


def test_join_named_and_anonymous_session(kk: KernelKeyspace) -> None:
    name = f"kt-test-{os.getpid()}-{time.monotonic_ns()}"
    ring = kk.join_session_keyring(name)
    assert kk.sys_get_keyring_id(KEY_SPEC_SESSION_KEYRING, False) == ring.serial
    expected = ["keyring", str(os.geteuid()), str(os.getegid()), "3f130000", name]
    assert kk.sys_describe(ring.serial).split(";") == expected
    anon = kk.sys_join_session_keyring(None)
    assert anon != ring.serial
    assert kk.sys_describe(anon).endswith(";_ses")
    assert errno_of(kk.sys_join_session_keyring, ".dotted") == errno.EPERM


# -- add_key ------------------------------------------------------------------------


def test_add_key_success_and_update_in_place(kk: KernelKeyspace) -> None:
    k = kk.add_key("user", "app:db", b"secret", "@s")
    assert type(k) is Key and k.serial >= 3
    assert k.read() == b"secret"
    assert k in kk.session
    again = kk.add_key("user", "app:db", b"other", "@s")
    assert again.serial == k.serial
    assert k.read() == b"other"


@pytest.mark.parametrize(
    ("type_name", "description", "payload", "ring", "expected"),
    [
        ("no_such_type", "d", b"x", KEY_SPEC_SESSION_KEYRING, errno.ENODEV),
        (".user", "d", b"x", KEY_SPEC_SESSION_KEYRING, errno.EPERM),
        ("u" * 32, "d", b"x", KEY_SPEC_SESSION_KEYRING, errno.EINVAL),
        ("", "d", b"x", KEY_SPEC_SESSION_KEYRING, errno.EINVAL),
        ("user", "", b"x", KEY_SPEC_SESSION_KEYRING, errno.EINVAL),
        ("user", None, b"x", KEY_SPEC_SESSION_KEYRING, errno.EINVAL),
        ("user", "d" * 4096, b"x", KEY_SPEC_SESSION_KEYRING, errno.EINVAL),
        ("user", "d", b"", KEY_SPEC_SESSION_KEYRING, errno.EINVAL),
        ("user", "d", None, KEY_SPEC_SESSION_KEYRING, errno.EINVAL),
        ("user", "d", b"x" * 32768, KEY_SPEC_SESSION_KEYRING, errno.EINVAL),
        ("user", "d", b"x" * (1 << 20), KEY_SPEC_SESSION_KEYRING, errno.EINVAL),
        ("logon", "nocolon", b"x", KEY_SPEC_SESSION_KEYRING, errno.EINVAL),
        ("logon", ":leading", b"x", KEY_SPEC_SESSION_KEYRING, errno.EINVAL),
        ("keyring", "ring", b"payload", KEY_SPEC_SESSION_KEYRING, errno.EINVAL),
        ("keyring", ".ring", None, KEY_SPEC_SESSION_KEYRING, errno.EPERM),
        ("user", "d", b"x", 0, errno.EINVAL),
        ("user", "d", b"x", 2, errno.ENOKEY),  # serials start at 3 (key.c key_alloc_serial)
    ],
)
def test_add_key_errno_table(
    kk: KernelKeyspace, type_name: str, description: str | None, payload: bytes | None, ring: int, expected: int
) -> None:
    assert errno_of(kk.sys_add_key, type_name, description, payload, ring) == expected
    assert kk.session.keys() == []  # nothing half-made


def test_add_key_error_message_names_the_call(kk: KernelKeyspace) -> None:
    with pytest.raises(OSError) as info:
        kk.sys_add_key("no_such_type", "app:x", b"x", KEY_SPEC_SESSION_KEYRING)
    text = str(info.value)
    assert "add_key" in text and "no_such_type" in text and "app:x" in text and "ENODEV" in text


def test_add_key_limits_that_succeed(kk: KernelKeyspace) -> None:
    big = kk.add_key("user", "big", b"b" * 32767, "@s")
    assert big.read() == b"b" * 32767
    long_desc = "d" * 4095
    k = kk.add_key("user", long_desc, b"x", "@s")
    assert k.describe().endswith(";" + long_desc)
    assert kk.add_key("logon", "a:", b"x", "@s").describe().startswith("logon;")


def test_add_key_into_non_keyring_is_enotdir(kk: KernelKeyspace) -> None:
    k = kk.add_key("user", "plain", b"x", "@s")
    assert errno_of(kk.sys_add_key, "user", "d", b"x", k.serial) == errno.ENOTDIR


# -- update, read, describe, secret ---------------------------------------------


def test_update(kk: KernelKeyspace) -> None:
    k = kk.add_key("user", "u", b"one", "@s")
    k.set_timeout(100)
    k.update(b"two" * 1000)
    assert k.read() == b"two" * 1000
    k.update(b"p" * 4096)
    assert len(k.read()) == 4096
    assert errno_of(k.update, b"p" * 4097) == errno.EINVAL
    assert errno_of(k.update, b"") == errno.EINVAL
    ring = kk.add_key("keyring", "r", None, "@s")
    assert errno_of(ring.update, b"x") == errno.EOPNOTSUPP
    assert errno_of(kk.sys_update, 2, b"x") == errno.ENOKEY


def test_read_large_payload_and_large_keyring(kk: KernelKeyspace) -> None:
    # Both exceed the first-guess read buffer, so the "returns full length" retry runs.
    payload = bytes(range(256)) * 100
    k = kk.add_key("user", "large", payload, "@s")
    assert k.read() == payload
    ring = kk.add_key("keyring", "many", None, "@s")
    made = [kk.sys_add_key("user", f"k{i}", b"v", ring.serial) for i in range(200)]
    raw = kk.sys_read(ring.serial)
    assert len(raw) == 800
    assert sorted(serials(raw)) == sorted(made)
    assert sorted(key.serial for key in ring.keys()) == sorted(made)


def test_keyring_read_is_serial_list(kk: KernelKeyspace) -> None:
    a = kk.add_key("user", "a", b"1", "@s")
    r = kk.add_key("keyring", "sub", None, "@s")
    b = kk.add_key("logon", "x:b", b"2", r)
    listed = kk.session.keys()
    assert [key.serial for key in listed] == [a.serial, r.serial]
    assert isinstance(listed[1], Keyring) and type(listed[0]) is Key
    assert [key.serial for key in r.keys()] == [b.serial]
    assert serials(kk.sys_read(KEY_SPEC_SESSION_KEYRING)) == [a.serial, r.serial]


def test_logon_cannot_be_read(kk: KernelKeyspace) -> None:
    k = kk.add_key("logon", "svc:pw", b"hidden", "@s")
    assert k.describe().split(";")[3] == "3d010000"
    assert errno_of(k.read) == errno.EOPNOTSUPP
    assert errno_of(kk.sys_secret, k.serial) == errno.EOPNOTSUPP


def test_describe_format(kk: KernelKeyspace) -> None:
    k = kk.add_key("user", "desc;with;semis", b"x", "@s")
    text = k.describe()
    assert text == f"user;{os.geteuid()};{os.getegid()};3f010000;desc;with;semis"
    assert "\0" not in text
    assert (k.type, k.description) == ("user", "desc;with;semis")
    assert errno_of(kk.sys_describe, 2) == errno.ENOKEY


def test_secret_of_user_key(kk: KernelKeyspace) -> None:
    payload = os.urandom(48)
    k = kk.add_key("user", "s", payload, "@s")
    buf = kk.sys_secret(k.serial)
    try:
        assert isinstance(buf, SecretBuffer)
        assert len(buf) == 48 and buf == payload
    finally:
        buf.wipe()
    with k.secret() as mv:
        assert mv.readonly and bytes(mv) == payload
    big = os.urandom(20000)
    kb = kk.add_key("user", "s-big", big, "@s")
    with kb.secret() as mv:
        assert bytes(mv) == big


def test_secret_follows_read_errno(kk: KernelKeyspace) -> None:
    k = kk.add_key("user", "s", b"x", "@s")
    k.revoke()
    assert errno_of(kk.sys_secret, k.serial) == errno.EKEYREVOKED


# -- permissions, ownership, timeouts --------------------------------------------


def test_setperm_and_chown(kk: KernelKeyspace, root: None) -> None:
    k = kk.add_key("user", "p", b"x", "@s")
    k.set_perm(0x3F3F0000)
    assert k.describe().split(";")[3] == "3f3f0000"
    assert errno_of(k.set_perm, 0x40000000) == errno.EINVAL
    assert errno_of(k.set_perm, 0x3F3F3F3F | 0x80) == errno.EINVAL
    k.chown(-1, 777)
    assert k.describe().split(";")[1:3] == [str(os.geteuid()), "777"]
    k.chown(OTHER_UID, -1)
    assert k.describe().split(";")[1:3] == [str(OTHER_UID), "777"]


def test_permission_bits_bind_root_too(kk: KernelKeyspace) -> None:
    k = kk.add_key("user", "p0", b"x", "@s")
    k.set_perm(0)
    assert errno_of(k.describe) == errno.EACCES
    assert errno_of(k.read) == errno.EACCES
    assert errno_of(k.update, b"y") == errno.EACCES
    assert errno_of(k.set_perm, 0x3F010000) == errno.EACCES


def test_possessed_key_is_readable_without_read_bit(kk: KernelKeyspace) -> None:
    k = kk.add_key("user", "poss", b"mine", "@s")
    k.set_perm(0x01000000 | 0x08000000)  # possessor VIEW|SEARCH only, no READ at all
    assert k.read() == b"mine"


def test_timeout_expiry(kk: KernelKeyspace) -> None:
    k = kk.add_key("user", "exp", b"x", "@s")
    k.set_timeout(1)
    time.sleep(1.2)
    assert errno_of(k.read) == errno.EKEYEXPIRED
    assert errno_of(k.describe) == errno.EKEYEXPIRED
    assert errno_of(k.update, b"y") == errno.EKEYEXPIRED
    assert errno_of(k.set_timeout, 10) == errno.EKEYEXPIRED
    assert errno_of(kk.session.search, "user", "exp") == errno.EKEYEXPIRED
    assert errno_of(kk.request_key, "user", "exp") == errno.ENOKEY  # expired keys are skipped
    revived = kk.add_key("user", "exp", b"again", "@s")
    assert revived.serial == k.serial and k.read() == b"again"


def test_update_clears_timeout(kk: KernelKeyspace) -> None:
    k = kk.add_key("user", "t", b"x", "@s")
    k.set_timeout(1)
    k.update(b"y")
    time.sleep(1.2)
    assert k.read() == b"y"


def test_revoked_key(kk: KernelKeyspace) -> None:
    k = kk.add_key("user", "rv", b"x", "@s")
    k.revoke()
    for call, args in [
        (k.read, ()),
        (k.describe, ()),
        (k.update, (b"y",)),
        (k.revoke, ()),
        (k.set_timeout, (5,)),
        (k.set_perm, (0x3F010000,)),
        (k.chown, (0, 0)),
        (kk.session.search, ("user", "rv")),
        (kk.request_key, ("user", "rv")),
    ]:
        assert errno_of(call, *args) == errno.EKEYREVOKED, call
    fresh = kk.add_key("user", "rv", b"z", "@s")
    assert fresh.serial != k.serial and fresh.read() == b"z"


def test_invalidated_key(kk: KernelKeyspace) -> None:
    readable = kk.add_key("user", "inv-r", b"x", "@s")
    readable.set_perm(0x3F030000)  # owner READ: the read is allowed, then finds the key dead
    readable.invalidate()
    assert errno_of(readable.read) == errno.ENOKEY
    k = kk.add_key("user", "inv", b"x", "@s")
    k.invalidate()
    # Default mask: READ only through possession, which ends when the GC unlinks the
    # key (asynchronously), so the kernel answers ENOKEY before and EACCES after that.
    assert errno_of(k.read) in (errno.ENOKEY, errno.EACCES)
    assert errno_of(k.describe) == errno.ENOKEY
    assert errno_of(k.update, b"y") == errno.ENOKEY
    # The link lingers until the (asynchronous) GC removes it: EKEYREVOKED before, ENOKEY after.
    assert errno_of(kk.session.search, "user", "inv") in (errno.EKEYREVOKED, errno.ENOKEY)
    deadline = time.monotonic() + 5
    while k.serial in serials(kk.sys_read(KEY_SPEC_SESSION_KEYRING)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert errno_of(kk.session.search, "user", "inv") == errno.ENOKEY
    assert errno_of(kk.sys_invalidate, 2) == errno.ENOKEY


# -- links, search, clear --------------------------------------------------------


def test_link_unlink_and_cycles(kk: KernelKeyspace) -> None:
    outer = kk.add_key("keyring", "outer", None, "@s")
    inner = kk.add_key("keyring", "inner", None, outer)
    k = kk.add_key("user", "k", b"x", "@s")
    inner.link(k)
    assert k in inner
    assert errno_of(inner.link, outer) == errno.EDEADLK
    assert errno_of(outer.link, outer) == errno.EDEADLK
    assert errno_of(outer.unlink, k) == errno.ENOENT
    inner.unlink(k)
    assert k not in inner
    assert errno_of(kk.sys_link, k.serial, k.serial) == errno.ENOTDIR
    assert errno_of(kk.sys_link, k.serial, 0) == errno.EINVAL


def test_search_and_destination(kk: KernelKeyspace) -> None:
    nest = kk.add_key("keyring", "nest", None, "@s")
    k = kk.add_key("user", "deep", b"x", nest)
    dest = kk.add_key("keyring", "dest", None, "@s")
    found = kk.session.search("user", "deep", dest)
    assert found.serial == k.serial and k in dest
    assert errno_of(kk.session.search, "user", "absent") == errno.ENOKEY
    assert errno_of(kk.session.search, "logon", "deep") == errno.ENOKEY
    assert errno_of(kk.session.search, "no_such_type", "deep") == errno.ENOKEY  # kernel: ENOKEY, not ENODEV
    assert errno_of(kk.sys_search, KEY_SPEC_SESSION_KEYRING, ".user", "deep", 0) == errno.EPERM
    assert errno_of(kk.sys_search, k.serial, "user", "deep", 0) == errno.ENOTDIR


def test_clear(kk: KernelKeyspace) -> None:
    ring = kk.add_key("keyring", "c", None, "@s")
    for i in range(3):
        kk.add_key("user", f"c{i}", b"x", ring)
    ring.clear()
    assert ring.keys() == []
    k = kk.add_key("user", "notring", b"x", "@s")
    assert errno_of(kk.sys_clear, k.serial) == errno.ENOTDIR
    assert errno_of(kk.sys_clear, 2) == errno.ENOKEY


def test_request_key(kk: KernelKeyspace) -> None:
    k = kk.add_key("user", "req", b"x", "@s")
    dest = kk.add_key("keyring", "rdest", None, "@s")
    got = kk.request_key("user", "req", keyring=dest)
    assert got.serial == k.serial and k in dest
    assert errno_of(kk.request_key, "user", "missing") == errno.ENOKEY
    assert errno_of(kk.sys_request_key, ".user", "x", None, 0) == errno.EPERM


# -- errors a user can act on: the key is in @u but @u is not linked -------------


def test_enokey_names_unlinked_user_keyring(kk: KernelKeyspace) -> None:
    k = kk.add_key("user", f"in-user-{os.getpid()}", b"x", "@u")
    try:
        for call in (lambda: kk.request_key("user", k.description), lambda: kk.session.search("user", k.description)):
            with pytest.raises(OSError) as info:
                call()
            assert info.value.errno == errno.ENOKEY
            text = str(info.value)
            assert "@u" in text and "keyctl link @u @s" in text and "ks.session.link(ks.user_keyring)" in text
        kk.session.link(kk.user_keyring)
        assert kk.request_key("user", k.description).serial == k.serial
    finally:
        kk.sys_unlink(k.serial, KEY_SPEC_USER_KEYRING)


def test_enokey_without_hint_when_nothing_in_user_keyring(kk: KernelKeyspace) -> None:
    with pytest.raises(OSError) as info:
        kk.request_key("user", f"nowhere-{os.getpid()}")
    assert info.value.errno == errno.ENOKEY
    assert "keyctl link" not in str(info.value)
    assert "request_key" in str(info.value)


def test_enokey_hint_runs_with_the_callers_credentials(kk: KernelKeyspace, root: None) -> None:
    child = kk.as_user(OTHER_UID, OTHER_GID)
    desc = f"child-user-{os.getpid()}"
    k = child.add_key("user", desc, b"x", "@u")  # the child's own _uid.4321
    try:
        with pytest.raises(OSError) as info:
            child.request_key("user", desc)
        assert info.value.errno == errno.ENOKEY and "keyctl link @u @s" in str(info.value)
        # Root's @u does not hold it, so root gets the plain ENOKEY.
        with pytest.raises(OSError) as plain:
            kk.request_key("user", desc)
        assert plain.value.errno == errno.ENOKEY and "keyctl link" not in str(plain.value)
    finally:
        child.sys_unlink(k.serial, KEY_SPEC_USER_KEYRING)


# -- as_user: a forked child with other credentials, same session ---------------


def test_as_user_reads_possessed_root_key(kk: KernelKeyspace, root: None) -> None:
    k = kk.add_key("user", "root-key", b"root secret", "@s")
    assert k.describe().split(";")[3] == "3f010000"
    child = kk.as_user(OTHER_UID, OTHER_GID)
    assert child.same_world(kk) and kk.same_world(child)
    # Observed on the kernel: the child inherits @s, so it possesses the key and the
    # possessor bits (0x3f......) grant READ although it is not the owner.
    assert child.sys_read(k.serial) == b"root secret"
    assert child.key(k.serial) == k
    with child.key(k.serial).secret() as mv:
        assert bytes(mv) == b"root secret"
    # ...but setperm is for the owner (or CAP_SYS_ADMIN) only.
    assert errno_of(child.sys_setperm, k.serial, 0x3F3F3F3F) == errno.EACCES
    assert child.sys_get_keyring_id(KEY_SPEC_USER_KEYRING, True) != kk.sys_get_keyring_id(KEY_SPEC_USER_KEYRING, True)
    assert child.sys_describe(child.sys_get_keyring_id(KEY_SPEC_USER_KEYRING, True)).endswith(f"_uid.{OTHER_UID}")


def test_as_user_cannot_read_unpossessed_root_key(kk: KernelKeyspace, root: None) -> None:
    k = kk.add_key("user", "hidden", b"root only", "@s")
    child = kk.as_user(OTHER_UID, OTHER_GID)
    with only_in_root_user_keyring(kk, k):
        assert errno_of(child.sys_read, k.serial) == errno.EACCES
        assert errno_of(child.sys_describe, k.serial) == errno.EACCES
        assert errno_of(child.sys_secret, k.serial) == errno.EACCES


def test_as_user_other_and_group_bits(kk: KernelKeyspace, root: None) -> None:
    k = kk.add_key("user", "shared", b"for the group", "@s")
    k.chown(-1, 777)
    k.set_perm(0x3F000300)  # possessor all, group VIEW|READ, nothing for user/other
    member = kk.as_user(OTHER_UID, OTHER_GID, [777])
    outsider = kk.as_user(OTHER_UID, OTHER_GID)
    with only_in_root_user_keyring(kk, k):
        assert member.sys_read(k.serial) == b"for the group"
        assert member.sys_describe(k.serial) == "user;0;777;3f000300;shared"
        assert errno_of(outsider.sys_read, k.serial) == errno.EACCES


def test_as_user_child_errors_and_exceptions(kk: KernelKeyspace, root: None) -> None:
    child = kk.as_user(OTHER_UID, OTHER_GID)
    assert errno_of(child.sys_add_key, ".user", "d", b"x", KEY_SPEC_SESSION_KEYRING) == errno.EPERM
    with pytest.raises(OSError, match="add_key"):
        child.sys_add_key(".user", "d", b"x", KEY_SPEC_SESSION_KEYRING)
    # A wrong-typed argument is an errno like any other, decided in the child ...
    assert errno_of(child.sys_add_key, 123, "d", b"x", KEY_SPEC_SESSION_KEYRING) == errno.EINVAL
    # ... and an exception that is not an OSError is re-raised in the parent as itself.
    with pytest.raises(ValueError):
        child._call(int, "not a number")
    # A key the child creates in the shared session belongs to the child's uid.
    made = child.add_key("user", "by-child", b"c", "@s")
    assert made.describe().split(";")[1:3] == [str(OTHER_UID), str(OTHER_GID)]
    assert kk.session.search("user", "by-child").serial == made.serial


# -- the user-facing API through the kernel backend --------------------------------


def test_public_export(kk: KernelKeyspace) -> None:
    import keyring_types as kt

    assert kt.KernelKeyspace is KernelKeyspace
    assert isinstance(kk, kt.KeyspaceAPI)
    k = kk.add_key("user", "exported", b"x", kt.KEY_SPEC_SESSION_KEYRING)
    assert k.read() == b"x"


def test_user_facing_api(kk: KernelKeyspace) -> None:
    k = kk.add_key("user", "app:token", "text payload", "@s")
    assert kk.request_key("user", "app:token") == k
    assert kk.key(k.serial).read() == b"text payload"
    assert kk.key(k.serial).type == "user"
    k.update("changed")
    assert k.read() == b"changed"
    ring = kk.add_key("keyring", "app", None, kk.session)
    assert isinstance(ring, Keyring) and isinstance(kk.keyring(ring.serial), Keyring)
    ring.link(k)
    assert ring.search("user", "app:token") == k
    assert [x.serial for x in ring.keys()] == [k.serial]
    assert kk.keyring("@s") == kk.session
    with pytest.raises(OSError) as info:
        kk.keyring(k.serial)
    assert info.value.errno == errno.ENOTDIR
    k.invalidate()
    # ENOKEY, or EACCES in the moment after the GC unlinked it and before it is freed.
    assert errno_of(k.read) in (errno.ENOKEY, errno.EACCES)


def test_thin_wrapper_read_size_matches_payload(kk: KernelKeyspace) -> None:
    k = kk.add_key("user", "sz", b"x" * 1234, "@s")
    assert sc.keyctl_read_size(k.serial) == 1234
    small = bytearray(2)
    assert sc.keyctl_read_into(k.serial, memoryview(small)) == 1234
    assert small == bytearray(2)  # too small: the kernel copies nothing


@pytest.mark.parametrize("stale_size", [3, 40], ids=["grew-after-size-query", "shrank-after-size-query"])
def test_secret_read_survives_payload_change(
    kk: KernelKeyspace, monkeypatch: pytest.MonkeyPatch, stale_size: int
) -> None:
    # Stand in for an update landing between the size query and the read: the size
    # query reports a stale length, the real KEYCTL_READ then reports the true one.
    payload = b"0123456789abcdef"
    k = kk.add_key("user", "moving", payload, "@s")
    monkeypatch.setattr(sc, "keyctl_read_size", lambda keyid: stale_size)
    buf = sc.keyctl_read_secret(k.serial)
    try:
        assert len(buf) == len(payload) and buf == payload
    finally:
        buf.wipe()


def test_secret_of_a_sealed_kernel_key_is_refused(need_kernel_keyring: None) -> None:
    # The kernel keeps an encrypted key's plaintext; secret() must not pass the blob off as it.
    kk = KernelKeyspace(new_session=True)
    kk.add_key("user", "kmk-secret-test", b"m" * 32, "@s")
    k = kk.add_key("encrypted", "evm-secret-test", "new default user:kmk-secret-test 32", "@s")
    with pytest.raises(OSError) as info:
        with k.secret():
            pass
    assert info.value.errno == errno.EOPNOTSUPP
    assert k.read().startswith(b"default user:kmk-secret-test 32 ")


def test_syscall_wrappers_refuse_ids_the_kernel_would_truncate(kk: KernelKeyspace) -> None:
    # The kernel reads a key id as int32 and a uid as u32: 2**32 + serial would be
    # the same key to it, and uid 2**40 would be root.  The wrappers refuse both.
    k = kk.add_key("user", "wide", b"x", "@s")
    ring = kk.add_key("keyring", "wide-ring", None, "@s")
    wide = 2**32 + k.serial
    assert errno_of(sc.keyctl_invalidate, wide) == errno.EINVAL
    assert errno_of(sc.keyctl_revoke, wide) == errno.EINVAL
    assert errno_of(sc.keyctl_link, wide, ring.serial) == errno.EINVAL
    assert errno_of(sc.keyctl_read, wide) == errno.EINVAL
    assert errno_of(sc.keyctl_setperm, wide, 0x3F3F0000) == errno.EINVAL
    assert errno_of(sc.keyctl_set_timeout, k.serial, 2**32) == errno.EINVAL
    assert errno_of(sc.keyctl_chown, k.serial, 2**40, -1) == errno.EINVAL
    assert errno_of(sc.add_key, "user", "wide2", b"y", 2**32 + ring.serial) == errno.EINVAL
    assert errno_of(sc.keyctl_search, 2**32 + ring.serial, "user", "wide", 0) == errno.EINVAL
    # A number-like that is not an int is refused, not truncated through its __int__.
    assert errno_of(sc.keyctl_read, Decimal(k.serial) + Decimal("0.5")) == errno.EINVAL
    assert k.read() == b"x" and k.describe().split(";")[1:4] == [str(os.geteuid()), str(os.getegid()), "3f010000"]
    assert sc.keyctl_read(ring.serial) == b""
