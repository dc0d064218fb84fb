"""The request-key.conf handler: grammar, best match, macros, pipes and keyctl lines,
compared with the kernel's /sbin/request-key on the same rule file."""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import errno_of, kernel_keyring_reachable, require
from test_upcall_both import observe
from upcall_handler import RULE_DIR, install_rules

import keyring_types as kt
from keyring_types.core.request_key_conf import RequestKeyConfig

PREFIX = "ktconf"

RULES = [
    "# comments and blank lines are skipped",
    "",
    f"create user {PREFIX}:neg:* * /bin/keyctl negate %k 30 %S",
    f"create user {PREFIX}:rej:* * /bin/keyctl reject %k 30 %c %S",
    f"create user {PREFIX}:inst:* * /bin/keyctl instantiate %k %c %S",
    f"create user {PREFIX}:cat:* * |/bin/cat",
    f"create user {PREFIX}:echo:* * |/bin/echo %o %t %d %c %u %g %%literal",
    f"create user {PREFIX}:fail:* * |/bin/false",
    f"negate user {PREFIX}:fail:* * /bin/keyctl negate %k 20 %S",
    f"create user {PREFIX}:none:* * /bin/true %k",
]


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_best_match_across_files(tmp_path: Path) -> None:
    confdir = tmp_path / "d"
    confdir.mkdir()
    _write(confdir, "b.conf", ["create user app:* * /bin/b-wild", "create user app:x* * /bin/b-narrow"])
    _write(confdir, "a.conf", ["create user app:x* * /bin/a-narrow"])
    _write(confdir, "ignored.txt", ["create user app:xyz * /bin/not-read"])
    _write(confdir, ".hidden.conf", ["create user app:xyz * /bin/not-read"])
    conf = _write(tmp_path, "request-key.conf", ["create * * * /bin/anything", "create user app:xyz call* /bin/exact"])
    cfg = RequestKeyConfig(conf=conf, confdir=confdir)
    # Type and description exact beat a wildcard callout only after the columns before it.
    assert cfg.lookup("create", "user", "app:xyz", "callout") is not None
    assert cfg.lookup("create", "user", "app:xyz", "callout").command == "/bin/exact"  # type: ignore[union-attr]
    # Same skips: the first read wins (a.conf before b.conf).
    assert cfg.lookup("create", "user", "app:xq", "c").command == "/bin/a-narrow"  # type: ignore[union-attr]
    assert cfg.lookup("create", "user", "app:q", "c").command == "/bin/b-wild"  # type: ignore[union-attr]
    assert cfg.lookup("create", "logon", "q", "c").command == "/bin/anything"  # type: ignore[union-attr]
    assert cfg.lookup("negate", "user", "app:q", "c") is None
    assert [p.name for p in cfg.files()] == ["a.conf", "b.conf", "request-key.conf"]


def test_malformed_lines(tmp_path: Path) -> None:
    cfg = RequestKeyConfig(conf=_write(tmp_path, "c.conf", ["create user short"]), confdir=None)
    assert errno_of(cfg.lookup, "create", "user", "d", "c") == errno.EINVAL
    cfg = RequestKeyConfig(conf=_write(tmp_path, "l.conf", ["create * * * /bin/x " + "a" * 4100]), confdir=None)
    assert errno_of(cfg.lookup, "create", "user", "d", "c") == errno.EINVAL
    cfg = RequestKeyConfig(conf=tmp_path / "absent.conf", confdir=tmp_path / "absent.d")
    assert cfg.lookup("create", "user", "d", "c") is None


@pytest.fixture
def conf_handler(tmp_path: Path) -> Iterator[Path]:
    path = _write(tmp_path, "rules.conf", [*RULES, f"create user {PREFIX}:macro:* * |/bin/echo %x"])
    kt.register_request_key_handler("user", f"{PREFIX}:*", RequestKeyConfig(conf=path, confdir=None))
    try:
        yield path
    finally:
        kt.unregister_request_key_handler("user", f"{PREFIX}:*")


def test_macros_keysub_and_pipes_in_process(conf_handler: Path) -> None:
    ks = kt.Keyspace()
    key = ks.request_key("user", f"{PREFIX}:echo:1", "hello")
    uid, gid = ks.cred.uid, ks.cred.gid
    assert key.read() == f"create user {PREFIX}:echo:1 hello {uid} {gid} %literal\n".encode()
    assert ks.request_key("user", f"{PREFIX}:cat:1", "piped through").read() == b"piped through"
    # An unknown macro is the line's fault: the key is not built.
    assert errno_of(ks.request_key, "user", f"{PREFIX}:macro:1", "x") == errno.ENOKEY


def test_keysub_reads_a_key_of_the_requester(tmp_path: Path) -> None:
    path = _write(tmp_path, "sub.conf", [f"create user {PREFIX}:sub:* * |/bin/echo %{{user:{PREFIX}-secret}}"])
    kt.register_request_key_handler("user", f"{PREFIX}:sub:*", RequestKeyConfig(conf=path, confdir=None))
    try:
        ks = kt.Keyspace()
        assert errno_of(ks.request_key, "user", f"{PREFIX}:sub:1", "x") == errno.ENOKEY
        ks.add_key("user", f"{PREFIX}-secret", b"from-the-requester", "@s")
        assert ks.request_key("user", f"{PREFIX}:sub:2", "x").read() == b"from-the-requester\n"
        ks.add_key("user", f"{PREFIX}-secret", b"not\x01printable", "@s")
        assert errno_of(ks.request_key, "user", f"{PREFIX}:sub:3", "x") == errno.ENOKEY
    finally:
        kt.unregister_request_key_handler("user", f"{PREFIX}:sub:*")


@pytest.fixture(scope="module")
def kernel_conf() -> Iterator[None]:
    require(os.geteuid() == 0, "root (to add a rule under /etc/request-key.d)")
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    require(Path("/sbin/request-key").exists(), "/sbin/request-key (Debian package keyutils)")
    require(Path("/bin/keyctl").exists(), "/bin/keyctl (Debian package keyutils)")
    assert RULE_DIR.is_absolute()
    remove = install_rules(RULES)
    try:
        yield
    finally:
        remove()


CASES = [
    ("neg", "x", ("error", "ENOKEY")),
    ("rej", "rejected", ("error", "EKEYREJECTED")),
    ("rej", "expired", ("error", "EKEYEXPIRED")),
    ("rej", "revoked", ("error", "EKEYREVOKED")),
    ("rej", "5", ("error", "EIO")),
    ("inst", "a-payload", ("key", b"a-payload")),
    ("cat", "piped through", ("key", b"piped through")),
    ("echo", "words", ("key", b"create user <d> words 0 0 %literal\n")),
    ("fail", "x", ("error", "ENOKEY")),  # the negate line: 20 s
    ("none", "x", ("error", "ENOKEY")),  # a program that does nothing to the key
]


@pytest.mark.parametrize(("kind", "callout", "expected"), CASES)
def test_same_rules_same_outcome_as_the_kernel(
    kind: str, callout: str, expected: tuple[str, object], kernel_conf: None, conf_handler: Path
) -> None:
    require(os.geteuid() == 0, "root (the expected payloads name uid and gid 0)")
    description = f"{PREFIX}:{kind}:{uuid.uuid4().hex}"
    kernel = observe(kt.KernelKeyspace(new_session=True), description, callout)
    inproc = observe(kt.Keyspace(), description, callout)
    assert inproc == kernel
    first = kernel["first"]
    if isinstance(first, tuple) and isinstance(first[1], bytes):
        first = (first[0], first[1].replace(description.encode(), b"<d>"))
    assert first == expected


def test_rules_others_may_change_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "open.conf", ["create * * * /bin/true"])
    path.chmod(0o666)
    assert errno_of(RequestKeyConfig(conf=path, confdir=None).lookup, "create", "user", "d", "c") == errno.EACCES
    path.chmod(0o644)
    tmp_path.chmod(0o777)
    try:
        assert errno_of(RequestKeyConfig(conf=path, confdir=None).lookup, "create", "user", "d", "c") == errno.EACCES
    finally:
        tmp_path.chmod(0o755)
    assert RequestKeyConfig(conf=path, confdir=None).lookup("create", "user", "d", "c") is not None
