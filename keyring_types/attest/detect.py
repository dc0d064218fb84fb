"""Which attestation format a blob is: a TDX quote or an SEV-SNP report.

Only the fixed header fields are looked at (no parsing, no signature): a TDX quote starts with
version 4 or 5, attestation key type 2 or 3 and TEE type 0x81; an SEV-SNP report is 1184 bytes
(or a ``format=extended`` blob starting with one) with version 2..5 and signature algorithm 1.
"""

from __future__ import annotations

import errno
import struct
from typing import Final, Literal

from keyring_types.errors import error

__all__ = ["report_format"]

_SNP_SIZE: Final = 0x4A0


def report_format(blob: bytes) -> Literal["tdx", "sev-snp"]:
    """``"tdx"`` or ``"sev-snp"``; ``EBADMSG`` when the blob is neither."""
    b = bytes(blob[:0x40])
    if len(b) >= 8:
        version, ak_type, tee = struct.unpack_from("<HHI", b)
        if version in (4, 5) and ak_type in (2, 3) and tee == 0x81:
            return "tdx"
    if len(blob) >= _SNP_SIZE and len(b) >= 0x38:
        (version,) = struct.unpack_from("<I", b, 0)
        (sig_algo,) = struct.unpack_from("<I", b, 0x34)
        if 2 <= version <= 5 and sig_algo == 1:
            return "sev-snp"
    raise error(errno.EBADMSG, "neither a TDX quote nor an SEV-SNP report")
