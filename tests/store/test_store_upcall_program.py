"""A request-key.conf program in another process builds a key for a store-backed requester.

The requester (this process, or a child for the crash case) asks for a key with
callout info; its request-key.conf line runs a shell script, which calls
``keyctl`` — ``ktctl`` on the same store, in the handler's stored session and
holding the authority over the key, as a program /sbin/request-key starts
holds it through its credentials.  The requester waits meanwhile, then gets
what the program did.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types.core.request_key_conf import RequestKeyConfig

ROOT = Path(__file__).resolve().parent.parent.parent


def _script(tmp_path: Path, store: Path) -> tuple[Path, Path]:
    """The program of the ``prog:*`` line and the log it writes what it saw to."""
    log = tmp_path / "program.log"
    plain = " ".join(
        shlex.quote(w)
        for w in ("env", f"PYTHONPATH={ROOT}", f"KEYRING_TYPES_HOME={os.environ['KEYRING_TYPES_HOME']}",
                  sys.executable, "-m", "keyring_types", "--store", str(store))
    )  # fmt: skip
    script = tmp_path / "build.sh"
    script.write_text(f"""#!/bin/sh
# $1: the key under construction, $2: the callout info, $3: the requester's session keyring
log={shlex.quote(str(log))}
case "$2" in
build) exec keyctl instantiate "$1" "built by a program" "$3" ;;
negate) exec keyctl negate "$1" 30 "$3" ;;
expired) exec keyctl reject "$1" 30 expired "$3" ;;
others)
    # The authority is over this key only ...
    keyctl instantiate "$(cat {shlex.quote(str(tmp_path / "other"))})" x "$3" 2>>"$log"; echo "other-key $?" >>"$log"
    # ... and a process that does not hold it cannot build the key at all.
    {plain} instantiate "$1" x "$3" 2>>"$log"; echo "no-authority $?" >>"$log"
    keyctl instantiate "$1" "built after all" "$3" 2>>"$log"; echo "holder $?" >>"$log"
    # Built: the authority is spent; the program's credentials still point at it.
    keyctl instantiate "$1" again "$3" 2>>"$log"; echo "again-into-session $?" >>"$log"
    keyctl instantiate "$1" again 0 2>>"$log"; echo "again $?" >>"$log"
    keyctl negate "$1" 30 0 2>>"$log"; echo "negate-again $?" >>"$log" ;;
sleep) echo started >>"$log"; exec sleep 60 ;;
esac
""")
    script.chmod(0o700)
    conf = tmp_path / "request-key.conf"
    conf.write_text(f"create user prog:* * {script} %k %c %S\n")
    return conf, log


@pytest.fixture
def program(tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """request-key.conf's ``prog:*`` line registered as the handler; yields the program's log."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
    conf, log = _script(tmp_path, store)
    kt.register_request_key_handler("user", "prog:*", RequestKeyConfig(conf=conf, confdir=None))
    try:
        yield log
    finally:
        kt.unregister_request_key_handler("user", "prog:*")


def _keyspace(store: Path) -> kt.Keyspace:
    """A requester in a named (stored) session, as every ``ktctl`` runs in one: its program,
    in another process, reaches what is stored of the requester's keyrings (``%S``)."""
    ks = kt.Keyspace(store=store)
    ks.join_session_keyring("requester")
    ks.session.link(ks.user_keyring)
    return ks


def _upcall_leftovers(store: Path) -> list[object]:
    """Live rows of handler sessions and authorisation keys, and handler-session tags."""
    conn = sqlite3.connect(store)
    try:
        rows = conn.execute(
            "SELECT type, description FROM keys WHERE flags & 0x80 = 0 "
            "AND (type = '.request_key_auth' OR description LIKE '\\_req.%' ESCAPE '\\')"
        ).fetchall()
        tags = conn.execute("SELECT k FROM meta WHERE k LIKE 'rq.%' OR k LIKE 'uc.%'").fetchall()
    finally:
        conn.close()
    return rows + tags


def test_a_program_builds_the_key_the_requester_waits_for(store: Path, program: Path) -> None:
    ks = _keyspace(store)
    key = ks.request_key("user", "prog:one", "build", ks.user_keyring)
    assert key.read() == b"built by a program"
    # Linked where the program said (the requester's session) and where it was requested.
    assert key in ks.session.keys() and key in ks.user_keyring.keys()
    # The upcall's session and authority lived as long as the upcall.
    assert _upcall_leftovers(store) == []
    other = _keyspace(store)
    assert other.request_key("user", "prog:one").read() == b"built by a program"


def test_the_programs_negation_and_rejection_reach_the_requester(store: Path, program: Path) -> None:
    ks = _keyspace(store)
    with pytest.raises(OSError) as info:
        ks.request_key("user", "prog:neg", "negate", ks.user_keyring)
    assert info.value.errno == errno.ENOKEY
    with pytest.raises(OSError) as info:
        ks.request_key("user", "prog:exp", "expired", ks.user_keyring)
    assert info.value.errno == errno.EKEYEXPIRED
    # Negative keys in the store, for every process, until their 30 s are up.
    other = _keyspace(store)
    with pytest.raises(OSError) as info:
        other.request_key("user", "prog:exp")
    assert info.value.errno == errno.EKEYEXPIRED
    assert _upcall_leftovers(store) == []


def test_only_the_holder_of_the_authority_builds_the_key(store: Path, program: Path, tmp_path: Path) -> None:
    ks = _keyspace(store)
    other = ks.add_key("user", "not-mine", b"x", ks.user_keyring)
    (tmp_path / "other").write_text(str(other.serial))
    key = ks.request_key("user", "prog:others", "others", ks.user_keyring)
    assert key.read() == b"built after all"
    lines = program.read_text().splitlines()
    results = [ln for ln in lines if not ln.startswith("keyctl_")]
    assert results == ["other-key 1", "no-authority 1", "holder 0", "again-into-session 1", "again 1", "negate-again 1"], lines
    # As the kernel's keyctl_instantiate_key_common: EPERM for another key and for a
    # process without the authority.  Once the key is built the authority is spent
    # (invalidated): it no longer reaches the requester's keyrings (EACCES: the
    # session is not the program's to write), and the key itself is built (EBUSY).
    assert [ln for ln in lines if ln.startswith("keyctl_")] == [
        "keyctl_instantiate: Operation not permitted",
        "keyctl_instantiate: Operation not permitted",
        "keyctl_instantiate: Permission denied",
        "keyctl_instantiate: Device or resource busy",
        "keyctl_negate: Device or resource busy",
    ]
    assert other.read() == b"x"


def test_a_requester_killed_mid_upcall_leaves_nothing_behind(store: Path, program: Path) -> None:
    requester = """
import sys
import keyring_types as kt
from keyring_types.core.request_key_conf import RequestKeyConfig
ks = kt.Keyspace(store=sys.argv[1])
ks.join_session_keyring("requester")
ks.session.link(ks.user_keyring)
kt.register_request_key_handler("user", "prog:*", RequestKeyConfig(conf=sys.argv[2], confdir=None))
ks.request_key("user", "prog:killed", "sleep", ks.user_keyring)
"""
    conf = program.parent / "request-key.conf"
    # The program's keyctl is made in the requester's TMPDIR; killed, it cannot remove it.
    tmp = program.parent / "requester-tmp"
    tmp.mkdir(mode=0o700)
    proc = subprocess.Popen(
        [sys.executable, "-c", requester, str(store), str(conf)], start_new_session=True, env={**os.environ, "TMPDIR": str(tmp)}
    )
    try:
        deadline = time.monotonic() + 60
        while not (program.exists() and program.read_text() == "started\n"):
            assert time.monotonic() < deadline and proc.poll() is None, "the program did not start"
            time.sleep(0.05)
        # Stored while the program runs: the handler session, its authority, their tags.
        during = _upcall_leftovers(store)
        assert {row[0] for row in during if len(row) == 2} == {"keyring", ".request_key_auth"}, during
        assert {str(row[0])[:3] for row in during if len(row) == 1} == {"rq.", "uc."}, during
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the requester and its program
        proc.wait(10)
        shutil.rmtree(tmp)
    # The next process finds their maker dead: the key goes negative (ENOKEY, as when
    # /sbin/request-key dies) and the handler session goes, with the authority in it.
    ks = _keyspace(store)
    with pytest.raises(OSError) as info:
        ks.request_key("user", "prog:killed")
    assert info.value.errno == errno.ENOKEY
    assert _upcall_leftovers(store) == []


def test_a_named_session_called_like_a_handler_session_is_left_alone(store: Path) -> None:
    # Only a session the upcall made carries its maker's tag; a user's "_req.1" is a named session.
    a = kt.Keyspace(store=store)
    ses = a.join_session_keyring("_req.1")
    a.add_key("user", "kept", b"1", "@s")
    a.store.close()
    b = _keyspace(store)
    assert [k.description for k in b.keyring(ses.serial).keys()] == ["kept"]
    b.store.close()


_DIFF_SCRIPT = """#!/bin/sh
# $1: the key under construction, $2: the callout info, $3: the requester's session keyring
log={log}
other=$(cat {other})
keyctl instantiate "$other" x "$3" 2>>"$log"; echo "other-key $?" >>"$log"
keyctl reject "$1" 30 "$3" "$3" 2>>"$log"; echo "bad-error $?" >>"$log"
keyctl instantiate "$1" "built" "$3" 2>>"$log"; echo "holder $?" >>"$log"
keyctl instantiate "$1" again "$3" 2>>"$log"; echo "again-into-session $?" >>"$log"
keyctl instantiate "$1" again 0 2>>"$log"; echo "again $?" >>"$log"
keyctl negate "$1" 30 0 2>>"$log"; echo "negate-again $?" >>"$log"
"""


@pytest.mark.kernel
def test_a_programs_calls_answer_as_on_the_kernel(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same program, started by /sbin/request-key for the kernel and by RequestKeyConfig
    for the store, sees the same outcomes of its keyctl calls."""
    from conftest import kernel_keyring_reachable, require

    require(os.geteuid() == 0, "root (to add a rule under /etc/request-key.d)")
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    require(Path("/sbin/request-key").exists(), "/sbin/request-key (Debian package keyutils)")
    require(Path("/bin/keyctl").exists(), "keyctl (Debian package keyutils)")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
    desc = f"ktstoreprog{os.getpid()}"
    logs = {}
    for side in ("kernel", "store"):
        log, other = tmp_path / f"{side}.log", tmp_path / f"{side}.other"
        script = tmp_path / f"{side}.sh"
        script.write_text(_DIFF_SCRIPT.format(log=shlex.quote(str(log)), other=shlex.quote(str(other))))
        script.chmod(0o700)
        line = f"create user {desc}:* * {script} %k %c %S\n"
        if side == "kernel":
            rules = Path("/etc/request-key.d")
            made = not rules.exists()
            rules.mkdir(mode=0o755, exist_ok=True)
            rule = rules / f"kt-store-program-{os.getpid()}.conf"
            rule.write_text(line)
            try:
                run = subprocess.run(
                    ["/bin/keyctl", "session", f"{desc}-ses", "sh", "-c",
                     f"/bin/keyctl add user not-mine x @s > {shlex.quote(str(other))} && "
                     f"/bin/keyctl request2 user {desc}:1 info @s >/dev/null && /bin/keyctl print %user:{desc}:1"],
                    capture_output=True, text=True, timeout=120, check=False,
                )  # fmt: skip
            finally:
                rule.unlink()
                if made:
                    rules.rmdir()
            assert (run.returncode, run.stdout) == (0, "built\n"), run.stderr
        else:
            conf = tmp_path / "store.conf"
            conf.write_text(line)
            kt.register_request_key_handler("user", f"{desc}:*", RequestKeyConfig(conf=conf, confdir=None))
            try:
                ks = _keyspace(store)
                other.write_text(str(ks.add_key("user", "not-mine", b"x", "@s").serial))
                assert ks.request_key("user", f"{desc}:1", "info", "@s").read() == b"built"
            finally:
                kt.unregister_request_key_handler("user", f"{desc}:*")
        logs[side] = log.read_text()
    assert logs["store"] == logs["kernel"]
    assert "holder 0" in logs["store"] and "keyctl_instantiate: Device or resource busy" in logs["store"]
