"""The tsm key type: the RFC's grammar, limits, errno, provider slot and read format."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types.attest import (
    TSM_PROVIDERS,
    TsmRequest,
    current_tsm_provider,
    register_tsm_provider,
    unregister_tsm_provider,
)
from keyring_types.attest.providers import EmulatedSevSnp
from keyring_types.types.tsm import parse_payload

PUB = "ab" * 64


class Fixed:
    """A provider whose blob is known: it echoes what it was asked."""

    name = "fixed"

    def __init__(self) -> None:
        self.seen: list[TsmRequest] = []

    def auth_new(self, request: TsmRequest) -> bytes:
        self.seen.append(request)
        return b"\x00\x01" + request.report_data


@pytest.fixture
def fixed() -> Iterator[Fixed]:
    p = Fixed()
    register_tsm_provider(p)
    yield p
    unregister_tsm_provider(p)


def add(payload: str | bytes) -> kt.Key:
    return kt.Keyspace().add_key("tsm", "att", payload, "@s")


def test_rfc_example_gives_the_rfc_read_format(fixed: Fixed) -> None:
    # The cover letter: add "auth <64 bytes hex> privlevel=2", print, take the third field.
    key = add(f"auth {PUB} privlevel=2")
    text = key.read()
    assert text == f"{PUB} fixed {'0001' + PUB}".encode()
    _pub, _desc, blob = text.split(b" ")
    assert bytes.fromhex(blob.decode()) == b"\x00\x01" + bytes.fromhex(PUB)
    assert fixed.seen[-1].privlevel == 2
    assert key.describe().startswith("tsm;")


def test_format_suffix_and_lengths(fixed: Fixed) -> None:
    text = add(f"auth {PUB} format=abcdefghijklmno").read()
    assert text.split(b" ")[1] == b"fixed:abcdefghijklmno"
    assert len(text) == 2 * 64 + len("fixed") + 1 + 15 + 2 * 66 + 2


GOOD = [
    (f"auth {PUB}", 64, 0, ""),
    (f"auth\t{PUB}", 64, 0, ""),
    (f"auth {PUB}  privlevel=1", 64, 1, ""),  # empty tokens between options are skipped
    (f"auth {PUB} privlevel=10", 64, 16, ""),  # hexadecimal
    (f"auth {PUB} privlevel=0x3", 64, 3, ""),
    ("auth abc", 1, 0, ""),  # odd last digit ignored
    ("auth ", 0, 0, ""),  # an empty user data at the core level
    (f"auth {PUB}\0privlevel=zz", 64, 0, ""),  # the C string ends at the NUL
    (f"auth {PUB} format=extended privlevel=2", 64, 2, "extended"),
]


@pytest.mark.parametrize(("payload", "n", "privlevel", "fmt"), GOOD)
def test_grammar_accepts(payload: str, n: int, privlevel: int, fmt: str) -> None:
    r = parse_payload(payload)
    assert (len(r.pubkey), r.privlevel, r.format, r.nonce) == (n, privlevel, fmt, None)


BAD = [
    ("", errno.EINVAL),
    ("x" * 32768, errno.EINVAL),  # TSM_DATA_MAX
    ("auth", errno.EINVAL),  # no user data
    ("Auth " + PUB, errno.EINVAL),
    (" auth " + PUB, errno.EINVAL),
    ("privlevel=1 " + PUB, errno.EINVAL),
    ("auth " + "ab" * 65, errno.EINVAL),  # more than 64 bytes
    ("auth " + "zz" * 4, errno.EINVAL),  # bad hex
    (f"auth {PUB} privlevel=1 privlevel=1", errno.EINVAL),  # each option once
    (f"auth {PUB} format=a format=b", errno.EINVAL),
    (f"auth {PUB} nonce=00 nonce=00", errno.EINVAL),
    (f"auth {PUB} auth", errno.EINVAL),  # a second auth is an unknown option
    (f"auth {PUB} vmpl=1", errno.EINVAL),
    (f"auth {PUB} privlevel", errno.EINVAL),
    (f"auth {PUB} privlevel=", errno.EINVAL),
    (f"auth {PUB} privlevel=g", errno.EINVAL),
    (f"auth {PUB} privlevel=-1", errno.EINVAL),
    (f"auth {PUB} privlevel=100000000", errno.ERANGE),  # kstrtouint: past 32 bits
    (f"auth {PUB} format=abcdefghijklmnop", errno.EINVAL),  # 16 characters: not < 16
    (f"auth {PUB} nonce=abc", errno.EINVAL),
    (f"auth {PUB} nonce=zz", errno.EINVAL),
    (f"auth {PUB} nonce=" + "00" * 65, errno.EINVAL),
]


@pytest.mark.parametrize(("payload", "err"), BAD)
def test_grammar_refuses_with_the_kernels_errno(payload: str, err: int, fixed: Fixed) -> None:
    with pytest.raises(OSError) as e:
        add(payload)
    assert e.value.errno == err, str(e.value)
    assert not fixed.seen  # refused before the provider is asked


def test_messages_do_not_repeat_the_payload(fixed: Fixed) -> None:
    with pytest.raises(OSError) as e:
        add(f"auth {PUB} secretword=1")
    assert "secretword" not in str(e.value)


def test_no_provider_is_enxio_after_the_grammar() -> None:
    assert current_tsm_provider() is None
    with pytest.raises(OSError) as e:
        add(f"auth {PUB}")
    assert e.value.errno == errno.ENXIO
    with pytest.raises(OSError) as e:
        add("auth zz")  # the grammar comes first
    assert e.value.errno == errno.EINVAL


def test_one_provider_at_a_time(fixed: Fixed) -> None:
    other = Fixed()
    with pytest.raises(OSError) as e:
        register_tsm_provider(other)
    assert e.value.errno == errno.EEXIST
    assert current_tsm_provider() is fixed
    with pytest.raises(OSError) as e:
        unregister_tsm_provider(other)
    assert e.value.errno == errno.EINVAL
    assert current_tsm_provider() is fixed


def test_unregister_without_provider_is_enxio() -> None:
    with pytest.raises(OSError) as e:
        unregister_tsm_provider(Fixed())
    assert e.value.errno == errno.ENXIO


def test_register_refuses_what_is_not_a_provider() -> None:
    with pytest.raises(OSError) as e:
        register_tsm_provider(object())  # type: ignore[arg-type]
    assert e.value.errno == errno.EINVAL
    assert current_tsm_provider() is None


def test_provider_errors_pass_through_and_leave_no_key(fixed: Fixed) -> None:
    class Refusing(Fixed):
        def auth_new(self, request: TsmRequest) -> bytes:
            raise OSError(errno.EIO, "firmware said no")

    unregister_tsm_provider(fixed)
    r = Refusing()
    register_tsm_provider(r)
    try:
        ks = kt.Keyspace()
        before = ks.key("@s").read()
        with pytest.raises(OSError) as e:
            ks.add_key("tsm", "att", f"auth {PUB}", "@s")
        assert e.value.errno == errno.EIO
        assert ks.key("@s").read() == before
    finally:
        unregister_tsm_provider(r)
        register_tsm_provider(fixed)


def test_no_update(fixed: Fixed) -> None:
    # No update op: the key is made without WRITE permission, so update is EACCES (as in the kernel).
    key = add(f"auth {PUB}")
    with pytest.raises(OSError) as e:
        key.update(f"auth {PUB}")
    assert e.value.errno == errno.EACCES


def test_nonce_extension_hashes_nonce_and_user_data(fixed: Fixed) -> None:
    import hashlib

    text = add("auth 0102 nonce=" + "ee" * 32).read()
    blob = bytes.fromhex(text.split(b" ")[2].decode())
    assert blob[2:] == hashlib.sha512(b"\xee" * 32 + b"\x01\x02").digest()
    assert text.split(b" ")[0] == b"0102"  # read shows the user data, not the hash


def test_builtin_provider_resolves_without_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_scan(rescan: bool = False) -> dict[str, object]:
        raise AssertionError("scanned entry points")

    monkeypatch.setattr(TSM_PROVIDERS, "entry_points", no_scan)
    cls = TSM_PROVIDERS.load("emulated-sev-snp")
    assert cls is EmulatedSevSnp
    assert cls(tmp_path / "s").name == "emulated-sev-snp"
