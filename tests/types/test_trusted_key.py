"""The ``trusted`` key type: the kernel's grammar and errno, on a Keyspace."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

import keyring_types as kt
from keyring_types.secret import SecretBuffer
from keyring_types.trust import registry, tee_emulator
from keyring_types.trust.host import HostSource
from keyring_types.types.trusted import (
    TRUSTED_PAYLOAD_DATALEN,
    TrustedKeyType,
    TrustedPayload,
    parse_payload,
    trusted_payload,
)


def einval(data: bytes | str) -> None:
    with pytest.raises(OSError) as info:
        parse_payload(data.encode() if isinstance(data, str) else data)
    assert info.value.errno == errno.EINVAL, info.value


# -- grammar (trusted_core.c datablob_parse) ------------------------------------------


@pytest.mark.parametrize("text", ["new 32", "new 128", "new +32", "new 32\n", "new 64 blobauth=x", "new\t48"])
def test_new_accepted(text: str) -> None:
    cmd = parse_payload(text.encode())
    assert cmd.command == "new" and 32 <= cmd.keylen <= 128


@pytest.mark.parametrize(
    "text", ["new 31", "new 129", "new", "new  32", "new 0x20", "new -32", "new 32x", "New 32", "", "newer 32", " new 32"]
)
def test_new_rejected(text: str) -> None:
    einval(text)


def test_load_hex_rules() -> None:
    assert parse_payload(b"load abc").blob == b"\xab"  # odd trailing nibble dropped
    assert parse_payload(b"load " + b"00" * 512).blob == bytes(512)
    assert parse_payload(b"load ABCD").blob == b"\xab\xcd"
    einval(b"load " + b"00" * 513)
    einval(b"load zz")
    einval(b"load")


def test_update_and_nul_and_size_limits() -> None:
    assert parse_payload(b"update").command == "update"
    assert parse_payload(b"update blobauth=x").opts.options.blobauth == b"x"
    # The kernel copies the payload into a C string: a NUL ends it.
    assert parse_payload(b"new 32\0garbage").keylen == 32
    einval(b"\0new 32")
    einval(b"new 32 " + b" " * 32761)  # 32768 bytes
    assert parse_payload(b"new 32 " + b" " * 32760).keylen == 32  # 32767 bytes


def test_options_are_parsed_with_extras() -> None:
    cmd = parse_payload(b"new 32 source=tpm rng=kernel keyhandle=0x81000001")
    assert cmd.opts.source == "tpm" and cmd.opts.rng == "kernel"
    assert cmd.opts.options.keyhandle == 0x81000001
    einval(b"new 32 bogus=1")
    einval(b"new 32 keyhandle=1 keyhandle=2")


# -- on a Keyspace ------------------------------------------------------------------


@pytest.fixture
def ks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[kt.Keyspace]:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "state"))
    monkeypatch.delenv(registry.ENV_SOURCE, raising=False)
    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", "device:/nonexistent/tpmrm9")  # no TPM: default is host
    registry.clear_cache()
    yield kt.Keyspace()
    registry.clear_cache()
    tee_emulator.stop_spawned()  # source=tee started an emulated TEE on demand


def secret_of(k: kt.Key) -> bytes:
    with k.secret() as mv:
        return bytes(mv)


def err(fn: Any, *args: Any) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)
    assert str(info.value)
    return info.value.errno  # type: ignore[no-any-return]


def test_new_read_describe(ks: kt.Keyspace) -> None:
    k = ks.add_key("trusted", "kmk", "new 32", "@s")
    assert k.describe().split(";")[3] == "3f010000"  # default perm: has read and update
    hexblob = k.read()
    assert hexblob == hexblob.lower() and len(hexblob) == 2 * (32 + 42)
    blob = bytes.fromhex(hexblob.decode())
    assert blob[:4] == b"KTHK"  # the default source here is host
    key = secret_of(k)
    assert len(key) == 32 and key.hex().encode() not in hexblob
    # /proc/keys shows sizeof(struct trusted_key_payload), whatever the key length.
    assert any(line.endswith(f"trusted   kmk: {TRUSTED_PAYLOAD_DATALEN}") for line in ks.proc_keys())


@pytest.mark.parametrize("n", [32, 64, 128])
def test_load_gives_the_same_key(ks: kt.Keyspace, n: int) -> None:
    k = ks.add_key("trusted", "a", f"new {n}", "@s")
    other = kt.Keyspace()
    k2 = other.add_key("trusted", "b", f"load {k.read().decode()}", "@s")
    assert secret_of(k2) == secret_of(k)
    assert k2.read() == k.read()  # a loaded key reads back the blob it was given


def test_new_keys_differ(ks: kt.Keyspace) -> None:
    a = ks.add_key("trusted", "a", "new 32", "@s")
    b = ks.add_key("trusted", "b", "new 32", "@s")
    assert secret_of(a) != secret_of(b)


@pytest.mark.parametrize("source", ["host", "caam", "tee"])
def test_every_source_through_the_type(ks: kt.Keyspace, source: str) -> None:
    k = ks.add_key("trusted", "k", f"new 48 source={source}", "@s")
    k2 = ks.add_key("trusted", "k2", f"load {k.read().decode()} source={source}", "@s")
    assert secret_of(k2) == secret_of(k) and len(secret_of(k)) == 48
    for other in {"host", "caam", "tee"} - {source}:
        assert err(ks.add_key, "trusted", "x", f"load {k.read().decode()} source={other}", "@s") in (
            errno.EINVAL,
            errno.EBADMSG,
            errno.EFAULT,
        )
    with pytest.raises(OSError):
        ks.request_key("trusted", "x")  # a failed load leaves no key behind


def test_update_reseals_a_migratable_key(ks: kt.Keyspace) -> None:
    k = ks.add_key("trusted", "m", "new 32", "@s")
    key, blob = secret_of(k), k.read()
    k.update("update blobauth=pw")
    assert k.read() != blob and secret_of(k) == key
    assert err(ks.add_key, "trusted", "x", f"load {k.read().decode()}", "@s") == errno.EPERM  # needs blobauth
    assert err(ks.add_key, "trusted", "x", f"load {k.read().decode()} blobauth=no", "@s") == errno.EBADMSG
    k2 = ks.add_key("trusted", "x", f"load {k.read().decode()} blobauth=pw", "@s")
    assert secret_of(k2) == key


def test_update_can_move_a_migratable_key_to_another_source(ks: kt.Keyspace) -> None:
    k = ks.add_key("trusted", "m", "new 32", "@s")
    key = secret_of(k)
    k.update("update source=caam")
    assert len(k.read()) == 2 * (32 + 48)
    k2 = ks.add_key("trusted", "x", f"load {k.read().decode()} source=caam", "@s")
    assert secret_of(k2) == key
    assert err(k2.update, "update") == errno.EPERM  # CAAM keys never migrate


def test_update_errors_in_kernel_order(ks: kt.Keyspace) -> None:
    k = ks.add_key("trusted", "m", "new 32", "@s")
    blob = k.read()
    assert err(k.update, "new 32") == errno.EINVAL
    assert err(k.update, "load " + blob.decode()) == errno.EINVAL
    assert err(k.update, "update keyhandle=1") == errno.EINVAL
    assert err(k.update, "update rng=kernel") == errno.EINVAL
    assert k.read() == blob, "a failed update leaves the key unchanged"
    k.update("update migratable=0")
    assert k.read() != blob
    # Not migratable any more: EPERM comes before any look at the payload.
    assert err(k.update, "update") == errno.EPERM
    assert err(k.update, "") == errno.EPERM
    assert err(k.update, "garbage") == errno.EPERM
    k2 = ks.add_key("trusted", "x", f"load {k.read().decode()}", "@s")
    assert err(k2.update, "update") == errno.EPERM


@pytest.mark.parametrize("source", ["caam", "tee"])
def test_non_migratable_sources_refuse_update(ks: kt.Keyspace, source: str) -> None:
    k = ks.add_key("trusted", "n", f"new 32 source={source}", "@s")
    assert err(k.update, "update") == errno.EPERM


def test_add_key_over_existing_goes_through_update(ks: kt.Keyspace) -> None:
    k = ks.add_key("trusted", "same", "new 32", "@s")
    # key_create_or_update calls ->update, which wants the 'update' command.
    assert err(ks.add_key, "trusted", "same", "new 32", "@s") == errno.EINVAL
    again = ks.add_key("trusted", "same", "update", "@s")
    assert again == k


def test_instantiate_errors(ks: kt.Keyspace) -> None:
    cases = {
        "update": errno.EINVAL,
        "new 31": errno.EINVAL,
        "new 32 keyhandle=0x81000001": errno.EINVAL,  # host has no keyhandle
        "new 32 source=caam blobauth=x": errno.EINVAL,
        "new 32 source=tee migratable=0": errno.EINVAL,
        "new 32 source=nosuch": errno.ENODEV,
        "new 32 rng=caam source=caam": errno.EINVAL,  # CAAM has no RNG
        "new 32 rng=tee": errno.EINVAL,  # not the key's source
        "new 32 rng=default": errno.EINVAL,
        "load 00 rng=kernel": errno.EINVAL,
        "load 0011": errno.EINVAL,  # not a host blob
    }
    for payload, expected in cases.items():
        assert err(ks.add_key, "trusted", "bad", payload, "@s") == expected, payload
    with pytest.raises(OSError):
        ks.request_key("trusted", "bad")


def test_tampered_blob_is_rejected_without_a_key(ks: kt.Keyspace) -> None:
    k = ks.add_key("trusted", "t", "new 32", "@s")
    blob = bytearray(bytes.fromhex(k.read().decode()))
    blob[-3] ^= 0x10
    assert err(ks.add_key, "trusted", "t2", f"load {blob.hex()}", "@s") == errno.EBADMSG
    assert err(ks.request_key, "trusted", "t2") == errno.ENOKEY


class _CountingRngSource(HostSource):
    """A host source with an RNG of its own, to see where key material comes from."""

    name: ClassVar[str] = "rngtest"
    has_rng: ClassVar[bool] = True
    calls: ClassVar[list[int]] = []
    short: ClassVar[bool] = False

    def get_random(self, n: int) -> bytes:
        self.calls.append(n)
        return bytes(range(n - 1 if self.short else n))


@pytest.fixture
def rng_source() -> Iterator[type[_CountingRngSource]]:
    _CountingRngSource.calls.clear()
    _CountingRngSource.short = False
    registry.register_trust_source(_CountingRngSource)
    yield _CountingRngSource
    registry.unregister_trust_source("rngtest")


def test_os_rng_is_the_default_and_rng_opts_in(ks: kt.Keyspace, rng_source: type[_CountingRngSource]) -> None:
    a = ks.add_key("trusted", "a", "new 32 source=rngtest", "@s")
    b = ks.add_key("trusted", "b", "new 32 source=rngtest rng=kernel", "@s")
    assert rng_source.calls == []
    assert secret_of(a) != bytes(range(32)) and secret_of(b) != bytes(range(32))
    c = ks.add_key("trusted", "c", "new 40 source=rngtest rng=rngtest", "@s")
    assert rng_source.calls == [40] and secret_of(c) == bytes(range(40))
    rng_source.short = True
    assert err(ks.add_key, "trusted", "d", "new 32 source=rngtest rng=rngtest", "@s") == errno.EIO


def test_default_source_follows_the_environment(ks: kt.Keyspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.ENV_SOURCE, "caam")
    k = ks.add_key("trusted", "e", "new 32", "@s")
    assert len(k.read()) == 2 * (32 + 48)
    k2 = ks.add_key("trusted", "e2", f"load {k.read().decode()}", "@s")
    assert secret_of(k2) == secret_of(k)


def test_revoked_key_cannot_be_read(ks: kt.Keyspace) -> None:
    k = ks.add_key("trusted", "r", "new 32", "@s")
    k.revoke()
    assert err(k.read) == errno.EKEYREVOKED
    assert err(lambda: secret_of(k)) == errno.EKEYREVOKED


class _Rec:
    """The two things the type touches on a record in destroy/secret."""

    def __init__(self, payload: TrustedPayload) -> None:
        self.payload: TrustedPayload | None = payload
        self.serial = 1


def test_destroy_wipes_and_secret_is_a_copy() -> None:
    key = SecretBuffer.from_bytes(os.urandom(32))
    rec = _Rec(TrustedPayload(source="host", blob=b"x", key=key, migratable=True))
    t = TrustedKeyType()
    copy = t.secret(rec)  # type: ignore[arg-type]
    assert copy == key and copy.address != key.address
    t.destroy(rec)  # type: ignore[arg-type]
    assert key.wiped and rec.payload is None
    assert not copy.wiped
    copy.wipe()
    shown = repr(TrustedPayload(source="h", blob=b"", key=SecretBuffer.from_bytes(b"\xab" * 32), migratable=False))
    assert "abab" not in shown and "\\xab" not in shown


def test_payload_builder_writes_the_grammar(ks: kt.Keyspace) -> None:
    assert trusted_payload("new", 32, source="tpm2", keyhandle=0x81000001) == b"new 32 source=tpm2 keyhandle=0x81000001"
    assert trusted_payload("new", 64, blobauth="pw", migratable=False) == b"new 64 blobauth=pw migratable=0"
    assert trusted_payload("update", keyauth=bytes(20)) == b"update keyauth=" + b"00" * 20
    assert trusted_payload("load", b"\x01\x02", pcrlock=7) == b"load 0102 pcrlock=7"
    with pytest.raises(OSError) as info:
        trusted_payload("new", 16)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError):
        trusted_payload("new", 32, blobauth=bytes(21))
    k = ks.add_key("trusted", "b", trusted_payload("new", 32, blobauth="pw"), "@s")
    k2 = ks.add_key("trusted", "b2", trusted_payload("load", bytes.fromhex(k.read().decode()), blobauth="pw"), "@s")
    assert secret_of(k2) == secret_of(k)


@pytest.mark.parametrize("length", ["9" * 4400, "0" * 4400 + "x", "9" * 19, "9" * 20])
def test_huge_key_length_is_einval(length: str) -> None:
    # 4400 digits used to escape as ValueError (int()'s digit limit).
    einval("new " + length)


def test_key_length_with_many_leading_zeros_is_the_kernels_kstrtol() -> None:
    assert parse_payload(b"new " + b"0" * 4400 + b"32").keylen == 32


@pytest.mark.parametrize("data", [5, None, 1.5, ["new 32"]])
def test_parse_payload_wrong_types_are_einval(data: object) -> None:
    with pytest.raises(OSError) as info:
        parse_payload(data)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL
