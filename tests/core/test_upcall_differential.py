"""Random sequences of upcalls and the calls around them, on the kernel and in process.

A hypothesis state machine drives a KernelKeyspace (whose upcalls run the test
handler through /sbin/request-key) and a Keyspace (the same handler registered
in process) in lockstep over a few descriptions: requests with and without
callout info that build, negate, reject or fail to build keys, and the reads,
searches, adds, unlinks and invalidations that then meet positive and negative
keys.  Every step must end the same way on both sides.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import kernel_keyring_reachable, require
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from upcall_handler import REPO, handle, install_rules, write_program

import keyring_types as kt

PREFIX = "ktupdiff"
NAMES = st.sampled_from(["a", "b", "c"])
CALLOUTS = st.sampled_from(
    [None, "inst:one", "inst:two", "iov:x,y", "neg:30", "rej:30:EKEYREJECTED", "rej:30:EKEYREVOKED", "nothing", "raise"]
)


def _outcome(fn: object, *args: object) -> tuple[str, object]:
    try:
        result = fn(*args)  # type: ignore[operator]
    except OSError as exc:
        return ("error", errno.errorcode.get(exc.errno or 0, exc.errno))
    if isinstance(result, kt.Key):
        return ("key", result.read())
    return ("ok", result)


class UpcallDifferential(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.tag = uuid.uuid4().hex[:10]
        self.kernel = kt.KernelKeyspace(new_session=True)
        self.inproc = kt.Keyspace()

    def desc(self, name: str) -> str:
        return f"{PREFIX}:{self.tag}:{name}"

    def both(self, step: object) -> None:
        kernel = step(self.kernel)  # type: ignore[operator]
        inproc = step(self.inproc)  # type: ignore[operator]
        assert inproc == kernel

    @rule(name=NAMES, callout=CALLOUTS)
    def request(self, name: str, callout: str | None) -> None:
        self.both(lambda ks: _outcome(ks.request_key, "user", self.desc(name), callout))

    @rule(name=NAMES)
    def search(self, name: str) -> None:
        self.both(lambda ks: _outcome(ks.session.search, "user", self.desc(name)))

    @rule(name=NAMES, payload=st.sampled_from([b"added", b"other"]))
    def add(self, name: str, payload: bytes) -> None:
        self.both(lambda ks: _outcome(ks.add_key, "user", self.desc(name), payload, "@s"))

    @rule(name=NAMES)
    def invalidate(self, name: str) -> None:
        self.both(lambda ks: _outcome(lambda: _linked(ks, self.desc(name)).invalidate()))
        self.settle()

    def settle(self) -> None:
        """Wait for the kernel's GC to unlink invalidated keys, which a Keyspace does at once."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            # Counted, not described: an invalidated key no longer describes.
            if len(self.kernel.session.read()) == len(self.inproc.session.read()):
                return
            time.sleep(0.005)

    @rule(name=NAMES)
    def unlink(self, name: str) -> None:
        self.both(lambda ks: _outcome(lambda: ks.session.unlink(_linked(ks, self.desc(name)))))

    @rule(name=NAMES)
    def read_by_serial(self, name: str) -> None:
        self.both(lambda ks: _outcome(lambda: _linked(ks, self.desc(name)).read()))


def _linked(ks: kt.KeyspaceAPI, description: str) -> kt.Key:
    """The key with ``description`` linked in the session keyring, negative or not; ENOKEY if none."""
    for key in ks.session.keys():
        if key.description == description:
            return key
    raise kt.KeyNotFoundError(errno.ENOKEY, f"no {description!r} linked in the session keyring")


@pytest.fixture(scope="module")
def both_handlers() -> Iterator[None]:
    require(os.geteuid() == 0, "root (to add a rule under /etc/request-key.d)")
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    require(Path("/sbin/request-key").exists(), "/sbin/request-key (Debian package keyutils)")
    kt.register_request_key_handler("user", f"{PREFIX}:*", handle)
    with tempfile.TemporaryDirectory(prefix="kt-updiff-") as tmp:
        prog = write_program(Path(tmp))
        remove = install_rules([f"create user {PREFIX}:* * {prog} {REPO}/tests/core/upcall_handler.py:handle %k"])
        try:
            yield
        finally:
            remove()
            kt.unregister_request_key_handler("user", f"{PREFIX}:*")


def test_random_upcall_sequences_agree(both_handlers: None) -> None:
    run = UpcallDifferential.TestCase
    run.settings = settings(
        max_examples=25, stateful_step_count=12, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    run().runTest()
