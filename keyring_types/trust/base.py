"""The trust-source plugin interface (the kernel's ``struct trusted_key_ops``).

A trust source seals key material to something the host cannot simply copy
(a TPM, a TEE, a CAAM device key, a host key file) and unseals it again.  The
``trusted`` key type parses the kernel's option grammar into
:class:`TrustedOptions` and hands it to the source; a source rejects an option
it does not support with ``EINVAL`` instead of ignoring it.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

import attrs

if TYPE_CHECKING:
    from keyring_types.secret import SecretBuffer

__all__ = ["TrustSource", "TrustedOptions", "Unsealed"]

#: Every option name the kernel's trusted-key grammar knows.
ALL_OPTIONS = frozenset(
    {"keyhandle", "keyauth", "blobauth", "pcrinfo", "pcrlock", "migratable", "hash", "policydigest", "policyhandle"}
)


@attrs.frozen(repr=False)
class TrustedOptions:
    """Parsed ``name=value`` options of a trusted-key payload.

    ``given`` names the options the caller actually wrote, so a source can
    refuse those it does not support.  Defaults are the kernel's.  The repr
    names the options given, never a value (``keyauth``/``blobauth`` are secrets).
    """

    keyhandle: int | None = None
    keyauth: bytes = b"\x00" * 20
    blobauth: bytes = b""
    pcrinfo: bytes = b""
    pcrlock: int | None = None
    #: None: the source's default.
    migratable: bool | None = None
    hash: str = "sha256"
    policydigest: bytes | None = None
    policyhandle: int | None = None
    given: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"TrustedOptions(given={sorted(self.given)})"


@attrs.frozen
class Unsealed:
    """The result of unsealing: the key (caller wipes it) and whether it may migrate."""

    secret: SecretBuffer
    migratable: bool


class TrustSource(abc.ABC):
    """One trust source; subclasses are registered by ``name``.

    Errors are ``keyring_types.errors`` classes with the kernel's errno for the
    same failure of the same backend (``EINVAL`` bad options, ``EPERM``/``EFAULT``
    backend refusals as the kernel maps them, ``EBADMSG`` tampered blob).
    """

    #: The name used by ``source=`` / ``KEYRING_TYPES_TRUST_SOURCE`` / ``trusted.source=``.
    name: ClassVar[str]
    #: Default of the migratable flag for keys this source seals.
    migratable: ClassVar[bool] = False
    #: Option names this source accepts (subset of ALL_OPTIONS).
    supported_options: ClassVar[frozenset[str]] = frozenset()
    #: Whether the source has an RNG of its own (for ``rng=<source>``).
    has_rng: ClassVar[bool] = False

    @classmethod
    def available(cls) -> bool:
        """Whether this source can be used on this machine right now (cheap probe)."""
        return True

    @abc.abstractmethod
    def seal(self, secret: SecretBuffer, options: TrustedOptions) -> bytes:
        """Seal ``secret`` and return the blob (what ``keyctl pipe`` shows, as bytes)."""

    @abc.abstractmethod
    def unseal(self, blob: bytes, options: TrustedOptions) -> Unsealed:
        """Unseal a blob made by this source (on this device); reject any other."""

    def get_random(self, n: int) -> bytes:
        """``n`` bytes from the source's own RNG; ``EOPNOTSUPP`` if it has none."""
        import errno

        from keyring_types.errors import error

        raise error(errno.EOPNOTSUPP, f"trust source '{self.name}' has no random number generator")

    def get_random_into(self, out: memoryview) -> None:
        """Fill ``out`` from the source's own RNG; ``EOPNOTSUPP`` if it has none, ``EIO`` if short.

        Sources that can write straight into ``out`` override this; the default goes
        through :meth:`get_random` and zeroes its intermediate copy.
        """
        import errno

        from keyring_types.errors import error

        got = bytearray(self.get_random(len(out)))
        try:
            if len(got) != len(out):
                raise error(errno.EIO, f"trust source RNG returned {len(got)} of {len(out)} bytes")
            out[:] = got
        finally:
            got[:] = bytes(len(got))

    def close(self) -> None:  # noqa: B027  (most sources hold nothing to release)
        """Release connections and contexts."""
