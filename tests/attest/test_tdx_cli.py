"""The TDX half of ``ktctl attest``: ``mr read|extend|replay`` and TDX quote verification, called
through the module's entry points (and through ``ktctl attest`` once that family exists)."""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

from keyring_types.attest import detect, tdx
from keyring_types.attest.providers import EmulatedTdx
from keyring_types.cli import attest_tdx

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT.parent / "shared" / "testdata"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = attest_tdx.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_mr_read_extend_replay_on_the_emulated_guest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path / "state")
    code, out, _ = run(["mr", "read", "--state-dir", state, "--json"], capsys)
    assert code == 0 and json.loads(out)["kind"] == "emulated"
    assert set(json.loads(out)["registers"]) >= {"mrtd:sha384", "rtmr3:sha384"}
    data = tmp_path / "data"
    data.write_bytes(b"payload")
    code, out, _ = run(["mr", "extend", "rtmr3", "--data", str(data), "--state-dir", state], capsys)
    want = hashlib.sha384(bytes(48) + hashlib.sha384(b"payload").digest()).digest()
    assert code == 0 and out.strip() == want.hex()
    code, out, _ = run(["mr", "read", "rtmr3", "--state-dir", state], capsys)
    assert out.split() == ["rtmr3:sha384", want.hex()]
    code, out, _ = run(["mr", "replay", "--state-dir", state, "--json"], capsys)
    assert json.loads(out)["registers"] == {"4": want.hex()}
    assert EmulatedTdx(tmp_path / "state").rtmrs()[3] == want


def test_mr_extend_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path / "state")
    for argv, reason in [(["mr", "extend", "rtmr0", "--digest", "00" * 32], "exactly 48 bytes"),
                         (["mr", "extend", "mrtd", "--digest", "00" * 48], "read-only"),
                         (["mr", "extend", "rtmr9", "--digest", "00" * 48], "no such"),
                         (["mr", "extend", "rtmr0"], "--digest")]:  # fmt: skip
        code, _, err = run([*argv, "--state-dir", state], capsys)
        assert code == 1 and err.startswith("ktctl attest mr extend: ") and reason in err


def test_mr_replay_of_the_real_ccel_log_against_its_quote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, quote = TESTDATA / "tdx-ccel" / "ccel_data.dat", TESTDATA / "tdx-ccel" / "cos-113-tdx-quote.dat"
    require(log.is_file(), f"the real TDX CCEL test data {log}")
    code, out, _ = run(["mr", "replay", str(log), "--quote", str(quote), "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and [x["matches"] for x in doc["quote"]] == [True] * 4
    assert doc["registers"]["1"] == tdx.parse_quote(quote.read_bytes()).rtmrs[0].hex()
    # A quote the log does not explain: exit 1, per-RTMR verdicts still printed.
    other = tmp_path / "other.dat"
    other.write_bytes(EmulatedTdx(tmp_path / "state").quote(bytes(64)))
    code, out, err = run(["mr", "replay", str(log), "--quote", str(other)], capsys)
    assert code == 1 and "RTMR0: DOES NOT MATCH" in out and "RTMR3: matches" in out and "does not reproduce" in err


def test_verify_options_make_the_policy_and_collateral(tmp_path: Path) -> None:
    g = EmulatedTdx(tmp_path / "state", mrtd=b"\x01" * 48)
    blob = g.quote(b"\x02" * 64)
    roots = tmp_path / "roots.pem"
    roots.write_bytes(g.root_pem())
    col = g.collateral()
    files = {}
    for name in ("pck_crl", "root_crl", "tcb_info", "tcb_info_issuer_chain", "qe_identity", "qe_identity_issuer_chain"):
        path = tmp_path / name
        path.write_bytes(getattr(col, name))
        files[name] = str(path)
    p = argparse.ArgumentParser()
    p.add_argument("--at")
    p.add_argument("--report-data", dest="report_data")
    p.add_argument("--allow-debug", action="store_true")
    attest_tdx.add_verify_arguments(p)
    args = p.parse_args(["--roots", str(roots), "--pck-crl", files["pck_crl"], "--root-crl", files["root_crl"],
                         "--tcb-info", files["tcb_info"], "--tcb-info-chain", files["tcb_info_issuer_chain"],
                         "--qe-identity", files["qe_identity"], "--qe-identity-chain", files["qe_identity_issuer_chain"],
                         "--mrtd", "01" * 48, "--rtmr", "0=" + "00" * 48, "--report-data", "02" * 64,
                         "--accept-tcb", "UpToDate"])  # fmt: skip
    summary = attest_tdx.verify_tdx(blob, args)
    assert summary["mrtd"] == "01" * 48 and summary["tcb_status"] == summary["qe_tcb_status"] == "UpToDate"
    args.mrtd = "00" * 48
    with pytest.raises(OSError) as e:
        attest_tdx.verify_tdx(blob, args)
    assert e.value.errno == errno.EKEYREJECTED
    args.mrtd, args.rtmr = None, ["7=00"]
    with pytest.raises(OSError) as e:
        attest_tdx.verify_tdx(blob, args)
    assert e.value.errno == errno.EINVAL


def test_format_detection() -> None:
    for rel, fmt in [("tdx/tdx_prod_quote_SPR_E4.dat", "tdx"), ("tdx/quote_v5_sample.dat", "tdx"), ("sev-snp/attestation.bin", "sev-snp")]:
        path = TESTDATA / rel
        require(path.is_file(), f"the real test data {path}")
        assert detect.report_format(path.read_bytes()) == fmt
    for blob in (b"", bytes(2000), b"\x04\x00\x02\x00\x80\x00\x00\x00" + bytes(100)):
        with pytest.raises(OSError) as e:
            detect.report_format(blob)
        assert e.value.errno == errno.EBADMSG


def test_ktctl_attest_mr_through_the_dispatcher(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "keyring_types", "attest", "mr", "read", "rtmr0", "--state-dir", str(tmp_path / "s")],
                       capture_output=True, text=True, cwd=ROOT, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["rtmr0:sha384", "00" * 48]
    at = dt.datetime(2023, 6, 20, tzinfo=dt.UTC).isoformat()
    quote = TESTDATA / "tdx" / "tdx_prod_quote_SPR_E4.dat"
    require(quote.is_file(), f"the real TDX test data {quote}")
    r = subprocess.run([sys.executable, "-m", "keyring_types", "attest", "verify", str(quote), "--at", at, "--json"],
                       capture_output=True, text=True, cwd=ROOT, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["format"] == "tdx"


def test_ktctl_attest_report_and_verify_an_emulated_tdx_quote(tmp_path: Path) -> None:
    quote, roots = tmp_path / "q.bin", tmp_path / "roots.pem"

    def ktctl(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "keyring_types", "attest", *argv], capture_output=True, text=True, cwd=ROOT,
                              check=False)  # fmt: skip

    r = ktctl("report", "--provider", "emulated-tdx", "--state-dir", str(tmp_path / "s"), "--user-data", "ab" * 64,
              "-o", str(quote), "--roots-out", str(roots))  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = ktctl("verify", str(quote), "--roots", str(roots), "--report-data", "ab" * 64, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["format"] == "tdx" and doc["fields"]["report_data"] == "ab" * 64
    r = ktctl("verify", str(quote), "--json")  # Intel's root: refused
    assert r.returncode == 1 and json.loads(r.stdout)["errno"] == errno.EKEYREJECTED
    assert "ktctl attest verify: " in r.stderr
    r = ktctl("mr", "extend", "rtmr0", "--digest", "11" * 48, "--state-dir", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    r = ktctl("report", "--provider", "emulated-tdx", "--state-dir", str(tmp_path / "s"), "--user-data", "ab" * 64, "-o", str(quote))
    assert r.returncode == 0, r.stderr
    rtmr0 = hashlib.sha384(bytes(48) + b"\x11" * 48).hexdigest()
    r = ktctl("verify", str(quote), "--roots", str(roots), "--rtmr", f"0={rtmr0}")
    assert r.returncode == 0, r.stderr
    assert f"rtmr0: {rtmr0}" in r.stdout
