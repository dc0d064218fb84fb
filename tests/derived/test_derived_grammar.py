"""The RFC's grammar and errno, who is asking (euid, path, IMA), and choosing the root."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import ClassVar

import pytest
from derived_tools import host_kdf

import keyring_types as kt
from keyring_types.derive import identity, registry
from keyring_types.derive.base import DeriveRoot
from keyring_types.derive.host import SEED_FILE, HostRoot
from keyring_types.types.derived import parse_payload

pytest_plugins = ("derived_fixtures",)

GOOD = [
    (b"32 path", 32, b"path"),
    (b"1 csum", 1, b"csum"),
    (b"1024 path", 1024, b"path"),
    (b"32\tpath", 32, b"path"),  # strsep on " \t"
    (b"+32 path", 32, b"path"),  # kstrtoul takes a '+'
    (b"32\n path", 32, b"path"),  # ... and one newline after the digits
    (b"0032 path", 32, b"path"),
    (b"32 path\0ignored", 32, b"path"),  # the C string ends at the NUL
]
BAD = [
    (b"", errno.EINVAL),
    (b"\0", errno.EINVAL),
    (b"32", errno.EINVAL),  # no mode
    (b"32 ", errno.EINVAL),  # empty mode
    (b"32 path ", errno.EINVAL),  # match_token compares the whole remainder
    (b"32  path", errno.EINVAL),
    (b"32 path\n", errno.EINVAL),
    (b"32 PATH", errno.EINVAL),
    (b"32 pat", errno.EINVAL),
    (b"32 path v1", errno.EINVAL),  # the rotation mixin is not the RFC's
    (b" 32 path", errno.EINVAL),
    (b"0 path", errno.EINVAL),
    (b"1025 path", errno.EINVAL),
    (b"-1 path", errno.EINVAL),
    (b"0x20 path", errno.EINVAL),  # decimal only
    (b"abc path", errno.EINVAL),
    (b"99999999999999999999999 path", errno.ERANGE),
    (b"0 nonsense", errno.EINVAL),  # the length is checked before the mode
]


@pytest.mark.parametrize(("payload", "length", "mode"), GOOD)
def test_grammar_accepts(payload: bytes, length: int, mode: bytes) -> None:
    assert parse_payload(payload) == (length, mode)


@pytest.mark.parametrize(("payload", "err"), BAD)
def test_grammar_refuses_with_the_kernels_errno(payload: bytes, err: int, host_home: Path) -> None:
    with pytest.raises(OSError) as exc:
        parse_payload(payload)
    assert exc.value.errno == err
    ks = kt.Keyspace()
    with pytest.raises(OSError) as exc2:
        ks.add_key("derived", "app", payload, "@s")
    assert exc2.value.errno == err
    assert not any(" derived " in line for line in ks.proc_keys())  # nothing half-made
    assert not (host_home / SEED_FILE).exists()


def test_messages_do_not_echo_the_payload() -> None:
    for payload in (b"32 s3cr3tword", b"s3cr3tword path", b"32 path s3cr3tword"):
        with pytest.raises(OSError) as exc:
            parse_payload(payload)
        assert "s3cr3t" not in str(exc.value)


# -- who is asking ------------------------------------------------------------------------------


def test_map_id() -> None:
    assert identity.map_id(5, "0 0 4294967295\n") == 5
    assert identity.map_id(0, "         0     100000      65536\n") == 100000
    assert identity.map_id(1000, "0 1000 1\n1 100000 65536\n") == 100999
    with pytest.raises(OSError) as exc:
        identity.map_id(70000, "0 100000 65536\n")
    assert exc.value.errno == errno.EINVAL


def test_kernel_euid_and_exe_path_here() -> None:
    assert identity.kernel_euid() == identity.map_id(os.geteuid(), Path("/proc/self/uid_map").read_text())
    assert identity.exe_path() == os.readlink(b"/proc/self/exe")


D1, D2, D3 = (hashlib.sha256(bytes([i])).hexdigest() for i in range(3))
LOG = f"""10 {"a" * 40} ima-ng sha256:{"0" * 64} boot_aggregate
10 {"b" * 40} ima-ng sha256:{D1} /usr/bin/app
10 {"c" * 40} ima-sig sha256:{D2} /usr/bin/app{" "}
10 {"0" * 40} ima-ng sha256:{"0" * 64} /usr/bin/app
10 {"d" * 40} ima {"1" * 40} /usr/bin/old
10 {"e" * 40} ima-ng sha1:{"2" * 40} /opt/my_app
10 {"f" * 40} ima-buf sha256:{D3} /usr/bin/other
""".encode()


def test_ima_digest_takes_the_last_real_measurement() -> None:
    # The ima-sig line has an empty signature field: IMA ends it with "<path> ".
    assert identity.ima_digest(LOG, b"/usr/bin/app") == bytes.fromhex(D2)  # the violation after it is skipped
    assert identity.ima_digest(LOG, b"/usr/bin/old") == bytes.fromhex("1" * 40)  # legacy 'ima' template
    assert identity.ima_digest(LOG, b"/opt/my app") == bytes.fromhex("2" * 40)  # IMA writes spaces as '_'
    assert identity.ima_digest(LOG, b"/usr/bin/other") is None  # ima-buf is not a file
    assert identity.ima_digest(LOG, b"/usr/bin/none") is None


def _log_for_me(tmp_path: Path, digest: bytes) -> Path:
    log = tmp_path / "measurements"
    me = os.readlink(b"/proc/self/exe")
    log.write_bytes(b"10 " + b"9" * 40 + b" ima-ng sha256:" + digest.hex().encode() + b" " + me + b"\n")
    return log


def test_csum_uses_the_configured_ima_list(host_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digest = bytes(range(32))
    monkeypatch.setenv("KEYRING_TYPES_IMA_MEASUREMENTS", str(_log_for_me(tmp_path, digest)))
    key = kt.Keyspace().add_key("derived", "app", "32 csum", "@s").read()
    seed = (host_home / SEED_FILE).read_bytes()
    assert key == host_kdf(seed, 32, os.geteuid(), b"csum", digest)


def test_csum_without_a_measurement_is_eopnotsupp(host_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "measurements"
    log.write_bytes(LOG)
    monkeypatch.setenv("KEYRING_TYPES_IMA_MEASUREMENTS", str(log))
    monkeypatch.setenv("KEYRING_TYPES_DERIVE_SELF_MEASURE", "1")  # IMA exists: its answer stands
    with pytest.raises(OSError) as exc:
        kt.Keyspace().add_key("derived", "app", "32 csum", "@s")
    assert exc.value.errno == errno.EOPNOTSUPP


def test_csum_without_ima_is_eopnotsupp_unless_self_measurement_is_asked(
    host_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYRING_TYPES_IMA_MEASUREMENTS", str(tmp_path / "absent"))
    with pytest.raises(OSError) as exc:
        kt.Keyspace().add_key("derived", "app", "32 csum", "@s")
    assert exc.value.errno == errno.EOPNOTSUPP
    assert "KEYRING_TYPES_DERIVE_SELF_MEASURE" in str(exc.value)
    monkeypatch.setenv("KEYRING_TYPES_DERIVE_SELF_MEASURE", "1")
    key = kt.Keyspace().add_key("derived", "app", "32 csum", "@s").read()
    with open("/proc/self/exe", "rb") as f:
        digest = hashlib.file_digest(f, "sha256").digest()
    seed = (host_home / SEED_FILE).read_bytes()
    assert key == host_kdf(seed, 32, os.geteuid(), b"csum", digest)
    # The self-measured key is the key IMA (ima_hash=sha256) would give.
    monkeypatch.setenv("KEYRING_TYPES_IMA_MEASUREMENTS", str(_log_for_me(tmp_path, digest)))
    assert kt.Keyspace().add_key("derived", "app", "32 csum", "@s").read() == key


# -- choosing the root --------------------------------------------------------------------------


def test_default_root_is_host_without_a_tpm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", "swtpm:host=127.0.0.1,port=1")
    assert registry.default_root_name() == "host"
    monkeypatch.setenv("KEYRING_TYPES_DERIVE_ROOT", "tpm2")
    assert registry.default_root_name() == "tpm2"


def test_default_root_is_tpm2_where_one_answers(tpm_env: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYRING_TYPES_DERIVE_ROOT")
    assert registry.default_root_name() == "tpm2"


def test_unknown_root_is_enodev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_DERIVE_ROOT", "nosuch")
    with pytest.raises(OSError) as exc:
        kt.Keyspace().add_key("derived", "app", "32 path", "@s")
    assert exc.value.errno == errno.ENODEV


def test_a_root_registered_in_code(monkeypatch: pytest.MonkeyPatch) -> None:
    class Zeros(DeriveRoot):
        name: ClassVar[str] = "zeros"

        def prf_into(self, message: bytes, out: memoryview) -> None:
            out[:32] = bytes(32)

    registry.register_root(Zeros)
    try:
        with pytest.raises(OSError) as exc:
            registry.register_root(Zeros)
        assert exc.value.errno == errno.EEXIST
        monkeypatch.setenv("KEYRING_TYPES_DERIVE_ROOT", "zeros")
        assert kt.Keyspace().add_key("derived", "app", "40 path", "@s").read() == bytes(40)
        assert "zeros" in registry.root_names()
    finally:
        registry.unregister_root("zeros")


def test_builtins_resolve_without_an_entry_point_scan() -> None:
    registry.DERIVE_ROOTS.refresh()
    assert registry.root_class("host") is HostRoot
    assert registry.DERIVE_ROOTS._scanned is None


def test_instances_follow_the_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "a"))
    a = registry.get_root("host")
    assert registry.get_root("host") is a
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "b"))
    b = registry.get_root("host")
    assert b is not a and isinstance(b, HostRoot) and b.seed_path == tmp_path / "b" / SEED_FILE
