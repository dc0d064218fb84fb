"""The trusted-key option grammar (``trusted_tpm1.c: getoptions``) → :class:`TrustedOptions`.

Options are ``name=value`` tokens separated by single spaces or tabs (``strsep``);
empty tokens are skipped; every option may appear once; an unknown name or a bad
value is ``EINVAL``.  Beyond the kernel's names we accept two of our own,
``source=<trust source>`` and ``rng=<kernel|source name>``; they are returned
separately because they choose *where* to seal, not *how*.

A trust source declares which kernel options it honours
(``TrustSource.supported_options``); :func:`check_supported` turns any other
option the caller wrote into ``EINVAL`` rather than ignoring it silently (where
the kernel's TEE and CAAM backends ignore the option string).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import attrs

from keyring_types.errors import error
from keyring_types.grammar import (
    OptionTable,
    as_payload,
    hex2bin,
    kstrtol,
    kstrtoul,
    split_tokens,
)
from keyring_types.trust.base import ALL_OPTIONS, TrustedOptions

if TYPE_CHECKING:
    from keyring_types.trust.base import TrustSource

__all__ = [
    "HASH_DIGEST_SIZE",
    "MAX_PCRINFO_SIZE",
    "OPTIONS",
    "ParsedOptions",
    "check_supported",
    "hex2bin",
    "kstrtol",
    "kstrtoul",
    "parse_options",
    "split_tokens",
]

#: ``hash=`` names the TPM 2.0 back end can map to an algorithm, with digest sizes.
HASH_DIGEST_SIZE: dict[str, int] = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64, "sm3-256": 32}
MAX_PCRINFO_SIZE = 64
#: ``keyauth=`` / 40-char ``blobauth=``: a SHA-1-sized value (TPM_DIGEST_SIZE).
AUTH_SIZE = 20
#: Our options, not the kernel's.
EXTRA_OPTIONS = frozenset({"source", "rng"})
#: The option table: the kernel's names and ours, each at most once.
OPTIONS = OptionTable("trusted-key option", ALL_OPTIONS | EXTRA_OPTIONS)


@attrs.frozen(repr=False)
class ParsedOptions:
    """The kernel options plus our ``source=`` / ``rng=`` choices (None: not given).

    The repr names the options given, never their values (``blobauth`` is a password).
    """

    options: TrustedOptions
    source: str | None = None
    rng: str | None = None

    def __repr__(self) -> str:
        names = sorted(self.options.given | {n for n in EXTRA_OPTIONS if getattr(self, n) is not None})
        return f"ParsedOptions(given={names})"


def _number(value: bytes, base: int, name: str) -> int:
    # getoptions turns every kstrtoul failure, ERANGE included, into EINVAL.
    try:
        return kstrtoul(value, base, f"{name}=")
    except OSError as exc:
        raise error(errno.EINVAL, exc.strerror or f"{name}= is not a number") from None


def parse_options(data: bytes | str) -> ParsedOptions:
    """Parse the option part of a ``new``/``load``/``update`` payload.

    ``EINVAL`` for an unknown or repeated option, a bad value, ``hash=`` after
    ``policydigest=`` (the digest's length depends on the hash, so the kernel
    insists on this order), or ``data`` that is not bytes or text.  Messages
    name the option, never its value.
    """
    values: dict[str, object] = {}
    source: str | None = None
    rng: str | None = None
    seen: set[str] = set()
    for name, value in OPTIONS.items(split_tokens(as_payload(data, "option string"))):
        seen.add(name)
        if name == "source":
            source = value.decode("ascii", "replace")
        elif name == "rng":
            rng = value.decode("ascii", "replace")
        else:
            _parse_one(name, value, values, seen)
    kernel_given = frozenset(seen - EXTRA_OPTIONS)
    return ParsedOptions(options=TrustedOptions(**values, given=kernel_given), source=source, rng=rng)  # type: ignore[arg-type]


def _parse_one(name: str, value: bytes, out: dict[str, object], seen: set[str]) -> None:
    if name == "keyhandle":
        # kstrtoul into unsigned long, stored in a u32: the kernel keeps the low 32 bits.
        out["keyhandle"] = _number(value, 16, name) & 0xFFFFFFFF
    elif name == "keyauth":
        if len(value) != 2 * AUTH_SIZE:
            raise error(errno.EINVAL, f"keyauth= must be exactly {2 * AUTH_SIZE} hex digits")
        out["keyauth"] = hex2bin(value, AUTH_SIZE, "keyauth=")
    elif name == "blobauth":
        # 40 characters are a hex digest (TPM 1.2 style); anything shorter is a
        # password used as-is (the TPM 2.0 rule); 40 non-hex characters are EINVAL.
        if len(value) == 2 * AUTH_SIZE:
            out["blobauth"] = hex2bin(value, AUTH_SIZE, "blobauth=")
        elif len(value) <= AUTH_SIZE:
            out["blobauth"] = value
        else:
            raise error(errno.EINVAL, f"blobauth= must be 40 hex digits or a password of at most {AUTH_SIZE} bytes")
    elif name == "pcrinfo":
        n = len(value) // 2
        if n > MAX_PCRINFO_SIZE:
            raise error(errno.EINVAL, f"pcrinfo= is longer than {MAX_PCRINFO_SIZE} bytes")
        out["pcrinfo"] = hex2bin(value, n, "pcrinfo=")
    elif name == "pcrlock":
        out["pcrlock"] = _number(value, 10, name)
    elif name == "migratable":
        # Only the first character counts: '0' clears the flag, '1' keeps the default.
        if value[:1] == b"0":
            out["migratable"] = False
        elif value[:1] != b"1":
            raise error(errno.EINVAL, "migratable= must start with 0 or 1")
    elif name == "hash":
        if "policydigest" in seen:
            raise error(errno.EINVAL, "hash= must come before policydigest=")
        algo = value.decode("ascii", "replace")
        if algo not in HASH_DIGEST_SIZE:
            raise error(errno.EINVAL, f"hash= must be one of {', '.join(HASH_DIGEST_SIZE)}")
        out["hash"] = algo
    elif name == "policydigest":
        algo = str(out.get("hash", "sha256"))
        size = HASH_DIGEST_SIZE[algo]
        if len(value) != 2 * size:
            raise error(errno.EINVAL, f"policydigest= must be {2 * size} hex digits for the hash= in force")
        out["policydigest"] = hex2bin(value, size, "policydigest=")
    elif name == "policyhandle":
        out["policyhandle"] = _number(value, 16, name) & 0xFFFFFFFF


def check_supported(options: TrustedOptions, source: TrustSource) -> None:
    """``EINVAL`` if ``options`` uses an option ``source`` does not support."""
    extra = options.given - source.supported_options
    if extra:
        names = ", ".join(sorted(extra))
        allowed = ", ".join(sorted(source.supported_options)) or "none"
        raise error(
            errno.EINVAL,
            f"trust source '{source.name}' does not support option(s) {names} (supported: {allowed})",
        )
