"""Attestation: confidential-computing reports, their verifiers and the ``tsm`` key's providers.

``keyring_types.attest.snp`` parses and verifies AMD SEV-SNP attestation reports against AMD's
certificate chains (embedded in ``amd_roots/``) or against chains the caller gives.
``keyring_types.attest.providers`` holds the ``tsm`` key type's providers (the emulated
SEV-SNP guest); the provider slot is here: :func:`register_tsm_provider`,
:func:`unregister_tsm_provider`, :func:`current_tsm_provider`.  Nothing here is imported by
``import keyring_types``.
"""

from __future__ import annotations

from keyring_types.attest.tsm import (
    TSM_PROVIDERS,
    TsmProvider,
    TsmRequest,
    current_tsm_provider,
    register_tsm_provider,
    unregister_tsm_provider,
)

__all__ = [
    "TSM_PROVIDERS",
    "TsmProvider",
    "TsmRequest",
    "current_tsm_provider",
    "register_tsm_provider",
    "unregister_tsm_provider",
]
