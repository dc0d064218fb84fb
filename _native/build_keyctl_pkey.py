"""cffi build script for ``keyring_types.bindings._keyctl_pkey`` (restrict and public-key keyctls)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ffi_build import make_ffi

ffibuilder = make_ffi(
    "keyring_types.bindings._keyctl_pkey", headers=["keyctl_pkey.h"], sources=["keyctl_pkey.c"]
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
