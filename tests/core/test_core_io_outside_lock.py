"""A trust source that does not answer holds up only its own call, not the whole Keyspace.

The kernel preparses a payload before it takes any lock; the Keyspace runs a
blocking preparse (the trusted type's seal or unseal) without its lock.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

import keyring_types as kt
from keyring_types.core.keytype import KeyType, Preparsed, register_key_type, unregister_key_type
from keyring_types.secret import SecretBuffer
from keyring_types.trust import registry
from keyring_types.trust.base import TrustedOptions, Unsealed
from keyring_types.trust.host import HostSource

WAIT = 10.0


def _others_get_through(ks: kt.Keyspace) -> bool:
    """Whether another thread's unrelated add/read/update/search completes within a few seconds."""
    done = threading.Event()

    def other() -> None:
        k = ks.add_key("user", "core:io-other", b"v", "@s")
        assert k.read() == b"v"
        k.update(b"w")
        assert ks.session.search("user", "core:io-other").serial == k.serial
        done.set()

    t = threading.Thread(target=other, daemon=True)
    t.start()
    ok = done.wait(5.0)
    return ok


class _Stall:
    """A gate the slow parts wait at until the test opens it."""

    entered = threading.Event()
    gate = threading.Event()

    @classmethod
    def reset(cls) -> None:
        cls.entered = threading.Event()
        cls.gate = threading.Event()

    @classmethod
    def wait(cls) -> None:
        cls.entered.set()
        assert cls.gate.wait(WAIT), "the test never opened the gate"


class _SlowSource(HostSource):
    """The host source behind a TEE that takes its time."""

    name: ClassVar[str] = "slowtest"

    def seal(self, secret: SecretBuffer, options: TrustedOptions) -> bytes:
        _Stall.wait()
        return super().seal(secret, options)

    def unseal(self, blob: bytes, options: TrustedOptions) -> Unsealed:
        _Stall.wait()
        return super().unseal(blob, options)


class _BlockingType(KeyType):
    """A key type whose preparse waits (as a trust-source call would)."""

    name = "core-blocking"
    preparse_blocks = True

    def preparse(self, data: bytes) -> Preparsed:
        _Stall.wait()
        return Preparsed(data=data, payload=None, quotalen=len(data))

    def update(self, key: object, prep: Preparsed) -> None:
        KeyType.instantiate(self, key, prep)  # type: ignore[arg-type]

    def read(self, key: object) -> bytes:
        return b"blocking"


@pytest.fixture
def slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "state"))
    monkeypatch.delenv(registry.ENV_SOURCE, raising=False)
    registry.clear_cache()
    registry.register_trust_source(_SlowSource)
    _Stall.reset()
    yield
    _Stall.gate.set()
    registry.unregister_trust_source("slowtest")
    registry.clear_cache()


@pytest.fixture
def blocking_type() -> Iterator[None]:
    _Stall.reset()
    register_key_type(_BlockingType)
    yield
    _Stall.gate.set()
    unregister_key_type("core-blocking")


def _run_stalled(fn) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Start ``fn`` in a thread and wait until it is stalled at the gate."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except OSError as exc:
            out["errno"] = exc.errno

    t = threading.Thread(target=run, daemon=True)
    out["thread"] = t
    t.start()
    assert _Stall.entered.wait(WAIT), "the slow call never started"
    return out


def _finish(out: dict[str, object]) -> None:
    _Stall.gate.set()
    t = out["thread"]
    assert isinstance(t, threading.Thread)
    t.join(WAIT)
    assert not t.is_alive()


def test_slow_seal_does_not_stop_other_threads(slow: None) -> None:
    ks = kt.Keyspace()
    out = _run_stalled(lambda: ks.add_key("trusted", "core:slow", "new 32 source=slowtest", "@s"))
    got_through = _others_get_through(ks)
    _finish(out)
    assert got_through, "another thread's key operations waited for the trust source"
    k = out["value"]
    assert isinstance(k, kt.Key) and len(bytes.fromhex(k.read().decode())) > 32


def test_slow_unseal_on_load_does_not_stop_other_threads(slow: None) -> None:
    ks = kt.Keyspace()
    _Stall.gate.set()
    blob = ks.add_key("trusted", "core:slow1", "new 32 source=slowtest", "@s").read().decode()
    _Stall.reset()
    out = _run_stalled(lambda: ks.add_key("trusted", "core:slow2", f"load {blob} source=slowtest", "@s"))
    got_through = _others_get_through(ks)
    _finish(out)
    assert got_through
    with ks.session.search("trusted", "core:slow1").secret() as a, out["value"].secret() as b:  # type: ignore[union-attr]
        assert bytes(a) == bytes(b)


def test_blocking_preparse_on_add_and_update(blocking_type: None) -> None:
    ks = kt.Keyspace()
    out = _run_stalled(lambda: ks.add_key("core-blocking", "core:b", b"x", "@s"))
    assert _others_get_through(ks)
    _finish(out)
    k = out["value"]
    assert isinstance(k, kt.Key)
    _Stall.reset()
    out = _run_stalled(lambda: k.update(b"yy"))
    assert _others_get_through(ks)
    _finish(out)
    assert "errno" not in out


def test_keyring_revoked_during_a_blocking_preparse(blocking_type: None) -> None:
    ks = kt.Keyspace()
    ring = ks.add_key("keyring", "core:ring", None, "@s")
    out = _run_stalled(lambda: ks.add_key("core-blocking", "core:b2", b"x", ring))
    ring.revoke()
    _finish(out)
    assert out.get("errno") == errno.EKEYREVOKED
    assert not [r for r in ks._world.keys.values() if r.description == "core:b2"]


def test_key_revoked_during_a_blocking_update(blocking_type: None) -> None:
    ks = kt.Keyspace()
    _Stall.gate.set()
    k = ks.add_key("core-blocking", "core:b3", b"x", "@s")
    _Stall.reset()
    out = _run_stalled(lambda: k.update(b"yy"))
    k.revoke()
    _finish(out)
    assert out.get("errno") == errno.EKEYREVOKED


def test_errors_keep_their_order_without_the_lock(slow: None) -> None:
    """A bad destination is reported before the payload is looked at, as before."""
    ks = kt.Keyspace()
    with pytest.raises(OSError) as info:
        ks.add_key("trusted", "core:e", "new 9999 source=slowtest", 0x7FFFFFF0)
    assert info.value.errno == errno.ENOKEY
    with pytest.raises(OSError) as info:
        ks.add_key("trusted", "core:e", "new 9999 source=slowtest", "@s")
    assert info.value.errno == errno.EINVAL
