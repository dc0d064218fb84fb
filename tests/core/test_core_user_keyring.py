"""The per-user keyrings as the kernel's register keeps them (look_up_user_keyrings)."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess

import pytest

import keyring_types as kt
from keyring_types.core.quota import QuotaLimits

UID = 45551


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_invalidated_user_keyring_is_replaced() -> None:
    ks = kt.Keyspace(uid=UID, gid=UID)
    u = ks.keyring("@u", create=True).serial
    us = ks.keyring("@us").serial
    ks.key(u).invalidate()
    u2 = ks.keyring("@u").serial
    assert u2 != u
    k = ks.add_key("user", "core:u-again", b"v", "@u")
    assert k.serial in ks.keyring("@u")
    # The existing user session keyring stays, and is not linked to the new one (as the kernel).
    assert ks.keyring("@us").serial == us
    assert u2 not in ks.keyring("@us")
    assert u not in ks._world.keys


def test_invalidated_user_session_keyring_is_replaced_and_links_the_user_keyring() -> None:
    ks = kt.Keyspace(uid=UID, gid=UID)
    u = ks.keyring("@u", create=True).serial
    us = ks.keyring("@us").serial
    ks.key(us).invalidate()
    us2 = ks.keyring("@us").serial
    assert us2 != us and u in ks.keyring("@us")
    assert ks.keyring("@u").serial == u


def test_revoked_user_keyring_is_enokey_until_reaped_then_replaced() -> None:
    clock = FakeClock()
    ks = kt.Keyspace(uid=UID, gid=UID, clock=clock, gc_delay=300)
    u = ks.keyring("@u", create=True)
    u.revoke()
    for alias in ("@u", "@us"):
        with pytest.raises(OSError) as info:
            ks.keyring(alias)
        assert info.value.errno == errno.ENOKEY
    clock.t += 301
    assert ks.keyring("@u").serial != u.serial


def test_expired_user_keyring_is_enokey() -> None:
    clock = FakeClock()
    ks = kt.Keyspace(uid=UID, gid=UID, clock=clock, gc_delay=300)
    u = ks.keyring("@u", create=True)
    u.set_timeout(1)
    clock.t += 2
    with pytest.raises(OSError) as info:
        ks.keyring("@u")
    assert info.value.errno == errno.ENOKEY
    clock.t += 300
    assert ks.keyring("@u").serial != u.serial


def _user_rings(ks: kt.Keyspace) -> list[str]:
    return sorted(r.description for r in ks._world.keys.values() if r.description.startswith("_uid"))


def test_first_user_keyrings_over_the_byte_quota_leave_nothing_unreachable() -> None:
    # The session "_ses" (5 bytes) plus "_uid.45551" (11) and "_uid_ses.45551" (15)
    # fit; the link between the two (4 more bytes) does not.
    ks = kt.Keyspace(uid=UID, gid=UID, limits=QuotaLimits(maxbytes=5 + 11 + 15 + 2))
    with pytest.raises(OSError) as info:
        ks.keyring("@u", create=True)
    assert info.value.errno == errno.EDQUOT
    # Only the user keyring is left, registered for the next try, and charged.
    assert _user_rings(ks) == ["_uid.45551"]
    assert ks.quota(UID).qnkeys == 2 and ks.quota(UID).qnbytes == 5 + 11
    # The retry, once the limit allows it, uses the same user keyring.
    uid_ring = ks._world.uid_ring_alone[UID]
    ks.quota(UID).maxbytes = 1000
    assert ks.keyring("@u", create=True).serial == uid_ring.serial
    assert _user_rings(ks) == ["_uid.45551", "_uid_ses.45551"]


def test_first_user_keyrings_over_the_key_quota_keep_the_user_keyring() -> None:
    ks = kt.Keyspace(uid=UID, gid=UID, limits=QuotaLimits(maxkeys=2))
    with pytest.raises(OSError) as info:
        ks.keyring("@u", create=True)
    assert info.value.errno == errno.EDQUOT
    assert _user_rings(ks) == ["_uid.45551"]
    ks.quota(UID).maxkeys = 3
    ks.keyring("@u", create=True)
    assert _user_rings(ks) == ["_uid.45551", "_uid_ses.45551"]
    assert ks.quota(UID).qnkeys == 3


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("keyctl") or not shutil.which("setpriv"), reason="needs root, keyctl, setpriv")
def test_kernel_replaces_an_invalidated_user_keyring() -> None:
    """What the in-process tests above follow, checked on this kernel with a fresh uid."""
    uid = 1_800_000_000 + random.SystemRandom().randrange(1 << 24)  # owns no keys yet
    # The kernel's GC takes an invalidated keyring out of its register of user keyrings
    # asynchronously (hence the sleep; the Keyspace does it at once).  Keys are named
    # by serial where a special id would make a new user keyring, and
    # the script ends with none left but the revoked one, which the kernel's GC reaps.
    script = (
        "a=$(keyctl id @u); us=$(keyctl id @us); keyctl invalidate $a; sleep 0.5; b=$(keyctl id @u); "
        "[ \"$a\" != \"$b\" ] && echo new-u; [ \"$us\" = \"$(keyctl id @us)\" ] && echo same-us; "
        "keyctl rlist $us | tr ' ' '\\n' | grep -qx \"$b\" || echo not-linked; "
        "keyctl revoke $b; keyctl id @u 2>&1 | grep -q 'not available' && echo revoked-enokey; "
        "keyctl id @us 2>&1 | grep -q 'not available' && echo revoked-us-enokey; keyctl invalidate $us"
    )
    out = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "keyctl", "session", "-", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    assert out[-5:] == ["new-u", "same-us", "not-linked", "revoked-enokey", "revoked-us-enokey"], out
