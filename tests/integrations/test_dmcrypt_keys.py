"""dm-crypt: the table's key string and the cryptsetup-named logon key.

This kernel has no device-mapper, so no table is loaded: what is checked is the
string against dm-crypt's grammar (drivers/md/dm-crypt.c) and the key in the
kernel keyring that dm-crypt's request_key would find.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from conftest import errno_of, kernel_keyring_reachable, require

import keyring_types as kt
from keyring_types.integrations import dmcrypt

UUID = "6f1e2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"


@pytest.fixture
def kk() -> kt.KernelKeyspace:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    return kt.KernelKeyspace(new_session=True)


@pytest.mark.kernel
def test_table_key_for_kernel_keys(kk: kt.KernelKeyspace) -> None:
    logon = kk.add_key("logon", "dm:vol", os.urandom(32), "@s")
    user = kk.add_key("user", "dm:user", os.urandom(64), "@s")
    kk.add_key("user", "kmk", os.urandom(32), "@s")
    enc = kk.add_key("encrypted", "dm-enc", "new default user:kmk 48", "@s")
    assert dmcrypt.table_key(logon) == ":32:logon:dm:vol"
    assert dmcrypt.table_key(user) == ":64:user:dm:user"
    assert dmcrypt.table_key(enc) == ":48:encrypted:dm-enc"  # the decrypted length, not the blob's
    assert dmcrypt.table_key(logon, size=32) == ":32:logon:dm:vol"


def test_table_key_for_in_process_keys(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path))
    monkeypatch.setenv("KEYRING_TYPES_TRUST_SOURCE", "host")
    ks = kt.Keyspace()
    trusted = ks.add_key("trusted", "dm:t", "new 64", "@s")
    assert dmcrypt.table_key(trusted) == ":64:trusted:dm:t"
    user = ks.add_key("user", "u", b"k" * 24, "@s")
    assert dmcrypt.table_key(user) == ":24:user:u"


@pytest.mark.kernel
def test_table_key_refusals(kk: kt.KernelKeyspace) -> None:
    ks = kt.Keyspace()
    spaced = ks.add_key("user", "has space", b"k" * 32, "@s")
    assert errno_of(dmcrypt.table_key, spaced) == errno.EINVAL  # dm-crypt refuses whitespace
    tabbed = ks.add_key("logon", "a:\tb", b"k" * 32, "@s")
    assert errno_of(dmcrypt.table_key, tabbed) == errno.EINVAL
    ring = ks.add_key("keyring", "ring", None, "@s")
    assert errno_of(dmcrypt.table_key, ring) == errno.EINVAL  # not a type dm-crypt takes
    prov = ks.add_key("fscrypt-provisioning", "p", b"\x02\0\0\0\0\0\0\0" + b"k" * 32, "@s")
    assert errno_of(dmcrypt.table_key, prov) == errno.EINVAL
    user = ks.add_key("user", "u", b"k" * 32, "@s")
    for bad in (0, -1, 1.5, True):
        assert errno_of(dmcrypt.table_key, user, size=bad) == errno.EINVAL


def test_volume_key_description() -> None:
    assert dmcrypt.volume_key_description(UUID) == f"cryptsetup:{UUID}-d0"
    assert dmcrypt.volume_key_description(UUID, 3) == f"cryptsetup:{UUID}-d3"
    for bad_uuid in ("", "not-a-uuid", UUID + " ", None):
        assert errno_of(dmcrypt.volume_key_description, bad_uuid) == errno.EINVAL
    for bad_digest in (-1, "0", 1.0):
        assert errno_of(dmcrypt.volume_key_description, UUID, bad_digest) == errno.EINVAL


FIND = """
import sys, keyring_types.integrations.kernel_syscalls as sc
print(sc.request_key("logon", sys.argv[1], None, 0))
"""


@pytest.mark.kernel
def test_load_volume_key_is_a_logon_key_cryptsetup_would_find(kk: kt.KernelKeyspace) -> None:
    raw = os.urandom(64)
    src = kt.Keyspace().add_key("user", "vk", raw, "@s")
    vk = dmcrypt.load_volume_key(src, UUID, digest=1)
    desc = f"cryptsetup:{UUID}-d1"
    assert (vk.type, vk.description) == ("logon", desc)
    assert vk.describe().startswith("logon;0;0;")
    assert errno_of(vk.read) == errno.EOPNOTSUPP  # logon: the plaintext never comes back out
    assert dmcrypt.table_key(vk) == f":64:logon:{desc}"
    # dm-crypt looks it up with request_key in the loading process's keyrings: a child
    # sharing this session finds the same key by cryptsetup's description.
    out = subprocess.run([sys.executable, "-c", FIND, desc], check=True, capture_output=True, text=True)
    assert int(out.stdout) == vk.serial


@pytest.mark.kernel
def test_load_volume_key_refusals(kk: kt.KernelKeyspace) -> None:
    logon = kk.add_key("logon", "dm:x", os.urandom(32), "@s")
    assert errno_of(dmcrypt.load_volume_key, logon, UUID) == errno.EOPNOTSUPP  # no plaintext for us
    src = kt.Keyspace().add_key("user", "vk", os.urandom(32), "@s")
    assert errno_of(dmcrypt.load_volume_key, src, "nope") == errno.EINVAL
    with pytest.raises(OSError) as info:
        kk.request_key("logon", "cryptsetup:nope-d0")
    assert info.value.errno == errno.ENOKEY  # nothing half-made


@pytest.mark.kernel
def test_kernel_trusted_key_needs_a_size(kk: kt.KernelKeyspace) -> None:
    # A kernel trusted key's length is visible neither in /proc/keys nor in its blob.
    # This kernel has no trusted type (add_key gives ENODEV), so a handle that names
    # the type stands in for one: table_key decides by the handle's type.
    fake = kk.handle(kk.add_key("user", "dm:t", b"k" * 32, "@s").serial, "trusted", "dm:t")
    assert errno_of(dmcrypt.table_key, fake) == errno.EINVAL
    assert dmcrypt.table_key(fake, size=32) == ":32:trusted:dm:t"
