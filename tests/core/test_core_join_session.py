"""join_session_keyring as this machine's kernel does it, on both backends.

Observed on Linux 6.x: a named keyring that has expired or been revoked is not
joined (a new keyring of that name is made, even when the expired one is the
current session); ``_uid.N`` and ``_uid_ses.N`` of the caller's own uid join the
caller's user and user-session keyrings themselves; another uid's name, which
the caller may not search, makes a new keyring of that name.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

import keyring_types as kt


@contextmanager
def _holder(space: kt.KeyspaceAPI) -> Iterator[list[kt.Key]]:
    """Keys put in the list are linked in @u, keeping a left session keyring alive; unlinked afterwards.

    Not @p: a process keyring, once made, stays for the rest of the test process
    and changes what the kernel's request_key reports in later tests.
    """
    user = space.keyring("@u", create=True)
    held: list[kt.Key] = []
    try:
        yield held
    finally:
        for key in held:
            user.unlink(key)


def _name(tag: str) -> str:
    return f"core-join-{tag}-{os.getpid()}-{random.randrange(1 << 30)}"


def test_joining_an_expired_named_keyring_makes_a_new_one(space: kt.KeyspaceAPI) -> None:
    name = _name("exp")
    with _holder(space) as held:
        ring = space.join_session_keyring(name)
        space.keyring("@u").link(ring)
        held.append(ring)
        ring.set_timeout(1)
        space.join_session_keyring()
        time.sleep(2.05)  # kernel time has one-second granularity
        again = space.join_session_keyring(name)
        assert again.serial != ring.serial
        assert space.session.serial == again.serial
        assert again.describe().split(";")[-1] == name
        again.invalidate()


def test_rejoining_the_expired_current_session_makes_a_new_one(space: kt.KeyspaceAPI) -> None:
    name = _name("cur")
    ring = space.join_session_keyring(name)
    ring.set_timeout(1)
    time.sleep(2.05)
    again = space.join_session_keyring(name)
    assert again.serial != ring.serial
    assert space.session.serial == again.serial
    again.invalidate()


def test_joining_a_revoked_named_keyring_makes_a_new_one(space: kt.KeyspaceAPI) -> None:
    name = _name("rev")
    with _holder(space) as held:
        ring = space.join_session_keyring(name)
        space.keyring("@u").link(ring)
        held.append(ring)
        ring.revoke()
        space.join_session_keyring()
        again = space.join_session_keyring(name)
        assert again.serial != ring.serial
        again.invalidate()


def test_joining_own_user_keyring_names(space: kt.KeyspaceAPI) -> None:
    uid = os.geteuid() if isinstance(space, kt.KernelKeyspace) else space.cred.uid  # type: ignore[attr-defined]
    u = space.keyring("@u", create=True).serial
    us = space.keyring("@us", create=True).serial
    assert space.join_session_keyring(f"_uid.{uid}").serial == u
    assert space.keyring("@s").serial == u
    assert space.join_session_keyring(f"_uid_ses.{uid}").serial == us
    assert space.keyring("@s").serial == us
    # Asked to create @s, a caller whose session is a user keyring gets a new anonymous one.
    ses = space.keyring("@s", create=True)
    assert ses.serial not in (u, us)
    assert ses.describe().split(";")[-1] == "_ses"
    assert space.keyring("@s").serial == ses.serial


def test_joining_another_uids_user_keyring_name_makes_a_new_keyring(space: kt.KeyspaceAPI) -> None:
    other = 1_900_000_000 + random.randrange(1 << 20)  # a uid that owns no keys
    ring = space.join_session_keyring(f"_uid.{other}")
    assert ring.serial == space.session.serial
    assert ring.describe().split(";")[-1] == f"_uid.{other}"
    assert ring.serial != space.keyring("@u", create=True).serial
    ring.invalidate()
    space.join_session_keyring()
