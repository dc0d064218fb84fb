"""The RFC's key derivation: SP 800-108 counter mode over ``LE32(len) | LE32(euid) | label NUL | value``.

Block i (from 1) is ``PRF(BE32(i) | info)``; the output is the blocks in order,
the last one cut to the requested length.  No ``L`` field is appended: the
length is in ``info`` already (the kernel's ``crypto_kdf108_ctr_generate`` is
used that way by the RFC).  The two 32-bit fields of ``info`` are in the CPU's
byte order in the kernel, little-endian on x86-64 and arm64, and are written
little-endian here on every host so keys do not depend on it.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable

from keyring_types.errors import error
from keyring_types.secret import SecretBuffer

__all__ = ["PRF_SIZE", "kdf108_ctr_into", "kdf_info"]

PRF_SIZE = 32
_INFO_HEAD = struct.Struct("<II")
_COUNTER = struct.Struct(">I")


def kdf_info(length: int, euid: int, label: bytes, value: bytes) -> bytes:
    """``info`` for a key of ``length`` bytes asked by ``euid``: the label's NUL is included.

    ``EINVAL`` when ``length`` or ``euid`` does not fit 32 bits or ``label``
    holds a NUL.
    """
    if not (0 <= length <= 0xFFFFFFFF and 0 <= euid <= 0xFFFFFFFF):
        raise error(errno.EINVAL, "the length and the euid of a derived key must fit 32 bits")
    if b"\0" in label:
        raise error(errno.EINVAL, "a derived-key label cannot contain a NUL")
    return _INFO_HEAD.pack(length, euid) + label + b"\0" + value


def kdf108_ctr_into(prf_into: Callable[[bytes, memoryview], None], info: bytes, out: memoryview) -> None:
    """Fill ``out`` with counter-mode blocks of ``prf_into`` over ``info``.

    ``prf_into(message, dst)`` writes 32 bytes into ``dst``.  Whole blocks go
    straight into ``out``; the last partial one passes through secret memory.
    Raises what ``prf_into`` raises (``out`` may then hold part of the key: the
    caller wipes it).
    """
    n = len(out)
    full, rest = divmod(n, PRF_SIZE)
    for i in range(full):
        prf_into(_COUNTER.pack(i + 1) + info, out[i * PRF_SIZE : (i + 1) * PRF_SIZE])
    if rest:
        tail = SecretBuffer(PRF_SIZE)
        try:
            mv = tail.writable()
            try:
                prf_into(_COUNTER.pack(full + 1) + info, mv)
                out[full * PRF_SIZE :] = mv[:rest]
            finally:
                mv.release()
        finally:
            tail.wipe()
