"""secret() hands plaintext over only as the kernel hands a key to its in-kernel users.

The key must be possessed (found from the caller's keyrings with SEARCH); READ
permission alone is not enough; an encrypted key's master is looked up with the
caller's credentials.
"""

from __future__ import annotations

import errno

import pytest

import keyring_types as kt

ALL = 0x3F3F3F3F


def _in_user_keyring(ks: kt.Keyspace, type_name: str, desc: str, payload: bytes, perm: int) -> kt.Key:
    """A key of ``ks`` with mask ``perm`` that sits only in its @u (set while possessed)."""
    k = ks.add_key(type_name, desc, payload, "@s")
    k.set_perm(perm)
    ks.user_keyring.link(k)
    ks.session.unlink(k)
    return k


def _errno(fn) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        with fn():
            pass
    return info.value.errno


def test_possessed_logon_key_hands_over_its_secret() -> None:
    ks = kt.Keyspace()
    k = ks.add_key("logon", "core:sec-logon", b"s3cret", "@s")
    with k.secret() as mv:
        assert bytes(mv) == b"s3cret"


def test_other_uid_with_read_but_no_possession_gets_eacces() -> None:
    owner = kt.Keyspace(uid=1000, gid=1000)
    # Every bit for everyone, but not in the other uid's keyrings.
    k = _in_user_keyring(owner, "logon", "core:sec-other", b"s3cret", ALL)
    other = owner.as_user(2000, 2000)
    assert _errno(other.key(k.serial).secret) == errno.EACCES


def test_readable_user_key_not_possessed_is_not_handed_over() -> None:
    owner = kt.Keyspace(uid=1000, gid=1000)
    k = _in_user_keyring(owner, "user", "core:sec-readable", b"s3cret", ALL)
    other = owner.as_user(2000, 2000)
    assert other.key(k.serial).read() == b"s3cret"  # KEYCTL_READ allows READ without possession
    assert _errno(other.key(k.serial).secret) == errno.EACCES


def test_own_key_in_unlinked_user_keyring_is_eacces_with_a_hint() -> None:
    ks = kt.Keyspace(uid=1000, gid=1000)
    k = ks.add_key("logon", "core:sec-u", b"s3cret", "@u")
    with pytest.raises(OSError) as info:
        with k.secret():
            pass
    assert info.value.errno == errno.EACCES
    assert "@u" in str(info.value) and "s3cret" not in str(info.value)
    ks.session.link(ks.user_keyring)
    with k.secret() as mv:
        assert bytes(mv) == b"s3cret"


def test_encrypted_key_needs_the_master_with_the_callers_credentials() -> None:
    owner = kt.Keyspace(uid=1000, gid=1000)
    proc = owner.keyring("@p", create=True)  # the owner's process keyring: not shared
    owner.add_key("user", "core:kmk", b"m" * 32, proc)
    enc = owner.add_key("encrypted", "core:evm", "new user:core:kmk 32", "@s")
    enc.set_perm(ALL)
    with enc.secret() as mv:
        assert len(mv) == 32
    other = owner.as_user(2000, 2000)
    # The other uid possesses the encrypted key (same session) but cannot reach its master.
    assert _errno(other.key(enc.serial).secret) == errno.ENOKEY
    with pytest.raises(OSError) as info:
        other.key(enc.serial).read()
    assert info.value.errno == errno.ENOKEY


def test_secret_of_revoked_or_missing_key() -> None:
    ks = kt.Keyspace()
    k = ks.add_key("logon", "core:sec-rev", b"s", "@s")
    k.revoke()
    assert _errno(k.secret) == errno.EKEYREVOKED
    assert _errno(ks.handle(0x7FFFFFF0).secret) == errno.ENOKEY
