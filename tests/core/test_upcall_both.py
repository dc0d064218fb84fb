"""Construction by upcall, compared with the kernel's own /sbin/request-key.

The kernel runs the project's test handler (tests/core/upcall_handler.py) from a
rule file the fixture puts in /etc/request-key.d; the in-process Keyspace runs
the same function registered with ``kt.register_request_key_handler``.  Each
case asks both for the same key with the same callout info and compares what
comes out: the key or the errno, its description and /proc/keys flags, what a
second request, a request without callout info and a search then see.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import kernel_keyring_reachable, require
from upcall_handler import REPO, handle, install_rules, write_program

import keyring_types as kt

PREFIX = "ktupcall"


@pytest.fixture(scope="module")
def kernel_rule() -> Iterator[None]:
    """The rule that sends ``user ktupcall:*`` keys to the test handler; removed afterwards."""
    require(os.geteuid() == 0, "root (to add a rule under /etc/request-key.d)")
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    require(Path("/sbin/request-key").exists(), "/sbin/request-key (Debian package keyutils)")
    with tempfile.TemporaryDirectory(prefix="kt-upcall-") as tmp:
        prog = write_program(Path(tmp))
        remove = install_rules([f"create user {PREFIX}:* * {prog} {REPO}/tests/core/upcall_handler.py:handle %k"])
        try:
            yield
        finally:
            remove()


@pytest.fixture(scope="module")
def inproc_handler() -> Iterator[None]:
    kt.register_request_key_handler("user", f"{PREFIX}:*", handle)
    try:
        yield
    finally:
        kt.unregister_request_key_handler("user", f"{PREFIX}:*")


def _outcome(fn: object, *args: object) -> tuple[str, object]:
    try:
        result = fn(*args)  # type: ignore[operator]
    except OSError as exc:
        return ("error", errno.errorcode.get(exc.errno or 0, exc.errno))
    if isinstance(result, kt.Key):
        return ("key", result.read())
    return ("ok", result)


def _proc_line(ks: kt.KeyspaceAPI, description: str) -> list[str] | None:
    """The /proc/keys columns that do not depend on the machine: flags, expiring?, perm, type, text."""
    lines = open("/proc/keys").read().splitlines() if isinstance(ks, kt.KernelKeyspace) else ks.proc_keys()  # type: ignore[attr-defined]
    found = [line.split(None, 8) for line in lines if line.split(None, 8)[-1].split(": ")[0] == description]
    if not found:
        return None
    cols = found[-1]
    text = cols[8].replace(description, "<description>")
    return [cols[1], "perm" if cols[3] == "perm" else "expires", cols[4], cols[7], text]


def observe(ks: kt.KeyspaceAPI, description: str, callout: str) -> dict[str, object]:
    first = _outcome(ks.request_key, "user", description, callout)
    seen: dict[str, object] = {"first": first, "proc": _proc_line(ks, description)}
    if first[0] == "key":
        key = ks.request_key("user", description)
        seen["describe"] = key.describe()
        seen["in_session"] = key in ks.session
    seen["again"] = _outcome(ks.request_key, "user", description, callout)
    seen["no_callout"] = _outcome(ks.request_key, "user", description)
    seen["search"] = _outcome(ks.session.search, "user", description)
    return seen


CASES = [
    "inst:hello",
    "link:abc",
    "linkspecial:x",
    "iov:a,bc,,d",
    "neg:30",
    "rej:30:EKEYREJECTED",
    "rej:30:EKEYEXPIRED",
    "rej:30:EKEYREVOKED",
    "rej:30:EIO",
    "rej:0:EKEYREJECTED",
    "nothing",
    "raise",
    "probe",
    "procview",
    "inst:",  # an empty payload: the user type refuses it, so the key is not built
    "",
]


@pytest.mark.parametrize("callout", CASES)
def test_outcome_matches_kernel(callout: str, kernel_rule: None, inproc_handler: None) -> None:
    description = f"{PREFIX}:{uuid.uuid4().hex}"
    kernel = observe(kt.KernelKeyspace(new_session=True), description, callout)
    inproc = observe(kt.Keyspace(), description, callout)
    assert inproc == kernel


def test_no_handler_negates_like_a_missing_rule(kernel_rule: None, inproc_handler: None) -> None:
    # No rule (kernel) and no handler (in process) match: the key ends negative for a minute.
    description = f"{PREFIX}-unmatched:{uuid.uuid4().hex}"
    kernel = observe(kt.KernelKeyspace(new_session=True), description, "anything")
    inproc = observe(kt.Keyspace(), description, "anything")
    assert inproc == kernel
    assert kernel["first"] == ("error", "ENOKEY")


def test_negative_key_expires(kernel_rule: None, inproc_handler: None) -> None:
    """ENOKEY until the negation's timeout passes; then the key is built anew."""
    spaces: list[kt.KeyspaceAPI] = [kt.KernelKeyspace(new_session=True), kt.Keyspace()]
    description = f"{PREFIX}:{uuid.uuid4().hex}"
    results = []
    for ks in spaces:
        # Expiry is in whole seconds: 2 s from now is at least 1 s away.
        first = _outcome(ks.request_key, "user", description, "neg:2")
        blocked = _outcome(ks.request_key, "user", description, "inst:later")
        results.append([first, blocked])
    time.sleep(2.1)
    for ks, seen in zip(spaces, results, strict=True):
        seen.append(_outcome(ks.request_key, "user", description, "inst:later"))
    assert results[0] == results[1] == [("error", "ENOKEY"), ("error", "ENOKEY"), ("key", b"later")]


def _concurrent(make: object, description: str) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []

    def requester() -> None:
        try:
            ks = make()  # type: ignore[operator]
            key = ks.request_key("user", description, "slow:shared")
            out.append((key.serial, key.read()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=requester) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.1)  # the first has started the upcall before the others ask
    for t in threads:
        t.join(30)
    assert not errors, errors
    return out


def test_concurrent_requesters_wait_for_one_construction(kernel_rule: None, inproc_handler: None) -> None:
    # Kernel: the threads inherit this thread's new session keyring, where the key goes.
    kt.KernelKeyspace(new_session=True)
    kernel = _concurrent(kt.KernelKeyspace, f"{PREFIX}:{uuid.uuid4().hex}")
    ks = kt.Keyspace()
    inproc = _concurrent(lambda: ks, f"{PREFIX}:{uuid.uuid4().hex}")
    for results in (kernel, inproc):
        assert len(results) == 3
        # One construction: one serial and one payload (the handler adds a nonce per run).
        assert len(set(results)) == 1, results
        assert results[0][1].startswith(b"shared ")


def test_handler_side_calls_outside_an_upcall(space: kt.KeyspaceAPI) -> None:
    key = space.add_key("user", f"{PREFIX}:plain", b"v", "@s")
    assert _outcome(space.instantiate, key, b"x", 0) == ("error", "EPERM")
    assert _outcome(space.instantiate_iov, key, [b"x"], 0) == ("error", "EPERM")
    assert _outcome(space.negate, key, 10, 0) == ("error", "EPERM")
    assert _outcome(space.reject, key, 10, errno.EKEYREJECTED, 0) == ("error", "EPERM")
    assert _outcome(space.reject, key, 10, 0, 0) == ("error", "EINVAL")
    assert _outcome(space.reject, key, 10, 512, 0) == ("error", "EINVAL")  # ERESTARTSYS
    assert _outcome(space.assume_authority, key) == ("error", "ENOKEY")
    assert _outcome(space.assume_authority, -3) == ("error", "EINVAL")
    assert _outcome(space.assume_authority, None) == ("ok", None)
    assert _outcome(space.key, "@a") == ("error", "ENOKEY")
    assert _outcome(space.keyring, kt.KEY_SPEC_REQUESTOR_KEYRING) == ("error", "ENOKEY")
    assert _outcome(space.request_key, "keyring", f"{PREFIX}:ring", "x") == ("error", "EPERM")
    # Callout info is copied as one page with its NUL: 4096 bytes are too many.
    assert _outcome(space.request_key, "user", f"{PREFIX}-none:x", "a" * 4096) == ("error", "EINVAL")
    assert _outcome(space.request_key, ".request_key_auth", "1", "x") == ("error", "EPERM")
    assert _outcome(space.set_reqkey_keyring, kt.KEY_REQKEY_DEFL_GROUP_KEYRING) == ("error", "EINVAL")
    assert _outcome(space.set_reqkey_keyring, 8) == ("error", "EINVAL")
    assert key.read() == b"v"


# Default destinations run in a child process: the thread and process keyrings that
# set_reqkey_keyring makes would otherwise stay with the test process.
_DEST_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import keyring_types as kt
from upcall_handler import handle
kt.register_request_key_handler("user", "{prefix}:*", handle)
out = {{}}
for name, ks in (("kernel", kt.KernelKeyspace(new_session=True)), ("keyspace", kt.Keyspace())):
    seen = []
    for which, ring in ((1, "@t"), (2, "@p"), (3, "@s"), (4, "@u"), (5, "@us"), (7, "@s"), (0, "@s")):
        old = ks.set_reqkey_keyring(which)
        key = ks.request_key("user", "{prefix}:dest-%d" % which, "inst:x")
        seen.append([which, old, key in ks.keyring(ring), key in ks.session])
    seen.append(ks.set_reqkey_keyring(-1))
    out[name] = seen
print(json.dumps(out))
"""


def test_default_destination_follows_set_reqkey_keyring(kernel_rule: None) -> None:
    # Descriptions under ktupcall:, which the kernel rule sends to the handler.
    script = _DEST_SCRIPT.format(tests=str(REPO / "tests" / "core"), prefix=f"{PREFIX}:{uuid.uuid4().hex[:8]}")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["keyspace"] == out["kernel"]
    # The thread keyring setting really put the key in @t, not in the session.
    assert out["kernel"][0] == [1, 0, True, False]


def test_handler_requesting_a_key_of_its_own(kernel_rule: None, inproc_handler: None) -> None:
    """A second upcall builds the inner key; it goes to the handler's own session keyring.

    The helper starts with init's credentials, whose default destination is the
    thread keyring; having none and no process keyring, the key lands in
    ``_req.<serial>``, not with the original requester.
    """
    seen = []
    for ks in (kt.KernelKeyspace(new_session=True), kt.Keyspace()):
        outer, inner = f"{PREFIX}:{uuid.uuid4().hex}", f"{PREFIX}:{uuid.uuid4().hex}"
        key = ks.request_key("user", outer, f"nested:{inner}")
        seen.append((key.read(), _outcome(ks.session.search, "user", inner)))
    assert seen[0] == seen[1] == (b"outer", ("error", "ENOKEY"))


def test_add_key_over_a_negative_key_makes_it_positive(kernel_rule: None, inproc_handler: None) -> None:
    seen = []
    for ks in (kt.KernelKeyspace(new_session=True), kt.Keyspace()):
        description = f"{PREFIX}:{uuid.uuid4().hex}"
        first = _outcome(ks.request_key, "user", description, "rej:60:EKEYREJECTED")
        negative = _proc_line(ks, description)
        added = ks.add_key("user", description, b"now positive", "@s")
        again = ks.request_key("user", description, "rej:60:EKEYREJECTED")
        seen.append((first, negative, again == added, again.read(), _proc_line(ks, description)))
    assert seen[0] == seen[1]
    assert seen[0][0] == ("error", "EKEYREJECTED")
    assert seen[0][2:4] == (True, b"now positive")


@pytest.mark.parametrize("callout", ["rej:30:EKEYREJECTED", "neg:30"])
def test_calls_on_a_negative_key(callout: str, kernel_rule: None, inproc_handler: None) -> None:
    """Which calls see a negative key's error and which (describe, setperm, ...) take it as it is."""
    seen = []
    for ks in (kt.KernelKeyspace(new_session=True), kt.Keyspace()):
        description = f"{PREFIX}:{uuid.uuid4().hex}"
        first = _outcome(ks.request_key, "user", description, callout)
        lines = open("/proc/keys").read().splitlines() if isinstance(ks, kt.KernelKeyspace) else ks.proc_keys()  # type: ignore[attr-defined]
        key = kt.Key(ks, next(int(line.split()[0], 16) for line in lines if line.endswith(" " + description)))
        ring = ks.keyring("@s")
        seen.append({
            "first": first,
            "read": _outcome(key.read),
            "describe": _outcome(lambda: key.describe().rsplit(";", 1)[0]),  # noqa: B023
            "set_timeout": _outcome(key.set_timeout, 100),
            "set_perm": _outcome(key.set_perm, 0x3F3F0000),
            "chown": _outcome(key.chown, 0, 0),
            "link": _outcome(ring.link, key),
            "search": _outcome(ring.search, "user", description),
            "update": _outcome(key.update, b"x"),
            "secret": _outcome(lambda: key.secret().__enter__()),  # noqa: B023
            "revoke": _outcome(key.revoke),
            "invalidate": _outcome(key.invalidate),
            "unlink": _outcome(ring.unlink, key),
            "after_unlink": _outcome(ks.request_key, "user", description, "inst:built"),
        })
    assert seen[0] == seen[1]


def test_explicit_destination_keyring(kernel_rule: None, inproc_handler: None) -> None:
    seen = []
    for ks in (kt.KernelKeyspace(new_session=True), kt.Keyspace()):
        ring = ks.add_key("keyring", f"{PREFIX}:dest", None, "@s")
        assert isinstance(ring, kt.Keyring)
        description = f"{PREFIX}:{uuid.uuid4().hex}"
        key = ks.request_key("user", description, "link:via-dest", ring)
        seen.append((key.read(), key in ring, key in ks.session, len(ring.keys())))
    assert seen[0] == seen[1] == (b"via-dest", True, False, 1)



def test_restricted_destination(kernel_rule: None, inproc_handler: None) -> None:
    """The key under construction goes into a restricted keyring unasked; building into it is refused."""
    seen = []
    for ks in (kt.KernelKeyspace(new_session=True), kt.Keyspace()):
        ring = ks.add_key("keyring", f"{PREFIX}:restricted", None, "@s")
        assert isinstance(ring, kt.Keyring)
        ring.restrict()  # reject everything
        steps = []
        for callout in ("inst:x", "link:y", "linkspecial:z", "neg:30", "nothing"):
            description = f"{PREFIX}:{uuid.uuid4().hex}"
            steps.append((callout, _outcome(ks.request_key, "user", description, callout, ring), len(ring.keys())))
        seen.append(steps)
    assert seen[0] == seen[1]
    assert seen[0][0] == ("inst:x", ("key", b"x"), 1)
