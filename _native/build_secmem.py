"""cffi build script for ``keyring_types.bindings._secmem`` (secret memory, ct compare)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ffi_build import make_ffi

ffibuilder = make_ffi(
    "keyring_types.bindings._secmem",
    headers=["secmem.h"],
    sources=["secmem.c"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
