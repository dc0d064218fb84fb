"""Regression found in review: programming an RPMB key leaves no copy of the key in the
client's memory (it went through several immutable ``bytes``: the frame, the MMC command,
the wire message), over the emulator's socket, through ``/dev/mmcblkNrpmb`` (the
``LD_PRELOAD`` harness relaying the ioctl) and on NVMe."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rpmb_util import ROOT, child_env, emulator, need_harness

from keyring_types.rpmb.harness import harness_env

CHILD = textwrap.dedent(
    """
    import ctypes, struct, sys
    sys.path.insert(0, sys.argv[1])
    from memscan import Needle
    from keyring_types.rpmb import nvme
    from keyring_types.rpmb.device import RpmbDevice

    mode, path = sys.argv[2], sys.argv[3]
    n = Needle()

    class Controller:
        # Answers a counter read with "no key" and key programming with OK; reads only the type word.
        last = 0

        def __call__(self, fd, request, arg):
            op, addr, length = arg[0], struct.unpack_from("<Q", arg, 24)[0], struct.unpack_from("<I", arg, 36)[0]
            if op == nvme.NVME_ADMIN_SECURITY_SEND:
                kind = struct.unpack("<H", ctypes.string_at(addr + 254, 2))[0]
                if kind != 5:
                    self.last = kind
            elif op == nvme.NVME_ADMIN_SECURITY_RECV:
                answer = nvme.build_frame(self.last << 8, result=7 if self.last == 2 else 0)
                ctypes.memmove(addr, bytes(answer), len(answer))
            return 0

    if mode == "nvme":
        dev = RpmbDevice(nvme.NvmeTransport("/dev/nvme0", ioctl=Controller(), fd=-1))
    else:
        dev = RpmbDevice.open(path)
    with dev:
        dev.program_key(n.secret, confirm=True)
    n.secret[:] = bytes(len(n.secret))
    print("\\n".join(n.leftovers()) or "clean")
    """
)


def _run(mode: str, path: Path, env: dict[str, str]) -> list[str]:
    r = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "tests"), mode, str(path)], env=env,
                       capture_output=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().split("\n")[:-1]


@pytest.mark.parametrize("mode", ["emulator", "harness"])
def test_programming_over_emmc_leaves_no_key_behind(tdir: Path, mode: str) -> None:
    if mode == "harness":
        need_harness()
    with emulator(tdir) as emu:
        if mode == "emulator":
            out = _run(mode, emu.sock, child_env())
        else:
            dev = tdir / "mmcblk7rpmb"
            out = _run(mode, dev, child_env(**harness_env(emu.sock, dev)))
    assert out == ["clean"], f"copies of the key left in the client's memory at {out}"


def test_programming_over_nvme_leaves_no_key_behind(tdir: Path) -> None:
    out = _run("nvme", tdir, child_env())
    assert out == ["clean"], f"copies of the key left in the client's memory at {out}"
