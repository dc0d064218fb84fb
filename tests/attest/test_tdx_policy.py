"""tdx.Policy: each field refuses a quote that does not say it, and accepts one that does;
debuggable TDs are refused unless allowed; bad policies are EINVAL."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
from pathlib import Path
from typing import Any

import pytest
from conftest import require

from keyring_types.attest import tdx
from keyring_types.attest.providers import EmulatedTdx

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> EmulatedTdx:
    return EmulatedTdx(tmp_path_factory.mktemp("tdxpol") / "state", mrtd=b"\x01" * 48, mrconfigid=b"\x02" * 48, mrowner=b"\x03" * 48)


def check(guest: EmulatedTdx, blob: bytes, **policy: Any) -> tdx.TdxQuote:
    return tdx.verify(blob, roots=guest.root_pem(), policy=tdx.Policy(**policy))


def refused(guest: EmulatedTdx, blob: bytes, field: str, **policy: Any) -> None:
    with pytest.raises(OSError) as e:
        check(guest, blob, **policy)
    assert e.value.errno == errno.EKEYREJECTED and field in str(e.value)


def test_each_field_accepts_its_value_and_refuses_another(guest: EmulatedTdx) -> None:
    blob = guest.quote(b"\x09" * 64)
    q = tdx.parse_quote(blob)
    good: dict[str, Any] = {
        "mrtd": b"\x01" * 48, "mrconfigid": b"\x02" * 48, "mrowner": b"\x03" * 48, "mrownerconfig": bytes(48),
        "mrseam": q.mrseam, "mrsignerseam": q.mrsignerseam, "report_data": b"\x09" * 64, "xfam": q.xfam,
        "td_attributes": q.td_attributes, "rtmrs": q.rtmrs, "minimum_tee_tcb_svn": q.tee_tcb_svn, "minimum_qe_isv_svn": 8,
    }  # fmt: skip
    check(guest, blob, **good)
    bad: dict[str, tuple[Any, str]] = {
        "mrtd": (bytes(48), "MRTD"), "mrconfigid": (bytes(48), "MRCONFIGID"), "mrowner": (bytes(48), "MROWNER"),
        "mrownerconfig": (b"\x01" * 48, "MROWNERCONFIG"), "mrseam": (bytes(48), "MRSEAM"),
        "mrsignerseam": (b"\x01" * 48, "MRSIGNERSEAM"), "report_data": (bytes(64), "REPORTDATA"), "xfam": (q.xfam ^ 1, "XFAM"),
        "td_attributes": (0, "TDATTRIBUTES"), "rtmrs": ((None, None, b"\x01" * 48, None), "RTMR2"),
        "minimum_tee_tcb_svn": (bytes([255]) + bytes(15), "TEE_TCB_SVN byte 0"), "minimum_qe_isv_svn": (9, "ISVSVN"),
    }  # fmt: skip
    for name, (value, field) in bad.items():
        refused(guest, blob, field, **{name: value})


def test_nonce_binding(guest: EmulatedTdx) -> None:
    nonce, user = b"n" * 32, b"u" * 8
    blob = guest.quote(hashlib.sha512(nonce + user).digest())
    check(guest, blob, nonce=nonce, user_data=user)
    refused(guest, blob, "REPORTDATA", nonce=nonce)


def test_debuggable_tds_are_refused_unless_allowed(tmp_path: Path) -> None:
    g = EmulatedTdx(tmp_path / "dbg", td_attributes=0x10000001)
    blob = g.quote(bytes(64))
    assert tdx.verify(blob, roots=g.root_pem()).debug  # no policy: nothing refused
    refused(g, blob, "debug")
    assert check(g, blob, debug_allowed=True).debug


def test_real_quote_policy() -> None:
    path = TESTDATA / "tdx-ccel" / "cos-113-tdx-quote.dat"
    require(path.is_file(), f"the real TDX test data {path}")
    blob = path.read_bytes()
    nonce_file = (TESTDATA / "tdx-ccel" / "nonce.dat").read_bytes()
    at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    q = tdx.verify(blob, at=at, policy=tdx.Policy(report_data=nonce_file, minimum_tee_tcb_svn=bytes(16)))
    with pytest.raises(OSError) as e:
        tdx.verify(blob, at=at, policy=tdx.Policy(rtmrs=(q.rtmrs[0], q.rtmrs[1], q.rtmrs[2], b"\x01" * 48)))
    assert e.value.errno == errno.EKEYREJECTED and "RTMR3" in str(e.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"mrtd": bytes(47)}, {"report_data": bytes(63)}, {"rtmrs": (bytes(48),) * 3}, {"rtmrs": (bytes(47), None, None, None)},
     {"nonce": b"x", "report_data": bytes(64)}, {"user_data": b"x"}, {"xfam": -1}, {"minimum_tee_tcb_svn": bytes(15)},
     {"accepted_tcb_statuses": ["Fine"]}],
)
def test_bad_policies_are_einval(kwargs: dict[str, Any]) -> None:
    with pytest.raises(OSError) as e:
        tdx.Policy(**kwargs)
    assert e.value.errno == errno.EINVAL
