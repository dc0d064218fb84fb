"""Diffie-Hellman as ``KEYCTL_DH_COMPUTE`` computes it (security/keys/dh.c, crypto/dh.c).

The value is ``base ** private mod prime``, written big-endian and padded with
leading zeros to the length of the prime (the kernel's ``crypto_kpp_maxsize``,
the byte length of the prime's value), whether it is a public key or a shared
secret.  With a KDF, the output is the SP800-56A single-step (concatenation)
KDF over that value followed by the caller's "otherinfo":
``H(counter || Z || otherinfo)`` for counter = 1, 2, ... (32-bit big-endian),
cut to the length asked for.  The checks and their errno are the kernel's.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import attrs

from keyring_types.errors import error

if TYPE_CHECKING:
    from cryptography.hazmat.primitives import hashes

__all__ = [
    "DH_MIN_PRIME_BITS",
    "KEYCTL_KDF_MAX_OI_LEN",
    "KEYCTL_KDF_MAX_OUTPUT_LEN",
    "DhKdf",
    "check_kdf",
    "dh_compute_value",
    "kdf_sp800_56a",
]

#: Limits of ``struct keyctl_kdf_params`` (include/uapi/linux/keyctl.h, security/keys/internal.h).
KEYCTL_KDF_MAX_OUTPUT_LEN = 1024
KEYCTL_KDF_MAX_OI_LEN = 64
#: crypto/dh.c refuses smaller primes outside FIPS mode (2048 in FIPS mode).
DH_MIN_PRIME_BITS = 1536

#: Kernel crypto API hash names the KDF accepts -> the ``cryptography`` digest class
#: (by name: the crypto library is loaded only when a KDF runs).
_HASHES: dict[str, str] = {
    "md5": "MD5",
    "sha1": "SHA1",
    "sha224": "SHA224",
    "sha256": "SHA256",
    "sha384": "SHA384",
    "sha512": "SHA512",
    "sha3-224": "SHA3_224",
    "sha3-256": "SHA3_256",
    "sha3-384": "SHA3_384",
    "sha3-512": "SHA3_512",
    "sm3": "SM3",
}


@attrs.frozen
class DhKdf:
    """The KDF half of ``KEYCTL_DH_COMPUTE`` (``struct keyctl_kdf_params`` plus the output length).

    ``hashname`` is a kernel crypto API name ("sha256"), ``length`` the number of
    bytes wanted, ``otherinfo`` the SP800-56A OtherInfo appended to the shared secret.
    """

    hashname: str
    length: int
    otherinfo: bytes = attrs.field(default=b"", converter=bytes)


def check_kdf(kdf: DhKdf) -> type[hashes.HashAlgorithm]:
    """The kernel's checks on the KDF parameters, in its order; the digest to use.

    ``EMSGSIZE`` for an output over 1024 bytes or otherinfo over 64; ``ENOENT`` for
    a hash the crypto API does not know; ``EINVAL`` for a negative length.
    """
    if kdf.length < 0:
        raise error(errno.EINVAL, f"KDF output length must not be negative, got {kdf.length}")
    if kdf.length > KEYCTL_KDF_MAX_OUTPUT_LEN or len(kdf.otherinfo) > KEYCTL_KDF_MAX_OI_LEN:
        raise error(
            errno.EMSGSIZE,
            f"KDF output is limited to {KEYCTL_KDF_MAX_OUTPUT_LEN} bytes and otherinfo to "
            f"{KEYCTL_KDF_MAX_OI_LEN} (asked: {kdf.length} and {len(kdf.otherinfo)})",
        )
    name = _HASHES.get(kdf.hashname)
    if name is None:
        raise error(errno.ENOENT, f"no hash named {kdf.hashname!r} for the KDF")
    from cryptography.hazmat.primitives import hashes

    algorithm: type[hashes.HashAlgorithm] = getattr(hashes, name)
    return algorithm


def dh_compute_value(private: bytes, prime: bytes, base: bytes) -> bytes:
    """``base ** private mod prime``, padded to the prime's length.

    ``EINVAL`` (as crypto/dh.c) when the private key or the base is longer than the
    prime's buffer, the prime's buffer is under 1536 bits, or the prime is zero.
    """
    if len(private) > len(prime) or len(base) > len(prime):
        raise error(errno.EINVAL, "the DH private key and base may not be longer than the prime")
    if len(prime) * 8 < DH_MIN_PRIME_BITS:
        raise error(errno.EINVAL, f"the DH prime has {len(prime) * 8} bits; at least {DH_MIN_PRIME_BITS} are required")
    p = int.from_bytes(prime, "big")
    if p == 0:
        raise error(errno.EINVAL, "the DH prime is zero")
    size = (p.bit_length() + 7) // 8
    value = pow(int.from_bytes(base, "big"), int.from_bytes(private, "big"), p)
    return value.to_bytes(size, "big")


def kdf_sp800_56a(algorithm: type[hashes.HashAlgorithm], secret: bytes, otherinfo: bytes, length: int) -> bytes:
    """SP800-56A's concatenation KDF: ``H(counter || secret || otherinfo)`` blocks, cut to ``length``."""
    from cryptography.hazmat.primitives import hashes

    out = bytearray()
    counter = 1
    while len(out) < length:
        h = hashes.Hash(algorithm())
        h.update(counter.to_bytes(4, "big"))
        h.update(secret)
        h.update(otherinfo)
        out += h.finalize()
        counter += 1
    return bytes(out[:length])
