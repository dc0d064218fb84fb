"""``ktctl luks`` with cryptsetup as the peer, on a sparse image file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import kernel_keyring_reachable, require

import keyring_types as kt

PASS = b"correct horse battery staple"
CHEAP = ("--pbkdf", "pbkdf2", "--iterations", "1000")


def cryptsetup() -> str:
    exe = shutil.which("cryptsetup") or shutil.which("cryptsetup", path="/usr/sbin:/sbin")
    require(exe is not None, "cryptsetup (Debian package cryptsetup-bin)")
    assert exe is not None
    return exe


def ktctl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "keyring_types", "luks", *args], input=stdin, capture_output=True, check=False)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    img = tmp_path / "luks.img"
    with open(img, "wb") as f:
        f.truncate(32 << 20)
    return img


@pytest.fixture
def passfile(tmp_path: Path) -> Path:
    p = tmp_path / "pass"
    p.write_bytes(PASS)
    return p


def dumped_volume_key(exe: str, image: Path) -> bytes:
    out = subprocess.run(
        [exe, "luksDump", "--dump-volume-key", "--batch-mode", "--key-file", "-", str(image)],
        input=PASS,
        capture_output=True,
        check=True,
        env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "")},
    ).stdout.decode()
    return bytes.fromhex("".join(re.findall(r"\b[0-9a-f]{2}\b", out.split("MK dump:", 1)[1])))


def test_format_takes_the_volume_key_from_stdin(image: Path, passfile: Path) -> None:
    exe = cryptsetup()
    vk = os.urandom(64)
    out = ktctl("format", str(image), "--passphrase-file", str(passfile), *CHEAP, stdin=vk)
    assert out.returncode == 0, out.stderr
    assert dumped_volume_key(exe, image) == vk


def test_format_errors(image: Path, passfile: Path, tmp_path: Path) -> None:
    cryptsetup()
    empty = ktctl("format", str(image), "--passphrase-file", str(passfile), *CHEAP, stdin=b"")
    assert (empty.returncode, empty.stderr) == (1, b"ktctl luks format: a volume key cannot be empty\n")
    nopass = ktctl("format", str(image), "--passphrase-file", str(tmp_path / "none"), stdin=os.urandom(32))
    assert nopass.returncode == 1 and b"cannot open the passphrase file" in nopass.stderr
    odd = ktctl("format", str(image), "--passphrase-file", str(passfile), *CHEAP, stdin=os.urandom(17))
    assert odd.returncode == 1 and odd.stderr.startswith(b"ktctl luks format: luksFormat on")  # cryptsetup refuses
    assert ktctl("format", str(image)).returncode == 2  # --passphrase-file is required


@pytest.fixture
def session() -> Iterator[kt.KernelKeyspace]:
    """A fresh session keyring (inherited by ktctl and cryptsetup); its keys are invalidated after."""
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    space = kt.KernelKeyspace(new_session=True)
    yield space
    ring = space.handle(space.resolve("@s"))
    assert isinstance(ring, kt.Keyring)
    for key in ring.keys():
        key.invalidate()


def test_token_and_passphrase_in_the_kernel_keyring_open_the_volume(image: Path, passfile: Path, session: kt.KernelKeyspace) -> None:
    exe = cryptsetup()
    assert ktctl("format", str(image), "--passphrase-file", str(passfile), *CHEAP, stdin=os.urandom(32)).returncode == 0
    assert ktctl("token-add", str(image), "luks:cli").returncode == 0

    def opens() -> int:
        return subprocess.run([exe, "open", "--test-passphrase", "--token-only", str(image)], capture_output=True, check=False).returncode

    assert opens() == 2  # no key in the keyring yet
    loaded = ktctl("load-passphrase", "luks:cli", stdin=PASS)
    assert loaded.returncode == 0, loaded.stderr
    key = session.key(int(loaded.stdout))
    assert (key.type, key.description) == ("user", "luks:cli")
    assert opens() == 0
    bad_slot = ktctl("token-add", str(image), "luks:cli", "--key-slot", "40")
    assert (bad_slot.returncode, bad_slot.stderr) == (1, b"ktctl luks token-add: a LUKS2 keyslot is 0..31\n")
