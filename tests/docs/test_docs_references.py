"""Every module, class or function the documentation names exists, and every
source path it names is a file or directory of the checkout, so a module that
moves takes its documentation with it (README.md and docs/*.md)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_DOTTED = re.compile(r"(?<![\w./-])keyring_types(?:\.[A-Za-z_]\w*)+")
#: ``kt.X``: the docs' alias for the package (``import keyring_types as kt``).
_KT = re.compile(r"(?<![\w.])kt\.([A-Za-z_]\w*)")
#: ``from keyring_types.x import a, b`` anywhere (shell one-liners included).
_FROM = re.compile(r"from (keyring_types(?:\.\w+)*) import ((?:\w+(?:, *)?)+)")
_PATH = re.compile(r"(?<![\w./-])(?:keyring_types|tests|benchmarks|examples|_native)/[\w/.-]*")
#: Names that look dotted but are not Python objects: the entry-point group.
NOT_OBJECTS = {"keyring_types.trust_sources"}


def resolves(dotted: str) -> bool:
    """Whether ``dotted`` is a module, or an attribute chain under the longest importable module."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def references(path: Path) -> tuple[set[str], set[str]]:
    return references_in(path.read_text(encoding="utf-8"))


def references_in(text: str) -> tuple[set[str], set[str]]:
    names = set(_DOTTED.findall(text)) | {f"keyring_types.{name}" for name in _KT.findall(text)}
    names |= {f"{mod}.{name.strip()}" for mod, imported in _FROM.findall(text) for name in imported.split(",") if name.strip()}
    return names - NOT_OBJECTS, {p.rstrip("/.,-") for p in _PATH.findall(text)}


def missing(path: Path) -> list[str]:
    names, paths = references(path)
    bad = [f"{name} (no such module or attribute)" for name in sorted(names) if not resolves(name)]
    bad += [f"{p} (no such file or directory)" for p in sorted(paths) if not (ROOT / p).exists()]
    return bad


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_objects_and_paths_exist(path: Path) -> None:
    assert missing(path) == []


def test_a_stale_name_is_caught() -> None:
    assert resolves("keyring_types.rpmb.frames.unpack")
    assert not resolves("keyring_types.rpmb.frames.no_such_function")
    assert not resolves("keyring_types.no_such_module")
    _, paths = references_in("see tests/vectors/README.md, benchmarks/x.py. and keyring_types/state.py")
    assert paths == {"tests/vectors/README.md", "benchmarks/x.py", "keyring_types/state.py"}
    names, _ = references_in("Use `kt.Keyspace()` or keyring_types.rpmb.frames; not_kt.x\nfrom keyring_types.hmac import a, b\n")
    assert names == {"keyring_types.Keyspace", "keyring_types.rpmb.frames", "keyring_types.hmac",
                     "keyring_types.hmac.a", "keyring_types.hmac.b"}
