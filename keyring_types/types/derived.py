"""The ``derived`` key type (Ignat Korchagin's RFC, May 2024): per-application keys from a root.

Payload ``<len> <mode>``: ``len`` decimal bytes, 1..1024; ``mode`` exactly
``path`` or ``csum``.  The key is the SP 800-108 counter-mode output of the
root's PRF over ``LE32(len) | LE32(euid) | mode NUL | value``, where ``value``
is the executable's path (``path``) or its IMA digest (``csum``); see
:mod:`keyring_types.derive.identity` for who is asking and
:mod:`keyring_types.derive.registry` for the root (the TPM, or the host seed).

Four options that are not the RFC's, each off unless written after the mode,
each changing the output (docs/derived.md): ``uid=none`` (the exe-only binding:
the euid field holds ``NO_UID``), ``bind=script`` (the interpreter's main
script is mixed too) and ``mix=<freeform>`` (the rotation mixin), appended to
``info`` as labelled, length-prefixed pieces; and ``pcrs=<bank>:<list>`` (the
TPM primary gated by a PolicyPCR, :mod:`keyring_types.derive.pcr_policy`).
Without them the key is the RFC's.

As in the RFC the key is derived at preparse (so here outside the keyspace's
lock: it may wait for the TPM) and then held, read, described and revoked as
a user key.  There is no update: ``add_key`` over an existing key makes a new
one.  Errors: ``EINVAL`` for the grammar (``ERANGE`` for a length past 64
bits), ``EOPNOTSUPP`` for ``csum`` without a measurement, ``EFAULT`` without an
executable (or, with ``bind=script``, without a main script: ``EOPNOTSUPP``),
and the root's errors (``EPERM``/``ENOMEM``/``ENODEV`` from the TPM;
``EACCES`` from the host seed's checks).
"""

from __future__ import annotations

import errno
import re
import struct

import attrs

from keyring_types.core.keytype import KeyType, Preparsed
from keyring_types.derive import identity
from keyring_types.derive.kdf import kdf_info
from keyring_types.derive.pcr_policy import PcrSelection, parse_pcrs
from keyring_types.derive.registry import get_root
from keyring_types.errors import error
from keyring_types.grammar import kstrtoul
from keyring_types.secret import SecretBuffer
from keyring_types.types.user import UserKeyType

__all__ = [
    "MAX_KEY_SIZE",
    "MIN_KEY_SIZE",
    "MODES",
    "NO_UID",
    "DerivedKeyType",
    "DerivedRequest",
    "extension_piece",
    "parse_payload",
    "parse_request",
]

MIN_KEY_SIZE = 1
MAX_KEY_SIZE = 1024
#: The mode words and the label each mixes (the RFC's ``match_token`` table).
MODES = (b"path", b"csum")
_SEPARATOR = re.compile(rb"[ \t]")
#: The euid field of the exe-only binding: (uid_t)-1, which no process can have (setresuid reads it as "unchanged").
NO_UID = 0xFFFFFFFF


@attrs.frozen
class DerivedRequest:
    """A parsed payload: the RFC's length and mode, and this library's options (all off by default)."""

    length: int
    mode: bytes
    #: ``uid=none``: the exe-only binding; the euid field holds ``NO_UID`` instead of the caller's euid.
    no_uid: bool = False
    #: ``bind=script``: the interpreter's main script is mixed as well.
    script: bool = False
    #: ``mix=<freeform>``: the rotation mixin, the rest of the payload verbatim.
    mix: bytes | None = None
    #: ``pcrs=<bank>:<list>``: the TPM primary gated by a PolicyPCR on these PCRs.
    pcrs: PcrSelection | None = None


def parse_request(data: bytes) -> DerivedRequest:
    """Parse ``<len> <mode> [uid=none] [bind=script] [pcrs=<bank>:<list>] [mix=<freeform>]``.

    The RFC's part is checked in the RFC's order: the payload ends at its first
    NUL, as the kernel's C string does; the first token (up to the first space
    or tab) is a decimal ``kstrtoul`` (``EINVAL``, ``ERANGE`` past 64 bits); a
    length outside 1..1024 is ``EINVAL``; so is a missing mode or one that is
    not exactly ``path`` or ``csum``.  The RFC takes nothing after the mode;
    this library takes the options above, each separated by one space or tab,
    each at most once, ``mix=`` last (its value runs to the end of the payload,
    spaces included, and must not be empty).  Anything else after the mode is
    ``EINVAL``, so a payload the RFC accepts means here exactly what it means
    there.
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
    rest = _SEPARATOR.split(parts[1], maxsplit=1)
    mode = rest[0]
    if mode not in MODES:
        raise error(errno.EINVAL, "a derived key's mode must be exactly 'path' or 'csum'")
    if len(rest) == 1:
        return DerivedRequest(length, mode)
    no_uid = script = False
    mix: bytes | None = None
    pcrs: PcrSelection | None = None
    seen: set[bytes] = set()
    remainder: bytes | None = rest[1]
    position = 0
    while remainder is not None:
        position += 1
        if remainder.startswith(b"mix="):
            mix = remainder[4:]
            if not mix:
                raise error(errno.EINVAL, "derived-key option mix= needs a value")
            break
        option, *more = _SEPARATOR.split(remainder, maxsplit=1)
        remainder = more[0] if more else None
        name = option.partition(b"=")[0]
        if name in seen:
            raise error(errno.EINVAL, f"derived-key option {position} is given twice")
        seen.add(name)
        if option.startswith(b"pcrs="):
            pcrs = parse_pcrs(option[5:])
        elif option == b"uid=none":
            no_uid = True
        elif option == b"bind=script":
            script = True
        else:
            raise error(
                errno.EINVAL,
                f"token {position} after the mode is not a derived-key option (known: uid=none, bind=script, pcrs=..., mix=...)",
            )
    return DerivedRequest(length, mode, no_uid=no_uid, script=script, mix=mix, pcrs=pcrs)


def parse_payload(data: bytes) -> tuple[int, bytes]:
    """``(len, mode)`` of a payload (see :func:`parse_request` for the grammar and errno)."""
    req = parse_request(data)
    return req.length, req.mode


def extension_piece(label: bytes, data: bytes) -> bytes:
    """One non-RFC piece appended to ``info``: ``label NUL LE32(len(data)) data``.

    The RFC's ``info`` holds no NUL after the label's (a path has none) and a
    fixed-size digest, so an info with pieces is never an RFC info.
    """
    return label + b"\0" + struct.pack("<I", len(data)) + data


class DerivedKeyType(UserKeyType):
    """Payload: the derived bytes in a SecretBuffer; readable; no update.

    As in the RFC, read, describe, revoke and destroy are the user type's; only
    preparse differs, and there is no update (so no WRITE permission either).
    """

    name = "derived"
    preparse_blocks = True
    update = KeyType.update  # the kernel's ops table has no update

    def preparse(self, data: bytes) -> Preparsed:
        """Parse (see :func:`parse_payload`), find who is asking, and derive; errnos in the module docstring."""
        req = parse_request(data)
        root = get_root()
        path_mode = req.mode == b"path"
        value = identity.exe_path() if path_mode else identity.exe_measurement()
        euid = NO_UID if req.no_uid else identity.kernel_euid()
        info = kdf_info(req.length, euid, req.mode, value)
        if req.script:
            script = identity.script_path() if path_mode else identity.script_measurement()
            info += extension_piece(b"script", script)
        if req.mix is not None:
            info += extension_piece(b"mix", req.mix)
        length = req.length
        out = SecretBuffer(length)
        try:
            mv = out.writable()
            try:
                root.derive_into(info, mv, pcrs=req.pcrs)
            finally:
                mv.release()
        except BaseException:
            out.wipe()
            raise
        return Preparsed(b"", out, length)
