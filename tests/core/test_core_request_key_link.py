"""request_key(..., dest) needs LINK on the key it found, as the kernel's request_key_and_link checks."""

from __future__ import annotations

import errno

import pytest

import keyring_types as kt

# Possessor: VIEW READ WRITE SEARCH SETATTR, no LINK; user: VIEW.
NO_LINK = 0x2F010000


def test_request_key_into_dest_needs_link(space: kt.KeyspaceAPI) -> None:
    k = space.add_key("user", "core:rk-nolink", b"v", "@s")
    k.set_perm(NO_LINK)
    dest = space.add_key("keyring", "core:rk-dest", None, "@s")
    with pytest.raises(OSError) as info:
        space.request_key("user", "core:rk-nolink", None, dest)
    assert info.value.errno == errno.EACCES
    assert k.serial not in dest
    # Without a destination the search alone needs only SEARCH.
    assert space.request_key("user", "core:rk-nolink").serial == k.serial


def test_request_key_into_dest_links_with_link(space: kt.KeyspaceAPI) -> None:
    k = space.add_key("user", "core:rk-link", b"v", "@s")
    dest = space.add_key("keyring", "core:rk-dest2", None, "@s")
    assert space.request_key("user", "core:rk-link", None, dest).serial == k.serial
    assert k.serial in dest


def test_other_uid_cannot_keep_a_key_its_owner_unlinks() -> None:
    owner = kt.Keyspace(uid=1000, gid=1000)
    k = owner.add_key("user", "core:rk-kept", b"v", "@s")
    # The owner lets the session's possessors search and read it, not link it.
    k.set_perm(0x0B3F0000)
    other = owner.as_user(2000, 2000)
    mine = other.keyring("@u", create=True)
    with pytest.raises(OSError) as info:
        other.request_key("user", "core:rk-kept", None, mine)
    assert info.value.errno == errno.EACCES
    owner.session.unlink(k)
    with pytest.raises(OSError) as info:
        other.key(k.serial).read()
    assert info.value.errno == errno.ENOKEY
