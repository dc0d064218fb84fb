"""The in-process Keyspace: the kernel's key lifecycle, permissions, quotas and errors.

Facts asserted here come from ../shared/spec/kernel-keytypes.md §3–4 (verified on
this machine's kernel); the differential test checks the same against the kernel
with random traffic.  Expiry is driven by an injected clock.
"""

from __future__ import annotations

import errno
import struct
import threading

import pytest

import keyring_types as kt
from keyring_types.secret import live_secret_bytes


class Clock:
    """A settable clock for expiry and GC."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def errno_of(fn, *args, **kwargs) -> int:
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    assert info.value.strerror, "every error carries a message"
    return info.value.errno


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ks(clock: Clock) -> kt.Keyspace:
    return kt.Keyspace(uid=0, gid=0, clock=clock)


# -- add_key / read / describe -------------------------------------------------


def test_add_read_describe(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "app:db", b"secret", kt.KEY_SPEC_SESSION_KEYRING)
    assert k.read() == b"secret"
    assert k.describe() == "user;0;0;3f010000;app:db"
    assert (k.type, k.description) == ("user", "app:db")
    assert ks.request_key("user", "app:db") == k
    assert ks.key(k.serial) == k


def test_serials_are_random_positive_31_bit_and_unique(ks: kt.Keyspace) -> None:
    serials = {ks.add_key("user", f"k{i}", b"x", "@s").serial for i in range(300)}
    assert len(serials) == 300
    assert all(3 <= s < 2**31 for s in serials)
    assert max(serials) - min(serials) > 2**20, "serials are spread, not sequential"


def test_description_may_contain_semicolons(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "desc;with;semis", b"x", "@s")
    assert k.describe() == "user;0;0;3f010000;desc;with;semis"


@pytest.mark.parametrize(
    ("type_name", "desc", "payload", "ring", "err"),
    [
        ("user", "d", b"", "@s", errno.EINVAL),
        ("user", "d", b"x" * 32768, "@s", errno.EINVAL),
        ("user", "d", b"x" * (1024 * 1024), "@s", errno.EINVAL),
        ("user", "", b"x", "@s", errno.EINVAL),
        ("user", "d" * 4096, b"x", "@s", errno.EINVAL),
        ("", "d", b"x", "@s", errno.EINVAL),
        ("t" * 32, "d", b"x", "@s", errno.EINVAL),
        (".internal", "d", b"x", "@s", errno.EPERM),
        ("nosuchtype", "d", b"x", "@s", errno.ENODEV),
        ("keyring", ".dot", None, "@s", errno.EPERM),
        ("keyring", "r", b"payload", "@s", errno.EINVAL),
        ("logon", "nocolon", b"x", "@s", errno.EINVAL),
        ("logon", ":leading", b"x", "@s", errno.EINVAL),
        ("user", "d", b"x", 0, errno.EINVAL),
        ("user", "d", b"x", 123, errno.ENOKEY),
        ("user", "d", b"x", "@g", errno.EINVAL),
        ("user", "d", b"x", -9, errno.EINVAL),
        ("user", "d", b"x", "@a", errno.ENOKEY),
    ],
)
def test_add_key_errors_change_nothing(ks: kt.Keyspace, type_name, desc, payload, ring, err) -> None:
    before = sorted(ks._world.keys)
    quota = (ks.quota().qnkeys, ks.quota().qnbytes)
    assert errno_of(ks.add_key, type_name, desc, payload, ring) == err
    assert sorted(ks._world.keys) == before
    assert (ks.quota().qnkeys, ks.quota().qnbytes) == quota


def test_destination_errors_come_first(ks: kt.Keyspace) -> None:
    # The kernel resolves the destination before it looks the type up.
    assert errno_of(ks.add_key, "nosuchtype", "d", b"x", 123) == errno.ENOKEY
    user = ks.add_key("user", "u", b"x", "@s")
    assert errno_of(ks.add_key, "user", "d", b"x", user) == errno.ENOTDIR


def test_limits_at_the_edges(ks: kt.Keyspace) -> None:
    ks.add_key("user", "d" * 4095, b"x", "@s")
    ks.add_key("user", "big", b"x" * 32767, "@s")
    ks.add_key("logon", "a:", b"x", "@s")


def test_default_masks(ks: kt.Keyspace) -> None:
    assert ks.add_key("user", "u", b"x", "@s").describe().split(";")[3] == "3f010000"
    assert ks.add_key("logon", "l:x", b"x", "@s").describe().split(";")[3] == "3d010000"
    assert ks.add_key("keyring", "r", None, "@s").describe().split(";")[3] == "3f010000"
    assert ks.session.describe() == "keyring;0;0;3f030000;_ses"
    assert ks.user_keyring.describe() == "keyring;0;65534;1f3f0000;_uid.0"
    assert ks.keyring("@us").describe() == "keyring;0;65534;1f3f0000;_uid_ses.0"


def test_logon_is_unreadable_but_usable_in_process(ks: kt.Keyspace) -> None:
    k = ks.add_key("logon", "svc:pw", b"hunter2", "@s")
    assert errno_of(k.read) == errno.EOPNOTSUPP
    with k.secret() as mv:
        assert bytes(mv) == b"hunter2"


# -- update ---------------------------------------------------------------------


def test_add_key_on_same_description_updates_in_place(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "d", b"one", "@s")
    k2 = ks.add_key("user", "d", b"two" * 1000, "@s")
    assert k2.serial == k.serial and k.read() == b"two" * 1000


def test_keyctl_update_is_limited_to_one_page(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "d", b"x", "@s")
    k.update(b"y" * 4096)
    assert errno_of(k.update, b"y" * 4097) == errno.EINVAL
    assert k.read() == b"y" * 4096
    # add_key over the same description still accepts the type's own limit.
    ks.add_key("user", "d", b"z" * 32767, "@s")
    assert k.read() == b"z" * 32767


def test_update_errors(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "d", b"x", "@s")
    assert errno_of(k.update, b"") == errno.EINVAL
    r = ks.add_key("keyring", "r", None, "@s")
    assert errno_of(r.update, b"") == errno.EOPNOTSUPP
    assert errno_of(ks.sys_update, 4242, b"x" * 5000) == errno.EINVAL  # size is checked before lookup
    assert errno_of(ks.sys_update, 4242, b"x") == errno.ENOKEY


def test_keyring_add_displaces_instead_of_updating(ks: kt.Keyspace) -> None:
    r1 = ks.add_key("keyring", "r", None, "@s")
    r2 = ks.add_key("keyring", "r", None, "@s")
    assert r1.serial != r2.serial
    assert errno_of(r1.describe) == errno.ENOKEY, "the displaced keyring had no other link"
    assert ks.session.keys() == [r2]


def test_update_clears_timeout(ks: kt.Keyspace, clock: Clock) -> None:
    k = ks.add_key("user", "d", b"x", "@s")
    k.set_timeout(10)
    k.update(b"y")
    clock.now += 100
    assert k.read() == b"y"


# -- expiry, revocation, invalidation, GC ----------------------------------------


def test_expired_key_errors(ks: kt.Keyspace, clock: Clock) -> None:
    k = ks.add_key("user", "d", b"x", "@s")
    k.set_timeout(5)
    clock.now += 4
    assert k.read() == b"x"
    clock.now += 1
    assert errno_of(k.read) == errno.EKEYEXPIRED
    assert errno_of(k.describe) == errno.EKEYEXPIRED
    assert errno_of(k.update, b"y") == errno.EKEYEXPIRED
    assert errno_of(ks.session.search, "user", "d") == errno.EKEYEXPIRED
    # request_key skips expired keys.
    assert errno_of(ks.request_key, "user", "d") == errno.ENOKEY


def test_add_key_revives_an_expired_key_but_replaces_a_revoked_one(ks: kt.Keyspace, clock: Clock) -> None:
    k = ks.add_key("user", "d", b"x", "@s")
    k.set_timeout(1)
    clock.now += 2
    revived = ks.add_key("user", "d", b"y", "@s")
    assert revived.serial == k.serial and k.read() == b"y"
    k.revoke()
    fresh = ks.add_key("user", "d", b"z", "@s")
    assert fresh.serial != k.serial
    assert errno_of(k.read) == errno.ENOKEY, "the revoked key lost its only link"


def test_revoked_key_errors(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "d", b"x", "@s")
    r = ks.add_key("keyring", "r", None, "@s")
    r.link(k)
    k.revoke()
    for op in (k.read, k.describe, k.revoke, lambda: k.update(b"y"), lambda: k.set_timeout(3)):
        assert errno_of(op) == errno.EKEYREVOKED
    assert errno_of(ks.session.search, "user", "d") == errno.EKEYREVOKED
    assert errno_of(ks.request_key, "user", "d") == errno.EKEYREVOKED
    assert k in ks.session, "a revoked key stays linked until the GC reaps it"


def test_gc_reaps_revoked_and_expired_keys_after_the_delay_and_wipes_them(clock: Clock, quiet_secret_memory: None) -> None:
    ks = kt.Keyspace(uid=0, gid=0, clock=clock, gc_delay=300)
    base = live_secret_bytes()
    a = ks.add_key("user", "a", b"A" * 100, "@s")
    b = ks.add_key("user", "b", b"B" * 100, "@s")
    assert live_secret_bytes() > base
    a.revoke()
    b.set_timeout(10)
    clock.now += 299
    ks.gc()
    assert a in ks.session and b in ks.session
    clock.now += 11 + 1
    ks.gc()
    assert ks.session.keys() == []
    assert errno_of(a.describe) == errno.ENOKEY and errno_of(b.describe) == errno.ENOKEY
    assert live_secret_bytes() == base, "destroyed payloads are wiped and freed"


def test_invalidate_unlinks_everywhere_at_once(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "d", b"x", "@s")
    r = ks.add_key("keyring", "r", None, "@s")
    r.link(k)
    k.invalidate()
    assert k not in ks.session and k not in r
    assert errno_of(k.read) == errno.ENOKEY
    assert errno_of(ks.request_key, "user", "d") == errno.ENOKEY


def test_revoking_a_keyring_empties_it(ks: kt.Keyspace) -> None:
    r = ks.add_key("keyring", "r", None, "@s")
    k = ks.add_key("user", "d", b"x", r)
    r.revoke()
    assert errno_of(k.describe) == errno.ENOKEY


# -- permissions and possession -----------------------------------------------


def test_root_gets_no_bypass(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "d", b"x", "@s")
    k.set_perm(0)
    for op in (k.read, k.describe, lambda: k.update(b"y"), lambda: k.set_perm(0x3F010000), k.revoke):
        assert errno_of(op) == errno.EACCES


def test_possession_grants_read_without_read_permission(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "d", b"x", "@s")
    k.set_perm(0x18000000 | 0x00010000)  # possessor SEARCH+LINK, user VIEW: no READ anywhere
    assert k.read() == b"x", "possessed keys are readable without READ"
    # Keep the key alive only through the user keyring, which the session does not link.
    holder = ks.add_key("keyring", "holder", None, "@s")
    holder.link(k)
    ks.user_keyring.link(holder)
    ks.session.unlink(holder)
    ks.session.unlink(k)
    with pytest.raises(PermissionError) as info:
        k.read()
    assert info.value.errno == errno.EACCES
    assert "not possessed" in str(info.value)


def test_user_keyring_not_linked_into_session_is_explained(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "app:token", b"x", "@u")
    with pytest.raises(OSError) as info:
        ks.request_key("user", "app:token")
    assert info.value.errno == errno.ENOKEY
    assert "@u" in str(info.value) and "link" in str(info.value)
    ks.session.link(ks.user_keyring)
    assert ks.request_key("user", "app:token") == k


def test_other_users_by_mask(ks: kt.Keyspace) -> None:
    r = ks.add_key("keyring", "shared", None, "@s")
    k = ks.add_key("user", "d", b"x", r)
    k.set_perm(0x3F3F0000)  # the owner keeps SETATTR once the key is no longer possessed
    alice = ks.as_user(1000, 1000)
    # Alice shares the session: the key is possessed through it.
    assert alice.key(k.serial).read() == b"x"
    ks.user_keyring.link(r)
    ks.session.unlink(r)
    assert errno_of(alice.key(k.serial).read) == errno.EACCES
    k.set_perm(0x3F3F0000 | 0x0B)  # other: VIEW, READ, SEARCH
    assert alice.key(k.serial).read() == b"x"
    k.chown(gid=2000)
    k.set_perm(0x3F3F0000 | 0x0300)  # group: VIEW, READ
    bob = ks.as_user(1001, 1001, [2000])
    assert bob.key(k.serial).read() == b"x"
    assert errno_of(alice.key(k.serial).read) == errno.EACCES


def test_setperm_rules(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "d", b"x", "@s")
    assert errno_of(k.set_perm, 0x40000000) == errno.EINVAL
    k.set_perm(0x3F3F3F3F)
    alice = ks.as_user(1000, 1000)
    assert errno_of(alice.key(k.serial).set_perm, 0) == errno.EACCES, "only the owner or root"


def test_chown_rules_and_quota_transfer(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "d", b"x" * 10, "@s")
    k.chown(1000)
    assert k.describe().split(";")[1] == "1000"
    assert ks.quota(1000).qnkeys == 1 and ks.quota(1000).qnbytes == 2 + 10
    alice = ks.as_user(1000, 1000)
    assert errno_of(alice.key(k.serial).chown, 1001) == errno.EACCES
    k.chown(-1, -1)


def test_chown_over_quota_changes_nothing(clock: Clock) -> None:
    ks = kt.Keyspace(uid=0, gid=0, clock=clock, limits=kt.QuotaLimits(maxkeys=200, maxbytes=100))
    k = ks.add_key("user", "d", b"x" * 200, "@s")
    assert errno_of(k.chown, 1000) == errno.EDQUOT
    assert k.describe().split(";")[1] == "0" and ks.quota(1000).qnkeys == 0


# -- quotas ---------------------------------------------------------------------


def test_non_root_maxkeys_counts_the_session_keyring(clock: Clock) -> None:
    ks = kt.Keyspace(uid=4321, gid=4321, clock=clock)
    for i in range(199):
        ks.add_key("user", f"k{i}", b"x", "@s")
    before = sorted(ks._world.keys)
    assert errno_of(ks.add_key, "user", "one-too-many", b"x", "@s") == errno.EDQUOT
    assert sorted(ks._world.keys) == before


def test_maxbytes_accounting_matches_the_kernel(clock: Clock) -> None:
    ks = kt.Keyspace(uid=4321, gid=4321, clock=clock)
    base = ks.quota().qnbytes
    k = ks.add_key("user", "b0", b"x" * 9000, "@s")
    assert ks.quota().qnbytes - base == 2 + 1 + 9000 + 4  # desc + NUL + payload + link
    k.update(b"x" * 10)
    assert ks.quota().qnbytes - base == 2 + 1 + 10 + 4, "shrinking releases bytes"
    ks.add_key("user", "b1", b"x" * 9000, "@s")
    assert errno_of(ks.add_key, "user", "b2", b"x" * 11000, "@s") == errno.EDQUOT
    assert errno_of(ks.add_key, "user", "b1", b"x" * 20000, "@s") == errno.EDQUOT
    assert ks.request_key("user", "b1").read() == b"x" * 9000, "a failed update leaves the payload"


# -- keyrings -------------------------------------------------------------------


def test_keyring_operations(ks: kt.Keyspace) -> None:
    r = ks.add_key("keyring", "app", None, "@s")
    assert isinstance(r, kt.Keyring)
    k = ks.add_key("user", "app:db", b"x", r)
    ks.user_keyring.link(k)
    assert r.keys() == [k] and r.search("user", "app:db") == k
    raw = r.read()
    assert struct.unpack("=i", raw) == (k.serial,)
    assert ks.session.search("user", "app:db") == k, "search descends into nested keyrings"
    assert errno_of(r.search, "user", "absent") == errno.ENOKEY
    assert errno_of(r.search, "nosuchtype", "x") == errno.ENOKEY, "search reports an unknown type as ENOKEY"
    assert errno_of(ks.request_key, "nosuchtype", "x") == errno.ENOKEY
    r.unlink(k)
    assert errno_of(r.unlink, k) == errno.ENOENT
    r2 = ks.add_key("user", "x", b"x", r)
    r.clear()
    assert r.keys() == [] and errno_of(r2.describe) == errno.ENOKEY


def test_link_cycles_are_refused(ks: kt.Keyspace) -> None:
    a = ks.add_key("keyring", "a", None, "@s")
    b = ks.add_key("keyring", "b", None, a)
    assert errno_of(b.link, a) == errno.EDEADLK
    assert errno_of(a.link, a) == errno.EDEADLK
    assert errno_of(b.link, ks.session) == errno.EDEADLK
    assert b.keys() == []


def test_nesting_too_deep_is_refused(ks: kt.Keyspace) -> None:
    rings = [ks.add_key("keyring", "r0", None, "@s")]
    for i in range(1, 8):
        rings.append(ks.add_key("keyring", f"r{i}", None, rings[-1]))
    extra = ks.add_key("keyring", "extra", None, "@s")
    tail = ks.add_key("keyring", "tail", None, extra)
    for i in range(6):
        tail = ks.add_key("keyring", f"t{i}", None, tail)
    assert errno_of(extra.link, rings[0]) == errno.ELOOP


def test_unlink_removes_whatever_holds_the_slot(ks: kt.Keyspace) -> None:
    # The kernel unlinks by (type, description): a different key with the same slot goes.
    r = ks.add_key("keyring", "r", None, "@s")
    in_r = ks.add_key("user", "same", b"1", r)
    other = ks.add_key("user", "same", b"2", "@s")
    assert in_r != other
    r.unlink(other)
    assert r.keys() == []


def test_special_keyrings(ks: kt.Keyspace) -> None:
    assert errno_of(ks.keyring, "@t") == errno.ENOKEY
    assert errno_of(ks.keyring, "@p") == errno.ENOKEY
    t = ks.add_key("user", "t", b"x", "@t")
    p = ks.add_key("user", "p", b"x", "@p")
    assert ks.keyring("@t").describe().endswith(";_tid")
    assert ks.keyring("@p").describe().endswith(";_pid")
    assert ks.request_key("user", "t") == t and ks.request_key("user", "p") == p
    box: list[int] = []
    threading.Thread(target=lambda: box.append(errno_of(ks.keyring, "@t"))).start()
    while not box:
        pass
    assert box == [errno.ENOKEY], "thread keyrings are per thread"
    assert ks.user_keyring in ks.keyring("@us"), "the user-session keyring links the user keyring"


def test_join_session_keyring(ks: kt.Keyspace) -> None:
    old = ks.session
    ks.add_key("user", "in-old", b"x", "@s")
    named = ks.join_session_keyring("team")
    assert ks.session == named and named.describe().split(";")[3] == "3f130000"
    assert errno_of(ks.request_key, "user", "in-old") == errno.ENOKEY
    assert errno_of(old.describe) == errno.ENOKEY, "the old session had no other reference"
    # The named keyring's default mask gives its owner no SEARCH, so joining by name
    # again makes a new keyring, as the kernel does; with SEARCH it is found.
    again = ks.join_session_keyring("team")
    assert again != named
    again.set_perm(0x3F130000 | 0x00080000)
    ks.user_keyring.link(again)  # keep it alive once it is no longer the session
    ks.join_session_keyring()
    assert ks.join_session_keyring("team") == again
    assert errno_of(ks.join_session_keyring, ".kernel") == errno.EPERM
    anon = ks.join_session_keyring()
    assert anon != named and anon.describe().endswith(";_ses")


# -- type registry ---------------------------------------------------------------


def test_register_and_unregister_a_key_type(ks: kt.Keyspace) -> None:
    class Blob(kt.KeyType):
        name = "test_blob"

    kt.register_key_type(Blob)
    try:
        assert errno_of(kt.register_key_type, Blob) == errno.EEXIST
        k = ks.add_key("test_blob", "b", b"data", "@s")
        assert errno_of(k.read) == errno.EOPNOTSUPP, "no read op"
        assert errno_of(k.update, b"x") == errno.EACCES, "no update op, so no possessor WRITE either"
        k.set_perm(0x3F010000)
        assert errno_of(k.update, b"x") == errno.EOPNOTSUPP, "no update op"
    finally:
        kt.unregister_key_type("test_blob")
    assert errno_of(k.describe) == errno.ENOKEY, "keys of an unregistered type die"
    assert errno_of(ks.add_key, "test_blob", "b", b"x", "@s") == errno.ENODEV
    assert errno_of(kt.unregister_key_type, "test_blob") == errno.ENODEV


# -- secrets, handles, threads ------------------------------------------------------


def test_secret_is_a_wiped_read_only_view(ks: kt.Keyspace) -> None:
    k = ks.add_key("user", "d", b"topsecret", "@s")
    with k.secret() as mv:
        assert bytes(mv) == b"topsecret"
        assert mv.readonly
        kept = mv
    with pytest.raises(ValueError):
        bytes(kept)  # released on exit
    assert "topsecret" not in repr(k) and "topsecret" not in repr(ks._world.keys[k.serial].payload)


def test_proc_keys_lines(ks: kt.Keyspace, clock: Clock) -> None:
    k = ks.add_key("user", "d", b"12345", "@s")
    k.set_timeout(7200)
    line = next(row for row in ks.proc_keys() if row.startswith(f"{k.serial:08x}"))
    assert line.split()[1:4] == ["I--Q---", "1", "2h"]
    assert line.endswith("user      d: 5")


def test_module_level_functions_use_one_default_keyspace() -> None:
    k = kt.add_key("user", "module-level", b"x", "@s")
    assert kt.request_key("user", "module-level") == k
    assert kt.key(k.serial).read() == b"x"
    k.invalidate()


def test_concurrent_operations_are_safe(ks: kt.Keyspace) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(200):
                k = ks.add_key("user", f"t{n}-{i}", b"v" * (i % 50 + 1), "@s")
                assert k.read() == b"v" * (i % 50 + 1)
                if i % 3 == 0:
                    k.invalidate()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(ks.session.keys()) == 4 * (200 - 67)


def test_request_key_searches_thread_and_process_keyrings_before_the_session(ks: kt.Keyspace) -> None:
    in_session = ks.add_key("user", "order", b"session", "@s")
    assert ks.request_key("user", "order") == in_session
    in_process = ks.add_key("user", "order", b"process", "@p")
    assert ks.request_key("user", "order") == in_process
    in_thread = ks.add_key("user", "order", b"thread", "@t")
    assert ks.request_key("user", "order") == in_thread
