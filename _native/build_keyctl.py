"""cffi build script for ``keyring_types.bindings._keyctl`` (raw key-management syscalls)."""

import sys
from pathlib import Path

from cffi import FFI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdef import header_cdef  # noqa: E402

ffibuilder = FFI()
ffibuilder.cdef(header_cdef("keyctl.h"))
ffibuilder.set_source(
    "keyring_types.bindings._keyctl",
    '#include "keyctl.h"',
    sources=["_native/keyctl.c"],
    include_dirs=["_native"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
