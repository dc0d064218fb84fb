"""``ktctl attest``: report (emulated guest, configfs mount), verify (fields, --json, --at, refusals),
providers; through the command line as a user runs it."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from configfs_mount import mounted

from keyring_types.attest import current_tsm_provider
from keyring_types.cli.attest import FORMATS, detect_format, main

TESTDATA = Path("../shared/testdata")
REPO = Path(__file__).resolve().parents[2]


def ktctl(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEYRING_TYPES_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "keyring_types", "attest", *args], capture_output=True, text=True, env=env, check=False)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-home")


def test_report_then_verify_the_emulated_guest(home: Path, tmp_path: Path) -> None:
    user = "cd" * 64
    made = ktctl("report", "--provider", "emulated-sev-snp", "--user-data", user, "--privlevel", "3",
                 "--cert-out", str(tmp_path / "vcek.der"), "--chain-out", str(tmp_path / "chain.pem"), home=home)  # fmt: skip
    assert made.returncode == 0, made.stderr
    (tmp_path / "r.hex").write_text(made.stdout)
    ok = ktctl("verify", str(tmp_path / "r.hex"), "--cert", str(tmp_path / "vcek.der"), "--chain", str(tmp_path / "chain.pem"),
               "--report-data", user, "--vmpl", "3", "--json", home=home)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    verdict = json.loads(ok.stdout)
    assert verdict["verified"] and verdict["format"] == "sev-snp"
    assert verdict["fields"]["report_data"] == user and verdict["fields"]["vmpl"] == 3
    # Against AMD's roots (no --chain) the emulated report is refused, with the errno in the JSON.
    bad = ktctl("verify", str(tmp_path / "r.hex"), "--cert", str(tmp_path / "vcek.der"), "--json", home=home)
    assert bad.returncode == 1 and json.loads(bad.stdout)["errno"] == errno.EKEYREJECTED
    assert bad.stderr.startswith("ktctl attest verify: ")
    # A policy it does not meet.
    wrong = ktctl("verify", str(tmp_path / "r.hex"), "--cert", str(tmp_path / "vcek.der"), "--chain", str(tmp_path / "chain.pem"),
                  "--vmpl", "0", home=home)  # fmt: skip
    assert wrong.returncode == 1 and "VMPL" in wrong.stderr


def test_extended_report_carries_its_certificate_and_nonce_binds(home: Path, tmp_path: Path) -> None:
    nonce = "11" * 32
    out = tmp_path / "r.bin"
    assert main(["report", "--provider", "emulated-sev-snp", "--state-dir", str(home / "emulated-sev-snp"), "--user-data", "abcd",
                 "--nonce", nonce, "--format", "extended", "-o", str(out), "--chain-out", str(tmp_path / "c.pem")]) == 0  # fmt: skip
    assert current_tsm_provider() is None  # the slot is left empty
    assert out.stat().st_size > 16384
    assert main(["verify", str(out), "--chain", str(tmp_path / "c.pem"), "--nonce", nonce, "--user-data", "abcd"]) == 0
    assert main(["verify", str(out), "--chain", str(tmp_path / "c.pem"), "--nonce", "22" * 32, "--user-data", "abcd"]) == 1


def test_verify_real_reports_and_at(capsys: pytest.CaptureFixture[str]) -> None:
    vlek = TESTDATA / "sev-snp-vlek"
    args = ["verify", str(vlek / "report.bin"), "--cert", str(vlek / "vlek.der"), "--json"]
    assert main([*args, "--at", "2025-06-01"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["fields"]["signing_key"] == "vlek"
    assert main(args) == 1  # today: the VLEK certificate has expired
    assert json.loads(capsys.readouterr().out)["errno"] == errno.EKEYEXPIRED
    milan = TESTDATA / "sev-snp"
    assert main(["verify", str(milan / "attestation.bin"), "--cert", str(milan / "vcek.testcer"), "--allow-debug"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("verified: sev-snp report") and "product: Milan" in text
    assert main(["verify", str(milan / "attestation.bin"), "--cert", str(milan / "vcek.testcer")]) == 1  # debug policy
    assert "debug" in capsys.readouterr().err


def test_usage_and_unknown_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x07" * 2000)
    assert main(["verify", str(junk)]) == 1 and "not a report" in capsys.readouterr().err
    assert detect_format(b"\x07" * 2000) is None and FORMATS[0].name == "sev-snp"
    milan = TESTDATA / "sev-snp" / "attestation.bin"
    assert main(["verify", str(milan)]) == 2  # no certificate anywhere
    assert main(["verify", str(milan), "--cert", str(milan), "--at", "yesterday"]) == 2
    assert main(["verify", str(milan), "--cert", str(milan), "--measurement", "zz"]) == 2
    assert main(["report", "--help"]) == 0 and "--provider" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2


def test_providers_and_report_through_a_configfs_mount(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["providers", "--configfs-root", str(tmp_path / "none"), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"configfs-tsm", "emulated-sev-snp"} <= set(rows)
    assert rows["emulated-sev-snp"]["emulated"] and not rows["configfs-tsm"]["available"]
    assert not any(r["default"] for r in rows.values())
    assert main(["report", "--configfs-root", str(tmp_path / "none")]) == 1
    assert "no TSM provider" in capsys.readouterr().err
    state = home / "emulated-sev-snp"  # the same emulated chip as the subprocess tests
    from keyring_types.attest.providers import EmulatedSevSnp

    (tmp_path / "chain.pem").write_bytes(EmulatedSevSnp(state).chain_pem())
    with mounted(state) as m:
        assert main(["providers", "--configfs-root", str(m.path)]) == 0
        assert "* configfs-tsm" in capsys.readouterr().out
        made = ["report", "--configfs-root", str(m.path), "--user-data", "ee" * 64, "--format", "extended", "-o", str(tmp_path / "r")]
        assert main(made) == 0
        assert main(["verify", str(tmp_path / "r"), "--chain", str(tmp_path / "chain.pem"), "--report-data", "ee" * 64]) == 0
