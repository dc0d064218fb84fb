"""The ``tsm`` key type's provider slot (the RFC's ``register_tsm_provider``) and its requests.

One provider at a time fills ``tsm`` keys with attestation reports, as in Dan Williams's RFC:
registering a second one is ``EEXIST``; making a key with none registered is ``ENXIO``.
Provider classes are found by name through the ``keyring_types.tsm_providers`` plugin group
(the built-in ``emulated-sev-snp`` resolves without scanning entry points).
"""

from __future__ import annotations

import errno
import hashlib
import threading
from typing import Any, Protocol, runtime_checkable

import attrs

from keyring_types import plugins
from keyring_types.errors import error

__all__ = [
    "TSM_PROVIDERS",
    "TsmProvider",
    "TsmRequest",
    "current_tsm_provider",
    "register_tsm_provider",
    "unregister_tsm_provider",
]


@attrs.frozen
class TsmRequest:
    """What a ``tsm`` key asks of the provider: the parsed payload.

    ``pubkey`` is the RFC's name for up to 64 bytes of user data; ``privlevel`` the requested
    privilege level (SEV-SNP: the VMPL); ``format`` the provider-specific format name or ``""``;
    ``nonce`` the extension's challenge, or ``None``.
    """

    pubkey: bytes
    privlevel: int = 0
    format: str = ""
    nonce: bytes | None = None

    @property
    def report_data(self) -> bytes:
        """The bytes to sign into the report: the user data, or SHA-512(nonce ‖ user data)."""
        if self.nonce is None:
            return self.pubkey
        return hashlib.sha512(self.nonce + self.pubkey).digest()


@runtime_checkable
class TsmProvider(Protocol):
    """A source of attestation reports.  ``name`` is the RFC's ``auth_blob_desc`` (shown by read)."""

    name: str

    def auth_new(self, request: TsmRequest) -> bytes:
        """The attestation blob for ``request``; errors as ``OSError`` with the kernel's errno."""
        ...


def _validate(name: str, obj: Any) -> Any:
    if not callable(obj):
        raise error(errno.ENODEV, f"TSM provider '{name}' is not a class or factory")
    return obj


#: Provider classes by name: built-ins, then installed ``keyring_types.tsm_providers`` entry points.
TSM_PROVIDERS = plugins.PluginGroup(
    "keyring_types.tsm_providers",
    kind="TSM provider",
    builtins={
        "emulated-sev-snp": "keyring_types.attest.providers:EmulatedSevSnp",
        "emulated-tdx": "keyring_types.attest.providers:EmulatedTdx",
        "configfs-tsm": "keyring_types.attest.configfs:ConfigfsTsm",
    },
    validate=_validate,
)

_lock = threading.Lock()
_current: TsmProvider | None = None


def register_tsm_provider(provider: TsmProvider) -> None:
    """Make ``provider`` the one that fills ``tsm`` keys.

    ``EEXIST`` if a provider is already registered (one at a time, as in the RFC); ``EINVAL``
    if ``provider`` has no ``name`` or ``auth_new``.
    """
    if not isinstance(provider, TsmProvider) or not isinstance(provider.name, str) or not provider.name:
        raise error(errno.EINVAL, "a TSM provider needs a non-empty name and an auth_new method")
    global _current
    with _lock:
        if _current is not None:
            raise error(errno.EEXIST, f"TSM provider '{_current.name}' is already registered")
        _current = provider


def unregister_tsm_provider(provider: TsmProvider) -> None:
    """Empty the slot.  ``ENXIO`` if no provider is registered; ``EINVAL`` if another one is
    (the RFC clears the slot whoever asks; here only its owner may)."""
    global _current
    with _lock:
        if _current is None:
            raise error(errno.ENXIO, "no TSM provider is registered")
        if _current is not provider:
            raise error(errno.EINVAL, f"TSM provider '{provider.name}' is not the registered one")
        _current = None


def current_tsm_provider() -> TsmProvider | None:
    """The registered provider, or ``None``."""
    return _current
