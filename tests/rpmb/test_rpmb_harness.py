"""The LD_PRELOAD harness: Debian's unmodified ``mmc`` (mmc-utils) and our own MMC transport
drive the emulator as if it were /dev/mmcblk0rpmb, and each reads what the other wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require
from rpmb_util import ROOT, Emulator, child_env, emulator, need_harness

from keyring_types.rpmb import RpmbDevice
from keyring_types.rpmb.harness import harness_env

KEY = bytes(range(7, 39))


@pytest.fixture
def emu(tdir: Path) -> Iterator[Emulator]:
    need_harness()
    with emulator(tdir) as e:
        yield e


@pytest.fixture
def mmc() -> str:
    path = shutil.which("mmc")
    require(path is not None, "mmc (Debian package mmc-utils)")
    assert path is not None
    return path


def run_mmc(emu: Emulator, device: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = child_env(**harness_env(emu.sock, device))
    return subprocess.run(["mmc", "rpmb", *args], env=env, input=stdin, capture_output=True, timeout=60,
                          cwd=device.parent, check=False)


def test_mmc_utils_against_the_emulator(emu: Emulator, mmc: str, tdir: Path) -> None:
    dev = tdir / "mmcblk0rpmb"  # need not exist: the harness answers its open()
    (tdir / "key").write_bytes(KEY)
    (tdir / "wrong").write_bytes(bytes(32))
    block = os.urandom(256)
    (tdir / "blk").write_bytes(block)

    r = run_mmc(emu, dev, "read-counter", str(dev))
    assert (r.returncode, r.stdout.decode()) == (1, "RPMB operation failed, retcode 0x0007\n")
    assert run_mmc(emu, dev, "write-key", str(dev), str(tdir / "key")).returncode == 0
    r = run_mmc(emu, dev, "write-key", str(dev), "-", stdin=KEY)
    assert (r.returncode, r.stdout.decode()) == (1, "RPMB operation failed, retcode 0x0001\n")
    r = run_mmc(emu, dev, "read-counter", "mmcblk0rpmb")  # a relative name reaches it too
    assert (r.returncode, r.stdout.decode()) == (0, "Counter value: 0x00000000\n")
    assert run_mmc(emu, dev, "write-block", str(dev), "0x10", str(tdir / "blk"), str(tdir / "key")).returncode == 0
    assert run_mmc(emu, dev, "read-counter", str(dev)).stdout.decode() == "Counter value: 0x00000001\n"
    r = run_mmc(emu, dev, "read-block", str(dev), "0x10", "1", str(tdir / "out"), str(tdir / "key"))
    assert r.returncode == 0 and (tdir / "out").read_bytes() == block  # mmc checked our MAC
    r = run_mmc(emu, dev, "read-block", str(dev), "0x10", "1", str(tdir / "out2"), str(tdir / "wrong"))
    assert r.returncode == 1 and b"MAC" in r.stdout + r.stderr
    r = run_mmc(emu, dev, "write-block", str(dev), "0x10", str(tdir / "blk"), str(tdir / "wrong"))
    assert (r.returncode, r.stdout.decode()) == (1, "RPMB operation failed, retcode 0x0002\n")
    # Files other than the device are untouched by the harness (mmc read its key files).
    assert run_mmc(emu, dev, "read-counter", str(tdir / "key")).returncode != 0


def test_mmc_and_our_client_read_each_other(emu: Emulator, mmc: str, tdir: Path) -> None:
    dev = tdir / "mmcblk0rpmb"
    (tdir / "key").write_bytes(KEY)
    assert run_mmc(emu, dev, "write-key", str(dev), str(tdir / "key")).returncode == 0
    theirs = os.urandom(256)
    (tdir / "blk").write_bytes(theirs)
    assert run_mmc(emu, dev, "write-block", str(dev), "5", str(tdir / "blk"), str(tdir / "key")).returncode == 0
    with RpmbDevice.open(emu.sock) as d:
        assert d.read_blocks(5, 1, KEY) == theirs
        ours = os.urandom(256 * 3)
        assert d.write_blocks(20, ours, KEY) == 2
    r = run_mmc(emu, dev, "read-block", str(dev), "20", "3", "-", str(tdir / "key"))
    assert r.returncode == 0 and r.stdout == ours


OUR_CLIENT = textwrap.dedent(
    """
    import errno, json, sys
    from keyring_types.rpmb import RpmbDevice
    key = bytes(range(7, 39))
    d = RpmbDevice.open(sys.argv[1])
    out = {"transport": d.version().transport, "caps": d.capabilities().capacity_blocks}
    if sys.argv[2] == "program":
        d.program_key(key, confirm=True)
    out["counter"] = d.counter(key)
    out["new"] = d.write_blocks(40, b"m" * 768, key)
    out["read"] = d.read_blocks(40, 3, key) == b"m" * 768
    try:
        d.program_key(key, confirm=True)
    except OSError as e:
        out["again"] = errno.errorcode[e.errno]
    print(json.dumps(out))
    """
)


def test_our_mmc_transport_through_the_harness(emu: Emulator, mmc: str, tdir: Path) -> None:
    dev = tdir / "mmcblk0rpmb"
    env = child_env(**harness_env(emu.sock, dev))
    r = subprocess.run([sys.executable, "-c", OUR_CLIENT, str(dev), "program"], env=env, capture_output=True,
                       timeout=60, cwd=ROOT, check=False)
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert out == {"transport": "mmc", "caps": 1024, "counter": 0, "new": 1, "read": True, "again": "EEXIST"}
    # mmc sees what our MMC transport wrote.
    (tdir / "key").write_bytes(KEY)
    r2 = run_mmc(emu, dev, "read-block", str(dev), "40", "3", "-", str(tdir / "key"))
    assert r2.returncode == 0 and r2.stdout == b"m" * 768
    assert run_mmc(emu, dev, "read-counter", str(dev)).stdout.decode() == "Counter value: 0x00000001\n"


def test_harness_env_lines_and_a_dead_emulator(emu: Emulator, mmc: str, tdir: Path) -> None:
    dev = tdir / "mmcblk0rpmb"
    r = subprocess.run([sys.executable, "-m", "keyring_types", "rpmb", "harness-env", "--socket", str(emu.sock),
                        "--device", str(dev)], env=child_env(), capture_output=True, timeout=60, check=True)
    lines = r.stdout.decode().splitlines()
    env = dict(line.split("=", 1) for line in lines)
    assert set(env) == {"LD_PRELOAD", "KT_RPMB_HARNESS_SOCKET", "KT_RPMB_HARNESS_DEVICE"}
    assert Path(env["LD_PRELOAD"]).is_file() and env["KT_RPMB_HARNESS_SOCKET"] == str(emu.sock)
    # `env $(ktctl rpmb harness-env ...) mmc rpmb read-counter PATH`, as the issue writes it.
    r = subprocess.run(["env", *lines, "mmc", "rpmb", "read-counter", str(dev)], capture_output=True, timeout=60, check=False)
    assert r.stdout.decode() == "RPMB operation failed, retcode 0x0007\n"
    emu.kill9()
    r = subprocess.run(["env", *lines, "mmc", "rpmb", "read-counter", str(dev)], capture_output=True, timeout=60, check=False)
    assert r.returncode == 1 and b"Connection refused" in r.stderr + r.stdout


def test_ktctl_rpmb_through_the_harness(emu: Emulator, tdir: Path) -> None:
    dev = tdir / "mmcblk0rpmb"
    (tdir / "key").write_bytes(KEY)
    env = child_env(**harness_env(emu.sock, dev))

    def ktctl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "keyring_types", "rpmb", *args], input=stdin, env=env,
                              capture_output=True, timeout=60, check=False)

    assert json.loads(ktctl("version", str(dev), "--json").stdout)["transport"] == "mmc"
    assert ktctl("program-key", str(dev), "--key-file", str(tdir / "key"), "--confirm").returncode == 0
    assert ktctl("write", str(dev), "9", "--key-file", str(tdir / "key"), stdin=b"k" * 256).stdout == b"1\n"
    with RpmbDevice.open(emu.sock) as d:  # the same device through the socket
        assert d.read_blocks(9, 1, KEY) == b"k" * 256
    # Under the harness any name is the device, as in the issue's `... --device /tmp/fake`.
    env = child_env(**harness_env(emu.sock, tdir / "fake"))
    assert ktctl("counter", str(tdir / "fake"), "--key-file", str(tdir / "key")).stdout == b"1\n"
