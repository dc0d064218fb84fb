"""The trusted-key option grammar (trusted_tpm1.c getoptions, spec §2.2) and our extras."""

from __future__ import annotations

import errno

import pytest

from keyring_types.trust.base import TrustedOptions
from keyring_types.trust.caam import CaamSource
from keyring_types.trust.host import HostSource
from keyring_types.trust.options import check_supported, kstrtoul, parse_options


def einval(text: str | bytes) -> OSError:
    with pytest.raises(OSError) as info:
        parse_options(text)
    assert info.value.errno == errno.EINVAL
    return info.value


def test_defaults_are_the_kernels() -> None:
    o = parse_options("").options
    assert o == TrustedOptions()
    assert o.keyauth == bytes(20) and o.blobauth == b"" and o.hash == "sha256"
    assert o.keyhandle is None and o.migratable is None and o.given == frozenset()


def test_every_option_parses() -> None:
    p = parse_options(
        "keyhandle=0x81000001 keyauth=" + "ab" * 20 + " blobauth=" + "cd" * 20 + " pcrinfo=0102 pcrlock=16 "
        "migratable=0 hash=sha384 policydigest=" + "11" * 48 + " policyhandle=3000000"
    )
    o = p.options
    assert o.keyhandle == 0x81000001
    assert o.keyauth == b"\xab" * 20
    assert o.blobauth == b"\xcd" * 20
    assert o.pcrinfo == b"\x01\x02"
    assert o.pcrlock == 16
    assert o.migratable is False
    assert o.hash == "sha384"
    assert o.policydigest == b"\x11" * 48
    assert o.policyhandle == 0x3000000
    assert o.given == {
        "keyhandle", "keyauth", "blobauth", "pcrinfo", "pcrlock", "migratable", "hash", "policydigest", "policyhandle"
    }
    assert p.source is None and p.rng is None


def test_separators_are_single_spaces_and_tabs_and_empty_tokens_skip() -> None:
    o = parse_options("  keyhandle=81000001\t\t migratable=0 ").options
    assert o.keyhandle == 0x81000001 and o.migratable is False


def test_blobauth_password_and_hex() -> None:
    assert parse_options("blobauth=hello").options.blobauth == b"hello"
    assert parse_options("blobauth=" + "a" * 20).options.blobauth == b"a" * 20
    assert parse_options("blobauth=" + "0f" * 20).options.blobauth == b"\x0f" * 20
    einval("blobauth=" + "a" * 21)  # neither a 20-byte password nor 40 hex digits
    einval("blobauth=" + "zz" * 20)  # 40 characters must be hex


def test_migratable_first_character_rule() -> None:
    assert parse_options("migratable=1").options.migratable is None  # keeps the default
    assert parse_options("migratable=0xyz").options.migratable is False
    assert parse_options("migratable=1abc").options.given == {"migratable"}
    einval("migratable=2")


@pytest.mark.parametrize(
    "text",
    [
        "bogus=1",
        "keyhandle",
        "keyhandle=",
        "keyhandle=xyz",
        "keyhandle=0x",
        "keyhandle=-1",
        "keyhandle=1 keyhandle=2",  # each option at most once
        "keyauth=abcd",
        "keyauth=" + "g" * 40,
        "pcrinfo=" + "00" * 65,
        "pcrinfo=zz",
        "pcrlock=abc",
        "hash=md5",
        "hash=SHA256",
        "policydigest=" + "00" * 31,
        "hash=sha1 policydigest=" + "00" * 32,
        "policydigest=" + "00" * 32 + " hash=sha256",  # hash= after policydigest=
        "policyhandle=q",
        "source=host source=caam",
        "rng=kernel rng=tee",
    ],
)
def test_bad_options_are_einval(text: str) -> None:
    einval(text)


def test_policydigest_length_follows_hash() -> None:
    assert parse_options("hash=sha1 policydigest=" + "00" * 20).options.policydigest == bytes(20)
    assert parse_options("hash=sha512 policydigest=" + "00" * 64).options.policydigest == bytes(64)
    assert parse_options("policydigest=" + "00" * 32).options.policydigest == bytes(32)


def test_odd_pcrinfo_nibble_dropped() -> None:
    assert parse_options("pcrinfo=abc").options.pcrinfo == b"\xab"


def test_kstrtoul_rules() -> None:
    assert kstrtoul(b"0x1f", 16) == 31
    assert kstrtoul(b"1F", 16) == 31
    assert kstrtoul(b"+7", 10) == 7
    assert kstrtoul(b"7\n", 10) == 7
    for bad in (b"", b" 7", b"7 ", b"7\n\n", b"0x", b"1" * 30):
        with pytest.raises(OSError):
            kstrtoul(bad, 16)


def test_keyhandle_keeps_low_32_bits_like_the_kernel() -> None:
    # kstrtoul fills an unsigned long; the kernel stores it in a u32.
    assert parse_options("keyhandle=0x181000001").options.keyhandle == 0x81000001


def test_extras_are_separate_from_kernel_options() -> None:
    p = parse_options("source=tpm rng=kernel blobauth=x")
    assert p.source == "tpm" and p.rng == "kernel"
    assert p.options.given == {"blobauth"}


def test_check_supported_names_the_option_and_source() -> None:
    check_supported(parse_options("blobauth=x migratable=0").options, HostSource)  # type: ignore[arg-type]
    with pytest.raises(OSError) as info:
        check_supported(parse_options("keyhandle=1 pcrlock=3").options, HostSource)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL
    assert "keyhandle" in str(info.value) and "pcrlock" in str(info.value) and "'host'" in str(info.value)
    with pytest.raises(OSError):
        check_supported(parse_options("migratable=1").options, CaamSource)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "pcrlock=" + "9" * 4400,  # past int()'s 4300-digit limit: was ValueError
        "pcrlock=" + "0" * 4400 + "x",
        "keyhandle=" + "f" * 4400,
        "policyhandle=0x" + "1" * 17,  # ERANGE in kstrtoul, EINVAL from getoptions
        "pcrlock=18446744073709551616",
    ],
)
def test_numbers_too_long_or_too_large_are_einval(text: str) -> None:
    einval(text)


def test_huge_leading_zeros_still_parse() -> None:
    assert parse_options("pcrlock=" + "0" * 4400 + "7").options.pcrlock == 7


@pytest.mark.parametrize("data", [5, None, 1.5, ["keyhandle=1"], "blobauth=\ud800"])
def test_wrong_types_are_einval(data: object) -> None:
    einval(data)  # type: ignore[arg-type]


def test_unknown_option_is_not_echoed() -> None:
    e = einval("blobauht=hunter2hunter2")
    assert "hunter2" not in str(e) and "blobauht" not in str(e) and "did you mean blobauth=" in str(e)
