"""The kernel spec's pitfalls (§4), run unchanged on the Keyspace and on the real kernel.

Each scenario takes a fresh keyspace from the ``space`` fixture, which is either an
in-process ``Keyspace`` or a ``KernelKeyspace`` in a new session, and asserts the
kernel's observed behaviour; both must pass.
"""

from __future__ import annotations

import errno
import os
import random
import time

import pytest

import keyring_types as kt
from conftest import kernel_keyring_reachable, require


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


@pytest.fixture(params=["keyspace", "kernel"])
def space(request: pytest.FixtureRequest) -> kt.KeyspaceAPI:
    if request.param == "keyspace":
        return kt.Keyspace()
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    return kt.KernelKeyspace(new_session=True)


def fresh_uid() -> int:
    return 200000 + random.SystemRandom().randrange(1 << 30)


def test_expired_key_is_revived_by_add_key(space: kt.KeyspaceAPI) -> None:
    k = space.add_key("user", "pit:expire", b"one", "@s")
    k.set_timeout(1)
    time.sleep(2.05)  # kernel time has one-second granularity
    assert errno_of(k.read) == errno.EKEYEXPIRED
    assert errno_of(space.request_key, "user", "pit:expire") == errno.ENOKEY
    assert errno_of(space.session.search, "user", "pit:expire") == errno.EKEYEXPIRED
    again = space.add_key("user", "pit:expire", b"two", "@s")
    assert again.serial == k.serial and k.read() == b"two"


def test_revoked_key_is_replaced_by_add_key(space: kt.KeyspaceAPI) -> None:
    k = space.add_key("user", "pit:revoke", b"one", "@s")
    k.revoke()
    assert errno_of(k.read) == errno.EKEYREVOKED
    again = space.add_key("user", "pit:revoke", b"two", "@s")
    assert again.serial != k.serial


def test_update_is_one_page_but_add_key_is_not(space: kt.KeyspaceAPI) -> None:
    k = space.add_key("user", "pit:page", b"x", "@s")
    assert errno_of(k.update, b"y" * 4097) == errno.EINVAL
    space.add_key("user", "pit:page", b"z" * 32767, "@s")
    assert k.read() == b"z" * 32767


def test_root_is_bound_by_permission_bits(space: kt.KeyspaceAPI) -> None:
    require(os.geteuid() == 0, "root")
    k = space.add_key("user", "pit:perm0", b"x", "@s")
    k.set_perm(0)
    assert errno_of(k.read) == errno.EACCES
    assert errno_of(k.describe) == errno.EACCES
    assert errno_of(k.set_perm, 0x3F010000) == errno.EACCES


def test_possession_reads_without_read_bit(space: kt.KeyspaceAPI) -> None:
    k = space.add_key("user", "pit:poss", b"x", "@s")
    k.set_perm(0x18010000)  # possessor SEARCH|LINK, user VIEW: READ nowhere
    assert k.read() == b"x"


def test_logon_keys(space: kt.KeyspaceAPI) -> None:
    k = space.add_key("logon", "pit:logon", b"pw", "@s")
    assert k.describe().split(";")[3] == "3d010000"
    assert errno_of(k.read) == errno.EOPNOTSUPP
    assert errno_of(space.add_key, "logon", "nocolon", b"pw", "@s") == errno.EINVAL


def test_unprivileged_quota(space: kt.KeyspaceAPI) -> None:
    require(os.geteuid() == 0, "root (to act as a fresh unprivileged user)")
    uid = fresh_uid()
    user = space.as_user(uid, uid)
    r = user.add_key("keyring", "pit:quota", None, "@s")
    user.add_key("user", "big1", b"x" * 9000, r)
    user.add_key("user", "big2", b"x" * 9000, r)
    assert errno_of(user.add_key, "user", "big3", b"x" * 9000, r) == errno.EDQUOT
    assert [k.description for k in space.key(r.serial).keys()] in (["big1", "big2"], ["big2", "big1"])


def test_named_session_is_not_found_again_without_search(space: kt.KeyspaceAPI) -> None:
    name = f"pit-team-{fresh_uid()}"
    a = space.join_session_keyring(name)
    b = space.join_session_keyring(name)
    assert a != b
    assert b.describe().split(";")[3] == "3f130000"


# Possession is "some search path from the caller's keyrings reaches the key", and
# every keyring on the path must be searchable by the possessor.  The key's mask
# below lets only a possessor read it (possessor VIEW|READ|SEARCH, owner VIEW), so
# read() succeeds exactly when the key is possessed.
_POSSESSOR_ONLY = 0x0B010000
_RING_NO_POSSESSOR_SEARCH = 0x37210000  # possessor everything but SEARCH; owner VIEW|SETATTR (to undo it)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_possession_through_nested_keyrings(space: kt.KeyspaceAPI, depth: int) -> None:
    ring: kt.Keyring = space.session
    chain = []
    for level in range(depth):
        ring = space.add_key("keyring", f"pit:nest{level}", None, ring)  # type: ignore[assignment]
        chain.append(ring)
    k = space.add_key("user", "pit:deep", b"secret", ring)
    k.set_perm(_POSSESSOR_ONLY)
    assert k.read() == b"secret"
    # Any keyring on the path that the possessor may not search breaks possession.
    for blocked in chain:
        blocked.set_perm(_RING_NO_POSSESSOR_SEARCH)
        assert errno_of(k.read) == errno.EACCES
        blocked.set_perm(0x3F010000)
    assert k.read() == b"secret"


def test_possession_survives_a_blocked_path_when_another_path_exists(space: kt.KeyspaceAPI) -> None:
    blocked = space.add_key("keyring", "pit:blocked", None, "@s")
    open_ = space.add_key("keyring", "pit:open", None, "@s")
    k = space.add_key("user", "pit:two-paths", b"v", blocked)
    open_.link(k)
    k.set_perm(_POSSESSOR_ONLY)
    blocked.set_perm(_RING_NO_POSSESSOR_SEARCH)
    assert k.read() == b"v"
    open_.unlink(k)
    assert errno_of(k.read) == errno.EACCES


def test_request_key_reports_the_session_keys_state(space: kt.KeyspaceAPI) -> None:
    revoked = space.add_key("user", "pit:req-revoked", b"x", "@s")
    revoked.revoke()
    assert errno_of(space.request_key, "user", "pit:req-revoked") == errno.EKEYREVOKED
    hidden = space.add_key("user", "pit:req-hidden", b"x", "@s")
    hidden.set_perm(0x37010000)  # no SEARCH for possessor or owner
    assert errno_of(space.request_key, "user", "pit:req-hidden") == errno.EACCES
    # A searchable key one keyring down is found even though the direct lookup misses.
    sub = space.add_key("keyring", "pit:req-sub", None, "@s")
    below = space.add_key("user", "pit:req-below", b"y", sub)
    assert space.request_key("user", "pit:req-below") == below
    sub.set_perm(_RING_NO_POSSESSOR_SEARCH)
    assert errno_of(space.request_key, "user", "pit:req-below") == errno.ENOKEY


@pytest.mark.parametrize("how", ["unsearchable", "revoked", "invalidated"])
def test_possession_through_the_session_keyring_needs_it_live_and_searchable(space: kt.KeyspaceAPI, how: str) -> None:
    ses = space.session
    k = space.add_key("user", "pit:in-session", b"s", ses)
    k.set_perm(_POSSESSOR_ONLY)
    assert k.read() == b"s"
    if how == "unsearchable":
        ses.set_perm(_RING_NO_POSSESSOR_SEARCH)
    elif how == "revoked":
        ses.revoke()
    else:
        ses.invalidate()
    if how == "revoked":
        # Revoking a keyring also clears it (keyring_revoke), so the key loses its only
        # link: the kernel frees it after an RCU grace period (EACCES until then,
        # ENOKEY after), the Keyspace at once.
        assert errno_of(k.read) in (errno.EACCES, errno.ENOKEY)
    else:
        assert errno_of(k.read) == errno.EACCES
