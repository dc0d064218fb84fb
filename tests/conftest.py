"""Shared fixtures.  Anything a test needs from the machine goes through ``require``:
it skips with a reason naming what is missing, except under ``CI=true``, where the
machine is known to have everything and a missing piece is a failure."""

from __future__ import annotations

import os
import shutil as _shutil
import subprocess
import tempfile
from collections.abc import Callable
from collections.abc import Iterator as _Iterator
from pathlib import Path

import pytest

import keyring_types as kt

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, missing: str) -> None:
    """Skip (or, in CI, fail) unless ``condition``; ``missing`` says what is absent."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must have {missing}, but it is missing", pytrace=False)
    pytest.skip(f"needs {missing}")


def kernel_keyring_reachable() -> bool:
    try:
        with open("/proc/keys"):
            return True
    except OSError:
        return False


def errno_of(fn: Callable[..., object], *args: object, **kwargs: object) -> int:
    """The errno of the OSError that ``fn(*args, **kwargs)`` raises, which must also say something."""
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    assert str(info.value), "an error names the problem"
    err = info.value.errno
    assert err is not None
    return err


@pytest.fixture
def need_root() -> None:
    require(os.geteuid() == 0, "root")


@pytest.fixture
def need_kernel_keyring() -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")


@pytest.fixture(params=["keyspace", "kernel"])
def space(request: pytest.FixtureRequest) -> kt.KeyspaceAPI:
    """Each test twice: on an in-process Keyspace and on the kernel, in a fresh session keyring."""
    if request.param == "keyspace":
        return kt.Keyspace()
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    return kt.KernelKeyspace(new_session=True)


@pytest.fixture
def tdir() -> _Iterator[Path]:
    """A fresh private directory with a short path (a Unix socket path must fit in 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="kt-tee-"))
    yield d
    _shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def emulator(tdir: Path) -> _Iterator[subprocess.Popen[bytes]]:
    """An emulated TEE serving ``tdir / "s"`` with its HUK at ``tdir / "huk"``; stopped afterwards."""
    from keyring_types.trust import tee_emulator

    proc = tee_emulator.spawn_emulator(tdir / "s", tdir / "huk")
    yield proc
    proc.terminate()
    proc.wait(10)


# ==== BEGIN swtpm / tpm2 fixtures (owner: tpm2 trust source; see tests/swtpm_util.py) ====


@pytest.fixture
def swtpm() -> _Iterator[object]:
    """A private swtpm on loopback (fresh state, free ports): ``.tcti``, ``.port``, ``.state_dir``."""
    require(_shutil.which("swtpm") is not None, "swtpm (Debian package swtpm)")
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError:
        require(False, "tpm2-pytss (pip install keyring_types[tpm])")
    from swtpm_util import start_swtpm

    sim = start_swtpm()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def tpm2_source(swtpm: object) -> _Iterator[object]:
    """A ``Tpm2Source`` on ``swtpm`` with an ECC P-256 storage primary persisted at 0x81000001."""
    from swtpm_util import create_primary

    from keyring_types.trust.tpm2 import Tpm2Source

    create_primary(swtpm.tcti)  # type: ignore[attr-defined]
    source = Tpm2Source(tcti=swtpm.tcti)  # type: ignore[attr-defined]
    try:
        yield source
    finally:
        source.close()


# ==== END swtpm / tpm2 fixtures ====


@pytest.fixture
def quiet_secret_memory() -> _Iterator[None]:
    """Collect earlier tests' garbage and hold the cyclic GC off for the test.

    Tests that compare ``live_secret_bytes()`` before and after need this: a dropped
    Keyspace is a reference cycle (keyrings and their keys point at each other), so
    its secrets are freed whenever the cyclic collector happens to run.
    """
    import gc

    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> _Iterator[Path]:
    """A store path (``Keyspace(store=...)``) with its own state directory and the host trust source."""
    from keyring_types.trust import registry

    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEYRING_TYPES_TRUST_SOURCE", "host")
    registry.clear_cache()
    yield tmp_path / "keys.db"
    registry.clear_cache()
