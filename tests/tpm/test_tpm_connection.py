"""keyring_types.tpm.connection: the TCTI from the environment, raw exchange, scratch wiping, reopening."""

from __future__ import annotations

import errno
import struct
from typing import Any

import pytest

from keyring_types.tpm import commands
from keyring_types.tpm.connection import (
    DEFAULT_TCTI,
    TCTI_ENV,
    TpmConnection,
    configured_tcti,
    is_persistent_handle,
    parse_tcti,
)

pytestmark = pytest.mark.tpm


def test_tcti_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TCTI_ENV, raising=False)
    assert configured_tcti() == DEFAULT_TCTI == "device:/dev/tpmrm0"
    assert TpmConnection().tcti == DEFAULT_TCTI
    monkeypatch.setenv(TCTI_ENV, "swtpm:host=127.0.0.1,port=2321")
    assert TpmConnection().tcti == "swtpm:host=127.0.0.1,port=2321"
    assert TpmConnection("mssim:").tcti == "mssim:"
    assert parse_tcti("swtpm:host=h, port=7") == ("swtpm", {"host": "h", "port": "7"}, "host=h, port=7")


def test_persistent_handles() -> None:
    assert is_persistent_handle(0x81000001) and is_persistent_handle(0x81FFFFFF)
    assert not is_persistent_handle(0x80000001) and not is_persistent_handle(0x40000001)
    assert not is_persistent_handle(-1) and not is_persistent_handle(1 << 40)


def test_raw_exchange_and_scratch_is_zeroed(swtpm: Any) -> None:
    with TpmConnection(swtpm.tcti) as conn:
        with conn.scratch() as (cmd, rsp):
            # TPM2_GetRandom(16), no sessions
            struct.pack_into(">HIIH", cmd, 0, 0x8001, 12, 0x17B, 16)
            n = conn.exchange(cmd, 12, rsp, "get random bytes")
            assert n == 10 + 2 + 16 and rsp[10:12].tobytes() == b"\x00\x10"
            kept = rsp  # a view that outlives the block
        assert kept.tobytes() == bytes(len(kept)) and cmd.tobytes() == bytes(len(cmd))


def test_tpm_error_from_a_raw_command(swtpm: Any) -> None:
    with TpmConnection(swtpm.tcti) as conn:
        with pytest.raises(OSError) as exc:
            commands.flush_context(conn, 0x80FFFFFF)  # no such transient object
        assert exc.value.errno == errno.EPERM
        assert "TPM_RC_" in str(exc.value) and "flush the loaded object" in str(exc.value)
        assert conn.is_open  # a TPM refusal does not break the connection


def test_transport_failure_is_eio_then_reopen_is_enodev(swtpm: Any) -> None:
    conn = TpmConnection(swtpm.tcti)
    assert conn.esapi is conn.esapi  # one context, reused
    swtpm.stop()
    with pytest.raises(OSError) as exc:
        commands.flush_context(conn, 0x80000000)
    assert exc.value.errno in (errno.EIO, errno.ENODEV), str(exc.value)
    with pytest.raises(OSError) as exc:
        commands.flush_context(conn, 0x80000000)
    assert exc.value.errno == errno.ENODEV, str(exc.value)
    conn.close()


def test_repr_names_the_tcti_only() -> None:
    assert repr(TpmConnection("swtpm:port=1")) == "<TpmConnection tcti='swtpm:port=1' closed>"


def test_nested_scratch_is_ebusy() -> None:
    conn = TpmConnection("swtpm:port=1")
    with conn.scratch() as (cmd, _):
        cmd[:4] = b"keep"
        with pytest.raises(OSError) as exc, conn.scratch():
            pass
        assert exc.value.errno == errno.EBUSY
        assert cmd[:4].tobytes() == b"keep"
    with conn.scratch() as (cmd, _):
        assert cmd[:4].tobytes() == bytes(4)
