"""Roots for derived keys: where the secret behind every derived key lives.

A root turns a message into 32 bytes with a key nobody outside it sees:

* ``tpm2`` (:mod:`keyring_types.derive.tpm2`) -- a restricted HMAC primary key in
  the TPM's owner hierarchy, reached as the RFC does (TPM2_Hash, then TPM2_Sign
  with the ticket);
* ``host`` (:mod:`keyring_types.derive.host`) -- a 32-byte seed file in the state
  directory, with the same construction (HMAC-SHA256 of the message's SHA-256).

:mod:`keyring_types.derive.kdf` stretches that PRF to the requested length (SP
800-108 counter mode) over the RFC's info; :mod:`keyring_types.derive.identity`
finds who is asking (euid, executable path, IMA measurement);
:mod:`keyring_types.derive.registry` chooses the root
(``KEYRING_TYPES_DERIVE_ROOT``).  Importing this package imports none of them.
"""

from __future__ import annotations
