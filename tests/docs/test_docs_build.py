"""The documentation site builds with ``mkdocs build --strict``: every page is in
the nav, and every link points at an existing page and heading."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

ROOT = Path(__file__).resolve().parents[2]


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def need_mkdocs() -> None:
    require(importlib.util.find_spec("mkdocs") is not None, "mkdocs (pip install keyring_types[docs])")


def test_mkdocs_build_strict(need_mkdocs: None, tmp_path: Path) -> None:
    proc = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert (tmp_path / "site" / "index.html").is_file()


def test_mkdocs_strict_refuses_a_broken_anchor(need_mkdocs: None, tmp_path: Path) -> None:
    # The check above can fail: a link to a heading that does not exist breaks the build.
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    index = tmp_path / "docs" / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + "\nSee [nowhere](tpm2.md#no-such-heading).\n", encoding="utf-8")
    proc = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-heading" in proc.stderr + proc.stdout
