"""The emulated TEE and its client against hostile or careless input (issue 12)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyring_types.secret import SecretBuffer
from keyring_types.trust import tee_emulator, tee_wire
from keyring_types.trust.options import parse_options
from keyring_types.trust.tee import (
    Param,
    SocketTransport,
    TeeError,
    TeeSource,
    TrustedKeysClient,
)

NO_OPTS = parse_options(b"").options
OTHER_UID = 4321


@pytest.fixture
def client(emulator: subprocess.Popen[bytes], tdir: Path) -> Iterator[TrustedKeysClient]:
    c = TrustedKeysClient(SocketTransport(tdir / "s"))
    yield c
    c.close()


def _ret(client: TrustedKeysClient, func: int, params: list[Param]) -> int:
    try:
        client.transport.invoke(client.session, func, params)
    except TeeError as exc:
        return exc.ret
    return tee_wire.TEE_SUCCESS


def test_get_random_is_capped_like_the_tas_heap(client: TrustedKeysClient, emulator: subprocess.Popen[bytes]) -> None:
    assert len(client.get_random(tee_emulator.MAX_RANDOM)) == tee_emulator.MAX_RANDOM == 16 * 1024
    out = Param.memref_output(1 << 20)
    assert _ret(client, tee_wire.TA_CMD_GET_RANDOM, [out]) == tee_wire.TEE_ERROR_OUT_OF_MEMORY
    # The audit's request: 24 GiB.  Refused at once, nothing allocated, the TEE still serves.
    out = Param.memref_output(24 << 30)
    assert _ret(client, tee_wire.TA_CMD_GET_RANDOM, [out]) == tee_wire.TEE_ERROR_OUT_OF_MEMORY
    assert emulator.poll() is None
    assert len(client.get_random(32)) == 32


def test_get_random_error_through_the_source(emulator: subprocess.Popen[bytes], tdir: Path) -> None:
    src = TeeSource(transport=SocketTransport(tdir / "s"))
    try:
        with pytest.raises(OSError) as info:
            src.get_random(1 << 20)
        assert info.value.errno == errno.EFAULT and "OUT_OF_MEMORY" in str(info.value)
    finally:
        src.close()


@pytest.mark.parametrize("func", [tee_wire.TA_CMD_SEAL, tee_wire.TA_CMD_UNSEAL])
def test_output_buffers_above_max_buf_size_are_bad_parameters(client: TrustedKeysClient, func: int) -> None:
    blob = client.seal(memoryview(os.urandom(32)))
    data = bytes(32) if func == tee_wire.TA_CMD_SEAL else blob
    big = Param.memref_output(tee_wire.TA_MAX_BUF_SIZE + 1)
    assert _ret(client, func, [Param.memref_input(data), big]) == tee_wire.TEE_ERROR_BAD_PARAMETERS


def test_huk_is_made_by_the_first_seal_never_by_an_unseal(client: TrustedKeysClient, tdir: Path) -> None:
    huk = tdir / "huk"
    assert not huk.exists()
    blob = bytearray(b"\x00" + os.urandom(32 + 32))
    out = Param.memref_output(tee_wire.UNSEAL_OUTPUT_SIZE)
    assert _ret(client, tee_wire.TA_CMD_UNSEAL, [Param.memref_input(bytes(blob)), out]) == tee_wire.TEE_ERROR_ITEM_NOT_FOUND
    assert not huk.exists()
    sealed = client.seal(memoryview(b"k" * 32))
    assert huk.exists()
    assert client.unseal(sealed) == b"k" * 32


def test_deleted_huk_is_reported_not_replaced(tdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tdir / "st"))
    monkeypatch.delenv("KEYRING_TYPES_TEE_TRANSPORT", raising=False)
    src = TeeSource()
    try:
        blob = src.seal(SecretBuffer.from_bytes(os.urandom(32)), NO_OPTS)
        huk = tdir / "st" / "tee" / "emulated-huk"
        assert huk.exists()
        src.close()
        tee_emulator.stop_spawned()  # the emulator restarts on the next call, as after an idle exit
        huk.unlink()
        with pytest.raises(OSError) as info:
            src.unseal(blob, NO_OPTS)
        assert info.value.errno == errno.EFAULT  # every TEE failure is EFAULT, as in the kernel
        assert str(huk) in str(info.value)
        assert not huk.exists(), "an unseal must not make a new hardware-unique key"
    finally:
        src.close()
        tee_emulator.stop_spawned()


FAKE_TEE = """
import os, socket, sys
os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[2]))
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
c.settimeout(3)
got = 0
try:
    while True:
        d = c.recv(4096)
        if not d:
            break
        got += len(d)
except OSError:
    pass
print(got, flush=True)
"""


def test_client_refuses_a_tee_run_by_another_user(need_root: None, tdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.chown(tdir, OTHER_UID, OTHER_UID)
    path = tdir / "fake.sock"
    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE_TEE, str(path), str(OTHER_UID)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
        with pytest.raises(OSError) as info:
            TrustedKeysClient(SocketTransport(path))
        assert info.value.errno == errno.EACCES
        assert str(path) in str(info.value) and f"uid {OTHER_UID}" in str(info.value)
        received = fake.stdout.readline().strip()
        assert received == "0", "nothing may be sent before the peer is checked"
    finally:
        fake.kill()
        fake.wait(10)
    # Configured by environment, the source reports the same (not a generic EFAULT).
    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE_TEE, str(tdir / "fake2.sock"), str(OTHER_UID)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
        monkeypatch.setenv("KEYRING_TYPES_TEE_TRANSPORT", f"socket:{tdir / 'fake2.sock'}")
        src = TeeSource()
        with pytest.raises(OSError) as info:
            src.seal(SecretBuffer.from_bytes(os.urandom(32)), NO_OPTS)
        assert info.value.errno == errno.EACCES
        assert fake.stdout.readline().strip() == "0"
        src.close()
    finally:
        fake.kill()
        fake.wait(10)


def test_emulator_refuses_a_socket_directory_others_can_write(tdir: Path) -> None:
    sub = tdir / "open"
    sub.mkdir(mode=0o700)
    sub.chmod(0o777)
    with pytest.raises(OSError) as info:
        proc = tee_emulator.spawn_emulator(sub / "s", tdir / "huk")
        proc.terminate()  # started after all: do not leave it running
        proc.wait(10)
    assert "refusing" in str(info.value) and str(sub) in str(info.value)
