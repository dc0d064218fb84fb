"""Blobs move both ways between this library and tpm2-tools (an independent TPM 2.0 stack)."""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import require

from keyring_types.secret import SecretBuffer
from keyring_types.trust import tpm2_blob
from keyring_types.trust.base import TrustedOptions
from keyring_types.trust.tpm2 import Tpm2Source

pytestmark = pytest.mark.tpm

PARENT = "0x81000001"
TOOLS = ("tpm2_load", "tpm2_unseal", "tpm2_create", "tpm2_flushcontext", "tpm2_startauthsession", "tpm2_policypcr")


@pytest.fixture
def tools(swtpm: Any, tmp_path: Path) -> Any:
    for name in TOOLS:
        require(shutil.which(name) is not None, f"{name} (Debian package tpm2-tools)")

    def run(*args: str, input: bytes | None = None) -> bytes:
        proc = subprocess.run(
            list(args), input=input, capture_output=True, env=swtpm.tools_env(), cwd=tmp_path, timeout=60, check=False
        )
        assert proc.returncode == 0, f"{args[0]} failed: {proc.stderr.decode(errors='replace')}"
        return proc.stdout

    return run


def flush_transients(tools: Any) -> None:
    # tpm2-tools leave objects loaded when no resource manager is in front of the TPM.
    tools("tpm2_flushcontext", "-t")


def auth_arg(auth: bytes) -> list[str]:
    return ["-p", "hex:" + auth.hex()] if auth else []


@pytest.mark.parametrize("blobauth", [b"", b"tools-can-read-this"])
@pytest.mark.parametrize("size", [32, 128])
def test_our_blob_unseals_with_tpm2_tools(
    tpm2_source: Tpm2Source, tools: Any, tmp_path: Path, blobauth: bytes, size: int
) -> None:
    key = bytes((i * 13 + 5) & 0xFF for i in range(size))
    blob = tpm2_source.seal(SecretBuffer.from_bytes(key), TrustedOptions(keyhandle=0x81000001, blobauth=blobauth))
    parts = tpm2_blob.decode(blob)
    (tmp_path / "obj.pub").write_bytes(parts.public)
    (tmp_path / "obj.priv").write_bytes(parts.private)
    tools("tpm2_load", "-C", PARENT, "-u", "obj.pub", "-r", "obj.priv", "-c", "obj.ctx")
    assert tools("tpm2_unseal", "-c", "obj.ctx", *auth_arg(blobauth)) == key
    flush_transients(tools)


def test_our_pcr_policy_blob_unseals_with_a_tools_policy_session(tpm2_source: Tpm2Source, tools: Any, tmp_path: Path) -> None:
    from test_tpm2_source import pcr_policy_digest

    key = bytes(range(64))
    digest = pcr_policy_digest(tpm2_source, [16])
    blob = tpm2_source.seal(SecretBuffer.from_bytes(key), TrustedOptions(keyhandle=0x81000001, policydigest=digest))
    parts = tpm2_blob.decode(blob)
    (tmp_path / "obj.pub").write_bytes(parts.public)
    (tmp_path / "obj.priv").write_bytes(parts.private)
    tools("tpm2_load", "-C", PARENT, "-u", "obj.pub", "-r", "obj.priv", "-c", "obj.ctx")
    tools("tpm2_startauthsession", "--policy-session", "-S", "session.ctx")
    tools("tpm2_policypcr", "-S", "session.ctx", "-l", "sha256:16")
    assert tools("tpm2_unseal", "-c", "obj.ctx", "-p", "session:session.ctx") == key
    tools("tpm2_flushcontext", "session.ctx")
    flush_transients(tools)


@pytest.mark.parametrize("blobauth", [b"", b"pw-from-tools"])
def test_tpm2_tools_sealed_object_loads_here(tpm2_source: Tpm2Source, tools: Any, tmp_path: Path, blobauth: bytes) -> None:
    key = bytes((0xA0 + i) & 0xFF for i in range(48))
    (tmp_path / "secret.bin").write_bytes(key)
    tools("tpm2_create", "-C", PARENT, "-i", "secret.bin", "-u", "obj.pub", "-r", "obj.priv", *auth_arg(blobauth))
    (tmp_path / "secret.bin").unlink()
    pub = (tmp_path / "obj.pub").read_bytes()
    priv = (tmp_path / "obj.priv").read_bytes()
    blob = tpm2_blob.encode_tpmkey(0x81000001, pub, priv, empty_auth=not blobauth)
    parsed = tpm2_blob.decode(blob)
    fixed = tpm2_blob.TPMA_OBJECT_FIXED_TPM | tpm2_blob.TPMA_OBJECT_FIXED_PARENT
    assert parsed.object_attributes & (fixed | tpm2_blob.TPMA_OBJECT_USER_WITH_AUTH) == fixed | 0x40
    out = tpm2_source.unseal(blob, TrustedOptions(blobauth=blobauth))
    try:
        assert out.secret == key
        assert out.migratable is False  # tpm2-tools seals fixedTPM|fixedParent
    finally:
        out.secret.wipe()
    assert tpm2_source.transient_handles() == []


def test_tpm2_tools_pcr_policy_object_unseals_here(tpm2_source: Tpm2Source, tools: Any, tmp_path: Path) -> None:
    from test_tpm2_source import satisfied_policy_session, session_used

    key = bytes(range(100, 132))
    (tmp_path / "secret.bin").write_bytes(key)
    tools("tpm2_startauthsession", "-S", "trial.ctx")
    tools("tpm2_policypcr", "-S", "trial.ctx", "-l", "sha256:16", "-L", "policy.dat")
    tools("tpm2_flushcontext", "trial.ctx")
    tools("tpm2_create", "-C", PARENT, "-i", "secret.bin", "-L", "policy.dat", "-u", "obj.pub", "-r", "obj.priv")
    blob = tpm2_blob.encode_tpmkey(
        0x81000001, (tmp_path / "obj.pub").read_bytes(), (tmp_path / "obj.priv").read_bytes(), empty_auth=True
    )
    session, handle = satisfied_policy_session(tpm2_source, [16])
    out = tpm2_source.unseal(blob, TrustedOptions(policyhandle=handle))
    try:
        assert out.secret == key
    finally:
        out.secret.wipe()
    session_used(tpm2_source, session)
    assert tpm2_source.transient_handles() == []


# ---------------------------------------------------------------- through the trusted key type


def test_trusted_key_hex_unseals_with_tpm2_tools(tpm2_source: Tpm2Source, swtpm: Any, tools: Any, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``add_key("trusted", ..., "new 32 keyhandle=...")``: what ``keyctl pipe`` shows is a blob tpm2-tools opens."""
    import keyring_types as kt

    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", swtpm.tcti)
    ks = kt.Keyspace()
    k = ks.add_key("trusted", "kmk", "new 64 keyhandle=0x81000001 source=tpm2", "@s")
    hexblob = k.read()
    assert hexblob.startswith((b"3081", b"3082"))
    parts = tpm2_blob.decode(bytes.fromhex(hexblob.decode()))
    (tmp_path / "obj.pub").write_bytes(parts.public)
    (tmp_path / "obj.priv").write_bytes(parts.private)
    tools("tpm2_load", "-C", PARENT, "-u", "obj.pub", "-r", "obj.priv", "-c", "obj.ctx")
    unsealed_by_tools = tools("tpm2_unseal", "-c", "obj.ctx")
    flush_transients(tools)
    with k.secret() as mv:
        assert bytes(mv) == unsealed_by_tools and len(unsealed_by_tools) == 64

    # "load <hex>" gives the same key back; update reseals a migratable key
    k2 = ks.add_key("trusted", "kmk2", b"load " + hexblob + b" source=tpm2", "@s")
    with k.secret() as a, k2.secret() as b:
        assert bytes(a) == bytes(b)
    k2.update("update keyhandle=0x81000001 migratable=0 source=tpm2")
    assert tpm2_blob.decode(bytes.fromhex(k2.read().decode())).object_attributes == 0x52
    with pytest.raises(OSError) as exc:
        k2.update("update keyhandle=0x81000001 source=tpm2")
    assert exc.value.errno == errno.EPERM  # no longer migratable


def test_tools_sealed_object_loads_as_a_trusted_key(tpm2_source: Tpm2Source, swtpm: Any, tools: Any, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring_types as kt

    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", swtpm.tcti)
    key = bytes(range(7, 39))
    (tmp_path / "secret.bin").write_bytes(key)
    tools("tpm2_create", "-C", PARENT, "-i", "secret.bin", "-u", "obj.pub", "-r", "obj.priv", "-p", "hex:" + b"pw".hex())
    blob = tpm2_blob.encode_tpmkey(
        0x81000001, (tmp_path / "obj.pub").read_bytes(), (tmp_path / "obj.priv").read_bytes(), empty_auth=False
    )
    ks = kt.Keyspace()
    with pytest.raises(OSError) as exc:
        ks.add_key("trusted", "t", f"load {blob.hex()} source=tpm2", "@s")
    assert exc.value.errno == errno.EPERM  # blobauth missing
    k = ks.add_key("trusted", "t", f"load {blob.hex()} blobauth=pw source=tpm2", "@s")
    with k.secret() as mv:
        assert bytes(mv) == key
