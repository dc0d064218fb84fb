"""Construction by upcall inside a Keyspace: the handler registry, waiting, expiry by the clock."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import errno_of

import keyring_types as kt
from keyring_types.core.request_key_handlers import Handler, find_request_key_handler, pattern_match


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registered() -> Iterator[list[tuple[str, str]]]:
    """Patterns a test registers; unregistered afterwards."""
    patterns: list[tuple[str, str]] = []
    yield patterns
    for type_name, glob in patterns:
        kt.unregister_request_key_handler(type_name, glob)


def _register(registered: list[tuple[str, str]], type_name: str, glob: str, handler: Handler) -> None:
    kt.register_request_key_handler(type_name, glob, handler)
    registered.append((type_name, glob))


def test_pattern_match_is_request_key_conf_s() -> None:
    assert pattern_match("abc", "abc") == 0
    assert pattern_match("abc", "abcd") is None
    assert pattern_match("*", "anything") == 8
    assert pattern_match("ab*", "abcd") == 2
    assert pattern_match("*cd", "abcd") == 2
    assert pattern_match("a*d", "abcd") == 2
    assert pattern_match("ab*bc", "abc") is None  # head and tail may not overlap
    assert pattern_match("a*", "b") is None


def test_registry_errors(registered: list[tuple[str, str]]) -> None:
    def nothing(request: kt.UpcallRequest) -> None:
        return None

    _register(registered, "user", "regerr:*", nothing)
    assert errno_of(kt.register_request_key_handler, "user", "regerr:*", nothing) == errno.EEXIST
    assert errno_of(kt.register_request_key_handler, "user", "a*b*", nothing) == errno.EINVAL
    assert errno_of(kt.register_request_key_handler, "user", "a b", nothing) == errno.EINVAL
    assert errno_of(kt.register_request_key_handler, "", "x", nothing) == errno.EINVAL
    assert errno_of(kt.register_request_key_handler, "user", "x", "not callable") == errno.EINVAL
    assert errno_of(kt.unregister_request_key_handler, "user", "never:*") == errno.ENOENT


def test_the_best_match_wins(registered: list[tuple[str, str]]) -> None:
    def make(tag: bytes) -> Handler:
        def handler(request: kt.UpcallRequest) -> None:
            request.keyspace.instantiate(request.key, tag)

        return handler

    _register(registered, "*", "*", make(b"any"))
    _register(registered, "user", "best:*", make(b"prefix"))
    _register(registered, "user", "best:exact", make(b"exact"))
    _register(registered, "user", "best:e*", make(b"longer prefix"))
    ks = kt.Keyspace()
    assert ks.request_key("user", "best:exact", "x").read() == b"exact"
    assert ks.request_key("user", "best:eh", "x").read() == b"longer prefix"
    assert ks.request_key("user", "best:other", "x").read() == b"prefix"
    assert ks.request_key("user", "elsewhere", "x").read() == b"any"
    assert find_request_key_handler("logon", "zzz") is not None


def test_a_failing_handler_is_the_cause_of_enokey(registered: list[tuple[str, str]]) -> None:
    def broken(request: kt.UpcallRequest) -> None:
        raise RuntimeError("cannot reach the vault")

    _register(registered, "user", "broken:*", broken)
    ks = kt.Keyspace()
    with pytest.raises(OSError) as info:
        ks.request_key("user", "broken:1", "x")
    assert info.value.errno == errno.ENOKEY
    assert isinstance(info.value.__cause__, RuntimeError)
    # The key stays negative for a minute: no second call to the handler.
    line = next(line for line in ks.proc_keys() if line.endswith(" broken:1"))
    assert line.split()[1] == "I--Q-N-" and line.split()[3] == "1m"


def test_waiting_and_partial_calls_while_under_construction(registered: list[tuple[str, str]]) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(request: kt.UpcallRequest) -> None:
        started.set()
        assert release.wait(10)
        request.keyspace.instantiate(request.key, b"done")

    _register(registered, "user", "slow:*", slow)
    ks = kt.Keyspace()
    result: list[bytes] = []
    requester = threading.Thread(target=lambda: result.append(ks.request_key("user", "slow:1", "x").read()))
    requester.start()
    assert started.wait(10)
    line = next(line for line in ks.proc_keys() if line.endswith(" slow:1"))
    assert line.split()[1] == "---QU--"
    serial = int(line.split()[0], 16)
    key = ks.key(serial)
    # describe, setperm and set_timeout take the key as it is (KEY_LOOKUP_PARTIAL) ...
    assert key.describe() == "user;0;0;3f010000;slow:1".replace(";0;0;", f";{ks.cred.uid};{ks.cred.gid};")
    key.set_timeout(0)
    # ... read waits for the handler.
    read: list[bytes] = []
    reader = threading.Thread(target=lambda: read.append(key.read()))
    reader.start()
    time.sleep(0.2)
    assert read == []
    release.set()
    reader.join(10)
    requester.join(10)
    assert read == result == [b"done"]


def test_negative_key_expires_and_is_reaped_by_the_clock(registered: list[tuple[str, str]]) -> None:
    calls: list[bytes] = []

    def negate(request: kt.UpcallRequest) -> None:
        calls.append(request.callout_info)
        request.keyspace.negate(request.key, 30)

    _register(registered, "user", "clock:*", negate)
    clock = Clock()
    ks = kt.Keyspace(clock=clock, gc_delay=10)
    assert errno_of(ks.request_key, "user", "clock:1", "a") == errno.ENOKEY
    assert errno_of(ks.request_key, "user", "clock:1", "b") == errno.ENOKEY
    assert calls == [b"a"]
    clock.now += 31
    assert errno_of(ks.request_key, "user", "clock:1", "c") == errno.ENOKEY
    assert calls == [b"a", b"c"]
    clock.now += 41
    ks.gc()
    assert [line for line in ks.proc_keys() if "clock:1" in line] == []


def test_quota_is_charged_for_the_key_under_construction(registered: list[tuple[str, str]]) -> None:
    def nothing(request: kt.UpcallRequest) -> None:
        return None

    _register(registered, "user", "quota:*", nothing)
    ks = kt.Keyspace(uid=1000, gid=1000, limits=kt.QuotaLimits(maxkeys=4))
    made = ks.quota().qnkeys
    outcomes = [errno_of(ks.request_key, "user", f"quota:{n}", "x") for n in range(5)]
    # Each failed construction leaves a negative key, charged like any other, until
    # the quota refuses the next one before any handler runs.
    assert outcomes[0] == errno.ENOKEY and outcomes[-1] == errno.EDQUOT, outcomes
    assert made < ks.quota().qnkeys <= 4


def test_handler_instantiating_into_the_requesters_keyring_by_serial(registered: list[tuple[str, str]]) -> None:
    """The handler (root) may link into the requester's keyrings: it possesses them through the requester."""
    def link_home(request: kt.UpcallRequest) -> None:
        request.keyspace.instantiate(request.key, b"home", request.session_keyring)

    _register(registered, "user", "home:*", link_home)
    ks = kt.Keyspace(uid=1000, gid=1000)
    ring = ks.add_key("keyring", "elsewhere", None, "@s")
    key = ks.request_key("user", "home:1", "x", ring)
    assert key in ring and key in ks.session
    # The key is the requester's, though its handler ran as root.
    assert key.describe() == "user;1000;1000;3f010000;home:1"


def test_request_key_program_refuses_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from keyring_types.integrations.request_key_program import load_handler, main

    assert main([]) == 2
    assert main(["mod:fn", "not-a-number"]) == 2
    assert main(["no-colon", "5"]) == 1
    assert "no-colon" in capsys.readouterr().err
    handler_file = tmp_path / "h.py"
    handler_file.write_text("def build(request):\n    return None\nvalue = 3\n")
    assert callable(load_handler(f"{handler_file}:build"))
    with pytest.raises(ValueError, match="not a callable"):
        load_handler(f"{handler_file}:value")
    # Outside an upcall the handler is never reached: assume_authority fails (ENOKEY).
    assert main([f"{handler_file}:build", "12345"]) == 1


def test_a_negative_key_stays_negative_in_a_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registered: list[tuple[str, str]]
) -> None:
    from keyring_types.trust import registry

    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEYRING_TYPES_TRUST_SOURCE", "host")
    registry.clear_cache()

    def reject(request: kt.UpcallRequest) -> None:
        request.keyspace.reject(request.key, 300, errno.EKEYREJECTED)

    _register(registered, "user", "stored:*", reject)
    try:
        a = kt.Keyspace(store=tmp_path / "keys.db")
        a.session.link(a.user_keyring)
        assert errno_of(a.request_key, "user", "stored:1", "x", "@u") == errno.EKEYREJECTED
        b = kt.Keyspace(store=tmp_path / "keys.db")
        b.session.link(b.user_keyring)
        # Another process of the store sees the same negative key, not an empty positive one.
        assert errno_of(b.request_key, "user", "stored:1", "x") == errno.EKEYREJECTED
        line = next(line for line in b.proc_keys() if line.endswith(" stored:1"))
        assert line.split()[1] == "I--Q-N-"
    finally:
        registry.clear_cache()


def test_waiting_on_a_store_backed_keyspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registered: list[tuple[str, str]]
) -> None:
    """A store's world lock is a transaction: waiting lets it go and takes it again."""
    from keyring_types.trust import registry

    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEYRING_TYPES_TRUST_SOURCE", "host")
    registry.clear_cache()
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def slow(request: kt.UpcallRequest) -> None:
        runs.append(1)
        started.set()
        assert release.wait(10)
        request.keyspace.instantiate(request.key, b"stored and built")

    _register(registered, "user", "storewait:*", slow)
    try:
        ks = kt.Keyspace(store=tmp_path / "keys.db")
        results: list[bytes] = []
        first = threading.Thread(target=lambda: results.append(ks.request_key("user", "storewait:1", "x").read()))
        first.start()
        assert started.wait(10)
        second = threading.Thread(target=lambda: results.append(ks.request_key("user", "storewait:1", "x").read()))
        second.start()
        time.sleep(0.2)
        assert results == []
        release.set()
        first.join(10)
        second.join(10)
        assert results == [b"stored and built"] * 2 and runs == [1]
    finally:
        registry.clear_cache()
