"""Regressions found in review: request_key construction when the upcall cannot start."""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator

import pytest

import keyring_types as kt
from keyring_types.core.quota import QuotaLimits


@pytest.fixture
def handler() -> Iterator[None]:
    def build(request: kt.UpcallRequest) -> None:
        request.keyspace.instantiate(request.key, b"v", 0)

    kt.register_request_key_handler("user", "review-rkq:*", build)
    yield
    kt.unregister_request_key_handler("user", "review-rkq:*")


def _keyspace_where_the_helper_ring_is_over_quota() -> kt.Keyspace:
    """A keyspace whose user can afford the new key but not the link into the helper's ``_req`` ring."""
    for maxbytes in range(8, 256):
        try:
            ks = kt.Keyspace(uid=1000, gid=1000, limits=QuotaLimits(maxbytes=maxbytes))
        except OSError:
            continue
        probe = kt.Keyspace(uid=1000, gid=1000, limits=QuotaLimits(maxbytes=maxbytes))
        try:
            probe.request_key("user", "review-rkq:probe", b"callout")
        except OSError as exc:
            # The key itself was made (so the EDQUOT came later, from the helper's ring).
            made = any(r.description == "review-rkq:probe" for r in probe._world.keys.values())
            if exc.errno == errno.EDQUOT and made:
                return ks
        else:
            break
    pytest.fail("no quota limit makes the helper's keyring link fail")


def test_upcall_that_cannot_start_negates_the_key(handler: None) -> None:
    # call_sbin_request_key failing (here: EDQUOT linking the authorisation key into
    # the helper's session) ends in complete_request_key(auth, error): the key is
    # negated, so nobody waits on it for ever.
    ks = _keyspace_where_the_helper_ring_is_over_quota()
    with pytest.raises(OSError) as first:
        ks.request_key("user", "review-rkq:a", b"callout")
    assert first.value.errno == errno.EDQUOT
    outcome: list[BaseException | int] = []

    def again() -> None:
        try:
            outcome.append(ks.request_key("user", "review-rkq:a", b"callout").serial)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=again, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "a second request_key waits for ever on a key left under construction"
    assert isinstance(outcome[0], OSError) and outcome[0].errno == errno.ENOKEY


@pytest.fixture
def exiting_handler() -> Iterator[None]:
    def exits(request: kt.UpcallRequest) -> None:
        raise SystemExit(1)  # a handler written as a program, calling sys.exit()

    kt.register_request_key_handler("user", "review-rkx:*", exits)
    yield
    kt.unregister_request_key_handler("user", "review-rkx:*")


def test_a_handler_that_exits_leaves_the_key_negative(exiting_handler: None) -> None:
    # /sbin/request-key's program exiting 1 leaves the key negative: so does a handler
    # raising SystemExit (not a key under construction that the next requester waits on).
    ks = kt.Keyspace()
    with pytest.raises(OSError) as first:
        ks.request_key("user", "review-rkx:a", b"callout")
    assert first.value.errno == errno.ENOKEY
    outcome: list[BaseException | int] = []

    def again() -> None:
        try:
            outcome.append(ks.request_key("user", "review-rkx:a", b"callout").serial)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=again, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "a second request_key waits for ever on a key left under construction"
    assert isinstance(outcome[0], OSError) and outcome[0].errno == errno.ENOKEY


def test_an_interrupted_handler_still_completes_the_key(registered_interrupt: None) -> None:
    ks = kt.Keyspace()
    with pytest.raises(KeyboardInterrupt):
        ks.request_key("user", "review-rki:a", b"callout")
    outcome: list[BaseException | int] = []

    def again() -> None:
        try:
            outcome.append(ks.request_key("user", "review-rki:a", b"callout").serial)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=again, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "a second request_key waits for ever on a key left under construction"
    assert isinstance(outcome[0], OSError) and outcome[0].errno == errno.ENOKEY  # negative now


@pytest.fixture
def registered_interrupt() -> Iterator[None]:
    def interrupted(request: kt.UpcallRequest) -> None:
        raise KeyboardInterrupt

    kt.register_request_key_handler("user", "review-rki:*", interrupted)
    yield
    kt.unregister_request_key_handler("user", "review-rki:*")
