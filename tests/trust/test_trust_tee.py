"""The OP-TEE trusted-keys protocol, the emulated TEE process and the /dev/tee0 encoding."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyring_types.secret import SecretBuffer
from keyring_types.trust import tee, tee_emulator, tee_wire
from keyring_types.trust.options import parse_options
from keyring_types.trust.tee import (
    Param,
    SocketTransport,
    TeeError,
    TeeSource,
    TrustedKeysClient,
)
from keyring_types.trust.tee_wire import LOGIN_PUBLIC, LOGIN_USER

NO_OPTS = parse_options(b"").options


@pytest.fixture
def transport(emulator: subprocess.Popen[bytes], tdir: Path) -> Iterator[SocketTransport]:
    t = SocketTransport(tdir / "s")
    yield t
    t.close()


def test_blob_layout_is_the_tas(transport: SocketTransport) -> None:
    client = TrustedKeysClient(transport)
    for n in (32, 77, 128):
        blob = client.seal(memoryview(os.urandom(n)))
        assert len(blob) == n + 33 == n + tee_wire.TEE_BLOB_OVERHEAD
        assert blob[0] == 0  # reserved byte, then IV(16), tag(16), ciphertext


def test_unseal_receives_into_secret_memory(transport: SocketTransport) -> None:
    client = TrustedKeysClient(transport)
    key = os.urandom(48)
    got = client.unseal(client.seal(memoryview(key)))
    assert isinstance(got, SecretBuffer) and got == key
    got.wipe()


def test_ta_refuses_logins_other_than_ree_kernel(transport: SocketTransport) -> None:
    for login in (LOGIN_PUBLIC, LOGIN_USER):
        with pytest.raises(TeeError) as info:
            TrustedKeysClient(transport, login=login)
        assert info.value.ret == tee_wire.TEE_ERROR_ACCESS_DENIED


def test_unknown_ta_is_item_not_found(transport: SocketTransport) -> None:
    import uuid

    with pytest.raises(TeeError) as info:
        transport.open_session(uuid.UUID(int=1), tee_wire.LOGIN_REE_KERNEL)
    assert info.value.ret == tee_wire.TEE_ERROR_ITEM_NOT_FOUND


def test_short_buffer_reports_the_size_needed(transport: SocketTransport) -> None:
    client = TrustedKeysClient(transport)
    out = Param.memref_output(40)
    with pytest.raises(TeeError) as info:
        transport.invoke(client.session, tee_wire.TA_CMD_SEAL, [Param.memref_input(bytes(32)), out])
    assert info.value.ret == tee_wire.TEE_ERROR_SHORT_BUFFER
    assert out.size == 65


def test_parameter_types_are_checked(transport: SocketTransport) -> None:
    client = TrustedKeysClient(transport)
    for func, params in [
        (tee_wire.TA_CMD_SEAL, [Param.memref_input(bytes(32))]),
        (tee_wire.TA_CMD_UNSEAL, [Param.memref_output(10), Param.memref_output(10)]),
        (tee_wire.TA_CMD_GET_RANDOM, [Param.memref_input(bytes(4))]),
    ]:
        with pytest.raises(TeeError) as info:
            transport.invoke(client.session, func, params)
        assert info.value.ret == tee_wire.TEE_ERROR_BAD_PARAMETERS
    with pytest.raises(TeeError) as info:
        transport.invoke(client.session, 99, [])
    assert info.value.ret == tee_wire.TEE_ERROR_NOT_SUPPORTED


def test_closed_session_is_refused(transport: SocketTransport) -> None:
    client = TrustedKeysClient(transport)
    transport.close_session(client.session)
    with pytest.raises(TeeError) as info:
        transport.invoke(client.session, tee_wire.TA_CMD_GET_RANDOM, [Param.memref_output(8)])
    assert info.value.ret == tee_wire.TEE_ERROR_BAD_STATE


def test_source_maps_tee_failures_to_efault(transport: SocketTransport) -> None:
    src = TeeSource(transport=transport)
    blob = bytearray(src.seal(SecretBuffer.from_bytes(os.urandom(32)), NO_OPTS))
    blob[-1] ^= 1
    with pytest.raises(OSError) as info:
        src.unseal(bytes(blob), NO_OPTS)
    assert info.value.errno == errno.EFAULT and "TEE_ERROR_MAC_INVALID" in str(info.value)
    blob[-1] ^= 1
    blob[0] = 1  # reserved byte
    with pytest.raises(OSError) as info:
        src.unseal(bytes(blob), NO_OPTS)
    assert info.value.errno == errno.EFAULT and "BAD_PARAMETERS" in str(info.value)


def test_emulator_state_files_and_permissions(transport: SocketTransport, tdir: Path) -> None:
    huk = tdir / "huk"
    assert not huk.exists(), "the HUK is made by the first seal, not at start-up"
    TrustedKeysClient(transport).seal(memoryview(os.urandom(32)))
    assert stat.S_IMODE(huk.stat().st_mode) == 0o400 and huk.stat().st_size == 32
    sock = tdir / "s"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600


def test_huk_persists_across_emulator_restarts(tdir: Path) -> None:
    key = SecretBuffer.from_bytes(os.urandom(32))
    proc = tee_emulator.spawn_emulator(tdir / "s", tdir / "huk")
    src = TeeSource(transport=SocketTransport(tdir / "s"))
    blob = src.seal(key, NO_OPTS)
    src.close()
    proc.terminate()
    proc.wait(10)
    assert not (tdir / "s").exists(), "the emulator removes its socket on exit"
    proc = tee_emulator.spawn_emulator(tdir / "s", tdir / "huk")
    try:
        src = TeeSource(transport=SocketTransport(tdir / "s"))
        got = src.unseal(blob, NO_OPTS)
        assert got.secret == key and got.migratable is False
        src.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_second_emulator_on_a_live_socket_refuses(emulator: subprocess.Popen[bytes], tdir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "keyring_types.trust.tee_emulator", "--socket", str(tdir / "s"), "--state", str(tdir / "huk")],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 1 and b"already has a running emulator" in proc.stderr
    assert emulator.poll() is None


def test_emulator_start_failure_is_reported(tdir: Path) -> None:
    long_path = tdir / ("x" * 120)  # beyond a Unix socket path's 108 bytes
    with pytest.raises(OSError) as info:
        tee_emulator.spawn_emulator(long_path, tdir / "huk")
    assert "emulated TEE exited with status" in str(info.value) and "too long" in str(info.value)


def test_idle_emulator_exits(tdir: Path) -> None:
    proc = tee_emulator.spawn_emulator(tdir / "s", tdir / "huk", idle_timeout=0.5)
    try:
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tdir / "s").exists()


def test_default_source_starts_an_emulator_on_demand(tdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tdir / "st"))
    monkeypatch.delenv("KEYRING_TYPES_TEE_TRANSPORT", raising=False)
    before = len(tee_emulator._spawned)
    src = TeeSource()
    try:
        key = SecretBuffer.from_bytes(os.urandom(32))
        blob = src.seal(key, NO_OPTS)
        assert len(tee_emulator._spawned) == before + 1
        proc = tee_emulator._spawned[-1]
        assert (tdir / "st" / "tee" / "emulated-huk").exists()
        # The emulator going away (idle exit) is survived by reconnecting.
        proc.terminate()
        proc.wait(10)
        got = src.unseal(blob, NO_OPTS)
        assert got.secret == key
    finally:
        src.close()
        tee_emulator.stop_spawned()
    assert tee_emulator._spawned == []


def test_socket_setting_uses_a_running_emulator(
    emulator: subprocess.Popen[bytes], tdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYRING_TYPES_TEE_TRANSPORT", f"socket:{tdir / 's'}")
    assert TeeSource.available()
    src = TeeSource()
    try:
        assert len(src.get_random(16)) == 16
    finally:
        src.close()


def test_bad_transport_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_TEE_TRANSPORT", "carrier-pigeon")
    assert not TeeSource.available()
    monkeypatch.setenv("KEYRING_TYPES_TEE_TRANSPORT", "device:/nonexistent/tee7")
    assert not TeeSource.available()


def test_uapi_ioctl_encoding() -> None:
    # include/uapi/linux/tee.h: _IOR/_IOWR(0xa4, n, struct ...), x86-64/arm64 generic encoding.
    assert tee.TEE_IOC_VERSION == 0x800CA400
    assert tee.TEE_IOC_SHM_ALLOC == 0xC010A401
    assert tee.TEE_IOC_OPEN_SESSION == 0x8010A402
    assert tee.TEE_IOC_INVOKE == 0x8010A403
    assert tee.TEE_IOC_CLOSE_SESSION == 0x8004A405
    assert tee._OPEN_SESSION_ARG.size == 56  # uuid, clnt_uuid, 6 x u32
    assert tee._INVOKE_ARG.size == 24
    assert tee._PARAM.size == 32


def test_device_transport_without_a_device() -> None:
    with pytest.raises(FileNotFoundError):
        tee.DeviceTransport("/nonexistent/tee0")


def test_ta_uuid_and_commands_are_the_kernels() -> None:
    assert str(tee_wire.TA_TRUSTED_KEYS_UUID) == "f04a0fe7-1f5d-4b9b-abf7-619b85b4ce8c"
    assert (tee_wire.TA_CMD_GET_RANDOM, tee_wire.TA_CMD_SEAL, tee_wire.TA_CMD_UNSEAL) == (0, 1, 2)
    assert tee_wire.LOGIN_REE_KERNEL == 0x80000000
    assert (tee_wire.SEAL_OUTPUT_SIZE, tee_wire.UNSEAL_OUTPUT_SIZE) == (512, 129)
