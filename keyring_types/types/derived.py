"""The ``derived`` key type (Ignat Korchagin's RFC, May 2024): per-application keys from a root.

Payload ``<len> <mode>``: ``len`` decimal bytes, 1..1024; ``mode`` exactly
``path`` or ``csum``.  The key is the SP 800-108 counter-mode output of the
root's PRF over ``LE32(len) | LE32(euid) | mode NUL | value``, where ``value``
is the executable's path (``path``) or its IMA digest (``csum``); see
:mod:`keyring_types.derive.identity` for who is asking and
:mod:`keyring_types.derive.registry` for the root (the TPM, or the host seed).

As in the RFC the key is derived at preparse (so here outside the keyspace's
lock: it may wait for the TPM) and then held, read, described and revoked as
a user key.  There is no update: ``add_key`` over an existing key makes a new
one.  Errors: ``EINVAL`` for the grammar (``ERANGE`` for a length past 64
bits), ``EOPNOTSUPP`` for ``csum`` without a measurement, ``EFAULT`` without an
executable, and the root's errors (``EPERM``/``ENOMEM``/``ENODEV`` from the TPM;
``EACCES`` from the host seed's checks).
"""

from __future__ import annotations

import errno
import re

from keyring_types.core.keytype import KeyType, Preparsed
from keyring_types.core.record import KeyRecord
from keyring_types.derive import identity
from keyring_types.derive.kdf import kdf_info
from keyring_types.derive.registry import get_root
from keyring_types.errors import error
from keyring_types.grammar import kstrtoul
from keyring_types.secret import SecretBuffer

__all__ = ["MAX_KEY_SIZE", "MIN_KEY_SIZE", "MODES", "DerivedKeyType", "parse_payload"]

MIN_KEY_SIZE = 1
MAX_KEY_SIZE = 1024
#: The mode words and the label each mixes (the RFC's ``match_token`` table).
MODES = (b"path", b"csum")
_SEPARATOR = re.compile(rb"[ \t]")


def parse_payload(data: bytes) -> tuple[int, bytes]:
    """``(len, mode)`` of a ``<len> <mode>`` payload, checked in the RFC's order.

    The payload ends at its first NUL, as the kernel's C string does.  The
    first token (up to the first space or tab) is a decimal ``kstrtoul``
    (``EINVAL``, ``ERANGE`` past 64 bits); a length outside 1..1024 is
    ``EINVAL``; so is a missing mode, and a remainder that is not exactly
    ``path`` or ``csum`` (no second separator, no newline).
    """
    if not data:
        raise error(errno.EINVAL, "a derived key needs a payload '<len> path|csum'")
    nul = data.find(0)
    text = data if nul < 0 else data[:nul]
    parts = _SEPARATOR.split(text, maxsplit=1)
    length = kstrtoul(parts[0], 10, "the derived key's length")
    if not MIN_KEY_SIZE <= length <= MAX_KEY_SIZE:
        raise error(errno.EINVAL, f"a derived key's length must be {MIN_KEY_SIZE}..{MAX_KEY_SIZE} bytes")
    if len(parts) < 2:
        raise error(errno.EINVAL, "a derived key needs a mode after its length: 'path' or 'csum'")
    mode = parts[1]
    if mode not in MODES:
        raise error(errno.EINVAL, "a derived key's mode must be exactly 'path' or 'csum'")
    return length, mode


class DerivedKeyType(KeyType):
    """Payload: the derived bytes in a SecretBuffer; readable; no update."""

    name = "derived"
    preparse_blocks = True

    def preparse(self, data: bytes) -> Preparsed:
        """Parse (see :func:`parse_payload`), find who is asking, and derive; errnos in the module docstring."""
        length, mode = parse_payload(data)
        root = get_root()
        value = identity.exe_path() if mode == b"path" else identity.exe_measurement()
        info = kdf_info(length, identity.kernel_euid(), mode, value)
        out = SecretBuffer(length)
        try:
            mv = out.writable()
            try:
                root.derive_into(info, mv)
            finally:
                mv.release()
        except BaseException:
            out.wipe()
            raise
        return Preparsed(b"", out, length)

    def read(self, key: KeyRecord) -> bytes:
        """The derived bytes (``user_read``)."""
        payload: SecretBuffer = key.payload
        return payload.tobytes()

    def describe(self, key: KeyRecord) -> str:
        """``<desc>: <len>`` (``user_describe``)."""
        if key.payload is None:
            return key.description
        return f"{key.description}: {key.datalen}"

    def revoke(self, key: KeyRecord) -> None:
        """The payload is freed at revocation and its bytes leave the quota (``user_revoke``)."""
        key.payload_reserve(0)
        old, key.payload = key.payload, None
        if old is not None:
            old.wipe()

    def destroy(self, key: KeyRecord) -> None:
        """Wipe the payload."""
        payload, key.payload = key.payload, None
        if payload is not None:
            payload.wipe()

    def secret(self, key: KeyRecord) -> SecretBuffer:
        """A copy of the derived bytes in secret memory (the caller wipes it)."""
        payload: SecretBuffer = key.payload
        return SecretBuffer.from_bytes(payload.view())
