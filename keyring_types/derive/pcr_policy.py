"""The ``pcrs=`` option: a primary gated by a PolicyPCR on the PCRs' current values (not in the RFC).

The template is the RFC's with two changes: ``userWithAuth`` is cleared (so
only the policy can authorise TPM2_Sign; attributes 0x00050032) and
``authPolicy`` is the PolicyPCR digest of the selected PCRs' values at the time
of the derivation.  A primary is a function of its whole template, so the key
depends on those values; and the TPM refuses TPM2_Sign with that primary
unless a policy session has run TPM2_PolicyPCR while the PCRs hold the same
values.  Another user of the TPM can still compute the key, but only in the
same platform state.

The digest is computed here (Part 1, PolicyPCR): ``H(0^32 | TPM_CC_PolicyPCR |
TPML_PCR_SELECTION | H(values in PCR order))`` with SHA-256, the primary's
nameAlg.
"""

from __future__ import annotations

import errno
import hashlib
import struct

import attrs

from keyring_types.errors import error

__all__ = ["BANKS", "MAX_PCRS", "PcrSelection", "gated_template", "parse_pcrs", "policy_pcr_digest"]

#: Banks by name: TPM_ALG_ID and digest size.
BANKS = {b"sha1": (0x0004, 20), b"sha256": (0x000B, 32), b"sha384": (0x000C, 48)}
#: A TPM returns at most eight PCR values per TPM2_PCR_Read.
MAX_PCRS = 8
_TPM_CC_POLICY_PCR = 0x0000017F
_ATTRIBUTES = 0x00050032  # the RFC's 0x00050072 without userWithAuth


@attrs.frozen
class PcrSelection:
    """One bank and its PCR indices, ascending."""

    bank: bytes
    indices: tuple[int, ...]

    @property
    def alg(self) -> int:
        return BANKS[self.bank][0]

    def marshal(self) -> bytes:
        """TPML_PCR_SELECTION with this one bank (sizeofSelect 3: PCRs 0..23)."""
        bitmap = bytearray(3)
        for i in self.indices:
            bitmap[i // 8] |= 1 << (i % 8)
        return struct.pack(">IHB", 1, self.alg, 3) + bytes(bitmap)

    def text(self) -> str:
        """tpm2-pytss / tpm2-tools spelling (``sha256:0,7``)."""
        return f"{self.bank.decode()}:{','.join(str(i) for i in self.indices)}"


def parse_pcrs(value: bytes) -> PcrSelection:
    """``<bank>:<i>[,<j>...]``: bank sha1/sha256/sha384, 1..8 distinct PCRs of 0..23; ``EINVAL`` otherwise."""
    bank, sep, rest = value.partition(b":")
    if not sep or bank not in BANKS:
        raise error(errno.EINVAL, "pcrs= takes <bank>:<list>, the bank one of sha1, sha256, sha384")
    indices: set[int] = set()
    for part in rest.split(b","):
        if not part.isdigit() or len(part) > 2 or int(part) > 23:
            raise error(errno.EINVAL, "pcrs= takes PCR numbers 0..23 separated by commas")
        indices.add(int(part))
    if len(indices) > MAX_PCRS or len(indices) != len(rest.split(b",")):
        raise error(errno.EINVAL, f"pcrs= takes 1..{MAX_PCRS} distinct PCRs")
    return PcrSelection(bank, tuple(sorted(indices)))


def policy_pcr_digest(selection: PcrSelection, values: list[bytes]) -> bytes:
    """The policy digest after one TPM2_PolicyPCR on ``values`` (in PCR order) from a fresh session."""
    pcr_digest = hashlib.sha256(b"".join(values)).digest()
    return hashlib.sha256(bytes(32) + struct.pack(">I", _TPM_CC_POLICY_PCR) + selection.marshal() + pcr_digest).digest()


def gated_template(policy: bytes) -> bytes:
    """The RFC's TPM2B_PUBLIC with ``authPolicy`` = ``policy`` and ``userWithAuth`` cleared."""
    area = struct.pack(">HHIH", 0x0008, 0x000B, _ATTRIBUTES, len(policy)) + policy
    area += struct.pack(">HHH", 0x0005, 0x000B, 6) + b"kernel"
    return struct.pack(">H", len(area)) + area
