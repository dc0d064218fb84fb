"""Choosing trust sources: names, aliases, environment, default order, entry-point plugins."""

from __future__ import annotations

import errno
import importlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types import plugins
from keyring_types.trust import registry
from keyring_types.trust.base import TrustSource
from keyring_types.trust.caam import CaamSource
from keyring_types.trust.host import HostSource
from keyring_types.trust.tee import TeeSource

PLUGIN_SRC = Path(__file__).parent / "plugin_fixture"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "state"))
    monkeypatch.delenv(registry.ENV_SOURCE, raising=False)
    registry.set_default_trust_source(None)
    registry.clear_cache()
    yield
    registry.set_default_trust_source(None)
    registry.clear_cache()


def test_builtins_are_entry_points() -> None:
    eps = {ep.name: ep.value for ep in entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert eps["host"] == "keyring_types.trust.host:HostSource"
    assert eps["caam"] == "keyring_types.trust.caam:CaamSource"
    assert eps["tee"] == "keyring_types.trust.tee:TeeSource"
    assert eps["tpm2"] == "keyring_types.trust.tpm2:Tpm2Source"
    assert registry.source_class("host") is HostSource
    assert registry.source_class("caam") is CaamSource
    assert registry.source_class("tee") is TeeSource


def test_tpm_is_an_alias_of_tpm2() -> None:
    assert registry.canonical_name("tpm") == "tpm2"
    assert registry.source_class("tpm") is registry.source_class("tpm2")


def test_default_is_host_without_a_tpm(monkeypatch: pytest.MonkeyPatch) -> None:
    # A TCTI that names nothing: no TPM is reachable.
    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", "device:/nonexistent/tpmrm9")
    assert registry.default_source_name() == "host"
    assert isinstance(registry.get_trust_source(), HostSource)


def test_default_order_is_tpm2_then_host(monkeypatch: pytest.MonkeyPatch) -> None:
    tpm2 = registry.source_class("tpm2")
    monkeypatch.setattr(tpm2, "available", classmethod(lambda cls: True))
    assert registry.default_source_name() == "tpm2"
    registry.clear_cache()
    monkeypatch.setattr(tpm2, "available", classmethod(lambda cls: False))
    assert registry.default_source_name() == "host"


def test_default_choice_is_probed_once_per_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    tpm2 = registry.source_class("tpm2")
    calls = []
    monkeypatch.setattr(tpm2, "available", classmethod(lambda cls: calls.append(1) or False))
    assert registry.default_source_name() == "host"
    assert registry.default_source_name() == "host"
    assert len(calls) == 1
    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", "swtpm:port=1")  # new configuration: probe again
    registry.default_source_name()
    assert len(calls) == 2


def test_default_is_tpm2_when_a_real_tpm_is_reachable(swtpm: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", swtpm.tcti)  # type: ignore[attr-defined]
    # tpm2's reachability probe is a short TCP connect that a busy swtpm can miss;
    # re-probe (fresh cache) for a while so this test is about the choice.
    deadline = time.monotonic() + 30
    while registry.default_source_name() != "tpm2" and time.monotonic() < deadline:
        registry.clear_cache()
        time.sleep(0.1)
    assert registry.default_source_name() == "tpm2"
    assert registry.get_trust_source().name == "tpm2"


def test_environment_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.ENV_SOURCE, "caam")
    assert isinstance(registry.get_trust_source(), CaamSource)
    monkeypatch.setenv(registry.ENV_SOURCE, "tpm")
    assert registry.default_source_name() == "tpm2"


def test_code_setting_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.ENV_SOURCE, "caam")
    registry.set_default_trust_source("host")
    assert registry.get_trust_source().name == "host"


def test_explicit_name_beats_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.ENV_SOURCE, "caam")
    assert registry.get_trust_source("host").name == "host"


def test_unknown_source_is_enodev(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OSError) as info:
        registry.get_trust_source("nosuch")
    assert info.value.errno == errno.ENODEV and "nosuch" in str(info.value)
    monkeypatch.setenv(registry.ENV_SOURCE, "tpmx")  # the kernel's prefix match would take this; we do not
    with pytest.raises(OSError) as info:
        registry.get_trust_source()
    assert info.value.errno == errno.ENODEV


def test_unavailable_source_is_enodev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_TEE_TRANSPORT", "device:/nonexistent/tee9")
    with pytest.raises(OSError) as info:
        registry.get_trust_source("tee")
    assert info.value.errno == errno.ENODEV and "not available" in str(info.value)


def test_instances_are_shared_until_configuration_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = registry.get_trust_source("host")
    assert registry.get_trust_source("host") is a
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "elsewhere"))
    b = registry.get_trust_source("host")
    assert b is not a
    assert isinstance(b, HostSource) and b.key_path.parent == tmp_path / "elsewhere"


def test_register_in_code() -> None:
    class Mine(HostSource):
        name = "mine"

    registry.register_trust_source(Mine)
    try:
        with pytest.raises(OSError) as info:
            registry.register_trust_source(Mine)
        assert info.value.errno == errno.EEXIST
        assert "mine" in registry.available_sources()
        assert isinstance(registry.get_trust_source("mine"), Mine)
    finally:
        registry.unregister_trust_source("mine")
    with pytest.raises(OSError):
        registry.get_trust_source("mine")


@pytest.fixture(scope="module")
def plugin_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Install tests/trust/plugin_fixture into this venv (built from a copy), remove it afterwards."""
    work = tmp_path_factory.mktemp("plugin") / "src"
    shutil.copytree(PLUGIN_SRC, work)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", str(work)],
        check=True,
        capture_output=True,
    )
    importlib.invalidate_caches()
    try:
        yield
    finally:
        subprocess.run([*pip, "uninstall", "-y", "kt-plugin-fixture"], check=True, capture_output=True)
        sys.modules.pop("kt_plugin_fixture", None)
        importlib.invalidate_caches()


def test_third_party_source_through_entry_point(plugin_installed: None) -> None:
    assert "fixture" in {ep.name for ep in entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert "fixture" in registry.source_names()
    src = registry.get_trust_source("fixture")
    assert isinstance(src, TrustSource) and type(src).__module__ == "kt_plugin_fixture"
    # Usable by the trusted key type like any built-in, including option checks.
    ks = kt.Keyspace()
    k = ks.add_key("trusted", "plug", "new 32 source=fixture blobauth=pw", "@s")
    blob = k.read().decode()
    k2 = ks.add_key("trusted", "plug2", f"load {blob} source=fixture blobauth=pw", "@s")
    with k.secret() as a, k2.secret() as b:
        assert bytes(a) == bytes(b)
    with pytest.raises(OSError) as info:
        ks.add_key("trusted", "plug3", "new 32 source=fixture keyhandle=1", "@s")
    assert info.value.errno == errno.EINVAL


def test_plugin_chosen_by_environment(plugin_installed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.ENV_SOURCE, "fixture")
    assert registry.get_trust_source().name == "fixture"


def test_a_broken_plugin_is_enodev_and_does_not_hide_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenEntryPoint:
        name = "broken"

        def load(self) -> type:
            raise AttributeError("module 'broken_pkg' has no attribute 'Source'")

    real = plugins._scan
    monkeypatch.setattr(plugins, "_scan", lambda group: {**real(group), "broken": BrokenEntryPoint()})
    registry.clear_cache()
    with pytest.raises(OSError) as info:
        registry.get_trust_source("broken")
    assert info.value.errno == errno.ENODEV and "broken" in str(info.value)
    assert "broken" in registry.source_names()
    assert "broken" not in registry.available_sources()
    assert "host" in registry.available_sources()
