"""Helpers of the derived-key tests.

tpm2-tools as a second implementation of the RFC's derivation, and the host construction by hand.

``ToolsKdf`` makes the RFC's primary with ``tpm2_createprimary`` (keyedhash HMAC
SHA-256, the six attributes, unique ``kernel`` on stdin), then for each block
``tpm2_hash -C o`` and ``tpm2_sign`` with the ticket, and composes the blocks as
SP 800-108 counter mode says.  Nothing of the library is used.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import struct
import subprocess
from pathlib import Path

ATTRS = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"


def info(length: int, euid: int, label: bytes, value: bytes) -> bytes:
    """The RFC's info, written out here from the spec (not the library's kdf_info)."""
    return struct.pack("<I", length) + struct.pack("<I", euid) + label + b"\x00" + value


def counter_mode(prf: object, length: int, data: bytes) -> bytes:
    out = b""
    i = 1
    while len(out) < length:
        out += prf(struct.pack(">I", i) + data)  # type: ignore[operator]
        i += 1
    return out[:length]


def host_kdf(seed: bytes, length: int, euid: int, label: bytes, value: bytes) -> bytes:
    """The host root's construction with Python's hmac and hashlib."""
    return counter_mode(
        lambda m: hmac.new(seed, hashlib.sha256(m).digest(), hashlib.sha256).digest(),
        length,
        info(length, euid, label, value),
    )


class ToolsKdf:
    """The TPM derivation through tpm2-tools (``env`` carries ``TPM2TOOLS_TCTI``)."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep: set[int] = set()
        self._ctx: Path | None = None

    def run(self, *args: str, stdin: bytes | None = None) -> bytes:
        p = subprocess.run(args, env=self.env, cwd=self.dir, input=stdin, capture_output=True, timeout=60)
        if p.returncode:
            raise RuntimeError(f"{args[0]} failed: {p.stderr.decode(errors='replace')[-400:]}")
        return p.stdout

    def transient_handles(self) -> set[int]:
        out = self.run("tpm2_getcap", "handles-transient").decode()
        return {int(line.strip("- "), 16) for line in out.splitlines() if line.strip()}

    def flush_ours(self, before: set[int]) -> None:
        """Flush what the tools left loaded (swtpm has three object slots and no resource manager)."""
        for handle in self.transient_handles() - before:
            self.run("tpm2_flushcontext", hex(handle))

    def forget_primary(self) -> None:
        """After tpm2_clear the saved context belongs to the old owner seed."""
        self._ctx = None

    def _primary(self) -> Path:
        if self._ctx is None:
            before = self.transient_handles()
            ctx = self.dir / "primary.ctx"
            tmpl = self.dir / "template"
            self.run(
                "tpm2_createprimary", "-C", "o", "-G", "hmac", "-g", "sha256", "-a", ATTRS,
                "-u", "-", "-c", str(ctx), "--template-data", str(tmpl),
                stdin=b"kernel",
            )  # fmt: skip
            self.template = tmpl.read_bytes()
            self.flush_ours(before)
            self._ctx = ctx
        return self._ctx

    def prf(self, message: bytes) -> bytes:
        ctx = self._primary()
        before = self.transient_handles()
        msg, dig, ticket, sig = (self.dir / n for n in ("msg", "digest", "ticket", "sig"))
        msg.write_bytes(message)
        self.run("tpm2_hash", "-C", "o", "-g", "sha256", "-o", str(dig), "-t", str(ticket), str(msg))
        self.run(
            "tpm2_sign", "-c", str(ctx), "-g", "sha256", "-s", "hmac", "-d", "-t", str(ticket),
            "-f", "plain", "-o", str(sig), str(dig),
        )  # fmt: skip
        self.flush_ours(before)
        return sig.read_bytes()

    def derive(self, length: int, euid: int, label: bytes, value: bytes) -> bytes:
        return counter_mode(self.prf, length, info(length, euid, label, value))


def tools_available() -> bool:
    return all(shutil.which(t) for t in ("tpm2_createprimary", "tpm2_hash", "tpm2_sign", "tpm2_clear"))
