"""The configfs-tsm provider against a real mount that behaves as configfs-tsm does (FUSE,
backed by the emulated SEV-SNP guest), and that mount's errno table and generation rules."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from configfs_mount import Mount, mounted
from conftest import errno_of

import keyring_types as kt
from keyring_types.attest import register_tsm_provider, snp, unregister_tsm_provider
from keyring_types.attest.providers import ConfigfsTsm, EmulatedSevSnp

U64 = 1 << 64


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cfg") / "state"
    EmulatedSevSnp(d).chain_pem()  # the RSA-4096 roots, once, before any server starts
    return d


@pytest.fixture(scope="module")
def guest(state: Path) -> EmulatedSevSnp:
    return EmulatedSevSnp(state)


@pytest.fixture(scope="module")
def mnt(state: Path) -> Iterator[Mount]:
    with mounted(state) as m:
        yield m


def write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def gen(entry: Path) -> int:
    return int((entry / "generation").read_text())


@pytest.fixture
def entry(mnt: Mount) -> Iterator[Path]:
    e = mnt.path / f"t{os.getpid()}-{threading.get_ident()}"
    os.mkdir(e)
    yield e
    os.rmdir(e)


# -- the provider ------------------------------------------------------------------------------


def test_provider_report_verifies_and_leaves_no_entry(mnt: Mount, guest: EmulatedSevSnp) -> None:
    user = os.urandom(40)
    got = ConfigfsTsm(mnt.path).get_report(user, privlevel=1)
    assert got.provider == "sev_guest" and got.manifestblob is None
    r = snp.verify(got.outblob, cert=guest.vcek_der(), chain=guest.chain_pem())
    assert r.report_data == user + bytes(24) and r.vmpl == 1  # zero-padded to 64
    assert got.auxblob is not None
    table = snp.parse_cert_table(got.auxblob)  # the server's own VCEK certificate: same key, its serial
    assert table.vcek is not None and snp.verify(got.outblob, cert=table.vcek, chain=guest.chain_pem()) == r
    assert os.listdir(mnt.path) == []


def test_tsm_key_through_configfs(mnt: Mount, guest: EmulatedSevSnp) -> None:
    p = ConfigfsTsm(mnt.path)
    register_tsm_provider(p)
    try:
        user = os.urandom(64)
        key = kt.Keyspace().add_key("tsm", "att", f"auth {user.hex()} privlevel=2", "@s")
        pub, desc, blob = key.read().split(b" ")
        assert (pub, desc) == (user.hex().encode(), b"configfs-tsm")
        r = snp.verify(bytes.fromhex(blob.decode()), cert=guest.vcek_der(), chain=guest.chain_pem())
        assert (r.report_data, r.vmpl) == (user, 2)
        nonce = os.urandom(32)
        key = kt.Keyspace().add_key("tsm", "att", f"auth 6869 nonce={nonce.hex()} format=extended", "@s")
        _, desc, blob = key.read().split(b" ")
        raw = bytes.fromhex(blob.decode())
        assert desc == b"configfs-tsm:extended"
        assert snp.parse_report(raw[: snp.REPORT_SIZE]).report_data == hashlib.sha512(nonce + b"hi").digest()
        vcek = snp.parse_cert_table(raw[16384:]).vcek
        assert vcek is not None and snp.verify(raw[: snp.REPORT_SIZE], cert=vcek, chain=guest.chain_pem())
        assert errno_of(kt.Keyspace().add_key, "tsm", "a", f"auth {'00' * 63}", "@s") == errno.EINVAL
        assert errno_of(kt.Keyspace().add_key, "tsm", "a", f"auth {'00' * 64} privlevel=4", "@s") == errno.EINVAL
    finally:
        unregister_tsm_provider(p)


def test_provider_errors_are_the_kernels(mnt: Mount, tmp_path: Path) -> None:
    assert errno_of(ConfigfsTsm(mnt.path).get_report, b"x" * 65) == errno.EFBIG
    assert errno_of(ConfigfsTsm(tmp_path / "absent").get_report, b"x") == errno.ENOENT
    mnt.set_provider(False)
    try:
        assert errno_of(ConfigfsTsm(mnt.path).get_report, b"x") == errno.ENXIO
    finally:
        mnt.set_provider(True)
    assert ConfigfsTsm.available(mnt.path) and not ConfigfsTsm.available(tmp_path / "absent")


def test_concurrent_writer_is_detected_and_the_request_retried(mnt: Mount, monkeypatch: pytest.MonkeyPatch) -> None:
    p = ConfigfsTsm(mnt.path, entry="shared")
    mine, theirs = b"\x11" * 64, b"\x22" * 64
    real_read = ConfigfsTsm._read
    interfere = {"left": 1}

    def racing_read(path: Path) -> bytes:
        # Another agent writes its inblob into the shared entry just before our outblob read.
        if path.name == "outblob" and interfere["left"]:
            interfere["left"] -= 1
            write(path.parent / "inblob", theirs)
        return real_read(path)

    monkeypatch.setattr(ConfigfsTsm, "_read", staticmethod(racing_read))
    got = p.get_report(mine)
    assert interfere["left"] == 0
    assert snp.parse_report(got.outblob).report_data == mine  # never the other writer's
    interfere["left"] = 1000
    assert errno_of(p.get_report, mine) == errno.EBUSY
    assert 1000 - interfere["left"] == p.attempts
    monkeypatch.undo()
    os.rmdir(mnt.path / "shared")


def test_many_threads_each_get_their_own_report(mnt: Mount) -> None:
    p = ConfigfsTsm(mnt.path)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(4):
                data = bytes([i, j]) * 32
                assert snp.parse_report(p.get_report(data).outblob).report_data == data
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_outblob_of_16_mib_is_read_whole(state: Path) -> None:
    pad = (16 << 20) - snp.REPORT_SIZE
    with mounted(state, "--outblob-pad", str(pad)) as m:
        got = ConfigfsTsm(m.path).get_report(b"big")
        assert len(got.outblob) == 16 << 20 and not any(got.outblob[snp.REPORT_SIZE :])
        assert snp.parse_report(got.outblob[: snp.REPORT_SIZE]).report_data[:3] == b"big"
    with mounted(state, "--outblob-pad", str(pad + 1)) as m:
        assert errno_of(ConfigfsTsm(m.path).get_report, b"big") == errno.EFBIG


# -- the mount's ABI: errno table ------------------------------------------------------------


def test_errno_table(mnt: Mount, entry: Path) -> None:
    assert errno_of((entry / "outblob").read_bytes) == errno.EINVAL  # no inblob yet
    fd = os.open(entry / "inblob", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, bytes(65))
        assert e.value.errno == errno.EFBIG
    finally:
        os.close(fd)
    write(entry / "inblob", bytes(63))
    assert errno_of((entry / "outblob").read_bytes) == errno.EINVAL  # sev-guest wants exactly 64
    for bad in (b"4\n", b"x\n", b"-1\n"):
        assert errno_of(write, entry / "privlevel", bad) == errno.EINVAL
    assert errno_of(write, entry / "privlevel", b"0x100000000\n") == errno.ERANGE
    assert errno_of(os.open, entry / "outblob", os.O_WRONLY) == errno.EACCES
    assert errno_of(os.open, entry / "inblob", os.O_RDONLY) == errno.EACCES
    assert errno_of(os.open, entry / "service_guid", os.O_WRONLY) == errno.ENOENT  # no SVSM: hidden
    assert errno_of(os.mkdir, entry / "sub") == errno.EPERM
    mnt.set_provider(False)
    try:
        assert errno_of(os.mkdir, mnt.path / "another") == errno.ENXIO
        write(entry / "inblob", bytes(64))
        assert errno_of((entry / "outblob").read_bytes) == errno.ENXIO
        assert errno_of((entry / "provider").read_bytes) == errno.ENXIO
    finally:
        mnt.set_provider(True)
    assert (entry / "provider").read_text() == "sev_guest\n"


def test_generation_rules(entry: Path) -> None:
    assert gen(entry) == 0
    write(entry / "inblob", b"\x01" * 64)
    write(entry / "privlevel", b"0x2\n")  # kstrtouint base 0: hex
    write(entry / "privlevel", b"01\n")  # octal
    assert gen(entry) == 3
    assert errno_of(write, entry / "privlevel", b"9\n") == errno.EINVAL
    assert gen(entry) == 3  # a refused privlevel is not counted
    a = (entry / "outblob").read_bytes()
    assert (entry / "outblob").read_bytes() == a  # same generation: the cached report
    assert snp.parse_report(a).vmpl == 1
    write(entry / "inblob", b"\x01" * 64)
    assert gen(entry) == 4
    b = (entry / "outblob").read_bytes()
    assert b != a and snp.parse_report(b).report_data == b"\x01" * 64  # remade (a new signature)


def test_wrapping_generation_is_ebusy_and_silent_for_inblob(state: Path) -> None:
    with mounted(state, "--start-generation", str(U64 - 2)) as m:
        e = m.path / "w"
        os.mkdir(e)
        write(e / "inblob", b"\x05" * 64)
        assert gen(e) == U64 - 1
        assert errno_of(write, e / "privlevel", b"1\n") == errno.EBUSY  # would lap the last read
        write(e / "inblob", b"\x06" * 64)  # configfs drops the commit's EBUSY at close
        assert gen(e) == U64 - 1
        assert snp.parse_report((e / "outblob").read_bytes()).report_data == b"\x05" * 64
        write(e / "privlevel", b"1\n")  # the read caught up: the counter wraps to 0
        assert gen(e) == 0
        os.rmdir(e)
        # The provider compares generations modulo 2**64, and sees the refused write.
        got = ConfigfsTsm(m.path).get_report(b"\x07" * 64)
        assert snp.parse_report(got.outblob).report_data == b"\x07" * 64
        assert errno_of(ConfigfsTsm(m.path).get_report, b"\x07" * 64, privlevel=1) == errno.EBUSY


def test_svsm_service_attributes_and_manifest(state: Path, guest: EmulatedSevSnp) -> None:
    with mounted(state, "--svsm", "--privlevel-floor", "2") as m:
        e = m.path / "s"
        os.mkdir(e)
        try:
            assert (e / "privlevel_floor").read_text() == "2\n"
            assert errno_of(write, e / "privlevel", b"1\n") == errno.EINVAL  # below the floor
            assert gen(e) == 0
            assert errno_of(write, e / "service_guid", b"not-a-guid\n") == errno.EINVAL
            assert gen(e) == 1  # the quirk: the kernel advanced before it parsed
            assert errno_of(write, e / "service_manifest_version", b"v1\n") == errno.EINVAL
            assert gen(e) == 1
            write(e / "inblob", b"\x09" * 64)
            write(e / "service_provider", b"tpm\n")
            assert errno_of((e / "outblob").read_bytes) == errno.EINVAL  # only svsm, checked now
        finally:
            os.rmdir(e)
        nonce = os.urandom(64)
        got = ConfigfsTsm(m.path).get_report(nonce, service_provider="svsm", service_guid="00000000-0000-0000-0000-000000000000")
        assert got.manifestblob
        r = snp.verify(got.outblob, cert=guest.vcek_der(), chain=guest.chain_pem())
        assert r.report_data == hashlib.sha512(nonce + got.manifestblob).digest() and r.vmpl == 0
        assert errno_of(ConfigfsTsm(m.path).get_report, nonce, service_provider="svsm", service_manifest_version=1) == errno.EINVAL
        assert errno_of(ConfigfsTsm(m.path).get_report, nonce, privlevel=1) == errno.EINVAL
    with mounted(state) as m:
        assert errno_of(ConfigfsTsm(m.path).get_report, nonce, service_provider="svsm") == errno.EINVAL  # not shown
