"""Start and stop a private swtpm (TPM 2.0 simulator) on loopback.

The practice follows tpm2-pytss's own test fixture: a fresh state directory,
a random free port pair (server P, control P+1), ready only when both ports
answer (the control port must reply to a command, so that another process
listening on the pair is not taken for swtpm), retried on a port clash.  Also used by ``benchmarks/trusted_tpm.py``.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import attrs

#: Where the test primary lives (what ``tpm2_createprimary -C o`` + ``tpm2_evictcontrol`` would make).
PRIMARY_HANDLE = 0x81000001


class SwtpmError(RuntimeError):
    """swtpm could not be started."""


@attrs.define
class Swtpm:
    """A running swtpm: ``tcti`` (tpm2-tss string), ``port``, ``ctrl_port``, ``state_dir``."""

    process: subprocess.Popen[bytes]
    port: int
    ctrl_port: int
    state_dir: Path
    host: str = "127.0.0.1"

    @property
    def tcti(self) -> str:
        """TCTI string for tpm2-pytss and for ``TPM2TOOLS_TCTI``."""
        return f"swtpm:host={self.host},port={self.port}"

    def tools_env(self) -> dict[str, str]:
        """Environment for running tpm2-tools against this swtpm."""
        env = dict(os.environ)
        env["TPM2TOOLS_TCTI"] = self.tcti
        env.pop("TPM2TOOLS_ENABLE_ERRATA", None)
        return env

    def stop(self) -> None:
        """Kill the simulator and delete its state."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.state_dir, ignore_errors=True)


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _ctrl_answers(host: str, port: int) -> bool:
    """Whether swtpm's control channel answers CMD_GET_CAPABILITY (1).

    A port that merely accepts could belong to another process (the clash we
    retry on); only swtpm replies to this.
    """
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall((1).to_bytes(4, "big"))
            return len(s.recv(64)) > 0
    except OSError:
        return False


def _free_port_pair(host: str) -> int:
    # Ask the kernel for a free port and check its neighbour; the race with
    # other processes is handled by retrying the whole start.
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind((host, port + 1))
            except OSError:
                continue
        return port
    return random.randint(20000, 60000)


def start_swtpm(retries: int = 20, ready_timeout: float = 10.0) -> Swtpm:
    """Start swtpm with a fresh state directory on a free loopback port pair.

    Raises :class:`SwtpmError` when it cannot be started after ``retries`` tries.
    """
    binary = shutil.which("swtpm")
    if binary is None:
        raise SwtpmError("swtpm is not installed")
    host = "127.0.0.1"
    last = ""
    for _ in range(retries):
        state_dir = Path(tempfile.mkdtemp(prefix="kt-swtpm-"))
        port = _free_port_pair(host)
        cmd = [
            binary,
            "socket",
            "--tpm2",
            "--server",
            f"type=tcp,bindaddr={host},port={port}",
            "--ctrl",
            f"type=tcp,bindaddr={host},port={port + 1}",
            "--tpmstate",
            f"dir={state_dir}",
            "--flags",
            "not-need-init,startup-clear",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _port_accepts(host, port) and _ctrl_answers(host, port + 1):
                return Swtpm(process=proc, port=port, ctrl_port=port + 1, state_dir=state_dir, host=host)
            time.sleep(0.01)
        # Port clash (swtpm exits) or no answer: clean up and try another pair.
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        last = (proc.stderr.read().decode(errors="replace") if proc.stderr else "").strip()
        shutil.rmtree(state_dir, ignore_errors=True)
    raise SwtpmError(f"swtpm did not start after {retries} attempts: {last}")


def create_primary(tcti: str, handle: int = PRIMARY_HANDLE) -> None:
    """The test parent: an ECC P-256 storage primary with empty auth, persisted at ``handle``."""
    create_primary_with_auth(tcti, handle, b"")


def create_primary_with_auth(tcti: str, handle: int, auth: bytes, alg: str = "ecc256:aes128cfb") -> None:
    """Create an ECC P-256 storage primary (password ``auth``) in the owner hierarchy, persisted at ``handle``.

    The template is tpm2-tools' default for ``tpm2_createprimary -C o -G ecc256``
    (restricted decrypt, fixedTPM/fixedParent, sensitiveDataOrigin,
    userWithAuth, AES-128-CFB); ECC because swtpm makes it in milliseconds.
    A primary is derived from the hierarchy seed and its template, so a
    different ``alg`` gives a different key (the auth does not).
    """
    from tpm2_pytss import ESAPI
    from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT
    from tpm2_pytss.types import (
        TPM2B_PUBLIC,
        TPM2B_SENSITIVE_CREATE,
        TPMS_SENSITIVE_CREATE,
    )

    with ESAPI(tcti) as esapi:
        template = TPM2B_PUBLIC.parse(
            alg, objectAttributes=TPMA_OBJECT.DEFAULT_TPM2_TOOLS_CREATEPRIMARY_ATTRS
        )
        sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(userAuth=auth)) if auth else None
        primary, *_ = esapi.create_primary(sensitive, template, ESYS_TR.OWNER)
        try:
            esapi.evict_control(ESYS_TR.OWNER, primary, handle)
        finally:
            esapi.flush_context(primary)
