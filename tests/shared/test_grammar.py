"""The kernel payload grammar (``keyring_types.grammar``): strsep tokens, kstrto*, hex2bin, option tables.

The expected values are the rules of the kernel's ``lib/kstrtox.c``; the
encrypted type's data length (a ``kstrtol``) is also held to the real kernel
where its keyring is reachable.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest
from conftest import kernel_keyring_reachable, require

import keyring_types as kt
from keyring_types import grammar as g

U64 = (1 << 64) - 1


def err(fn: Callable[..., object], *args: object) -> int | None:
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


def test_split_tokens_is_strsep() -> None:
    assert g.split_tokens(b"a b\tc") == [b"a", b"b", b"c"]
    assert g.split_tokens(b"a  b") == [b"a", b"", b"b"]
    assert g.split_tokens(b" a\t") == [b"", b"a", b""]
    assert g.split_tokens(b"") == [b""]
    assert g.split_tokens(b"a\nb") == [b"a\nb"]  # a newline is not a separator
    assert g.split_text("a \tb") == ["a", "", "b"]
    assert g.split_text("a b") == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "base", "value"),
    [
        (b"0", 10, 0),
        (b"32", 10, 32),
        (b"+32", 10, 32),
        (b"032", 10, 32),
        (b"32\n", 10, 32),
        (b"18446744073709551615", 10, U64),
        (b"ffffffffffffffff", 16, U64),
        (b"0x1f", 16, 31),
        (b"0X1F", 16, 31),
        (b"1F", 16, 31),
        (b"+0x10", 16, 16),
        (b"0x10", 0, 16),
        (b"010", 0, 8),
        (b"10", 0, 10),
        (b"0", 0, 0),
        (b"0" * 5000 + b"32", 10, 32),  # leading zeros never overflow, whatever their number
        (b"0" * 5000 + b"ff", 16, 255),
        ("32", 10, 32),  # text as well as bytes
        (b"7\x00junk", 10, 7),  # the C string ends at the NUL
    ],
)
def test_kstrtoull_accepts(text: bytes | str, base: int, value: int) -> None:
    assert g.kstrtoull(text, base) == value


@pytest.mark.parametrize(
    ("text", "base", "errnum"),
    [
        (b"", 10, errno.EINVAL),
        (b"+", 10, errno.EINVAL),
        (b"-1", 10, errno.EINVAL),  # kstrtou* take no minus sign
        (b" 1", 10, errno.EINVAL),
        (b"1 ", 10, errno.EINVAL),
        (b"1\n\n", 10, errno.EINVAL),
        (b"\n", 10, errno.EINVAL),
        (b"0x20", 10, errno.EINVAL),
        (b"0x", 16, errno.EINVAL),  # base 16 skips "0x" even with nothing after it
        (b"0x", 0, errno.EINVAL),  # base 0: "0x" without a hex digit is octal 0, then junk
        (b"08", 0, errno.EINVAL),
        (b"++1", 10, errno.EINVAL),
        (b"18446744073709551616", 10, errno.ERANGE),
        (b"10000000000000000", 16, errno.ERANGE),
        (b"9" * 4400, 10, errno.ERANGE),  # past Python's 4300-digit int() limit: still ERANGE
        (b"9" * 30 + b"x", 10, errno.ERANGE),  # the kernel reports the overflow before the junk
        (32, 10, errno.EINVAL),
        (None, 10, errno.EINVAL),
        ("\ud800", 10, errno.EINVAL),
        (b"1", 7, errno.EINVAL),
    ],
)
def test_kstrtoull_refuses(text: object, base: int, errnum: int) -> None:
    assert err(g.kstrtoull, text, base) == errnum


def test_signed_and_narrow_variants() -> None:
    assert g.kstrtoll(b"-9223372036854775808", 10) == -(1 << 63)
    assert g.kstrtoll(b"9223372036854775807", 10) == (1 << 63) - 1
    assert g.kstrtoll(b"-0", 10) == 0
    assert g.kstrtoll(b"+5", 10) == 5
    assert g.kstrtoll(b"-0x10", 16) == -16
    assert err(g.kstrtoll, b"9223372036854775808", 10) == errno.ERANGE
    assert err(g.kstrtoll, b"-9223372036854775809", 10) == errno.ERANGE
    assert err(g.kstrtoll, b"-+1", 10) == errno.EINVAL  # no '+' after the '-'
    assert err(g.kstrtoll, b"+-1", 10) == errno.EINVAL
    assert err(g.kstrtoll, b"-" + b"9" * 5000, 10) == errno.ERANGE
    assert g.kstrtoul is g.kstrtoull and g.kstrtol is g.kstrtoll  # LP64
    assert g.kstrtouint(b"4294967295", 10) == 0xFFFFFFFF
    assert err(g.kstrtouint, b"4294967296", 10) == errno.ERANGE
    assert g.kstrtoint(b"-2147483648", 10) == -(1 << 31)
    assert err(g.kstrtoint, b"2147483648", 10) == errno.ERANGE
    assert err(g.kstrtoint, b"-2147483649", 10) == errno.ERANGE
    assert g.kstrtouint(b"0x2", 0) == 2 and g.kstrtouint(b"02", 0) == 2 and g.kstrtouint(b"2\n", 0) == 2


def test_messages_name_the_field_never_the_text() -> None:
    for bad in (b"SECRET-MARKER", b"9" * 40 + b"SECRET-MARKER", b"SECRET-MARKER\n"):
        with pytest.raises(OSError) as info:
            g.kstrtoull(bad, 10, "the key length")
        assert "the key length" in str(info.value) and "SECRET" not in str(info.value)


def test_hex2bin() -> None:
    assert g.hex2bin(b"0aFf", 2, "x") == b"\x0a\xff"
    assert g.hex2bin(b"0aFfzz", 2, "x") == b"\x0a\xff"  # only 2*n digits are read
    assert g.hex2bin("0aff", 2, "x") == b"\x0a\xff"
    for bad in (b"0a", b"0g00", b" 0a0", 5, None):
        assert err(g.hex2bin, bad, 2, "x") == errno.EINVAL
    assert g.is_hex("") and g.is_hex(b"aF09") and not g.is_hex("0x") and not g.is_hex(b"\xff")


def test_as_payload() -> None:
    assert g.as_payload(b"a") == b"a" and g.as_payload(bytearray(b"a")) == b"a" and g.as_payload("é") == "é".encode()
    for bad in (5, None, 1.5, ["a"], "\udcff"):
        assert err(g.as_payload, bad) == errno.EINVAL


TABLE = g.OptionTable("test option", frozenset({"alpha", "beta", "keyauth"}))


def test_option_table_walks_in_order_each_once() -> None:
    assert list(TABLE.items([b"beta=1", b"", b"alpha=x=y"])) == [("beta", b"1"), ("alpha", b"x=y")]
    assert list(TABLE.items([])) == []
    for tokens in ([b"alpha=1", b"alpha=2"], [b"gamma=1"], [b"alpha"], [b"alpha="], [b"=1"]):
        assert err(lambda t: list(TABLE.items(t)), tokens) == errno.EINVAL


def test_option_table_never_repeats_an_unknown_name() -> None:
    # A mistyped option may carry a secret in its name or value: suggest, never echo.
    with pytest.raises(OSError) as info:
        list(TABLE.items([b"keyauht=SECRET-MARKER"]))
    assert "did you mean keyauth=" in str(info.value) and "keyauht" not in str(info.value)
    for token in (b"SECRET-MARKER", b"SECRET-MARKER=1", b"a" * 100 + b"SECRET-MARKER"):
        with pytest.raises(OSError) as info:
            list(TABLE.items([token]))
        assert "SECRET" not in str(info.value) and "alpha" in str(info.value)


# -- the encrypted data length is a kstrtol: the same spellings as the kernel ----------------

DATALEN_SPELLINGS = [
    b"32",
    b"+32",
    b"032",
    b"32\n",
    b"0" * 5000 + b"32",
    b"+" + b"0" * 4400 + b"32",
    b"9" * 4400,
    b"-32",
    b"0x20",
    b"+-32",
    b"32x",
    b"9" * 19,
    b"\n32",
]


def _outcome(ks: kt.Keyspace | kt.KernelKeyspace, desc: str, length: bytes) -> object:
    try:
        key = ks.add_key("encrypted", desc, b"new default user:kmk " + length, "@s")
    except OSError as exc:
        return exc.errno
    return len(key.read())


def test_datalen_spellings_in_process() -> None:
    # Before the grammar module, the 4400-digit lengths raised ValueError (int()'s limit).
    ks = kt.Keyspace()
    ks.add_key("user", "kmk", os.urandom(32), "@s")
    got = [_outcome(ks, f"e{i}", s) for i, s in enumerate(DATALEN_SPELLINGS)]
    assert got[:5] == [len(b"default user:kmk ") + len(s) + 1 + 162 for s in DATALEN_SPELLINGS[:5]]
    assert got[6:] == [errno.EINVAL] * (len(DATALEN_SPELLINGS) - 6)


def test_datalen_spellings_match_the_kernel() -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    here, kernel = kt.Keyspace(), kt.KernelKeyspace(new_session=True)
    master = os.urandom(32)
    for ks in (here, kernel):
        ks.add_key("user", "kmk", master, "@s")
    for i, spelling in enumerate(DATALEN_SPELLINGS):
        assert _outcome(here, f"e{i}", spelling) == _outcome(kernel, f"e{i}", spelling), spelling[:40]
