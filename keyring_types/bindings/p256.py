"""The only door to ``_native/p256.c``: ECDSA P-256 / SHA-256 verification of a raw public key
(X ‖ Y) and a raw signature (R ‖ S), as TDX quotes carry them.

It runs on the system's libcrypto, whose P-256 code is the assembler one; the TDX verifier uses
it for the one signature it checks on every quote.  Errors: ``EINVAL`` for a key or signature
of the wrong size, ``ENOMEM`` if libcrypto fails.
"""

from __future__ import annotations

import errno
from typing import Any

from keyring_types.bindings._p256 import ffi as _ffi
from keyring_types.bindings._p256 import lib as _lib
from keyring_types.errors import error

__all__ = ["P256PublicKey"]


class P256PublicKey:
    """A P-256 public key, parsed once.  ``P256PublicKey.from_point(xy)`` is ``None`` for bytes
    that are not a point on the curve."""

    __slots__ = ("_key",)

    def __init__(self, handle: Any) -> None:
        self._key = _ffi.gc(handle, _lib.kt_p256_key_free)

    @classmethod
    def from_point(cls, point: bytes) -> P256PublicKey | None:
        """The key of the 64-byte point X ‖ Y, or ``None`` if it is not on P-256."""
        if len(point) != _lib.KT_P256_POINT:
            raise error(errno.EINVAL, f"a P-256 point is {_lib.KT_P256_POINT} bytes")
        handle = _lib.kt_p256_key_new(point)
        return None if handle == _ffi.NULL else cls(handle)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether the 64-byte R ‖ S ``signature`` of SHA-256(``message``) verifies."""
        if len(signature) != _lib.KT_P256_SIG:
            raise error(errno.EINVAL, f"a raw P-256 signature is {_lib.KT_P256_SIG} bytes")
        rc = _lib.kt_p256_verify(self._key, message, len(message), signature)
        if rc < 0:
            raise error(errno.ENOMEM, "libcrypto failed to verify a P-256 signature")
        return bool(rc == 1)
