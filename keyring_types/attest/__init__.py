"""Attestation: verifiers of confidential-computing reports.

``keyring_types.attest.snp`` parses and verifies AMD SEV-SNP attestation
reports against AMD's certificate chains (embedded in ``amd_roots/``) or
against chains the caller gives.  Nothing here is imported by
``import keyring_types``: a caller imports the verifier it needs.
"""

from __future__ import annotations
