"""The tpm2 source's option checks name the option and the rule, never the value given."""

from __future__ import annotations

import errno

import pytest

from keyring_types.trust.base import TrustedOptions
from keyring_types.trust.tpm2 import Tpm2Source

MARK = 0x7E57C0DE


@pytest.mark.parametrize(
    "options",
    [
        TrustedOptions(keyhandle=MARK << 8, given=frozenset({"keyhandle"})),
        TrustedOptions(keyhandle=0x81000001, policyhandle=MARK << 8, given=frozenset({"keyhandle", "policyhandle"})),
        TrustedOptions(keyhandle=0x81000001, pcrlock=MARK, given=frozenset({"keyhandle", "pcrlock"})),
    ],
    ids=["keyhandle", "policyhandle", "pcrlock"],
)
def test_range_errors_do_not_echo_the_value(options: TrustedOptions) -> None:
    with pytest.raises(OSError) as info:
        Tpm2Source._check_common(options)
    assert info.value.errno == errno.EINVAL
    text = str(info.value)
    for spelling in (str(MARK), f"{MARK:x}", f"{MARK << 8:x}", str(MARK << 8)):
        assert spelling not in text.lower()


def test_unknown_hash_is_not_echoed() -> None:
    options = TrustedOptions(keyhandle=0x81000001, hash="s3cr3tpw", given=frozenset({"keyhandle", "hash"}))
    with pytest.raises(OSError) as info:
        Tpm2Source._hash(options)
    assert info.value.errno == errno.EINVAL
    assert "s3cr3tpw" not in str(info.value)
    assert "hash=" in str(info.value)
