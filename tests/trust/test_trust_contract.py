"""One contract, every trust source: host, caam, tee (emulated) and tpm2 (swtpm).

Each source must round-trip 32..128-byte keys, bind its blobs to itself and to
its device (another state dir / HUK / TPM rejects them with a clear error),
reject every single-bit flip, reject a wrong auth where it has auth, keep
plaintext off the disk, and refuse options it does not support with EINVAL.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from conftest import require
from keyring_types.secret import SecretBuffer
from keyring_types.trust.base import ALL_OPTIONS, TrustedOptions, TrustSource
from keyring_types.trust.caam import CaamSource
from keyring_types.trust.host import HostSource
from keyring_types.trust.options import parse_options
from keyring_types.trust.tee import SocketTransport, TeeSource
from keyring_types.trust.tee_emulator import spawn_emulator

#: How a source may refuse a foreign or damaged blob (its kernel counterpart's errno).
REJECT = {errno.EBADMSG, errno.EFAULT, errno.EPERM, errno.EINVAL, errno.E2BIG}
SOURCES = ["host", "caam", "tee", "tpm2"]
#: A valid value for every kernel option, to test that unsupported ones are refused.
OPTION_VALUES = {
    "keyhandle": "0x81000001",
    "keyauth": "00" * 20,
    "blobauth": "secret",
    "pcrinfo": "00" * 4,
    "pcrlock": "16",
    "migratable": "0",
    "hash": "sha256",
    "policydigest": "00" * 32,
    "policyhandle": "0x03000000",
}


def _tpm2_class() -> type[TrustSource] | None:
    try:
        from keyring_types.trust.tpm2 import Tpm2Source
    except ImportError:
        return None
    return Tpm2Source


SOURCE_CLASSES: dict[str, type[TrustSource] | None] = {
    "host": HostSource,
    "caam": CaamSource,
    "tee": TeeSource,
    "tpm2": _tpm2_class(),
}


@attrs.define
class Device:
    """One instance of a source on one (emulated or simulated) device."""

    source: TrustSource
    #: Directories whose files must never contain a plaintext key.
    disk: list[Path]
    #: Options every seal/unseal needs on this source (tpm2: the parent handle).
    base: str = ""
    cleanup: list[Callable[[], None]] = attrs.Factory(list)

    def opts(self, extra: str = "") -> TrustedOptions:
        return parse_options(f"{self.base} {extra}".strip()).options

    def close(self) -> None:
        self.source.close()
        for fn in reversed(self.cleanup):
            fn()


def _tee_device() -> Device:
    # Short paths: a Unix socket path must fit in 108 bytes.
    d = Path(tempfile.mkdtemp(prefix="kt-tee-"))
    proc = spawn_emulator(d / "tee.sock", d / "huk")

    def stop() -> None:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(d, ignore_errors=True)

    dev = Device(TeeSource(transport=SocketTransport(d / "tee.sock")), [d])
    dev.cleanup.append(stop)
    return dev


def _tpm2_runnable() -> bool:
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError:
        return False
    return SOURCE_CLASSES["tpm2"] is not None and shutil.which("swtpm") is not None


def _tpm2_device() -> Device:
    cls = SOURCE_CLASSES["tpm2"]
    require(cls is not None, "keyring_types.trust.tpm2")
    require(shutil.which("swtpm") is not None, "swtpm (Debian package swtpm)")
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError:
        require(False, "tpm2-pytss (pip install keyring_types[tpm])")
    from swtpm_util import create_primary, start_swtpm

    sim = start_swtpm()
    try:
        create_primary(sim.tcti)
    except BaseException:
        sim.stop()
        raise
    assert cls is not None
    dev = Device(cls(tcti=sim.tcti), [sim.state_dir], base="keyhandle=0x81000001")  # type: ignore[call-arg]
    dev.cleanup.append(sim.stop)
    return dev


def make_device(name: str, root: Path) -> Device:
    """A fresh device of source ``name`` whose state lives under ``root``."""
    if name == "host":
        return Device(HostSource(root), [root])
    if name == "caam":
        return Device(CaamSource(root), [root])
    if name == "tee":
        return _tee_device()
    return _tpm2_device()


@pytest.fixture(params=SOURCES)
def device(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Device]:
    dev = make_device(request.param, tmp_path / "a")
    try:
        yield dev
    finally:
        dev.close()


@pytest.fixture
def other_device(device: Device, tmp_path: Path) -> Iterator[Device]:
    dev = make_device(device.source.name, tmp_path / "b")
    try:
        yield dev
    finally:
        dev.close()


def _key(n: int) -> SecretBuffer:
    return SecretBuffer.from_bytes(os.urandom(n))


def _rejects(dev: Device, blob: bytes, opts: TrustedOptions) -> OSError:
    with pytest.raises(OSError) as info:
        got = dev.source.unseal(blob, opts)
        got.secret.wipe()
    assert info.value.errno in REJECT, info.value
    assert info.value.strerror, "the error must say what was wrong"
    return info.value


@pytest.mark.parametrize("keylen", [32, 33, 48, 64, 100, 127, 128])
def test_round_trip(device: Device, keylen: int) -> None:
    key = _key(keylen)
    blob = device.source.seal(key, device.opts())
    assert 0 < len(blob) <= 512
    assert key.tobytes() not in blob
    got = device.source.unseal(blob, device.opts())
    try:
        assert got.secret == key
        assert got.migratable == device.source.migratable
    finally:
        got.secret.wipe()
        key.wipe()


def test_two_seals_differ(device: Device) -> None:
    key = _key(32)
    assert device.source.seal(key, device.opts()) != device.source.seal(key, device.opts())


def test_blob_from_another_device_is_rejected(device: Device, other_device: Device) -> None:
    blob = device.source.seal(_key(32), device.opts())
    _rejects(other_device, blob, other_device.opts())


def test_blob_from_another_source_is_rejected(device: Device, tmp_path: Path) -> None:
    blob = device.source.seal(_key(32), device.opts())
    others = [n for n in SOURCES if n != device.source.name]
    for name in others:
        if name == "tpm2" and not _tpm2_runnable():
            continue  # the tpm2 cases of this suite report what is missing
        dev = make_device(name, tmp_path / f"other-{name}")
        try:
            _rejects(dev, blob, dev.opts())
        finally:
            dev.close()


def test_every_single_bit_flip_is_rejected(device: Device) -> None:
    key = _key(32)
    blob = device.source.seal(key, device.opts())
    opts = device.opts()
    accepted = []
    # Exhaustive: blobs are at most 512 bytes, so at most 4096 unseal attempts.
    for bit in range(len(blob) * 8):
        bad = bytearray(blob)
        bad[bit // 8] ^= 1 << (bit % 8)
        try:
            got = device.source.unseal(bytes(bad), opts)
        except OSError as exc:
            assert exc.errno in REJECT, (bit, exc)
            continue
        got.secret.wipe()
        accepted.append(bit)
    assert accepted == [], f"bit flips accepted at {accepted[:10]}"
    # And the undamaged blob still opens.
    ok = device.source.unseal(blob, opts)
    assert ok.secret == key
    ok.secret.wipe()


def test_wrong_auth_is_rejected(device: Device) -> None:
    key = _key(32)
    if "blobauth" not in device.source.supported_options:
        # No auth on this source: asking for one must fail rather than give a blob
        # its owner wrongly believes to be password-protected.
        with pytest.raises(OSError) as info:
            device.source.seal(key, device.opts("blobauth=right-password"))
        assert info.value.errno == errno.EINVAL
        return
    blob = device.source.seal(key, device.opts("blobauth=right-password"))
    _rejects(device, blob, device.opts("blobauth=wrong-password"))
    with pytest.raises(OSError):
        device.source.unseal(blob, device.opts()).secret.wipe()
    got = device.source.unseal(blob, device.opts("blobauth=right-password"))
    assert got.secret == key
    got.secret.wipe()


def test_nothing_plaintext_on_disk(device: Device) -> None:
    keys = [_key(n) for n in (32, 64, 128)]
    blobs = [device.source.seal(k, device.opts()) for k in keys]
    for blob in blobs:
        device.source.unseal(blob, device.opts()).secret.wipe()
    needles = []
    for k in keys:
        raw = k.tobytes()
        needles += [raw, raw.hex().encode(), raw.hex().upper().encode()]
    scanned = 0
    for top in device.disk:
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                path = Path(dirpath) / name
                if path.is_socket() or not path.is_file():
                    continue
                data = path.read_bytes()
                scanned += 1
                for needle in needles:
                    assert needle not in data, f"plaintext key found in {path}"
    assert scanned > 0, "the source keeps state on disk; the scan must have seen it"


def _unsupported_cases() -> list[Any]:
    cases = []
    for name, cls in SOURCE_CLASSES.items():
        unsupported = sorted(ALL_OPTIONS - cls.supported_options) if cls is not None else []
        cases += [pytest.param(name, opt, id=f"{name}-{opt}") for opt in unsupported]
    return cases


@pytest.mark.parametrize(("source_name", "option"), _unsupported_cases())
def test_unsupported_option_is_einval(source_name: str, option: str, tmp_path: Path) -> None:
    dev = make_device(source_name, tmp_path)
    try:
        opts = dev.opts(f"{option}={OPTION_VALUES[option]}")
        with pytest.raises(OSError) as info:
            dev.source.seal(_key(32), opts)
        assert info.value.errno == errno.EINVAL
        assert option in str(info.value)
        blob = dev.source.seal(_key(32), dev.opts())
        with pytest.raises(OSError) as info:
            dev.source.unseal(blob, opts)
        assert info.value.errno == errno.EINVAL
    finally:
        dev.close()


def test_random(device: Device) -> None:
    if device.source.has_rng:
        a, b = device.source.get_random(64), device.source.get_random(64)
        assert len(a) == len(b) == 64 and a != b
    else:
        with pytest.raises(OSError) as info:
            device.source.get_random(32)
        assert info.value.errno == errno.EOPNOTSUPP


def test_non_migratable_when_asked(device: Device) -> None:
    if "migratable" not in device.source.supported_options:
        assert device.source.migratable is False
        return
    key = _key(32)
    blob = device.source.seal(key, device.opts("migratable=0"))
    got = device.source.unseal(blob, device.opts())
    assert got.migratable is False
    got.secret.wipe()
