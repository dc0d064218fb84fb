"""cffi build script for ``keyring_types.bindings._hmac``: HMAC-SHA256 with
precomputed pads and RPMB frame packing/authentication, over OpenSSL's libcrypto."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ffi_build import make_ffi

ffibuilder = make_ffi(
    "keyring_types.bindings._hmac",
    headers=["hmac.h", "rpmb.h"],
    sources=["hmac.c", "rpmb.c"],
    libraries=["crypto"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
