"""State directory, atomic 0400 key files, and the host / emulated CAAM blob formats."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from keyring_types.secret import SecretBuffer
from keyring_types.state import (
    create_secret_file,
    load_or_create_secret,
    load_secret_file,
    state_dir,
)
from keyring_types.trust.caam import CAAM_BLOB_OVERHEAD, KEY_MODIFIER, CaamSource
from keyring_types.trust.host import HostSource
from keyring_types.trust.options import parse_options

NO_OPTS = parse_options(b"").options


def test_state_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "explicit"))
    assert state_dir() == tmp_path / "explicit"
    assert stat.S_IMODE((tmp_path / "explicit").stat().st_mode) == 0o700
    monkeypatch.delenv("KEYRING_TYPES_HOME")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir(create=False) == tmp_path / "xdg" / "keyring_types"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir(create=False) == tmp_path / "home" / ".local" / "state" / "keyring_types"


def test_secret_file_is_0400_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "d" / "k"
    assert create_secret_file(path, SecretBuffer.from_bytes(b"A" * 32)) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert create_secret_file(path, SecretBuffer.from_bytes(b"B" * 32)) is False
    assert load_secret_file(path, 32) == b"A" * 32
    assert sorted(p.name for p in path.parent.iterdir()) == ["k"], "no temporary files left behind"


def test_racing_creators_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "race.key"
    code = (
        "import hashlib, sys; from pathlib import Path;"
        "from keyring_types.state import load_or_create_secret;"
        "k = load_or_create_secret(Path(sys.argv[1]), 32);"
        "print(hashlib.sha256(k.tobytes()).hexdigest())"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE) for _ in range(6)]
    digests = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(digests) == 1
    assert hashlib.sha256(load_secret_file(path, 32).tobytes()).hexdigest().encode() in digests
    assert [p.name for p in tmp_path.iterdir()] == ["race.key"]


def test_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    load_or_create_secret(path, 32).wipe()
    os.chmod(path, 0o440)
    with pytest.raises(OSError) as info:
        load_secret_file(path, 32)
    assert info.value.errno == errno.EACCES
    os.chmod(path, 0o400)
    with pytest.raises(OSError) as info:
        load_secret_file(path, 16)
    assert info.value.errno == errno.EINVAL


def test_host_key_file_and_blob_layout(tmp_path: Path) -> None:
    src = HostSource(tmp_path)
    blob = src.seal(SecretBuffer.from_bytes(os.urandom(40)), NO_OPTS)
    assert stat.S_IMODE(src.key_path.stat().st_mode) == 0o400 and src.key_path.stat().st_size == 32
    assert blob[:4] == b"KTHK" and blob[4] == 1 and len(blob) == 40 + 42
    assert blob[5] == 0x01  # migratable by default, no blobauth


def test_host_blob_from_another_host_says_so(tmp_path: Path) -> None:
    blob = HostSource(tmp_path / "a").seal(SecretBuffer.from_bytes(os.urandom(32)), NO_OPTS)
    with pytest.raises(OSError) as info:
        HostSource(tmp_path / "b").unseal(blob, NO_OPTS)
    assert info.value.errno == errno.EBADMSG and "another host key" in str(info.value)


def test_host_blobauth_required_when_sealed_with_one(tmp_path: Path) -> None:
    src = HostSource(tmp_path)
    blob = src.seal(SecretBuffer.from_bytes(os.urandom(32)), parse_options("blobauth=pw").options)
    assert blob[5] & 0x02
    with pytest.raises(OSError) as info:
        src.unseal(blob, NO_OPTS)
    assert info.value.errno == errno.EPERM


def test_host_key_survives_instances(tmp_path: Path) -> None:
    key = SecretBuffer.from_bytes(os.urandom(32))
    blob = HostSource(tmp_path).seal(key, NO_OPTS)
    assert HostSource(tmp_path).unseal(blob, NO_OPTS).secret == key


def test_caam_blob_is_keylen_plus_48(tmp_path: Path) -> None:
    src = CaamSource(tmp_path)
    for n in (32, 100, 128):
        assert len(src.seal(SecretBuffer.from_bytes(os.urandom(n)), NO_OPTS)) == n + CAAM_BLOB_OVERHEAD == n + 48
    assert KEY_MODIFIER == b"SECURE_KEY"
    assert stat.S_IMODE(src.master_key_path.stat().st_mode) == 0o400
    assert src.master_key_path.name == "emulated-otpmk"


def test_caam_key_modifier_binds_the_blob(tmp_path: Path) -> None:
    blob = CaamSource(tmp_path).seal(SecretBuffer.from_bytes(os.urandom(32)), NO_OPTS)
    with pytest.raises(OSError) as info:
        CaamSource(tmp_path, key_modifier=b"OTHER_KEY").unseal(blob, NO_OPTS)
    assert info.value.errno == errno.EBADMSG
    with pytest.raises(OSError) as info:
        CaamSource(tmp_path, key_modifier=b"X" * 17)
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("n", [80 - 1, 176 + 1, 0])
def test_caam_rejects_impossible_lengths(tmp_path: Path, n: int) -> None:
    with pytest.raises(OSError) as info:
        CaamSource(tmp_path).unseal(os.urandom(n), NO_OPTS)
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("source", [HostSource, CaamSource])
@pytest.mark.parametrize("n", [31, 129])
def test_seal_rejects_bad_key_lengths(tmp_path: Path, source: type, n: int) -> None:
    with pytest.raises(OSError) as info:
        source(tmp_path).seal(SecretBuffer.from_bytes(bytes(n)), NO_OPTS)
    assert info.value.errno == errno.EINVAL


def test_caam_bkek_lives_in_secret_memory_and_is_wiped_on_close(tmp_path: Path) -> None:
    src = CaamSource(tmp_path)
    blob = src.seal(SecretBuffer.from_bytes(os.urandom(32)), NO_OPTS)
    bkek = src._bkek
    assert isinstance(bkek, SecretBuffer) and len(bkek) == 32
    # No attribute of the source holds the key in an ordinary bytes object.
    assert not any(isinstance(v, (bytes, bytearray)) and len(v) == 32 for v in vars(src).values())
    src.close()
    assert bkek.wiped and src._bkek is None
    src.unseal(blob, NO_OPTS).secret.wipe()  # derived again from the master key file


def test_caam_blob_format_and_derivation_unchanged(tmp_path: Path) -> None:
    # A blob built by hand with the emulation's documented derivation still opens:
    # BKEK = HMAC-SHA256(master, "emulated CAAM BKEK\0" + key modifier), enc(BK) by
    # AES-256-ECB under it, the key by AES-256-CCM under BK (16-byte MAC, zero nonce).
    import hmac as std_hmac

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    src = CaamSource(tmp_path)
    src.seal(SecretBuffer.from_bytes(os.urandom(32)), NO_OPTS)  # makes the master key file
    master = load_secret_file(src.master_key_path, 32).tobytes()
    bkek = std_hmac.new(master, b"emulated CAAM BKEK\0" + KEY_MODIFIER, hashlib.sha256).digest()
    bk, key = os.urandom(32), os.urandom(64)
    enc = Cipher(algorithms.AES(bkek), modes.ECB()).encryptor()
    blob = enc.update(bk) + enc.finalize() + AESCCM(bk, tag_length=16).encrypt(bytes(13), key, None)
    assert CaamSource(tmp_path).unseal(blob, NO_OPTS).secret == key
