"""``get_persistent``, ``move``, ``session_to_parent``, ``get_security`` and ``capabilities``,
each checked the same way on an in-process ``Keyspace`` and on the kernel (the ``space`` fixture).

Tests that use other uids on the kernel invalidate the persistent keyrings they
made for them (the kernel keeps those for three days otherwise).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import struct
import subprocess
from collections.abc import Iterator

import pytest
from conftest import errno_of, require

import keyring_types as kt
from keyring_types.core.capabilities import (
    CAPABILITY_BITS,
    capabilities_from_bytes,
    capability_bytes,
    implemented,
)
from keyring_types.core.keyspace import Keyspace

ROOT = os.geteuid() == 0


def _fresh_uid() -> int:
    return 200000 + random.SystemRandom().randrange(1 << 28)


@pytest.fixture
def root_space(space: kt.KeyspaceAPI) -> kt.KeyspaceAPI:
    """``space``, for tests that act as other users (fork + setuid on the kernel)."""
    require(ROOT, "root (as_user changes credentials)")
    return space


@pytest.fixture
def other_uid(space: kt.KeyspaceAPI) -> Iterator[int]:
    """A uid nobody uses; its persistent keyring (if a test made one) is invalidated afterwards."""
    uid = _fresh_uid()
    yield uid
    if isinstance(space, kt.KernelKeyspace) and ROOT:
        try:
            space.get_persistent(uid, "@s").invalidate()
        except OSError:
            pass


def _listing(ring: kt.Keyring) -> set[int]:
    return {k.serial for k in ring.keys()}


def _proc_line(space: kt.KeyspaceAPI, serial: int) -> str:
    if isinstance(space, Keyspace):
        lines = space.proc_keys()
    else:
        with open("/proc/keys") as f:
            lines = f.read().splitlines()
    return next(line for line in lines if line.startswith(f"{serial:08x} "))


# -- get_persistent ------------------------------------------------------------------


def test_get_persistent_makes_the_kernels_keyring(space: kt.KeyspaceAPI) -> None:
    uid = os.geteuid()
    ring = space.get_persistent()
    assert ring.describe() == f"keyring;{uid};65534;1f030000;_persistent.{uid}"
    assert ring.serial in _listing(space.session)
    # Outside the quota, like the kernel's (no Q flag).
    assert _proc_line(space, ring.serial).split()[1] == "I------"
    holder = space.add_key("keyring", "holder", None, "@s")
    assert space.get_persistent(-1, holder).serial == ring.serial
    assert space.get_persistent(2**32 - 1, holder).serial == ring.serial  # (uid_t)-1 is the caller too
    assert ring.serial in _listing(holder)


def test_get_persistent_of_another_uid_needs_cap_setuid(root_space: kt.KeyspaceAPI, other_uid: int) -> None:
    space = root_space
    theirs = space.get_persistent(other_uid, "@s")
    assert theirs.describe() == f"keyring;{other_uid};65534;1f030000;_persistent.{other_uid}"
    user = space.as_user(other_uid, other_uid)
    assert user.get_persistent(-1, "@s").serial == theirs.serial
    assert user.get_persistent(other_uid, "@s").serial == theirs.serial
    assert errno_of(user.get_persistent, 0, "@s") == errno.EPERM
    assert errno_of(user.get_persistent, other_uid + 1, "@s") == errno.EPERM


def test_get_persistent_errors(space: kt.KeyspaceAPI) -> None:
    key = space.add_key("user", "not-a-ring", b"x", "@s")
    assert errno_of(space.get_persistent, -1, key) == errno.ENOTDIR
    assert errno_of(space.get_persistent, -1, 0x7FFFFFF0) == errno.ENOKEY
    assert errno_of(space.get_persistent, 2**32, "@s") == errno.EINVAL
    ring = space.add_key("keyring", "revoked", None, "@s")
    ring.revoke()
    assert errno_of(space.get_persistent, -1, ring) == errno.EKEYREVOKED


def test_persistent_keyring_can_hold_keys_and_be_found_again(space: kt.KeyspaceAPI) -> None:
    ring = space.get_persistent()
    key = space.add_key("user", "kept", b"v", ring)
    try:
        assert ring.search("user", "kept") == key
        again = space.get_persistent()
        assert key.serial in _listing(again)
    finally:
        ring.unlink(key)


def test_persistent_expiry_comes_from_the_setting_and_is_renewed(root_space: kt.KeyspaceAPI) -> None:
    """/proc/keys shows the expiry each call sets: the sysctl's value from now."""
    space = root_space
    setting = space  # both keyspaces expose persistent_keyring_expiry
    old = setting.persistent_keyring_expiry  # type: ignore[attr-defined]
    try:
        setting.persistent_keyring_expiry = 1000  # type: ignore[attr-defined]
        ring = space.get_persistent()
        assert _proc_line(space, ring.serial).split()[3] == "16m"
        setting.persistent_keyring_expiry = 5000  # type: ignore[attr-defined]
        space.get_persistent()
        assert _proc_line(space, ring.serial).split()[3] == "1h"
    finally:
        setting.persistent_keyring_expiry = old  # type: ignore[attr-defined]
        space.get_persistent()  # back to three days


def test_persistent_expiry_setting_is_checked() -> None:
    ks = kt.Keyspace()
    for bad in (-1, 2**32, "10"):
        assert errno_of(setattr, ks, "persistent_keyring_expiry", bad) == errno.EINVAL


def test_expired_persistent_keyring_is_collected_and_replaced() -> None:
    """In process, with a clock: unasked for past its expiry, it goes; the next call makes another."""
    now = [1000.0]
    ks = kt.Keyspace(clock=lambda: now[0], gc_delay=5)
    ks.persistent_keyring_expiry = 10
    first = ks.get_persistent()
    held = ks.add_key("user", "held", b"v", first)
    now[0] += 9
    assert ks.get_persistent().serial == first.serial  # renewed: 10 s from now again
    now[0] += 12
    assert errno_of(first.describe) == errno.EKEYEXPIRED
    assert ks.get_persistent().serial == first.serial  # expired, not yet collected: renewed
    now[0] += 16
    ks.gc()
    assert errno_of(held.describe) == errno.ENOKEY
    second = ks.get_persistent()
    assert second.serial != first.serial and not second.keys()


def test_revoked_keys_in_proc_keys(space: kt.KeyspaceAPI) -> None:
    """Found by the keyctlops differential: a revoked key shows "expd" and a user key its
    payload length, now 0."""
    user = space.add_key("user", "rv", b"abc", "@s")
    logon = space.add_key("logon", "a:b", b"abc", "@s")
    ring = space.add_key("keyring", "rr", None, "@s")
    user.set_timeout(1000)
    for key in (user, logon, ring):
        key.revoke()
    cols = {key.serial: _proc_line(space, key.serial).split(None, 8) for key in (user, logon, ring)}
    assert [cols[user.serial][i] for i in (1, 3, 8)] == ["IR-Q---", "expd", "rv: 0"]
    assert [cols[logon.serial][i] for i in (1, 3, 8)] == ["IR-Q---", "expd", "a:b: 0"]
    assert [cols[ring.serial][i] for i in (1, 3, 8)] == ["IR-Q---", "expd", "rr: empty"]
    assert errno_of(user.describe) == errno.EKEYREVOKED  # revoked wins over expired


def _qnbytes(space: kt.KeyspaceAPI, uid: int) -> int:
    if isinstance(space, Keyspace):
        return space.quota(uid).qnbytes
    with open("/proc/key-users") as f:
        for line in f:
            if line.split(":")[0].strip() == str(uid):
                return int(line.split()[4].split("/")[0])
    return 0


def test_links_of_collected_keys_stay_charged_until_the_keyring_is_cleared(
    root_space: kt.KeyspaceAPI, other_uid: int
) -> None:
    """Found by the keyctlops differential: the kernel's GC drops an invalidated key from
    its keyrings without refunding the link's 4 bytes; unlinking refunds, clearing refunds all."""
    import time

    space = root_space
    user = space.as_user(other_uid, other_uid)
    ring = user.add_key("keyring", "r", None, "@s")  # 2 bytes ("r" and its NUL)
    key = user.add_key("user", "a", b"xyz", ring)  # 2 + 3, and 4 for the link

    def settled(expected: int) -> int:
        deadline = time.monotonic() + 3
        while _qnbytes(space, other_uid) != expected and time.monotonic() < deadline:
            time.sleep(0.01)  # the kernel frees keys in its GC worker
        return _qnbytes(space, other_uid)

    assert settled(11) == 11
    space.sys_invalidate(key.serial)
    assert settled(6) == 6
    other = user.add_key("user", "b", b"xyz", ring)
    assert settled(15) == 15
    ring.unlink(other)
    assert settled(6) == 6
    ring.clear()
    assert settled(2) == 2
    ring.invalidate()


# -- move -------------------------------------------------------------------------


def test_move_unlinks_and_links_at_once(space: kt.KeyspaceAPI) -> None:
    a = space.add_key("keyring", "a", None, "@s")
    b = space.add_key("keyring", "b", None, "@s")
    key = space.add_key("user", "k", b"1", a)
    space.move(key, a, b)
    assert _listing(a) == set() and _listing(b) == {key.serial}
    assert key.read() == b"1"


def test_move_exclusive_refuses_to_displace(space: kt.KeyspaceAPI) -> None:
    a = space.add_key("keyring", "a", None, "@s")
    b = space.add_key("keyring", "b", None, "@s")
    new = space.add_key("user", "k", b"new", a)
    old = space.add_key("user", "k", b"old", b)
    assert errno_of(space.move, new, a, b, exclusive=True) == errno.EEXIST
    assert _listing(a) == {new.serial} and _listing(b) == {old.serial}
    space.move(new, a, b)  # without KEYCTL_MOVE_EXCL the old one is displaced
    assert _listing(a) == set() and _listing(b) == {new.serial}


def test_move_of_a_key_already_in_the_target(space: kt.KeyspaceAPI) -> None:
    a = space.add_key("keyring", "a", None, "@s")
    b = space.add_key("keyring", "b", None, "@s")
    key = space.add_key("user", "k", b"v", a)
    b.link(key)
    assert errno_of(space.move, key, a, b, exclusive=True) == errno.EEXIST
    space.move(key, a, b)
    assert _listing(a) == set() and _listing(b) == {key.serial}


def test_move_removes_whatever_holds_the_slot_in_the_source(space: kt.KeyspaceAPI) -> None:
    """As KEYCTL_UNLINK, the source's link is found by type and description."""
    a = space.add_key("keyring", "a", None, "@s")
    b = space.add_key("keyring", "b", None, "@s")
    c = space.add_key("keyring", "c", None, "@s")
    in_a = space.add_key("user", "k", b"in a", a)
    in_c = space.add_key("user", "k", b"in c", c)
    space.move(in_c, a, b)
    assert _listing(a) == set()
    assert _listing(b) == {in_c.serial} and _listing(c) == {in_c.serial}
    assert in_a.serial not in _listing(space.session)


def test_move_errors(space: kt.KeyspaceAPI) -> None:
    a = space.add_key("keyring", "a", None, "@s")
    b = space.add_key("keyring", "b", None, "@s")
    key = space.add_key("user", "k", b"v", a)
    stray = space.add_key("user", "stray", b"v", "@s")
    assert errno_of(space.move, stray, a, b) == errno.ENOENT
    assert errno_of(space.move, key, a, stray) == errno.ENOTDIR
    assert errno_of(space.move, key, stray, b) == errno.ENOTDIR
    assert errno_of(space.sys_move, key.serial, a.serial, b.serial, 2) == errno.EINVAL
    assert errno_of(space.move, 0x7FFFFFF0, a, b) == errno.ENOKEY
    # Within one keyring nothing happens, linked there or not.
    space.move(stray, a, a)
    assert _listing(a) == {key.serial}


def test_move_cycle_and_depth(space: kt.KeyspaceAPI) -> None:
    top = space.add_key("keyring", "top", None, "@s")
    child = space.add_key("keyring", "child", None, top)
    assert errno_of(space.move, top, "@s", child) == errno.EDEADLK
    assert _listing(top) == {child.serial}
    chain = [space.add_key("keyring", "c0", None, "@s")]
    for n in range(1, 8):
        chain.append(space.add_key("keyring", f"c{n}", None, chain[-1]))
    target = space.add_key("keyring", "target", None, "@s")
    assert errno_of(space.move, chain[0], "@s", target) == errno.ELOOP
    assert chain[0].serial in _listing(space.session)


def test_linking_a_deep_keyring_where_it_already_is_is_eloop(space: kt.KeyspaceAPI) -> None:
    """Found by the keyctlops differential: the kernel checks the depth of a keyring's tree
    on every link, also into a keyring that links it already."""
    top = space.add_key("keyring", "top", None, "@s")
    ring = top
    for n in range(7):
        ring = space.add_key("keyring", f"d{n}", None, ring)
    assert errno_of(space.session.link, top) == errno.ELOOP
    assert top.serial in _listing(space.session)
    shallow = space.add_key("keyring", "shallow", None, "@s")
    space.session.link(shallow)  # and a shallow one just stays linked
    key = space.add_key("user", "k", b"v", "@s")
    space.session.link(key)


def test_move_permissions(space: kt.KeyspaceAPI) -> None:
    a = space.add_key("keyring", "a", None, "@s")
    b = space.add_key("keyring", "b", None, "@s")
    key = space.add_key("user", "k", b"v", a)
    key.set_perm(0x2F2F0000)  # neither possessor nor owner may LINK
    assert errno_of(space.move, key, a, b) == errno.EACCES
    key.set_perm(0x3F3F0000)
    a.set_perm(0x3B3B0000)  # no WRITE on the source
    assert errno_of(space.move, key, a, b) == errno.EACCES
    a.set_perm(0x3F3F0000)
    b.set_perm(0x3B3B0000)  # nor on the target
    assert errno_of(space.move, key, a, b) == errno.EACCES
    b.set_perm(0x3F3F0000)
    b.revoke()
    assert errno_of(space.move, key, a, b) == errno.EKEYREVOKED


def test_move_into_a_restricted_keyring_asks_its_restriction(space: kt.KeyspaceAPI) -> None:
    """A reject-all keyring refuses a moved key (EPERM) as it refuses a link; moving out is free."""
    closed = space.add_key("keyring", "closed", None, "@s")
    key = space.add_key("user", "k", b"v", closed)
    closed.restrict()
    other = space.add_key("user", "o", b"v", "@s")
    assert errno_of(space.move, other, "@s", closed) == errno.EPERM
    assert other.serial in _listing(space.session)
    space.move(key, closed, "@s")
    assert _listing(closed) == set() and key.serial in _listing(space.session)


def test_move_into_a_special_keyring_creates_it(root_space: kt.KeyspaceAPI) -> None:
    """The target is looked up with KEY_LOOKUP_CREATE, the source without.

    Done as a child (an ``as_user`` view with this process's credentials): a process
    keyring made in the test process itself would change what its later searches report.
    """
    space = root_space
    child = space.as_user(os.geteuid(), os.getegid())
    key = space.add_key("user", "k", b"v", "@s")
    child.move(key, "@s", "@p")
    assert key.serial not in _listing(space.session)
    if isinstance(child, Keyspace):  # a kernel child's @p ended with the call
        assert _listing(child.keyring("@p")) == {key.serial}
    other = space.add_key("user", "k2", b"v", "@s")
    assert errno_of(child.move, other, "@t", "@s") == errno.ENOKEY


# -- get_security ---------------------------------------------------------------------


def test_get_security_is_empty_without_an_lsm(space: kt.KeyspaceAPI) -> None:
    if os.path.exists("/sys/kernel/security/lsm"):
        with open("/sys/kernel/security/lsm") as f:
            if any(name in f.read() for name in ("selinux", "smack", "apparmor")):
                pytest.skip("this kernel runs an LSM that labels keys")
    key = space.add_key("user", "k", b"v", "@s")
    assert key.get_security() == ""
    assert space.session.get_security() == ""


def test_get_security_errors(space: kt.KeyspaceAPI) -> None:
    key = space.add_key("user", "k", b"v", "@s")
    hidden = space.add_key("user", "hidden", b"v", "@s")
    hidden.set_perm(0)
    # Without VIEW the kernel looks for an instantiation authority instead: ENOKEY, not EACCES.
    assert errno_of(hidden.get_security) == errno.ENOKEY
    assert errno_of(hidden.describe) == errno.EACCES
    key.revoke()
    assert errno_of(key.get_security) == errno.EKEYREVOKED
    assert errno_of(kt.Key(space, 0x7FFFFFF0).get_security) == errno.ENOKEY


# -- capabilities -------------------------------------------------------------------


def test_capabilities_name_what_both_keyspaces_share(space: kt.KeyspaceAPI) -> None:
    caps = space.capabilities()
    assert {"capabilities", "persistent_keyrings", "key_invalidate", "move_key"} <= caps
    assert caps <= set(CAPABILITY_BITS)


def test_kernel_capabilities_match_keyctl_supports(need_kernel_keyring: None) -> None:
    keyctl = shutil.which("keyctl")
    require(keyctl is not None, "keyutils' keyctl (for `keyctl supports`)")
    assert keyctl is not None
    out = subprocess.run([keyctl, "supports"], capture_output=True, text=True, check=True).stdout
    said = {line.split("=")[0].removeprefix("have_") for line in out.split() if line.endswith("=1")}
    said &= set(CAPABILITY_BITS)  # an older keyctl may print fewer, or other probes
    assert kt.KernelKeyspace().capabilities() == said


def test_in_process_capabilities_are_what_is_implemented() -> None:
    caps = kt.Keyspace().capabilities()
    assert {"dh_compute", "persistent_keyrings", "move_key", "key_invalidate", "capabilities", "notify"} <= caps
    # Not provided in process: namespaces, big keys.
    assert not caps & {"ns_keyring_name", "ns_key_tag", "big_key_type"}
    assert ("public_key" in caps) == ("asymmetric" in kt.registered_key_types())


def test_a_new_operation_shows_up_in_capabilities() -> None:
    """What derives the list: a keyspace class that gains KEYCTL_RESTRICT_KEYRING claims it."""

    class WithRestrict(Keyspace):
        def sys_restrict_keyring(self, ringid: int, type_name: str | None, restriction: str | None) -> None:
            raise NotImplementedError

    base = implemented(Keyspace)
    assert implemented(WithRestrict) == base | {"restrict_keyring"}


def test_capability_bytes_round_trip() -> None:
    for name, (index, bit) in CAPABILITY_BITS.items():
        raw = capability_bytes([name])
        assert raw[index] == bit and capabilities_from_bytes(raw) == {name}
    assert capabilities_from_bytes(bytes([0xFF, 0x07])) == set(CAPABILITY_BITS)
    assert capabilities_from_bytes(b"\x01") == {"capabilities"}


# -- session_to_parent -------------------------------------------------------------


def test_session_to_parent_permissions(root_space: kt.KeyspaceAPI, other_uid: int) -> None:
    space = root_space
    me = os.geteuid(), os.getegid()
    # A child in the same session has nothing to hand up, whoever it runs as.
    space.as_user(*me).session_to_parent()
    space.as_user(other_uid, other_uid).session_to_parent()
    space.session.set_perm(0x2F2F0000)  # no LINK for the possessor or the owner
    assert errno_of(space.as_user(*me).session_to_parent) == errno.EACCES


def test_session_to_parent_needs_a_parent_in_process() -> None:
    ks = kt.Keyspace()
    assert errno_of(ks.session_to_parent) == errno.EPERM
    child = ks.as_user(ks.cred.uid, ks.cred.gid)
    del ks
    import gc

    gc.collect()
    assert errno_of(child.session_to_parent) == errno.EPERM  # orphaned, as if reparented to init


def test_session_to_parent_in_process() -> None:
    ks = kt.Keyspace()
    child = ks.as_user(ks.cred.uid, ks.cred.gid)
    joined = child.join_session_keyring("handed-up")
    assert ks.session.serial != joined.serial
    child.session_to_parent()
    assert ks.session.serial == joined.serial
    stranger = ks.as_user(ks.cred.uid + 1, ks.cred.gid)
    stranger.join_session_keyring()
    assert errno_of(stranger.session_to_parent) == errno.EPERM
    assert ks.session.serial == joined.serial


def _hand_up_on_the_kernel(uid: int | None) -> tuple[int, int, int]:
    """A grandchild (as ``uid``, if given) joins a new session and hands it to its parent,
    a forked child of this test: (errno or 0, the grandchild's session, the parent's after).

    Forked so that neither this process nor pytest's parent is touched; the kernel
    applies the change when the parent next returns to user space.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the parent-to-be: single-threaded, as the kernel requires
        status = 1
        try:
            os.close(rfd)
            inner_r, inner_w = os.pipe()
            grandchild = os.fork()
            if grandchild == 0:
                code = 1
                try:
                    os.close(inner_r)
                    if uid is not None:
                        os.setresgid(uid, uid, uid)
                        os.setresuid(uid, uid, uid)
                    kk = kt.KernelKeyspace()
                    serial = kk.join_session_keyring().serial
                    err = 0
                    try:
                        kk.session_to_parent()
                    except OSError as exc:
                        err = exc.errno or -1
                    os.write(inner_w, struct.pack("=ii", err, serial))
                    code = 0
                finally:
                    os._exit(code)
            os.close(inner_w)
            reply = os.read(inner_r, 8)
            os.waitpid(grandchild, 0)  # returning from this syscall installs the keyring
            mine = kt.KernelKeyspace().sys_get_keyring_id(kt.KEY_SPEC_SESSION_KEYRING, False)
            os.write(wfd, reply + struct.pack("=i", mine))
            status = 0
        finally:
            os._exit(status)
    os.close(wfd)
    try:
        data = b""
        while len(data) < 12:
            chunk = os.read(rfd, 12 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(rfd)
        os.waitpid(pid, 0)
    assert len(data) == 12, "the forked parent did not report"
    err, handed, mine = struct.unpack("=iii", data)
    return err, handed, mine


def test_session_to_parent_on_the_kernel(need_kernel_keyring: None) -> None:
    err, handed, mine = _hand_up_on_the_kernel(None)
    assert err == 0 and mine == handed


def test_session_to_parent_from_another_user_on_the_kernel(need_kernel_keyring: None, need_root: None) -> None:
    uid = _fresh_uid()
    err, handed, mine = _hand_up_on_the_kernel(uid)
    assert err == errno.EPERM and mine != handed
