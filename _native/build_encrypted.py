"""cffi build script for ``keyring_types.bindings._encrypted``: one-shot seal and
unseal of the kernel's ``encrypted`` key blob over OpenSSL's libcrypto, and the
buffered random bytes new keys are made from."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ffi_build import make_ffi

ffibuilder = make_ffi(
    "keyring_types.bindings._encrypted",
    headers=["encrypted.h", "rand.h"],
    sources=["encrypted.c", "rand.c"],
    libraries=["crypto", "pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
