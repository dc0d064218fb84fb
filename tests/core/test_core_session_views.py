"""Joining a session changes only the joiner's credentials (keyctl_join_session_keyring)."""

from __future__ import annotations

import gc

import keyring_types as kt


def test_view_joining_a_session_leaves_the_creators_session() -> None:
    ks = kt.Keyspace(uid=1000, gid=1000)
    k = ks.add_key("user", "core:ses-keep", b"v", "@s")
    ses = ks.session.serial
    view = ks.as_user(2000, 2000)
    view.join_session_keyring()
    assert ks.session.serial == ses
    assert k.read() == b"v"
    assert ks.request_key("user", "core:ses-keep").serial == k.serial
    assert view.session.serial != ses


def test_view_joining_a_named_session_leaves_the_creators_session() -> None:
    ks = kt.Keyspace(uid=1000, gid=1000)
    k = ks.add_key("user", "core:ses-keep2", b"v", "@s")
    view = ks.as_user(2000, 2000)
    view.join_session_keyring("core-view-named")
    assert k.read() == b"v"


def test_parent_joining_a_session_leaves_the_views_session() -> None:
    ks = kt.Keyspace(uid=1000, gid=1000)
    k = ks.add_key("user", "core:ses-view", b"v", "@s")
    old = ks.session.serial
    view = ks.as_user(2000, 2000)
    ks.join_session_keyring()
    assert ks.session.serial != old
    # The view still holds the old session, and through it the key.
    assert view.session.serial == old
    assert view.request_key("user", "core:ses-view").serial == k.serial
    assert k.serial in ks._world.keys


def test_a_session_held_by_no_one_is_destroyed() -> None:
    ks = kt.Keyspace(uid=1000, gid=1000)
    k = ks.add_key("user", "core:ses-gone", b"v", "@s")
    old = ks.session.serial
    view = ks.as_user(2000, 2000)
    ks.join_session_keyring()
    assert old in ks._world.keys
    del view
    gc.collect()
    ks.session.keys()  # an operation applies a release deferred by a busy world
    assert old not in ks._world.keys
    assert k.serial not in ks._world.keys
