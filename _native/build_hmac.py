"""cffi build script for ``keyring_types.bindings._hmac``: HMAC-SHA256 with
precomputed pads and RPMB frame packing/authentication, over OpenSSL's libcrypto."""

import sys
from pathlib import Path

from cffi import FFI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdef import header_cdef  # noqa: E402

ffibuilder = FFI()
ffibuilder.cdef(header_cdef("hmac.h") + header_cdef("rpmb.h"))
ffibuilder.set_source(
    "keyring_types.bindings._hmac",
    '#include "hmac.h"\n#include "rpmb.h"',
    sources=["_native/hmac.c", "_native/rpmb.c"],
    include_dirs=["_native"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    libraries=["crypto"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
