"""Several processes on one store: each sees the others' commits at its next operation,
and concurrent writers lose nothing."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import keyring_types as kt

HERE = Path(__file__).parent
PROC = str(HERE / "store_proc.py")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(HERE.parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Peer:
    """Another process with a store-backed Keyspace, one request at a time."""

    def __init__(self, store: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, PROC, "serve", str(store)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_env(),
            text=True,
        )

    def __call__(self, op: str, **kw: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the peer process died"
        out = json.loads(line)
        if "errno" in out:
            raise OSError(out["errno"], os.strerror(out["errno"]))
        return out["ok"]

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture
def peers(store: Path) -> Iterator[tuple[Peer, Peer]]:
    a, b = Peer(store), Peer(store)
    yield a, b
    a.close()
    b.close()


def _errno(fn: Any) -> int:
    with pytest.raises(OSError) as info:
        fn()
    assert info.value.errno is not None
    return info.value.errno


def test_each_process_sees_the_others_commit_at_its_next_operation(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    s = a("add", type="user", desc="shared", payload=b"one".hex())
    assert bytes.fromhex(b("read", key=s)) == b"one"
    a("add", type="user", desc="shared", payload=b"two".hex())  # an update in place
    assert bytes.fromhex(b("read", key=s)) == b"two"
    b("setperm", key=s, perm=0x3F3F0000)
    assert a("describe", key=s).split(";")[3] == "3f3f0000"
    b("revoke", key=s)
    assert _errno(lambda: a("read", key=s)) == errno.EKEYREVOKED
    t = b("add", type="logon", desc="svc:pw", payload=b"pw".hex())
    assert bytes.fromhex(a("secret", key=t)) == b"pw"
    a("invalidate", key=t)
    assert _errno(lambda: b("describe", key=t)) == errno.ENOKEY


def test_a_key_another_process_also_holds_in_its_session(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    s = a("add", type="user", desc="both", payload=b"x".hex())
    b("link", ring="@s", key=s)  # b's anonymous session links it too
    a("unlink", ring="@u", key=s)  # gone from the store, not from b's session
    assert _errno(lambda: a("describe", key=s)) == errno.ENOKEY
    assert bytes.fromhex(b("read", key=s)) == b"x"
    t = a("add", type="user", desc="both2", payload=b"y".hex())
    b("link", ring="@s", key=t)
    a("invalidate", key=t)  # invalidation reaches every holder
    assert _errno(lambda: b("describe", key=t)) == errno.ENOKEY


def test_keyring_trees_made_by_one_are_searched_by_the_other(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    ring = a("add", type="keyring", desc="tree", payload=None)
    leaf = a("add", type="user", desc="leaf", payload=b"L".hex(), ring=str(ring))
    assert b("request", type="user", desc="leaf") == leaf
    b("unlink", ring=str(ring), key=leaf)
    assert _errno(lambda: a("request", type="user", desc="leaf")) == errno.ENOKEY


def test_concurrent_writers_lose_no_update(store: Path) -> None:
    kt.Keyspace(store=store).store.close()  # type: ignore[union-attr]  # made once, not raced
    n_procs, per = 4, 25
    procs = [
        subprocess.Popen([sys.executable, PROC, "add-many", str(store), f"p{i}.", str(per)], env=_env())
        for i in range(n_procs)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    ks = kt.Keyspace(store=store)
    ks.session.link(ks.user_keyring)
    names = {h.description for h in ks.user_keyring.keys()}
    assert names == {f"p{i}.{j}" for i in range(n_procs) for j in range(per)}
    assert ks.request_key("user", "p3.7").read() == b"p3.-7"
    assert ks.store is not None and ks.store.integrity_check() == "ok"


def test_concurrent_first_opens_make_one_store(store: Path) -> None:
    procs = [subprocess.Popen([sys.executable, PROC, "add-many", str(store), f"q{i}.", "2"], env=_env()) for i in range(3)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    ks = kt.Keyspace(store=store)
    ks.session.link(ks.user_keyring)
    assert len(ks.user_keyring.keys()) == 6
