"""The key-type registry's lazy built-ins: listed at once, imported on first lookup."""

from __future__ import annotations

import errno
import subprocess
import sys
import threading

import pytest

import keyring_types as kt
from keyring_types.core.keytype import KeyType, register_key_type_lazily
from keyring_types.types import BUILTIN_KEY_TYPES


class LazyType(KeyType):
    """A type this module registers by name and path (see the tests below)."""

    name = "test_lazy"


class Misnamed(KeyType):
    name = "test_misnamed_other"


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.strerror
    return info.value.errno


def test_import_does_not_load_the_heavy_types() -> None:
    code = (
        "import sys, keyring_types as kt\n"
        "print(sorted(kt.registered_key_types()))\n"
        "print(sorted(m for m in sys.modules if m.startswith('keyring_types.types.')))\n"
        "kt.Keyspace().add_key('user', 'a', b'x', '@s')\n"
        "print(sorted(m for m in sys.modules if m.startswith('keyring_types.types.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == str(sorted(name for name, _, _ in BUILTIN_KEY_TYPES))
    assert out[1] == "[]"
    # A user key loads its own module only, not encrypted or trusted.
    assert out[2] == "['keyring_types.types.user']"


def test_every_builtin_resolves_to_its_class() -> None:
    for name, module, class_name in BUILTIN_KEY_TYPES:
        ktype = kt.lookup_key_type(name)
        assert type(ktype).__module__ == module and type(ktype).__name__ == class_name
        assert kt.lookup_key_type(name) is ktype  # instantiated once


def test_lazy_type_is_listed_then_loaded_once_across_threads() -> None:
    register_key_type_lazily("test_lazy", __name__, "LazyType")
    try:
        assert "test_lazy" in kt.registered_key_types()
        assert errno_of(register_key_type_lazily, "test_lazy", __name__, "LazyType") == errno.EEXIST
        assert errno_of(kt.register_key_type, LazyType) == errno.EEXIST
        found: list[KeyType] = []
        threads = [threading.Thread(target=lambda: found.append(kt.lookup_key_type("test_lazy"))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(found) == 8 and all(f is found[0] for f in found) and type(found[0]) is LazyType
        ks = kt.Keyspace(uid=0, gid=0)
        assert ks.add_key("test_lazy", "d", b"p", "@s").describe().startswith("test_lazy;")
    finally:
        kt.unregister_key_type("test_lazy")
    assert errno_of(kt.lookup_key_type, "test_lazy") == errno.ENODEV


def test_unregistering_a_type_never_loaded() -> None:
    register_key_type_lazily("test_lazy", __name__, "LazyType")
    kt.unregister_key_type("test_lazy")
    assert "test_lazy" not in kt.registered_key_types()
    assert errno_of(kt.lookup_key_type, "test_lazy") == errno.ENODEV
    assert errno_of(kt.unregister_key_type, "test_lazy") == errno.ENODEV
    kt.register_key_type(LazyType)  # the name is free again
    kt.unregister_key_type("test_lazy")


def test_lazy_class_must_carry_the_registered_name() -> None:
    register_key_type_lazily("test_misnamed", __name__, "Misnamed")
    try:
        assert errno_of(kt.lookup_key_type, "test_misnamed") == errno.EINVAL
    finally:
        kt.unregister_key_type("test_misnamed")


def test_bad_lazy_names() -> None:
    assert errno_of(register_key_type_lazily, "", __name__, "LazyType") == errno.EINVAL
    assert errno_of(register_key_type_lazily, "x" * 32, __name__, "LazyType") == errno.EINVAL
