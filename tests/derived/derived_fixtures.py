"""Fixtures of the derived-key tests, loaded by each module's ``pytest_plugins`` (this directory has no conftest)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from derived_tools import ToolsKdf, tools_available

from keyring_types.derive import registry


@pytest.fixture(autouse=True)
def fresh_roots(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No root instance, probe or configuration leaks between tests."""
    for var in ("KEYRING_TYPES_DERIVE_ROOT", "KEYRING_TYPES_IMA_MEASUREMENTS", "KEYRING_TYPES_DERIVE_SELF_MEASURE"):
        monkeypatch.delenv(var, raising=False)
    registry.clear_cache()
    yield
    registry.clear_cache()


@pytest.fixture
def host_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The host root in a fresh state directory (nothing created yet)."""
    home = tmp_path / "state"
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(home))
    monkeypatch.setenv("KEYRING_TYPES_DERIVE_ROOT", "host")
    return home


@pytest.fixture
def tpm_env(swtpm: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """The tpm2 root on a private swtpm, chosen through the environment; ``.tools`` composes with tpm2-tools."""
    require(tools_available(), "tpm2-tools (tpm2_createprimary, tpm2_hash, tpm2_sign, tpm2_clear)")
    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", swtpm.tcti)
    monkeypatch.setenv("KEYRING_TYPES_DERIVE_ROOT", "tpm2")
    yield TpmEnv(swtpm, ToolsKdf(swtpm.tools_env(), tmp_path / "tools"))
    registry.clear_cache()  # flush the kept primary while swtpm still runs


class TpmEnv:
    """A running swtpm (``.sim``) and tpm2-tools on it (``.tools``)."""

    def __init__(self, sim: Any, tools: ToolsKdf) -> None:
        self.sim = sim
        self.tools = tools

    @property
    def tcti(self) -> str:
        return str(self.sim.tcti)
