"""IMA's ``ascii_runtime_measurements``: parse the list, replay it into PCR values, find a file's
measurement.

Each line is ``<PCR> <template hash> <template name> <fields...>``, fields separated by single
spaces (IMA writes a space inside a name as ``_``, so a name is one field; an empty field, such
as ``ima-sig``'s missing signature, leaves a trailing space).  The template-hash column is SHA-1
in the legacy file and the bank's hash in the per-bank files (``..._sha256``).  A violation
(ToMToU, open-writers) is listed with an all-zero template hash but extends the PCR with all
0xFF, as ``ima_add_violation`` does.

Used by the derived key type (the ``csum`` mode's digest of an executable) and by
``keyring_types.attest.eventlog`` (replay).  Errors: ``EBADMSG`` for a malformed line, ``EINVAL``
for bad arguments.
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterable

import attrs

from keyring_types.errors import error

__all__ = ["ImaEntry", "parse_ima", "replay_ima", "last_file_digest", "FILE_TEMPLATES"]

#: Templates whose first field is a file digest and second a file name.
FILE_TEMPLATES = frozenset({b"ima", b"ima-ng", b"ima-sig", b"ima-modsig"})
_BY_SIZE = {20: "sha1", 32: "sha256", 48: "sha384", 64: "sha512"}


@attrs.frozen
class ImaEntry:
    """One measurement: PCR, template hash, template name and the raw template fields."""

    pcr: int
    template_hash: bytes
    template: bytes
    fields: tuple[bytes, ...]

    @property
    def violation(self) -> bool:
        """An all-zero template hash: a ToMToU or open-writers violation."""
        return not any(self.template_hash)

    @property
    def name(self) -> bytes | None:
        """The event name (file path, with ``_`` for spaces) for file templates and ``ima-buf``."""
        return self.fields[1] if len(self.fields) > 1 else None

    @property
    def digest(self) -> tuple[str | None, bytes] | None:
        """(algorithm or ``None`` for the legacy ``d`` field, digest) of the first field, or
        ``None`` when the first field is not a hex digest."""
        if not self.fields:
            return None
        algo, sep, hexpart = self.fields[0].rpartition(b":")
        try:
            raw = bytes.fromhex(hexpart.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
        return (algo.decode("ascii", "replace") if sep else None), raw


def parse_ima(text: bytes) -> list[ImaEntry]:
    """Every line of an ``ascii_runtime_measurements`` text.  ``EBADMSG`` naming the line number
    for a line without PCR, hex template hash and template name."""
    out: list[ImaEntry] = []
    for n, line in enumerate(bytes(text).splitlines(), 1):
        if not line:
            continue
        parts = line.split(b" ")
        # The PCR is printed with %2d: a leading space for PCRs below 10.
        while parts and parts[0] == b"":
            parts.pop(0)
        if len(parts) < 3:
            raise error(errno.EBADMSG, f"IMA list line {n}: fewer than three columns")
        try:
            pcr = int(parts[0])
            th = bytes.fromhex(parts[1].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise error(errno.EBADMSG, f"IMA list line {n}: PCR or template hash is malformed") from None
        if len(th) not in _BY_SIZE or not 0 <= pcr < 64:
            raise error(errno.EBADMSG, f"IMA list line {n}: template hash size or PCR out of range")
        out.append(ImaEntry(pcr, th, parts[2], tuple(parts[3:])))
    return out


def replay_ima(entries: Iterable[ImaEntry]) -> dict[int, bytes]:
    """PCR values (index → value) the entries extend, from all zero, with the hash of the
    template-hash column's size.  ``EBADMSG`` if the entries mix sizes."""
    values: dict[int, bytes] = {}
    size = None
    for e in entries:
        if size is None:
            size = len(e.template_hash)
        elif len(e.template_hash) != size:
            raise error(errno.EBADMSG, "IMA list: template hashes of different sizes")
        digest = b"\xff" * size if e.violation else e.template_hash
        values[e.pcr] = hashlib.new(_BY_SIZE[size], values.get(e.pcr, bytes(size)) + digest).digest()
    return values


def last_file_digest(log: bytes, path: bytes) -> bytes | None:
    """The digest of the last measurement of file ``path`` in an ``ascii_runtime_measurements``
    text (``path`` compared with spaces as ``_``), skipping violations and non-file templates.
    ``None`` when there is none; ``EINVAL`` when a matching line's digest is not hex."""
    want = path.replace(b" ", b"_")
    found: bytes | None = None
    for line in log.splitlines():
        fields = line.split(b" ")
        if len(fields) < 5 or fields[2] not in FILE_TEMPLATES or fields[4] != want:
            continue
        digest_hex = fields[3].rpartition(b":")[2]  # "sha256:<hex>" (d-ng) or bare hex (d)
        try:
            digest = bytes.fromhex(digest_hex.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise error(errno.EINVAL, "a line of the IMA measurement list has a digest that is not hex") from None
        if digest and any(digest):
            found = digest
    return found
