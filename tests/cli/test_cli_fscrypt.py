"""``ktctl fscrypt`` on a real ext4 with encryption (loop device, root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import kernel_keyring_reachable, require
from loopfs import make_fs, open_dir, require_loop_fs

import keyring_types as kt
from keyring_types.integrations import fscrypt

pytestmark = [pytest.mark.root]


def ktctl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "keyring_types", "fscrypt", *args], input=stdin, capture_output=True, check=False)


@pytest.fixture(scope="module")
def fs() -> Iterator[Path]:
    require_loop_fs()
    with open_dir() as base:
        yield from make_fs(base, "cli", ["-O", "encrypt"])


def test_identifier_of_a_raw_key_on_stdin() -> None:
    raw = os.urandom(48)
    out = ktctl("identifier", stdin=raw)
    assert (out.returncode, out.stdout.decode().strip()) == (0, fscrypt.identifier(raw).hex())
    v1 = ktctl("identifier", "--v1", stdin=raw)
    assert v1.stdout.decode().strip() == fscrypt.descriptor(raw).hex()


@pytest.mark.parametrize("size", [15, 65, 0])
def test_identifier_refuses_a_key_of_the_wrong_size(size: int) -> None:
    out = ktctl("identifier", stdin=os.urandom(size))
    assert out.returncode == 1
    reason = "is longer than 64 bytes" if size > 64 else "an fscrypt master key must be 16..64 bytes"
    assert out.stderr.decode().startswith("ktctl fscrypt identifier: ") and reason in out.stderr.decode()
    assert b"Traceback" not in out.stderr


def test_the_whole_cycle_from_stdin(fs: Path) -> None:
    raw = os.urandom(64)
    added = ktctl("add-key", str(fs), stdin=raw)
    assert added.returncode == 0, added.stderr
    ident = added.stdout.decode().strip()
    assert ident == fscrypt.identifier(raw).hex()
    try:
        assert ktctl("status", ident, str(fs)).stdout.decode() == "Present (user_count=1, added_by_self)\n"
        d = fs / "cycle"
        d.mkdir()
        assert ktctl("set-policy", "--padding", "16", ident, str(d)).returncode == 0
        pol = json.loads(ktctl("get-policy", "--json", str(d)).stdout)
        assert (pol["version"], pol["key"], pol["padding"], pol["contents"]) == (2, ident, 16, "AES-256-XTS")
        text = ktctl("get-policy", str(d)).stdout.decode()
        assert f"\tMaster key identifier: {ident}\n" in text
        assert ktctl("set-policy", "--padding", "16", ident, str(d)).returncode == 0  # the same policy again
        other = ktctl("set-policy", ident, str(d))  # padding 32: another policy
        assert other.returncode == 1 and b"already has a different policy" in other.stderr
    finally:
        removed = ktctl("remove-key", ident, str(fs))
    assert removed.returncode == 0, removed.stderr
    assert ktctl("status", "--json", ident, str(fs)).stdout.strip() == b'{"status": "absent", "added_by_self": false, "user_count": 0}'


def test_add_key_by_key_id_of_a_kernel_provisioning_key(fs: Path) -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    kk = kt.KernelKeyspace(new_session=True)
    raw = os.urandom(32)
    payload = fscrypt.provisioning_payload(raw)
    try:
        pk = kk.add_key("fscrypt-provisioning", "fscrypt:cli", payload.view(), "@s")
    finally:
        payload.wipe()
    try:
        out = ktctl("add-key", "--key-id", str(pk.serial), str(fs))
        assert (out.returncode, out.stdout.decode().strip()) == (0, fscrypt.identifier(raw).hex()), out.stderr
        assert ktctl("remove-key", out.stdout.decode().strip(), str(fs)).returncode == 0
        user = kk.add_key("user", "fscrypt:notprov", os.urandom(32), "@s")
        refused = ktctl("add-key", "--key-id", str(user.serial), str(fs))
        assert refused.returncode == 1 and b"FS_IOC_ADD_ENCRYPTION_KEY" in refused.stderr
        user.invalidate()
    finally:
        pk.invalidate()


def test_errors_name_the_problem(fs: Path, tmp_path: Path) -> None:
    missing = "00" * 16
    assert ktctl("remove-key", missing, str(fs)).returncode == 1
    assert ktctl("status", "xyz", str(fs)).returncode == 2  # not an identifier: usage
    plain = fs / "plain"
    plain.mkdir()
    out = ktctl("get-policy", str(plain))
    assert (out.returncode, out.stderr.decode()) == (1, f"ktctl fscrypt get-policy: {plain} is not encrypted\n")
    assert ktctl("set-policy", "--contents", "ROT13", missing, str(plain)).returncode == 2
