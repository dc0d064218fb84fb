"""What every TPM 2.0 user in the library shares: the connection and the return codes.

* :mod:`keyring_types.tpm.connection` -- the TCTI (``KEYRING_TYPES_TPM2_TCTI``,
  default ``device:/dev/tpmrm0``), an ESAPI context on it, raw command exchange
  through secret memory, handle helpers;
* :mod:`keyring_types.tpm.commands` -- TPM2_Create/Load/Unseal/FlushContext with
  password or policy sessions, marshalled in secret memory;
* :mod:`keyring_types.tpm.errors` -- TSS2/TPM return codes decoded into errno and
  a message that names the fix.

Used by the ``tpm2`` trust source and the ``derived`` key type's TPM root.
tpm2-pytss is imported only when a TPM is actually used.
"""

from __future__ import annotations

from keyring_types.tpm.connection import (
    DEFAULT_TCTI,
    TCTI_ENV,
    TpmConnection,
    configured_tcti,
    is_persistent_handle,
    tcti_reachable,
)
from keyring_types.tpm.errors import TpmRc, decode_rc, tpm_error

__all__ = [
    "DEFAULT_TCTI",
    "TCTI_ENV",
    "TpmConnection",
    "TpmRc",
    "configured_tcti",
    "decode_rc",
    "is_persistent_handle",
    "tcti_reachable",
    "tpm_error",
]
