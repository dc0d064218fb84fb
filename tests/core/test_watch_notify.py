"""KEYCTL_WATCH_KEY in process: a record at every place the kernel calls notify_key(), in its layout."""

from __future__ import annotations

import ctypes
import errno
import resource
import struct
import threading
from pathlib import Path

import pytest
from conftest import errno_of

import keyring_types as kt
from keyring_types.core import watch as w


class _WatchNotification(ctypes.Structure):
    """include/uapi/linux/watch_queue.h, laid out by the C compiler's rules (ctypes)."""

    _fields_ = [("type", ctypes.c_uint32, 24), ("subtype", ctypes.c_uint32, 8), ("info", ctypes.c_uint32)]


class _KeyNotification(ctypes.Structure):
    """include/uapi/linux/keyctl.h: struct key_notification."""

    _fields_ = [("watch", _WatchNotification), ("key_id", ctypes.c_uint32), ("aux", ctypes.c_uint32)]


class _Removal(ctypes.Structure):
    """include/uapi/linux/watch_queue.h: struct watch_notification_removal."""

    _fields_ = [("watch", _WatchNotification), ("id", ctypes.c_uint64)]


def _events(q: kt.WatchQueue) -> list[tuple[str, int, int]]:
    return [(n.name, n.key_id, n.aux) for n in q.notifications()]


@pytest.fixture
def ks() -> kt.Keyspace:
    return kt.Keyspace()


def test_records_have_the_uapi_layout(ks: kt.Keyspace) -> None:
    assert ctypes.sizeof(_KeyNotification) == 16 and ctypes.sizeof(_Removal) == 16
    ring = ks.add_key("keyring", "ring", None, "@s")
    key = ks.add_key("user", "k", b"v", "@s")
    q = kt.WatchQueue()
    ring.watch(q, 0xA5)
    ring.link(key)
    ring.watch(q, -1)
    link, removal = q.notifications()
    c = _KeyNotification.from_buffer_copy(link.raw)
    assert (c.watch.type, c.watch.subtype) == (w.WATCH_TYPE_KEY_NOTIFY, w.NOTIFY_KEY_LINKED)
    assert c.watch.info == (0xA5 << 8) | 16  # length 16, watch id in bits 8..15
    assert (c.key_id, c.aux) == (ring.serial, key.serial)
    r = _Removal.from_buffer_copy(removal.raw)
    assert (r.watch.type, r.watch.subtype) == (w.WATCH_TYPE_META, w.WATCH_META_REMOVAL_NOTIFICATION)
    assert r.watch.info == (0xA5 << 8) | 16 and r.id == ring.serial
    assert (removal.watch_id, removal.key_id) == (0xA5, ring.serial)


def test_update_setattr_revoke(ks: kt.Keyspace) -> None:
    key = ks.add_key("user", "k", b"v", "@s")
    q = kt.WatchQueue()
    key.watch(q, 1)
    key.update(b"w")
    ks.add_key("user", "k", b"x", "@s")  # add_key over an existing key updates it
    key.set_perm(0x3F3F0000)
    key.chown(gid=ks.cred.gid)
    key.set_timeout(100)
    key.revoke()
    s = key.serial
    assert _events(q) == [("upd", s, 0), ("upd", s, 0), ("attr", s, 0), ("attr", s, 0), ("attr", s, 0), ("rev", s, 0)]


def test_failed_operations_post_nothing(ks: kt.Keyspace) -> None:
    key = ks.add_key("user", "k", b"v", "@s")
    q = kt.WatchQueue()
    key.watch(q, 1)
    assert errno_of(key.set_perm, 1 << 31) == errno.EINVAL
    key.chown()  # uid and gid -1: returns before anything (and before notify)
    key.revoke()
    assert [n.name for n in q.notifications()] == ["rev"]
    assert errno_of(key.revoke) == errno.EKEYREVOKED  # no second record
    assert errno_of(key.update, b"w") == errno.EKEYREVOKED
    assert q.notifications() == []


def test_link_unlink_clear_move_restrict(ks: kt.Keyspace) -> None:
    a = ks.add_key("keyring", "a", None, "@s")
    b = ks.add_key("keyring", "b", None, "@s")
    qa, qb = kt.WatchQueue(), kt.WatchQueue()
    a.watch(qa, 1)
    b.watch(qb, 2)
    k = ks.add_key("user", "k", b"v", a)  # a new key linked into a watched keyring
    ks.key("@s").link(k)  # keeps k alive through the unlinks below
    a.link(k)  # linking it again still runs __key_link
    ks.move(k, a, b)
    b.unlink(k)
    a.link(k)
    a.clear()
    b.restrict()
    assert _events(qa) == [
        ("link", a.serial, k.serial),
        ("link", a.serial, k.serial),
        ("unlk", a.serial, k.serial),
        ("link", a.serial, k.serial),
        ("clr", a.serial, 0),
    ]
    assert _events(qb) == [("link", b.serial, k.serial), ("unlk", b.serial, k.serial), ("attr", b.serial, 0)]


def test_invalidate_then_the_watch_goes_with_the_key(ks: kt.Keyspace) -> None:
    key = ks.add_key("user", "k", b"v", "@s")
    q = kt.WatchQueue()
    key.watch(q, 3)
    key.invalidate()
    assert _events(q) == [("inv", key.serial, 0), ("removed", key.serial, 0)]


def test_destroyed_key_posts_its_removal(ks: kt.Keyspace) -> None:
    ring = ks.add_key("keyring", "r", None, "@s")
    key = ks.add_key("user", "k", b"v", ring)
    q = kt.WatchQueue()
    key.watch(q, 4)
    ring.watch(q, 5)
    ring.unlink(key)  # the last link: the key is destroyed
    got = q.notifications()
    assert [(n.name, n.watch_id, n.key_id, n.aux) for n in got] == [
        ("unlk", 5, ring.serial, key.serial),
        ("removed", 4, key.serial, 0),
    ]


def test_instantiation_and_negation_by_upcall(ks: kt.Keyspace) -> None:
    q = kt.WatchQueue()

    def handler(request: kt.UpcallRequest) -> None:
        space = request.keyspace
        space.watch_key(request.key, q, 7)
        if request.callout_info == b"yes":
            space.instantiate(request.key, b"payload", 0)
        else:
            space.reject(request.key, 10, errno.EKEYREJECTED, 0)

    kt.register_request_key_handler("user", "watch-up-*", handler)
    try:
        good = ks.request_key("user", "watch-up-1", "yes")
        assert errno_of(ks.request_key, "user", "watch-up-2", "no") == errno.EKEYREJECTED
    finally:
        kt.unregister_request_key_handler("user", "watch-up-*")
    got = q.notifications()
    assert [(n.name, n.key_id) for n in got] == [("inst", good.serial), ("inst", got[1].key_id)]
    assert got[0].aux == 0
    assert got[1].aux == -errno.EKEYREJECTED  # -error, as key_reject_and_link posts it
    assert struct.unpack_from("=I", got[1].raw, 12)[0] == 2**32 - errno.EKEYREJECTED


def test_watch_ids_per_queue_and_several_queues(ks: kt.Keyspace) -> None:
    key = ks.add_key("user", "k", b"v", "@s")
    q1, q2 = kt.WatchQueue(), kt.WatchQueue()
    key.watch(q1, 0)
    key.watch(q2, 255)
    key.update(b"w")
    assert [n.watch_id for n in q1.notifications()] == [0]
    assert [n.watch_id for n in q2.notifications()] == [255]


def test_errno_of_keyctl_watch_key(ks: kt.Keyspace) -> None:
    key = ks.add_key("user", "k", b"v", "@s")
    q = kt.WatchQueue()
    assert errno_of(key.watch, q, 256) == errno.EINVAL
    assert errno_of(key.watch, q, -2) == errno.EINVAL
    assert errno_of(key.watch, 5, 0) == errno.EINVAL  # not a watch queue
    assert errno_of(ks.watch_key, 0x7FFF0000, q, 0) == errno.ENOKEY
    assert errno_of(key.watch, q, -1) == errno.EBADSLT  # nothing to remove
    key.watch(q, 1)
    assert errno_of(key.watch, q, 2) == errno.EBUSY  # one watch per queue and key
    other = kt.WatchQueue()
    assert errno_of(key.watch, other, -1) == errno.EBADSLT
    other.close()
    assert errno_of(key.watch, other, 0) == errno.ENOENT  # a closed queue
    # Watching needs VIEW: the range check comes first, then the lookup.
    key.set_perm(0x3F000000 & ~0x01000000)  # possessor all but VIEW
    assert errno_of(key.watch, kt.WatchQueue(), 0) == errno.EACCES
    assert errno_of(key.watch, kt.WatchQueue(), 300) == errno.EINVAL


def test_special_ids_are_created_for_a_watch(ks: kt.Keyspace) -> None:
    q = kt.WatchQueue()
    ks.watch_key("@u", q, 0)  # KEY_LOOKUP_CREATE, as keyctl_watch_key asks
    user = ks.key("@u")
    ks.add_key("user", "k", b"v", "@u")
    assert [n.name for n in q.notifications()] == ["link"]
    assert user.serial > 0


def test_removal_stops_records_and_close_removes_watches(ks: kt.Keyspace) -> None:
    key = ks.add_key("user", "k", b"v", "@s")
    q = kt.WatchQueue()
    key.watch(q, 9)
    key.watch(q, -1)
    key.update(b"w")
    assert [n.name for n in q.notifications()] == ["removed"]
    q2 = kt.WatchQueue()
    key.watch(q2, 1)
    q2.close()
    key.update(b"x")
    assert len(q2) == 0
    key.watch(q, 9)  # the closed queue's watch is gone, the key still watchable
    key.update(b"y")
    assert [n.name for n in q.notifications()] == ["upd"]


def test_overflow_marks_the_loss(ks: kt.Keyspace) -> None:
    notes = resource.getpagesize() // 128
    q = kt.WatchQueue(pages=1)
    assert q.capacity == notes
    key = ks.add_key("user", "k", b"v", "@s")
    key.watch(q, 1)
    for i in range(notes + 5):
        key.update(b"%d" % i)
    got = q.notifications()
    assert [n.name for n in got] == ["upd"] * notes + ["lost"]
    assert got[-1].raw == struct.pack("=II", w.WATCH_META_LOSS_NOTIFICATION << 24, 8)
    key.update(b"again")
    assert [n.name for n in q.notifications()] == ["upd"]


def test_queue_size_and_read_rules() -> None:
    assert errno_of(kt.WatchQueue, 0) == errno.EINVAL
    assert errno_of(kt.WatchQueue, 10**6) == errno.EINVAL
    q = kt.WatchQueue()
    assert errno_of(q.read) == errno.EAGAIN
    q.post(b"\x01\x00\x00\x01\x10\x00\x00\x00" + bytes(8))
    assert errno_of(q.read, 8) == errno.ENOBUFS  # whole records only
    assert len(q.read(16)) == 16
    assert errno_of(w.decode, b"\x00" * 4) == errno.EINVAL
    assert errno_of(w.decode, struct.pack("=II", 1, 4)) == errno.EINVAL


def test_capabilities_say_notify(ks: kt.Keyspace) -> None:
    assert "notify" in ks.capabilities()


def test_a_store_keyspace_does_not_claim_notify(tmp_path: Path) -> None:
    """Another process's change to the shared store reaches no watch here, so `notify` is not claimed."""
    ks = kt.Keyspace(store=tmp_path / "keys.db")
    try:
        assert "notify" not in ks.capabilities()
        key = ks.add_key("user", "k", b"v", "@s")
        q = kt.WatchQueue()
        key.watch(q, 1)  # this process's own changes are still posted
        key.update(b"w")
        assert [n.name for n in q.notifications()] == ["upd"]
    finally:
        store = ks.store
        assert store is not None
        store.close()


def test_read_waits_for_a_record_from_another_thread(ks: kt.Keyspace) -> None:
    key = ks.add_key("user", "k", b"v", "@s")
    q = kt.WatchQueue()
    key.watch(q, 1)
    assert errno_of(q.read, timeout=0.01) == errno.EAGAIN  # waited, nothing came
    timer = threading.Timer(0.05, key.update, (b"w",))
    timer.start()
    try:
        data = q.read(timeout=10)
    finally:
        timer.join()
    assert [n.name for n in w.decode(data)] == ["upd"]


def test_watches_per_uid_are_limited_by_rlimit_nofile(ks: kt.Keyspace) -> None:
    """add_one_watch: a uid holding RLIMIT_NOFILE watches gets EAGAIN; removed watches are uncharged."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    key = ks.add_key("user", "k", b"v", "@s")
    resource.setrlimit(resource.RLIMIT_NOFILE, (3, hard))
    try:
        queues = [kt.WatchQueue() for _ in range(4)]
        for q in queues[:3]:
            key.watch(q, 0)
        assert errno_of(key.watch, queues[3], 0) == errno.EAGAIN
        key.watch(queues[0], -1)  # removal
        key.watch(queues[3], 0)
        queues[1].close()  # closing the queue
        key.watch(queues[0], 0)
        assert errno_of(key.watch, kt.WatchQueue(), 0) == errno.EAGAIN
        key.invalidate()  # the key's destruction ends its watches
        other = ks.add_key("user", "k2", b"v", "@s")
        for q in (queues[0], queues[2], queues[3]):  # all three charges were given back
            other.watch(q, 0)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
