"""What ``import keyring_types`` loads, and the package's face to type checkers.

The import-time budget (docs/performance.md, "Import time") is kept by structure,
not by a timer: these tests check which modules a bare import and a first use
bring in, in a fresh interpreter each.  The time itself is measured by
``benchmarks/import_time.py``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import keyring_types
from keyring_types import constants, errors

PACKAGE = Path(keyring_types.__file__).resolve().parent
ROOT = PACKAGE.parent

#: Module prefixes a bare ``import keyring_types`` must not load: the crypto and
#: trust stacks, the cffi extensions, the entry-point machinery, every key-type
#: module and the classes that are loaded on first use.
NOT_ON_IMPORT = (
    "cryptography",
    "tpm2_pytss",
    "_cffi_backend",
    "importlib.metadata",
    "keyring_types.bindings",
    "keyring_types.types.",
    "keyring_types.trust",
    "keyring_types.tpm",
    "keyring_types.integrations",
    "keyring_types.secret",
    "keyring_types.core.keyspace",
    "keyring_types.hmac",
    "keyring_types.rpmb",
)


def _modules_after(code: str) -> list[str]:
    """``sys.modules`` of a fresh interpreter after running ``code``."""
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded: list[str] = json.loads(out.strip().splitlines()[-1])
    return loaded


def _matching(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """Modules named by ``prefixes``: ``"a.b"`` is a.b and its submodules, ``"a.b."`` only its submodules."""

    def named(module: str, prefix: str) -> bool:
        if prefix.endswith("."):
            return module.startswith(prefix)
        return module == prefix or module.startswith(prefix + ".")

    return [m for m in modules if any(named(m, p) for p in prefixes)]


def test_bare_import_loads_no_crypto_trust_cffi_or_entry_points() -> None:
    loaded = _modules_after("import keyring_types")
    assert "keyring_types" in loaded
    assert _matching(loaded, NOT_ON_IMPORT) == []


def test_built_in_types_are_registered_but_not_imported() -> None:
    loaded = _modules_after(
        """
        import keyring_types as kt
        names = kt.registered_key_types()
        assert {"user", "logon", "keyring", "encrypted", "trusted"} <= set(names), names
        """
    )
    assert _matching(loaded, ("keyring_types.types.", "cryptography", "keyring_types.trust")) == []


def test_a_user_key_loads_neither_crypto_nor_trust_sources() -> None:
    loaded = _modules_after(
        """
        import keyring_types as kt
        ks = kt.Keyspace()
        assert ks.add_key("user", "import:probe", b"x", "@s").read() == b"x"
        """
    )
    assert "keyring_types.types.user" in loaded
    assert _matching(
        loaded,
        ("cryptography", "tpm2_pytss", "importlib.metadata", "keyring_types.trust", "keyring_types.types.encrypted",
         "keyring_types.types.trusted", "keyring_types.integrations"),
    ) == []


def test_kernel_keyspace_loads_on_first_access() -> None:
    loaded = _modules_after(
        """
        import keyring_types as kt
        from keyring_types.integrations.kernel_keyspace import KernelKeyspace
        assert kt.KernelKeyspace is KernelKeyspace
        assert "KernelKeyspace" in vars(kt)  # cached: the next access is a plain attribute
        """
    )
    assert "keyring_types.bindings._keyctl" in loaded


def test_lazy_names_are_the_defining_objects() -> None:
    from keyring_types.core.api import KeyspaceAPI
    from keyring_types.core.handle import Key, Keyring
    from keyring_types.core.keyspace import Keyspace
    from keyring_types.core.quota import QuotaLimits
    from keyring_types.secret import SecretBuffer, ct_memcmp

    assert keyring_types.Keyspace is Keyspace
    assert keyring_types.KeyspaceAPI is KeyspaceAPI
    assert keyring_types.Key is Key
    assert keyring_types.Keyring is Keyring
    assert keyring_types.QuotaLimits is QuotaLimits
    assert keyring_types.SecretBuffer is SecretBuffer
    assert keyring_types.ct_memcmp is ct_memcmp


def test_unknown_attribute_is_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        keyring_types.NoSuchThing  # noqa: B018
    assert not hasattr(keyring_types, "_LAZY_not_there")


def test_dir_lists_lazy_names() -> None:
    names = dir(keyring_types)
    for name in ("Keyspace", "KernelKeyspace", "SecretBuffer", "add_key", "KEY_SPEC_SESSION_KEYRING"):
        assert name in names


def _static_all() -> list[str]:
    """``__all__`` as written in the source; fails unless it is a plain list of string literals."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    found = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    ]
    assert len(found) == 1, "__all__ must be assigned exactly once"
    value = found[0]
    assert isinstance(value, ast.List), "__all__ must be a list literal"
    assert all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts), (
        "__all__ must hold only string literals (no comprehension, no unpacking)"
    )
    assert not any(isinstance(n, ast.AugAssign) and getattr(n.target, "id", "") == "__all__" for n in tree.body)
    return [e.value for e in value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def test_all_is_static_and_complete() -> None:
    written = _static_all()
    assert written == keyring_types.__all__
    assert len(written) == len(set(written)), "duplicate names in __all__"
    # Every constant named KEY* and every public error class is exported, and nothing is missing.
    expected_constants = {n for n in vars(constants) if n.startswith("KEY")}
    expected_errors = set(errors.__all__) - {"error"}
    api = {
        "Keyspace", "KernelKeyspace", "KeyspaceAPI", "Key", "Keyring", "KeyType", "Preparsed", "QuotaLimits",
        "SecretBuffer", "ct_memcmp", "register_key_type", "unregister_key_type", "lookup_key_type",
        "registered_key_types", "add_key", "request_key", "key", "default_keyspace", "DhKdf",
        "register_request_key_handler", "unregister_request_key_handler", "UpcallRequest",
        "WatchQueue", "Notification",
    }
    assert set(written) == expected_constants | expected_errors | api
    for name in written:
        assert getattr(keyring_types, name) is not None


def test_star_import_binds_every_name() -> None:
    _modules_after(
        """
        ns = {}
        exec("from keyring_types import *", ns)
        import keyring_types as kt
        missing = [n for n in kt.__all__ if n not in ns]
        assert not missing, missing
        assert ns["KernelKeyspace"].__name__ == "KernelKeyspace"
        """
    )


def test_py_typed_marker_is_shipped() -> None:
    assert (PACKAGE / "py.typed").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    import tomllib

    data = tomllib.loads(pyproject)
    package_data = data["tool"]["setuptools"]["package-data"]["keyring_types"]
    assert "py.typed" in package_data


def test_type_checkers_see_the_lazy_classes(tmp_path: Path) -> None:
    """mypy resolves ``kt.KernelKeyspace`` and the other lazy names to their classes, not ``Any``."""
    pytest.importorskip("mypy")
    probe = tmp_path / "probe.py"
    probe.write_text(
        textwrap.dedent(
            """
            import keyring_types as kt

            reveal_type(kt.KernelKeyspace())
            reveal_type(kt.Keyspace().add_key("user", "d", b"x", kt.KEY_SPEC_SESSION_KEYRING))
            reveal_type(kt.SecretBuffer)
            wrong: int = kt.KernelKeyspace
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental",
         "--cache-dir", str(tmp_path / "cache"), str(probe)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    out = result.stdout
    assert 'Revealed type is "keyring_types.integrations.kernel_keyspace.KernelKeyspace"' in out, out
    assert 'Revealed type is "keyring_types.core.handle.Key"' in out, out
    assert "keyring_types.secret.SecretBuffer" in out, out
    # The one deliberate error proves the checker did not fall back to Any.
    assert 'has type "type[KernelKeyspace]", variable has type "int"' in out, out
    assert out.count("error:") == 1, out
