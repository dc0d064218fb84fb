"""fscrypt without a filesystem: identifiers, descriptors, the fscrypt-provisioning
key type in both keyspaces, and arguments refused before any ioctl."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest
from conftest import errno_of, kernel_keyring_reachable, require

import keyring_types as kt
from keyring_types.integrations import fscrypt

# raw key 0x01..0x40 -> identifier, from xfstests common/encrypt (TEST_RAW_KEY /
# TEST_KEY_IDENTIFIER, computed there with an independent HKDF).
XFSTESTS_RAW = bytes(range(1, 65))
XFSTESTS_IDENTIFIER = bytes.fromhex("69b2f6edeee720cce0577937eb8a6751")
# v1 descriptors from google/fscryptctl test.py (sha512sum | xxd | sha512sum).
FSCRYPTCTL_DESCRIPTORS = [
    (b"a" * 64, "0394a446f8eaa61f"),
    (b"b" * 64, "904a9ca97689ad11"),
    (b"c" * 64, "a8134316f6879ed4"),
]


def test_identifier_matches_xfstests_vector() -> None:
    assert fscrypt.identifier(XFSTESTS_RAW) == XFSTESTS_IDENTIFIER
    assert fscrypt.identifier(memoryview(XFSTESTS_RAW)) == XFSTESTS_IDENTIFIER


@pytest.mark.parametrize(("raw", "want"), FSCRYPTCTL_DESCRIPTORS)
def test_descriptor_matches_fscryptctl_vectors(raw: bytes, want: str) -> None:
    assert fscrypt.descriptor(raw).hex() == want


@pytest.mark.parametrize("n", [0, 15, 65, 128])
def test_sizes_outside_16_to_64_are_einval(n: int) -> None:
    assert errno_of(fscrypt.identifier, b"k" * n) == errno.EINVAL
    assert errno_of(fscrypt.descriptor, b"k" * n) == errno.EINVAL
    assert errno_of(fscrypt.provisioning_payload, b"k" * n) == errno.EINVAL


def test_provisioning_payload_layout() -> None:
    buf = fscrypt.provisioning_payload(b"r" * 32)
    try:
        assert bytes(buf.view()) == struct.pack("=II", 2, 0) + b"r" * 32
    finally:
        buf.wipe()


# -- the fscrypt-provisioning key type: Keyspace against the kernel ------------------

PAYLOADS = {
    "v2 32": struct.pack("=II", 2, 0) + b"a" * 32,
    "v1 16": struct.pack("=II", 1, 0) + b"a" * 16,
    "v2 64": struct.pack("=II", 2, 0) + b"a" * 64,
    "hw 128": struct.pack("=II", 2, 1) + b"a" * 128,
    "hw 129": struct.pack("=II", 2, 1) + b"a" * 129,
    "v1 hw": struct.pack("=II", 1, 1) + b"a" * 32,
    "raw 65": struct.pack("=II", 2, 0) + b"a" * 65,
    "raw 15": struct.pack("=II", 2, 0) + b"a" * 15,
    "type 0": struct.pack("=II", 0, 0) + b"a" * 32,
    "type 3": struct.pack("=II", 3, 0) + b"a" * 32,
    "flag 2": struct.pack("=II", 2, 2) + b"a" * 32,
    "short": b"a" * 7,
    "empty": b"",
}


def outcome(space: kt.Keyspace | kt.KernelKeyspace, payload: bytes) -> tuple[object, ...]:
    try:
        k = space.add_key("fscrypt-provisioning", "fs:p", payload, "@s")
    except OSError as e:
        return ("add", e.errno)
    perm = k.describe().split(";")[3]
    read = errno_of(k.read)
    update = errno_of(k.update, payload)
    return ("ok", perm, read, update)


def kernel_describe_column(serial: int) -> str:
    with open("/proc/keys", encoding="utf-8") as f:
        for line in f:
            if line.startswith(f"{serial:08x} "):
                return line.rstrip("\n").split(None, 7)[7]
    raise AssertionError(f"key {serial} not in /proc/keys")


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(PAYLOADS))
def test_provisioning_type_matches_the_kernel(name: str) -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    payload = PAYLOADS[name]
    assert outcome(kt.Keyspace(), payload) == outcome(kt.KernelKeyspace(new_session=True), payload)


@pytest.mark.kernel
def test_provisioning_describe_matches_the_kernel() -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    payload = PAYLOADS["v1 16"]
    ks = kt.Keyspace()
    ks.add_key("fscrypt-provisioning", "fs:d", payload, "@s")
    mine = [line.split(None, 7)[7] for line in ks.proc_keys() if "fscrypt" in line]
    kk = kt.KernelKeyspace(new_session=True)
    theirs = kernel_describe_column(kk.add_key("fscrypt-provisioning", "fs:d", payload, "@s").serial)
    assert mine == [theirs] == ["fscrypt-p fs:d: 24 [1]"]  # type column, then describe


def test_in_process_provisioning_secret_is_the_payload() -> None:
    ks = kt.Keyspace()
    k = ks.add_key("fscrypt-provisioning", "fs:s", PAYLOADS["v2 32"], "@s")
    with k.secret() as mv:
        assert bytes(mv) == PAYLOADS["v2 32"]
    k.revoke()
    assert errno_of(k.describe) == errno.EKEYREVOKED


# -- arguments refused before any call -------------------------------------------------


def test_bad_arguments_are_einval_before_the_filesystem_is_touched(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"  # an ioctl would give ENOENT: EINVAL proves nothing ran
    ident = bytes(16)
    assert errno_of(fscrypt.set_policy, missing, ident, contents="AES-512-XTS") == errno.EINVAL
    assert errno_of(fscrypt.set_policy, missing, ident, filenames="rot13") == errno.EINVAL
    assert errno_of(fscrypt.set_policy, missing, ident, padding=64) == errno.EINVAL
    assert errno_of(fscrypt.set_policy, missing, ident, padding=True) == errno.EINVAL
    assert errno_of(fscrypt.set_policy, missing, bytes(8)) == errno.EINVAL
    assert errno_of(fscrypt.key_status, missing, bytes(15)) == errno.EINVAL
    assert errno_of(fscrypt.remove_key, missing, "x" * 16) == errno.EINVAL
    assert errno_of(fscrypt.add_key, missing, "not a key") == errno.EINVAL
    # with good arguments the path is opened, and its errno comes through
    assert errno_of(fscrypt.key_status, missing, ident) == errno.ENOENT


def test_no_fscrypt_ioctls_is_enotty() -> None:
    # procfs implements none of the FS_IOC_*ENCRYPTION* ioctls
    assert errno_of(fscrypt.key_status, "/proc", bytes(16)) == errno.ENOTTY
    assert errno_of(fscrypt.get_policy, "/proc") == errno.ENOTTY
    ks = kt.Keyspace()
    k = ks.add_key("user", "fs:k", os.urandom(32), "@s")
    assert errno_of(fscrypt.add_key, "/proc", k) == errno.ENOTTY


def test_add_key_refuses_a_short_key_with_einval() -> None:
    ks = kt.Keyspace()
    k = ks.add_key("user", "fs:short", b"k" * 15, "@s")
    assert errno_of(fscrypt.add_key, "/proc", k) == errno.EINVAL  # before the ioctl (else ENOTTY)
