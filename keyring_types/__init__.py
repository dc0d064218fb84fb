"""keyring_types: the Linux kernel's key-type model in user space.

``Keyspace`` is an isolated in-process world of keys with the kernel's
semantics; ``KernelKeyspace`` is the same API on the real kernel keyring.
The module-level ``add_key``/``request_key``/``key`` act on a default,
process-wide ``Keyspace``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import keyring_types.types  # noqa: F401  (registers the built-in key types)
from keyring_types import constants as _constants
from keyring_types.constants import *  # noqa: F403
from keyring_types.core.api import KeyspaceAPI, KeyTarget
from keyring_types.core.handle import Key, Keyring
from keyring_types.core.keytype import (
    KeyType,
    Preparsed,
    lookup_key_type,
    register_key_type,
    registered_key_types,
    unregister_key_type,
)
from keyring_types.core.keyspace import Keyspace
from keyring_types.core.quota import QuotaLimits
from keyring_types import errors as _errors
from keyring_types.errors import (  # noqa: F401  (re-exported through __all__)
    InvalidKeyArgument,
    KeyAccessError,
    KeyExistsError,
    KeyExpiredError,
    KeyNotFoundError,
    KeyQuotaError,
    KeyRejectedError,
    KeyringError,
    KeyRevokedError,
    NotSupportedError,
)
from keyring_types.secret import SecretBuffer, ct_memcmp

if TYPE_CHECKING:
    from keyring_types.integrations.kernel_keyspace import KernelKeyspace

__version__ = "0.1.0"

_default_lock = threading.Lock()
_default: Keyspace | None = None


def default_keyspace() -> Keyspace:
    """The process-wide Keyspace behind the module-level functions (made on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Keyspace()
        return _default


def add_key(type_name: str, description: str | None, payload: Any, keyring: KeyTarget) -> Key:
    """``add_key`` on the default Keyspace; see :meth:`KeyspaceAPI.add_key` for the errno."""
    return default_keyspace().add_key(type_name, description, payload, keyring)


def request_key(type_name: str, description: str, callout_info: Any = None, keyring: KeyTarget = 0) -> Key:
    """``request_key`` on the default Keyspace; ENOKEY, EKEYREVOKED, EACCES."""
    return default_keyspace().request_key(type_name, description, callout_info, keyring)


def key(target: KeyTarget) -> Key:
    """A handle on an existing key of the default Keyspace; ENOKEY if none."""
    return default_keyspace().key(target)


def __getattr__(name: str) -> Any:
    # The kernel bridge loads its cffi module only when asked for.
    if name == "KernelKeyspace":
        from keyring_types.integrations.kernel_keyspace import KernelKeyspace

        return KernelKeyspace
    raise AttributeError(f"module 'keyring_types' has no attribute {name!r}")


__all__ = [
    "Keyspace",
    "KernelKeyspace",
    "KeyspaceAPI",
    "Key",
    "Keyring",
    "KeyType",
    "Preparsed",
    "QuotaLimits",
    "SecretBuffer",
    "ct_memcmp",
    "register_key_type",
    "unregister_key_type",
    "lookup_key_type",
    "registered_key_types",
    "add_key",
    "request_key",
    "key",
    "default_keyspace",
    *(n for n in _errors.__all__ if n != "error"),
] + [n for n in vars(_constants) if n.startswith("KEY")]
