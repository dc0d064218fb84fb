"""The host root: pinned vectors, the seed file's life, and the key type's user-key behaviour."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest
from derived_tools import host_kdf
from vector_data import load_vector_file

import keyring_types as kt
from keyring_types.derive import registry
from keyring_types.derive.host import SEED_FILE, HostRoot
from keyring_types.derive.kdf import kdf_info
from keyring_types.secret import SecretBuffer

pytest_plugins = ("derived_fixtures",)

DOC = load_vector_file("derived_keys")
SEED = bytes.fromhex(DOC["host_seed_hex"])


def put_seed(home: Path, seed: bytes = SEED, mode: int = 0o400) -> Path:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / SEED_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(seed)
    os.chmod(path, mode)
    return path


def root_derive(length: int, euid: int, label: bytes, value: bytes) -> bytes:
    out = SecretBuffer(length)
    registry.get_root().derive_into(kdf_info(length, euid, label, value), out.writable())
    return out.tobytes()


@pytest.mark.parametrize("vec", DOC["vectors"], ids=lambda v: f"{v['length']}-{v['label']}-{v['euid']}")
def test_pinned_host_vectors(host_home: Path, vec: dict[str, object]) -> None:
    put_seed(host_home)
    args = (int(vec["length"]), int(vec["euid"]), str(vec["label"]).encode(), bytes.fromhex(str(vec["value_hex"])))  # type: ignore[call-overload]
    assert root_derive(*args).hex() == vec["key_hex"]
    assert host_kdf(SEED, *args).hex() == vec["key_hex"]  # the vector file and the by-hand construction agree


def test_rfc_example_message_is_what_the_library_mixes() -> None:
    ex = DOC["rfc_example"]
    info = kdf_info(ex["length"], ex["euid"], ex["label"].encode(), ex["value"].encode())
    assert (b"\x00\x00\x00\x01" + info).hex() == ex["first_prf_input_hex"]


@pytest.mark.parametrize("length", [1, 32, 33, 64, 1024])
def test_key_type_on_the_host_root(host_home: Path, length: int) -> None:
    put_seed(host_home)
    key = kt.Keyspace().add_key("derived", "app", f"{length} path", "@s")
    assert key.read() == host_kdf(SEED, length, os.geteuid(), b"path", os.readlink(b"/proc/self/exe"))
    assert key.describe() == f"derived;{os.geteuid()};{os.getegid()};3b010000;app"


def test_the_seed_is_made_by_the_first_derivation_only(host_home: Path) -> None:
    ks = kt.Keyspace()
    with pytest.raises(OSError):
        ks.add_key("derived", "app", "0 path", "@s")
    with pytest.raises(OSError):
        ks.add_key("derived", "app", "32 csum", "@s")  # no IMA list here, no opt-in
    assert not (host_home / SEED_FILE).exists()
    first = ks.add_key("derived", "app", "32 path", "@s").read()
    st = (host_home / SEED_FILE).stat()
    assert stat.S_IMODE(st.st_mode) == 0o400 and st.st_size == 32
    registry.clear_cache()
    assert kt.Keyspace().add_key("derived", "app", "32 path", "@s").read() == first  # read back, not re-made
    seed = (host_home / SEED_FILE).read_bytes()
    assert first == host_kdf(seed, 32, os.geteuid(), b"path", os.readlink(b"/proc/self/exe"))


def test_a_seed_others_can_read_is_refused(host_home: Path) -> None:
    put_seed(host_home, mode=0o644)
    with pytest.raises(OSError) as exc:
        kt.Keyspace().add_key("derived", "app", "32 path", "@s")
    assert exc.value.errno == errno.EACCES


def test_a_seed_of_the_wrong_size_is_refused(host_home: Path) -> None:
    put_seed(host_home, seed=b"short")
    with pytest.raises(OSError) as exc:
        kt.Keyspace().add_key("derived", "app", "32 path", "@s")
    assert exc.value.errno == errno.EINVAL


def test_user_key_behaviour(host_home: Path) -> None:
    ks = kt.Keyspace()
    key = ks.add_key("derived", "app", "48 path", "@s")
    first = key.read()
    assert len(first) == 48
    assert any(line.endswith(" derived   app: 48") for line in ks.proc_keys())  # user_describe
    # No update op: the key is made without WRITE (perm 3b010000), so keyctl update is EACCES, as in the kernel.
    with pytest.raises(OSError) as exc:
        key.update("48 path")
    assert exc.value.errno == errno.EACCES
    again = ks.add_key("derived", "app", "48 path", "@s")  # no update: a new key displaces the old
    assert again.serial != key.serial and again.read() == first
    again.revoke()
    with pytest.raises(OSError) as exc:
        again.read()
    assert exc.value.errno == errno.EKEYREVOKED


def test_secret_gives_the_derived_bytes(host_home: Path) -> None:
    key = kt.Keyspace().add_key("derived", "app", "32 path", "@s")
    with key.secret() as mv:
        assert bytes(mv) == key.read()


def test_host_root_direct_use(tmp_path: Path) -> None:
    root = HostRoot(tmp_path / "d")
    out = bytearray(32)
    root.prf_into(b"m", memoryview(out))
    seed = (tmp_path / "d" / SEED_FILE).read_bytes()
    import hmac

    assert bytes(out) == hmac.new(seed, hashlib.sha256(b"m").digest(), "sha256").digest()
    root.close()
    root.prf_into(b"m", memoryview(out))  # reads the file again after close
    assert bytes(out) == hmac.new(seed, hashlib.sha256(b"m").digest(), "sha256").digest()
