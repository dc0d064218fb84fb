"""cffi build script for ``keyring_types.bindings._secmem`` (secret memory, ct compare)."""


import sys
from pathlib import Path

from cffi import FFI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdef import header_cdef  # noqa: E402


ffibuilder = FFI()
ffibuilder.cdef(header_cdef("secmem.h"))
ffibuilder.set_source(
    "keyring_types.bindings._secmem",
    '#include "secmem.h"',
    sources=["_native/secmem.c"],
    include_dirs=["_native"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
