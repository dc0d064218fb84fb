"""cffi build script for ``keyring_types.bindings._keyctl`` (raw key-management syscalls)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ffi_build import make_ffi

ffibuilder = make_ffi(
    "keyring_types.bindings._keyctl", headers=["keyctl.h"], sources=["keyctl.c"]
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
