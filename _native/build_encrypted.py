"""cffi build script for ``keyring_types.bindings._encrypted``: one-shot seal and
unseal of the kernel's ``encrypted`` key blob over OpenSSL's libcrypto."""

import sys
from pathlib import Path

from cffi import FFI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdef import header_cdef  # noqa: E402

ffibuilder = FFI()
ffibuilder.cdef(header_cdef("encrypted.h"))
ffibuilder.set_source(
    "keyring_types.bindings._encrypted",
    '#include "encrypted.h"',
    sources=["_native/encrypted.c"],
    include_dirs=["_native"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    libraries=["crypto", "pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
