"""Measurement registers: the emulated guest with the v6.16 sysfs rules (exact-size writes at
offset 0 extend, anything else EINVAL; extends reach later quotes and the replayed log), the
sysfs and legacy configfs layouts read and written as the kernel expects, and detection."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from keyring_types.attest import eventlog, measurements, tdx
from keyring_types.attest.providers import EmulatedTdx


@pytest.fixture
def guest(tmp_path: Path) -> EmulatedTdx:
    return EmulatedTdx(tmp_path / "state", mrtd=b"\x05" * 48, mrowner=b"\x06" * 48)


def test_emulated_registers_have_the_sysfs_names(guest: EmulatedTdx) -> None:
    mr = measurements.EmulatedMeasurements(guest)
    files = [r.file for r in mr.registers()]
    assert files == sorted(["mrconfigid", "mrowner", "mrownerconfig", "mrtd:sha384", "rtmr0:sha384", "rtmr1:sha384",
                            "rtmr2:sha384", "rtmr3:sha384"])  # fmt: skip
    assert mr.read("mrtd") == mr.read("mrtd:sha384") == b"\x05" * 48
    assert mr.read("mrowner") == b"\x06" * 48
    assert mr.rtmrs() == (bytes(48),) * 4
    assert [r.writable for r in mr.registers()] == [r.name.startswith("rtmr") for r in mr.registers()]


def test_an_extend_reaches_the_next_quote_and_the_replayed_log(guest: EmulatedTdx) -> None:
    mr = measurements.open_measurements(guest=guest)
    assert mr.kind == "emulated"
    d = hashlib.sha384(b"config").digest()
    new = mr.extend("rtmr2", d)
    assert new == hashlib.sha384(bytes(48) + d).digest() == mr.read(2)
    assert mr.write("rtmr2:sha384", d) == 48
    q = tdx.verify(guest.quote(bytes(64)), roots=guest.root_pem())
    assert q.rtmrs[2] == hashlib.sha384(new + d).digest() == mr.read(2)
    assert isinstance(mr, measurements.EmulatedMeasurements)
    assert eventlog.rtmrs_of(eventlog.replay(mr.event_log())) == q.rtmrs


@pytest.mark.parametrize(("data", "offset"), [(bytes(47), 0), (bytes(49), 0), (bytes(32), 0), (b"", 0), (bytes(48), 1)])
def test_partial_writes_are_einval_and_change_nothing(guest: EmulatedTdx, data: bytes, offset: int) -> None:
    mr = measurements.EmulatedMeasurements(guest)
    with pytest.raises(OSError) as e:
        mr.write("rtmr0", data, offset)
    assert e.value.errno == errno.EINVAL
    assert mr.rtmrs() == (bytes(48),) * 4


def test_read_only_and_unknown_registers(guest: EmulatedTdx) -> None:
    mr = measurements.EmulatedMeasurements(guest)
    for name in ("mrtd", "mrconfigid"):
        with pytest.raises(OSError) as e:
            mr.extend(name, bytes(48))
        assert e.value.errno == errno.EACCES
    for bad in ("rtmr4", "pcr0", 7):
        with pytest.raises(OSError) as e:
            mr.read(bad)
        assert e.value.errno == errno.ENOENT


def fake_sysfs(root: Path) -> Path:
    """A directory shaped as /sys/class/misc/tdx_guest/measurements (regular files: the kernel's
    extend semantics are not there, only its names, modes and sizes)."""
    d = root / "measurements"
    d.mkdir()
    for name, value, mode in [("mrtd:sha384", b"\x01" * 48, 0o444), ("mrconfigid", b"\x02" * 48, 0o444),
                              *((f"rtmr{i}:sha384", bytes([i]) * 48, 0o644) for i in range(4))]:  # fmt: skip
        (d / name).write_bytes(value)
        os.chmod(d / name, mode)
    return d


def test_sysfs_layout_is_read_and_written_as_the_kernel_expects(tmp_path: Path) -> None:
    d = fake_sysfs(tmp_path)
    assert measurements.detect(sysfs=d, legacy=tmp_path / "none") == "sysfs"
    mr = measurements.open_measurements(sysfs=d, legacy=tmp_path / "none")
    assert isinstance(mr, measurements.SysfsMeasurements)
    regs = {r.file: r for r in mr.registers()}
    assert regs["mrtd:sha384"] == measurements.Register("mrtd", "sha384", 48, False)
    assert regs["mrconfigid"].hash is None and regs["rtmr3:sha384"].writable
    assert mr.rtmrs() == tuple(bytes([i]) * 48 for i in range(4))
    # An extend is one write of exactly the digest at offset 0.
    mr.write(1, b"\xaa" * 48)
    assert (d / "rtmr1:sha384").read_bytes() == b"\xaa" * 48
    with pytest.raises(OSError) as e:
        mr.write(1, b"\xaa" * 20)
    assert e.value.errno == errno.EINVAL


def test_legacy_configfs_rtmrs(tmp_path: Path) -> None:
    d = tmp_path / "rtmrs"
    (d / "existing").mkdir(parents=True)
    (d / "existing" / "index").write_bytes(b"2\n")
    (d / "existing" / "digest").write_bytes(b"\x07" * 48)
    (d / "existing" / "tcg_map").write_bytes(b"4-8\n")
    assert measurements.detect(sysfs=tmp_path / "none", legacy=d) == "configfs-legacy"
    mr = measurements.open_measurements(sysfs=tmp_path / "none", legacy=d)
    assert isinstance(mr, measurements.LegacyRtmrs)
    assert mr.read(2) == b"\x07" * 48 and mr.tcg_map(2) == "4-8"
    mr.write(0, b"\x09" * 48)  # no entry for index 0 yet: one is made and its index written
    made = [p for p in d.iterdir() if p.name.startswith("rtmr0-")]
    assert len(made) == 1 and (made[0] / "index").read_bytes() == b"0"
    assert mr.read(0) == b"\x09" * 48


def test_detection_falls_back_to_the_emulated_guest(tmp_path: Path) -> None:
    assert measurements.detect(sysfs=tmp_path / "a", legacy=tmp_path / "b") == "emulated"


@pytest.mark.skipif(not os.path.isdir(measurements.SYSFS_TDX), reason="needs a TDX guest with the v6.16 measurements group")
def test_real_sysfs_reads() -> None:
    mr = measurements.SysfsMeasurements()
    assert all(len(v) == 48 for v in mr.rtmrs())
