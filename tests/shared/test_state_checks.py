"""The state directory is checked before it is trusted (issue 12): owner, mode, links, FIFOs,
and a load never creates key material."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types.secret import SecretBuffer
from keyring_types.state import (
    load_or_create_secret,
    load_secret_file,
    private_dir,
    state_dir,
)
from keyring_types.trust import registry
from keyring_types.trust.caam import CaamSource
from keyring_types.trust.host import HostSource
from keyring_types.trust.options import parse_options

NO_OPTS = parse_options(b"").options
OTHER_UID = 4321


def _eacces(fn: object, *args: object) -> OSError:
    with pytest.raises(OSError) as info:
        fn(*args)  # type: ignore[operator]
    assert info.value.errno == errno.EACCES, info.value
    return info.value


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "state"
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(path))
    registry.clear_cache()
    yield path
    registry.clear_cache()


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o720, 0o702])
def test_state_dir_writable_by_others_is_refused(home: Path, mode: int) -> None:
    home.mkdir(mode=0o700)
    os.chmod(home, mode)
    err = _eacces(state_dir)
    assert str(home) in str(err) and "writable by group or others" in str(err)
    err = _eacces(HostSource)
    assert str(home) in str(err)


def test_state_dir_readable_by_others_is_accepted(home: Path) -> None:
    # Group/other may list the directory (the files in it are 0400); they may not write.
    home.mkdir(mode=0o700)
    os.chmod(home, 0o755)
    assert state_dir() == home


def test_state_dir_of_another_user_is_refused(need_root: None, home: Path) -> None:
    # A directory pre-created by someone else (KEYRING_TYPES_HOME under /tmp) must not be used.
    home.mkdir(mode=0o700)
    os.chown(home, OTHER_UID, OTHER_UID)
    err = _eacces(state_dir)
    assert str(home) in str(err) and f"uid {OTHER_UID}" in str(err)
    with pytest.raises(OSError) as info:
        kt.Keyspace().add_key("trusted", "k", "new 32 source=host", "@s")
    assert info.value.errno == errno.EACCES
    assert not (home / "host.key").exists(), "no key material written into someone else's directory"


def test_state_dir_below_a_directory_others_can_write_is_refused(home: Path) -> None:
    # Whoever can write the parent can rename our directory away and put theirs in its place.
    home.parent.chmod(0o777)
    try:
        err = _eacces(state_dir)
        assert str(home.parent) in str(err)
    finally:
        home.parent.chmod(0o700)


def test_sticky_parent_like_tmp_is_accepted(home: Path) -> None:
    home.parent.chmod(0o1777)
    try:
        assert state_dir() == home
    finally:
        home.parent.chmod(0o700)


def test_subdirectory_checked_too(home: Path) -> None:
    src = CaamSource()
    src.seal(SecretBuffer.from_bytes(os.urandom(32)), NO_OPTS)
    os.chmod(home / "caam", 0o777)
    src.close()
    err = _eacces(CaamSource().seal, SecretBuffer.from_bytes(os.urandom(32)), NO_OPTS)
    assert str(home / "caam") in str(err)


def test_key_file_of_another_user_is_refused(need_root: None, tmp_path: Path) -> None:
    path = tmp_path / "k"
    load_or_create_secret(path, 32).wipe()
    os.chown(path, OTHER_UID, OTHER_UID)
    err = _eacces(load_secret_file, path, 32)
    assert str(path) in str(err)


@pytest.mark.parametrize("mode", [0o440, 0o404, 0o420, 0o402, 0o640])
def test_key_file_group_or_other_bits_are_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k"
    load_or_create_secret(path, 32).wipe()
    os.chmod(path, mode)
    err = _eacces(load_secret_file, path, 32)
    assert str(path) in str(err) and f"{mode:04o}" in str(err)


def test_key_file_0600_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "k"
    load_or_create_secret(path, 32).wipe()
    os.chmod(path, 0o600)
    load_secret_file(path, 32).wipe()


def test_symlinked_key_file_is_refused_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    load_or_create_secret(real, 32).wipe()
    (tmp_path / "host.key").symlink_to(real)
    blob = HostSource(tmp_path / "other").seal(SecretBuffer.from_bytes(os.urandom(32)), NO_OPTS)
    err = _eacces(HostSource(tmp_path).unseal, blob, NO_OPTS)
    assert str(tmp_path / "host.key") in str(err) and "symbolic link" in str(err)
    err = _eacces(HostSource(tmp_path).seal, SecretBuffer.from_bytes(os.urandom(32)), NO_OPTS)
    assert (tmp_path / "host.key").is_symlink(), "the link is reported, not replaced"


def test_planted_fifo_does_not_hang_the_loader(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "host.key", 0o600)
    code = (
        "import sys; from pathlib import Path;"
        "from keyring_types.state import load_secret_file;"
        "\ntry:\n load_secret_file(Path(sys.argv[1]), 32)\nexcept OSError as e:\n print(e.errno, e)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "host.key")], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.stdout.startswith(f"{errno.EACCES} "), proc.stdout + proc.stderr
    assert "not a regular file" in proc.stdout and str(tmp_path / "host.key") in proc.stdout


def test_directory_in_place_of_the_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "host.key").mkdir()
    err = _eacces(load_secret_file, tmp_path / "host.key", 32)
    assert "not a regular file" in str(err)


def test_state_dir_that_is_a_file_is_refused(home: Path) -> None:
    home.write_bytes(b"")
    err = _eacces(state_dir)
    assert str(home) in str(err)


def test_private_dir_creates_0700(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert private_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700


# -- a load never creates key material -----------------------------------------------


def test_unseal_with_the_host_key_gone_is_enokey_and_creates_nothing(tmp_path: Path) -> None:
    src = HostSource(tmp_path)
    blob = src.seal(SecretBuffer.from_bytes(os.urandom(32)), NO_OPTS)
    src.close()
    (tmp_path / "host.key").unlink()
    with pytest.raises(OSError) as info:
        HostSource(tmp_path).unseal(blob, NO_OPTS)
    assert info.value.errno == errno.ENOKEY
    assert str(tmp_path / "host.key") in str(info.value)
    assert not (tmp_path / "host.key").exists(), "an unseal must not make a new host key"


def test_load_through_the_api_with_the_host_key_gone(home: Path) -> None:
    ks = kt.Keyspace()
    k = ks.add_key("trusted", "k", "new 32 source=host", "@s")
    blob = k.read().decode()
    registry.clear_cache()  # a new process, as far as the cached host key goes
    (home / "host.key").unlink()
    with pytest.raises(OSError) as info:
        ks.add_key("trusted", "k2", f"load {blob} source=host", "@s")
    assert info.value.errno == errno.ENOKEY and str(home / "host.key") in str(info.value)
    assert not (home / "host.key").exists()
    # A seal may create it again (a new key; the old blob stays unopenable).
    ks.add_key("trusted", "k3", "new 32 source=host", "@s")
    assert (home / "host.key").exists()


def test_unseal_with_the_caam_master_key_gone_is_enokey(tmp_path: Path) -> None:
    src = CaamSource(tmp_path)
    blob = src.seal(SecretBuffer.from_bytes(os.urandom(32)), NO_OPTS)
    src.close()
    src.master_key_path.unlink()
    with pytest.raises(OSError) as info:
        CaamSource(tmp_path).unseal(blob, NO_OPTS)
    assert info.value.errno == errno.ENOKEY and str(src.master_key_path) in str(info.value)
    assert not src.master_key_path.exists()


@pytest.mark.parametrize("source", [HostSource, CaamSource])
def test_a_device_that_never_sealed_rejects_without_creating(tmp_path: Path, source: type) -> None:
    blob = source(tmp_path / "a").seal(SecretBuffer.from_bytes(os.urandom(32)), NO_OPTS)
    with pytest.raises(OSError) as info:
        source(tmp_path / "b").unseal(blob, NO_OPTS)
    # Nothing was ever sealed there: the blob is another device's (the contract's errno).
    assert info.value.errno == errno.EBADMSG and str(tmp_path / "b") in str(info.value)
    assert not (tmp_path / "b").exists()
