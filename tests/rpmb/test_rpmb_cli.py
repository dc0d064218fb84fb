"""``ktctl rpmb``: every verb through the dispatcher, against an emulator; exit codes 0/1/2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import kernel_keyring_reachable, require
from rpmb_util import child_env, emulator

from keyring_types.cli import rpmb as cli
from keyring_types.rpmb import frames as F

KEY = bytes(range(1, 33))


def ktctl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "keyring_types", "rpmb", *args], input=stdin, env=child_env(),
                          capture_output=True, timeout=60, check=False)


def test_verbs_against_the_emulator(tdir: Path) -> None:
    (tdir / "key").write_bytes(KEY)
    k = ["--key-file", str(tdir / "key")]
    with emulator(tdir) as e:
        s = str(e.sock)
        r = ktctl("version", s, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["transport"] == "emulator"
        assert json.loads(ktctl("caps", s, "--json").stdout)["capacity_blocks"] == 1024
        r = ktctl("counter", s, *k)
        assert r.returncode == 1 and r.stderr.decode().startswith("ktctl rpmb counter: ")
        assert "KEY_NOT_PROGRAMMED" in r.stderr.decode()
        r = ktctl("program-key", s, *k)
        assert r.returncode == 1 and "--confirm" in r.stderr.decode()
        assert ktctl("program-key", s, "--key-file", "-", "--confirm", stdin=KEY).returncode == 0
        r = ktctl("program-key", s, *k, "--confirm")
        assert r.returncode == 1 and "already has" in r.stderr.decode()
        data = os.urandom(768)
        r = ktctl("write", s, "4", *k, "--json", stdin=data)
        assert (r.returncode, json.loads(r.stdout)) == (0, {"counter": 1})
        r = ktctl("read", s, "4", "3", *k)
        assert (r.returncode, r.stdout) == (0, data)
        assert ktctl("counter", s, *k).stdout == b"1\n"
        r = ktctl("write", s, "4", "--key-file", "-", stdin=KEY)
        assert r.returncode == 2  # key and data cannot both be standard input
        r = ktctl("write", s, "4", *k, stdin=b"odd")
        assert r.returncode == 1 and "whole 256-byte blocks" in r.stderr.decode()
        # Pre-signed frames: the signer made them, ktctl only relays.
        nonce = os.urandom(16)
        req = bytes(F.read_request(nonce, address=4, block_count=3))
        r = ktctl("submit", s, stdin=req)
        assert r.returncode == 0
        assert F.check_read_response(KEY, r.stdout, nonce=nonce, address=4, blocks=3).data() == data
        w = bytes(F.write_request(KEY, bytes(256), address=0, write_counter=1))
        r = ktctl("submit", s, "--readonly", stdin=w)
        assert r.returncode == 1 and "opened for writing" in r.stderr.decode()
    r = ktctl("counter", s, *k)
    assert r.returncode == 1  # no emulator: an errno, not a hang


def test_usage_and_help() -> None:
    assert cli.main([]) == 2
    assert cli.main(["nope"]) == 2
    assert cli.main(["read", "x", "1"]) == 2  # no key option
    for verb in ("version", "caps", "program-key", "counter", "write", "read", "submit", "vendor", "emulate", "harness-env"):
        r = ktctl(verb, "--help")
        assert r.returncode == 0 and b"usage: ktctl rpmb " + verb.encode() in r.stdout


def test_kernel_key_by_serial(tdir: Path) -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    import keyring_types as kt

    # A fresh session keyring, which ktctl inherits: both processes possess the keys
    # (a user key grants its owner no read without possession).
    kk = kt.KernelKeyspace(new_session=True)
    user = kk.add_key("user", "ktctl-rpmb-test", KEY, "@s")
    logon = kk.add_key("logon", "ktctl:rpmb-test", KEY, "@s")
    try:
        with emulator(tdir) as e:
            assert ktctl("program-key", str(e.sock), "--key-id", str(user.serial), "--confirm").returncode == 0
            assert ktctl("counter", str(e.sock), "--key-id", str(user.serial)).stdout == b"0\n"
            r = ktctl("counter", str(e.sock), "--key-id", str(logon.serial))
            assert r.returncode == 1 and "cannot be read from user space" in r.stderr.decode()
    finally:
        user.invalidate()
        logon.invalidate()


def test_emulate_in_the_foreground(tdir: Path) -> None:
    sock = tdir / "s"
    proc = subprocess.Popen([sys.executable, "-m", "keyring_types", "rpmb", "emulate", "--socket", str(sock),
                             "--state", str(tdir / "st"), "--rekey-result", "write", "--size-mult", "1"],
                            env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert json.loads(ktctl("caps", str(sock), "--json").stdout)["capacity"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert not sock.exists()
    r = ktctl("emulate", "--socket", str(sock), "--state", str(tdir / "st"), "--size-mult", "3")
    assert r.returncode == 1 and b"size_mult" in r.stderr
