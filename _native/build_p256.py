"""cffi build script for ``keyring_types.bindings._p256``: ECDSA P-256 / SHA-256 verification
of raw keys and signatures (TDX quotes) over OpenSSL's libcrypto."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ffi_build import make_ffi

ffibuilder = make_ffi(
    "keyring_types.bindings._p256",
    headers=["p256.h"],
    sources=["p256.c"],
    libraries=["crypto"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
