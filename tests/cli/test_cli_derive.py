"""``ktctl derive``: roots and the IMA value the csum mode mixes, through the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def ktctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "keyring_types", *args], capture_output=True, text=True, env=full, check=False)


def test_roots_lists_host_and_tpm2_with_one_default(tmp_path: Path) -> None:
    env = {"KEYRING_TYPES_HOME": str(tmp_path), "KEYRING_TYPES_DERIVE_ROOT": "host"}
    out = ktctl("derive", "roots", "--json", env=env)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert {"host", "tpm2"} <= set(rows)
    assert rows["host"]["default"] and rows["host"]["available"]
    assert [r["name"] for r in rows.values() if r["default"]] == ["host"]
    text = ktctl("derive", "roots", env=env)
    assert text.returncode == 0
    assert any(line.startswith("* host") for line in text.stdout.splitlines())


def test_measure_reads_the_last_measurement_of_a_path(tmp_path: Path) -> None:
    log = tmp_path / "ascii_runtime_measurements"
    first, last = "11" * 32, "22" * 32
    log.write_text(
        f"10 {'aa' * 20} ima-ng sha256:{first} /usr/bin/app\n"
        f"10 {'bb' * 20} ima-ng sha256:{'33' * 32} /usr/bin/other\n"
        f"10 {'cc' * 20} ima-ng sha256:{last} /usr/bin/app\n"
    )
    env = {"KEYRING_TYPES_IMA_MEASUREMENTS": str(log)}
    out = ktctl("derive", "measure", "/usr/bin/app", env=env)
    assert (out.returncode, out.stdout.strip()) == (0, last)
    missing = ktctl("derive", "measure", "/usr/bin/none", env=env)
    assert missing.returncode == 1 and "no measurement" in missing.stderr


def test_measure_without_any_list_fails_naming_the_variable(tmp_path: Path) -> None:
    from keyring_types.derive.identity import IMA_LOGS

    if any(os.path.exists(p) for p in IMA_LOGS):
        pytest.skip("this machine has an IMA measurement list, which the command would read")
    out = ktctl("derive", "measure", "/bin/true", env={"KEYRING_TYPES_IMA_MEASUREMENTS": ""})
    assert out.returncode == 1 and "KEYRING_TYPES_IMA_MEASUREMENTS" in out.stderr


def test_usage_errors_exit_2() -> None:
    assert ktctl("derive").returncode == 2
    assert ktctl("derive", "nosuchverb").returncode == 2
    assert ktctl("derive", "roots", "--help").returncode == 0
