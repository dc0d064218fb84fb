"""The generic entry-point plugin groups: one scan per group, built-ins without any (issue 12)."""

from __future__ import annotations

import errno
import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import keyring_types as kt
from keyring_types import plugins
from keyring_types.trust import registry


class FakeEntryPoint:
    def __init__(self, name: str, obj: Any = None, exc: Exception | None = None) -> None:
        self.name, self._obj, self._exc = name, obj, exc

    def load(self) -> Any:
        if self._exc is not None:
            raise self._exc
        return self._obj


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every group scan made, by group name; each test's group sees ``installed``."""
    calls: list[str] = []
    installed: dict[str, dict[str, Any]] = {}

    def fake_scan(group: str) -> dict[str, Any]:
        calls.append(group)
        return dict(installed.get(group, {}))

    monkeypatch.setattr(plugins, "_scan", fake_scan)
    fake_scan.installed = installed  # type: ignore[attr-defined]
    yield calls


def _group(name: str, **kw: Any) -> plugins.PluginGroup:
    return plugins.PluginGroup(name, kind="widget", **kw)


def test_builtins_resolve_without_scanning(scans: list[str]) -> None:
    g = _group("kt.test.builtins", builtins={"json": "json:dumps", "path": "pathlib:Path"})
    assert g.load("json") is json.dumps
    assert g.load("path") is Path
    assert g.load("json") is json.dumps
    assert scans == []


def test_one_scan_per_group_and_refresh(scans: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    installed = plugins._scan.installed  # type: ignore[attr-defined]
    installed["kt.test.scan"] = {"a": FakeEntryPoint("a", 1), "b": FakeEntryPoint("b", 2)}
    g = _group("kt.test.scan")
    assert g.names() == ["a", "b"]
    assert (g.load("a"), g.load("b"), g.load("a")) == (1, 2, 1)
    assert g.names() == ["a", "b"]
    assert scans == ["kt.test.scan"]
    # Installed later: a name not known rescans once, and then is cached too.
    installed["kt.test.scan"]["late"] = FakeEntryPoint("late", 3)
    assert g.load("late") == 3 and g.load("late") == 3
    assert scans == ["kt.test.scan"] * 2
    plugins.refresh("kt.test.scan")
    assert "late" in g.names()
    assert scans == ["kt.test.scan"] * 3
    plugins.refresh()
    assert plugins.entry_points("kt.test.scan").keys() == {"a", "b", "late"}


def test_unknown_and_broken_names(scans: list[str]) -> None:
    installed = plugins._scan.installed  # type: ignore[attr-defined]
    installed["kt.test.errors"] = {"broken": FakeEntryPoint("broken", exc=ImportError("no module named nowhere"))}
    g = _group("kt.test.errors", builtins={"good": "json:loads"}, missing_errno=errno.ENXIO)
    with pytest.raises(OSError) as info:
        g.load("nosuch")
    assert info.value.errno == errno.ENXIO and "nosuch" in str(info.value) and "good" in str(info.value)
    with pytest.raises(OSError) as info:
        g.load("broken")
    assert info.value.errno == errno.ENXIO and "broken" in str(info.value)
    assert g.load("good") is json.loads, "a broken plugin does not hide the others"


def test_a_plugin_cannot_shadow_a_builtin(scans: list[str]) -> None:
    installed = plugins._scan.installed  # type: ignore[attr-defined]
    installed["kt.test.shadow"] = {"json": FakeEntryPoint("json", "impostor")}
    g = _group("kt.test.shadow", builtins={"json": "json:dumps"})
    assert g.load("json") is json.dumps


def test_register_alias_and_validate(scans: list[str]) -> None:
    def only_ints(name: str, obj: Any) -> Any:
        if not isinstance(obj, int):
            raise OSError(errno.ENODEV, f"{name} is not an int")
        return obj

    g = _group("kt.test.reg", builtins={"bad": "json:dumps"}, aliases={"old": "new"}, validate=only_ints)
    g.register("new", 7)
    assert g.load("old") == 7 and g.canonical("old") == "new"
    with pytest.raises(OSError) as info:
        g.register("old", 8)
    assert info.value.errno == errno.EEXIST
    assert g.unregister("new") == 7
    with pytest.raises(OSError) as info:
        g.unregister("new")
    assert info.value.errno == errno.ENODEV
    with pytest.raises(OSError) as info:
        g.load("bad")
    assert info.value.errno == errno.ENODEV


def test_trusted_add_key_does_not_rescan_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Count at the bottom of importlib.metadata, wherever the caller imported entry_points from.
    real = importlib.metadata.distributions
    calls = []

    def counting(**kw: Any) -> Any:
        calls.append(1)
        return real(**kw)

    monkeypatch.setattr(importlib.metadata, "distributions", counting)
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path))
    registry.clear_cache()
    try:
        ks = kt.Keyspace()
        for i in range(5):
            k = ks.add_key("trusted", f"k{i}", "new 32 source=host", "@s")
            ks.add_key("trusted", f"l{i}", f"load {k.read().decode()} source=host", "@s")
        assert calls == []
    finally:
        registry.clear_cache()


def test_import_and_default_source_scan_nothing(tmp_path: Path) -> None:
    code = """
import importlib.metadata as md, json, os
calls = []
real = md.distributions
md.distributions = lambda **kw: (calls.append(1), real(**kw))[1]
import keyring_types as kt
after_import = len(calls)
ks = kt.Keyspace()
for i in range(3):
    ks.add_key("trusted", f"k{i}", "new 32", "@s")
print(json.dumps([after_import, len(calls)]))
"""
    env = {**__import__("os").environ, "KEYRING_TYPES_HOME": str(tmp_path), "KEYRING_TYPES_TRUST_SOURCE": "host"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [0, 0]
