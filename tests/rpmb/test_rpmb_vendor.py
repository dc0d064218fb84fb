"""Authenticated vendor commands (this project's own command set, shaped after the public
description of Micron's A-CRTM): relay allow-list, open mode, audit; the emulated flash's
HMAC, replay counter and lock policy."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import errno_of
from rpmb_util import Emulator, emulator

from keyring_types.rpmb import vendor as V
from keyring_types.rpmb.transport import EmulatorTransport

KEY = bytes(range(90, 122))


@pytest.fixture
def emu(tdir: Path) -> Iterator[Emulator]:
    with emulator(tdir) as e:
        yield e


def relay(emu: Emulator, tdir: Path, writable: bool = True, **kw: object) -> V.VendorRelay:
    return V.VendorRelay(EmulatorTransport(emu.sock), writable=writable, audit=tdir / "audit.jsonl", **kw)  # type: ignore[arg-type]


def audit(tdir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (tdir / "audit.jsonl").read_text().splitlines()]


def send(r: V.VendorRelay, key: bytes, opcode: int, sub: int, **kw: object) -> V.VendorResponse:
    nonce = os.urandom(16)
    cmd = V.sign_command(key, opcode, sub, nonce=nonce, **kw)  # type: ignore[arg-type]
    return V.check_response(key, r.relay(cmd), cmd)


def test_provision_write_measure_and_replay(emu: Emulator, tdir: Path) -> None:
    r = relay(emu, tdir)
    assert errno_of(send, r, KEY, V.OP_READ, V.SUB_COUNTER) == errno.ENOKEY
    send(r, KEY, V.OP_WRITE, V.SUB_PROVISION, payload=KEY)
    assert errno_of(send, r, KEY, V.OP_WRITE, V.SUB_PROVISION, payload=KEY) == errno.EEXIST
    assert send(r, KEY, V.OP_READ, V.SUB_COUNTER).counter == 0
    image = os.urandom(1000)
    w = V.sign_command(KEY, V.OP_WRITE, V.SUB_WRITE, counter=0, address=8192, payload=image)
    assert V.check_response(KEY, r.relay(w), w).counter == 1
    # The same signed packet again is a replay: refused, nothing written.
    assert errno_of(lambda: V.check_response(KEY, r.relay(w), w)) == errno.ESTALE
    m = send(r, KEY, V.OP_READ, V.SUB_MEASURE, address=8192, payload=struct.pack(">I", 1000))
    assert m.payload == hashlib.sha256(image).digest()
    # A packet signed with another key, or altered on the way, is refused by the device.
    assert errno_of(send, r, bytes(32), V.OP_WRITE, V.SUB_WRITE, counter=1, payload=b"x") == errno.EKEYREJECTED
    bad = bytearray(V.sign_command(KEY, V.OP_WRITE, V.SUB_WRITE, counter=1, address=0, payload=b"abc"))
    bad[V.HEAD.size] ^= 1
    assert errno_of(lambda: V.check_response(KEY, r.relay(bytes(bad)), bytes(bad))) == errno.EKEYREJECTED
    assert send(r, KEY, V.OP_READ, V.SUB_COUNTER).counter == 1


def test_lock_policy_and_persistence(emu: Emulator, tdir: Path) -> None:
    r = relay(emu, tdir)
    send(r, KEY, V.OP_WRITE, V.SUB_PROVISION, payload=KEY)
    send(r, KEY, V.OP_WRITE, V.SUB_LOCK, counter=0, address=4096, payload=struct.pack(">I", 4096))
    assert errno_of(send, r, KEY, V.OP_WRITE, V.SUB_WRITE, counter=1, address=5000, payload=b"x") == errno.EACCES
    assert send(r, KEY, V.OP_WRITE, V.SUB_WRITE, counter=1, address=0, payload=b"ok").counter == 2
    assert errno_of(send, r, KEY, V.OP_WRITE, V.SUB_WRITE, counter=2, address=65535, payload=b"xy") == errno.EINVAL
    emu.restart()
    r = relay(emu, tdir)
    assert send(r, KEY, V.OP_READ, V.SUB_COUNTER).counter == 2
    assert errno_of(send, r, KEY, V.OP_WRITE, V.SUB_WRITE, counter=2, address=4096, payload=b"x") == errno.EACCES


def test_relay_policy_and_audit(emu: Emulator, tdir: Path) -> None:
    rw = relay(emu, tdir)
    send(rw, KEY, V.OP_WRITE, V.SUB_PROVISION, payload=KEY)
    ro = relay(emu, tdir, writable=False)
    assert send(ro, KEY, V.OP_READ, V.SUB_COUNTER).counter == 0  # read class on a read-only open
    w = V.sign_command(KEY, V.OP_WRITE, V.SUB_WRITE, counter=0, payload=b"z")
    assert errno_of(ro.relay, w) == errno.EPERM
    narrow = relay(emu, tdir, allow={(V.OP_READ, V.SUB_COUNTER)})
    assert errno_of(narrow.relay, V.sign_command(KEY, V.OP_READ, V.SUB_MEASURE, payload=b"\0\0\0\1")) == errno.EOPNOTSUPP
    assert errno_of(rw.relay, V.sign_command(KEY, 0x9F, 0)) == errno.EOPNOTSUPP  # not on the default list
    assert errno_of(rw.relay, b"short") == errno.EINVAL
    assert send(rw, KEY, V.OP_READ, V.SUB_COUNTER).counter == 0  # the refused write never reached the device
    log = audit(tdir)
    assert [(e["class"], e["open"], e["outcome"], e["errno"]) for e in log] == [
        ("write", "rw", "relayed", 0),
        ("read", "ro", "relayed", 0),
        ("write", "ro", "refused", errno.EPERM),
        ("read", "rw", "refused", errno.EOPNOTSUPP),
        ("unknown", "rw", "refused", errno.EOPNOTSUPP),
        (None, "rw", "refused", errno.EINVAL),
        ("read", "rw", "relayed", 0),
    ]
    assert KEY.hex() not in (tdir / "audit.jsonl").read_text()  # the provisioning payload is not logged
    emu.kill9()
    assert errno_of(rw.relay, V.sign_command(KEY, V.OP_READ, V.SUB_COUNTER)) == errno.ECONNRESET
    assert audit(tdir)[-1]["outcome"] == "failed"


def test_response_checks_on_the_signer_side() -> None:
    cmd = V.sign_command(KEY, V.OP_READ, V.SUB_COUNTER, nonce=b"n" * 16)
    c = V.parse_command(cmd)
    good = V.build_response(KEY, 0, c, 5)
    assert V.check_response(KEY, good, cmd).counter == 5
    other = V.sign_command(KEY, V.OP_READ, V.SUB_COUNTER, nonce=b"m" * 16)
    assert errno_of(V.check_response, KEY, good, other) == errno.EBADMSG  # nonce not echoed
    assert errno_of(V.check_response, bytes(32), good, cmd) == errno.EBADMSG
    assert errno_of(V.sign_command, KEY, 256, 0) == errno.EINVAL


def test_ktctl_rpmb_vendor_relays_and_audits(emu: Emulator, tdir: Path) -> None:
    import subprocess
    import sys

    from rpmb_util import child_env

    def ktctl(*args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "keyring_types", "rpmb", "vendor", str(emu.sock),
                               "--audit", str(tdir / "audit.jsonl"), *args], input=stdin, env=child_env(),
                              capture_output=True, timeout=60, check=False)

    prov = V.sign_command(KEY, V.OP_WRITE, V.SUB_PROVISION, payload=KEY)
    r = ktctl("--readonly", stdin=prov)
    assert r.returncode == 1 and "opened for writing" in r.stderr.decode()
    r = ktctl(stdin=prov)
    assert r.returncode == 0 and V.check_response(KEY, r.stdout, prov).status == 0
    q = V.sign_command(KEY, V.OP_READ, V.SUB_COUNTER, nonce=os.urandom(16))
    r = ktctl("--readonly", stdin=q)
    assert r.returncode == 0 and V.check_response(KEY, r.stdout, q).counter == 0
    assert [e["outcome"] for e in audit(tdir)] == ["refused", "relayed", "relayed"]
