"""keyring_types.attest.eventlog: the real CCEL log of a GCP TD replays to its quote's four RTMRs
exactly; crypto-agile logs with several banks; the CCEL table; IMA's ASCII list."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
from pathlib import Path

import pytest
from conftest import require

from keyring_types import imalog
from keyring_types.attest import eventlog, tdx

CCEL = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "tdx-ccel"
AT = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def data(name: str) -> bytes:
    path = CCEL / name
    require(path.is_file(), f"the real TDX CCEL test data {path}")
    return path.read_bytes()


def test_replaying_the_ccel_log_reproduces_all_four_rtmrs_of_its_quote() -> None:
    log = data("ccel_data.dat")
    q = tdx.verify(data("cos-113-tdx-quote.dat"), at=AT)
    values = eventlog.replay(log)
    assert eventlog.rtmrs_of(values) == q.rtmrs
    assert [values[i] for i in (1, 2, 3, 4)] == list(q.rtmrs)
    assert q.rtmrs[3] == bytes(48) and 4 not in values  # nothing extended RTMR3 at boot: it reads as zero
    parsed = eventlog.parse(log)
    assert dict(parsed.algorithms) == {0x000C: 48} and len(parsed.events) == 43
    explained = eventlog.check_quote(log, q)
    assert all(x.matches for x in explained)
    assert sum(len(x.events) for x in explained) == 43


def test_a_changed_event_no_longer_explains_its_rtmr() -> None:
    log = bytearray(data("ccel_data.dat"))
    q = tdx.verify(data("cos-113-tdx-quote.dat"), at=AT)
    ev = eventlog.parse(bytes(log)).events[20]  # an RTMR1 event
    log[ev.offset + 14] ^= 1  # inside its SHA-384 digest
    with pytest.raises(OSError) as e:
        eventlog.check_quote(bytes(log), q)
    assert e.value.errno == errno.EKEYREJECTED and f"RTMR{ev.index - 1}" in str(e.value)
    loose = eventlog.check_quote(bytes(log), q, strict=False)
    assert [x.matches for x in loose] == [i != ev.index - 1 for i in range(4)]


def test_the_ccel_table() -> None:
    t = eventlog.parse_ccel(data("ccel_table.dat"))
    assert (t.cc_name, t.log_length) == ("tdx", len(data("ccel_data.dat")))
    bad = bytearray(data("ccel_table.dat"))
    bad[40] ^= 1
    with pytest.raises(OSError) as e:
        eventlog.parse_ccel(bytes(bad))
    assert e.value.errno == errno.EBADMSG and "checksum" in str(e.value)


def test_several_banks_replay_each_and_startup_locality() -> None:
    sha256, sha384 = 0x000B, 0x000C
    log = eventlog.pack_spec_id_event((sha256, sha384))
    log += eventlog.pack_event(0, eventlog.EV_NO_ACTION, {sha256: bytes(32), sha384: bytes(48)}, b"StartupLocality\x00\x03")
    d = {sha256: hashlib.sha256(b"x").digest(), sha384: hashlib.sha384(b"x").digest()}
    log += eventlog.pack_event(0, 0x80000008, d) + eventlog.pack_event(7, 1, d)
    log += b"\xff" * 100  # unused log area
    v256 = eventlog.replay(log, algorithm="sha256")
    assert v256[0] == hashlib.sha256(bytes(31) + b"\x03" + d[sha256]).digest()
    assert v256[7] == hashlib.sha256(bytes(32) + d[sha256]).digest()
    assert eventlog.replay(log) == eventlog.replay(log, algorithm=sha384)  # SHA-384 preferred
    with pytest.raises(OSError) as e:
        eventlog.replay(log, algorithm="sha1")
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize(
    "log",
    [b"", b"\x00" * 31, eventlog.pack_event(0, 1, {0x000C: bytes(48)}),
     eventlog.pack_spec_id_event() + eventlog.pack_event(1, 1, {0x000B: bytes(32)}),
     eventlog.pack_spec_id_event() + eventlog.pack_event(1, 1, {0x000C: bytes(48)}, b"data")[:-2]],
)
def test_malformed_logs_are_ebadmsg(log: bytes) -> None:
    with pytest.raises(OSError) as e:
        eventlog.replay(log)
    assert e.value.errno == errno.EBADMSG


IMA_TEXT = (
    b"10 " + b"11" * 20 + b" ima-ng sha256:" + b"aa" * 32 + b" boot_aggregate\n"
    b"10 " + b"22" * 20 + b" ima-ng sha256:" + b"bb" * 32 + b" /usr/bin/keyctl\n"
    b"10 " + b"00" * 20 + b" ima-ng sha256:" + b"00" * 32 + b" /usr/bin/keyctl\n"
    b"10 " + b"33" * 20 + b" ima-sig sha256:" + b"cc" * 32 + b" /opt/my_app \n"
    b" 9 " + b"44" * 20 + b" ima-buf sha256:" + b"dd" * 32 + b" kexec-cmdline 6869\n"
)


def test_ima_list_parses_and_replays() -> None:
    entries = eventlog.parse_ima(IMA_TEXT)
    assert [e.pcr for e in entries] == [10, 10, 10, 10, 9]
    assert entries[1].digest == ("sha256", b"\xbb" * 32) and entries[1].name == b"/usr/bin/keyctl"
    assert entries[2].violation and entries[3].fields[-1] == b""
    pcr10 = bytes(20)
    for th in (b"\x11" * 20, b"\x22" * 20, b"\xff" * 20, b"\x33" * 20):  # a violation extends all-ones
        pcr10 = hashlib.sha1(pcr10 + th).digest()
    values = eventlog.replay_ima(entries)
    assert values[10] == pcr10 and values[9] == hashlib.sha1(bytes(20) + b"\x44" * 20).digest()
    assert imalog.last_file_digest(IMA_TEXT, b"/usr/bin/keyctl") == b"\xbb" * 32
    assert imalog.last_file_digest(IMA_TEXT, b"/opt/my app") == b"\xcc" * 32


@pytest.mark.parametrize("line", [b"10\n", b"x " + b"11" * 20 + b" ima-ng\n", b"10 zz ima-ng\n", b"10 " + b"11" * 19 + b" ima-ng\n"])
def test_malformed_ima_lines_are_ebadmsg(line: bytes) -> None:
    with pytest.raises(OSError) as e:
        eventlog.parse_ima(line)
    assert e.value.errno == errno.EBADMSG and "line 1" in str(e.value)
