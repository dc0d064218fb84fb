"""Every script in examples/ runs as its docstring's ``Run:`` line says, from
the repository root, with a private state directory; the trusted demo with
each trust source, and with its default both with and without a TPM."""

from __future__ import annotations

import ast
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
_RUN = re.compile(r"Run:\s*``python (?P<script>examples/[\w./-]+\.py)(?P<args>[^`]*)``")


def run_line(script: Path) -> tuple[str, str]:
    """The script path and argument synopsis of the docstring's ``Run:`` line."""
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    m = _RUN.search(doc)
    assert m is not None, f"{script.name}: its docstring has no ``Run: ``python examples/...```` line"
    return m["script"], m["args"].strip()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop_leftovers(marker: str) -> None:
    """Stop processes this run left behind (the emulated TEE idles for a minute):
    only those whose command line names this test's private state directory."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGTERM)
            except OSError:
                pass


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    try:
        yield state
    finally:
        _stop_leftovers(str(state))


def run_example(name: str, args: list[str], home: Path, tcti: str) -> str:
    """Run examples/``name`` as its docstring says; its stdout, or a failure with both streams."""
    script, _synopsis = run_line(ROOT / "examples" / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRING_TYPES_") and k != "PYTHONPATH"}
    env.update(KEYRING_TYPES_HOME=str(home), KEYRING_TYPES_TPM2_TCTI=tcti, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"{script} {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}\n{proc.stdout}"
    return proc.stdout


def test_every_example_has_a_run_line_and_a_test() -> None:
    assert {p.name for p in EXAMPLES} == {"demo.py", "devices_demo.py", "encrypted_demo.py", "trusted_demo.py"}
    for path in EXAMPLES:
        script, _ = run_line(path)
        assert script == f"examples/{path.name}"
    assert run_line(ROOT / "examples" / "trusted_demo.py")[1] == "[source]"


def test_demo(home: Path) -> None:
    out = run_example("demo.py", [], home, f"swtpm:host=127.0.0.1,port={_closed_port()}")
    assert "== user, logon and keyring keys in an in-process Keyspace" in out
    assert "load -> same 32 secret bytes: True" in out
    assert "reloaded from blobs: encrypted key matches" in out
    assert "the same report against AMD's roots -> EKEYREJECTED" in out


def test_devices_demo(home: Path) -> None:
    out = run_example("devices_demo.py", [], home, f"swtpm:host=127.0.0.1,port={_closed_port()}")
    for line in (
        "program the key again -> EEXIST",
        "counter after one write -> 1",
        "read back -> b'boot counter: 7'",
        "read with the wrong key -> EBADMSG",
        "emulated-sev-snp report v5, signed by the vcek: verified, nonce bound",
        "the same report against AMD's roots -> EKEYREJECTED",
        "same program, same length -> same key: True",
        "read() of a key bound to fscrypt -> EKEYREJECTED",
        "secret() as luks of a key bound to fscrypt -> EKEYREJECTED",
    ):
        assert line + "\n" in out


def test_encrypted_demo(home: Path) -> None:
    out = run_example("encrypted_demo.py", [], home, f"swtpm:host=127.0.0.1,port={_closed_port()}")
    assert "load -> same 32 secret bytes: True" in out
    assert "read after revoking the master -> EKEYREVOKED" in out


@pytest.mark.parametrize(("args", "used"), [([], "host"), (["host"], "host"), (["caam"], "caam"), (["tee"], "tee")])
def test_trusted_demo_without_a_tpm(args: list[str], used: str, home: Path) -> None:
    out = run_example("trusted_demo.py", args, home, f"swtpm:host=127.0.0.1,port={_closed_port()}")
    assert f"; using: {used}\n" in out
    assert "reloaded from blobs: encrypted key matches" in out


@pytest.mark.parametrize("args", [[], ["tpm2"], ["tpm"]])
def test_trusted_demo_with_swtpm(args: list[str], home: Path, swtpm: object) -> None:
    # The TPM as docs/tpm2.md "Starting swtpm" leaves it: a storage primary at 0x81000001.
    from swtpm_util import create_primary

    create_primary(swtpm.tcti)  # type: ignore[attr-defined]
    out = run_example("trusted_demo.py", args, home, swtpm.tcti)  # type: ignore[attr-defined]
    assert f"; using: {args[0] if args else 'tpm2'}\n" in out
    assert "reloaded from blobs: encrypted key matches" in out
