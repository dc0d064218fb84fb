"""keyring_types: the Linux kernel's key-type model in user space.

``Keyspace`` is an isolated in-process world of keys with the kernel's
semantics; ``KernelKeyspace`` is the same API on the real kernel keyring.
The module-level ``add_key``/``request_key``/``key`` act on a default,
process-wide ``Keyspace``.

Importing the package loads only the constants, the errors and the key-type
registry (the built-in types are registered by name, not imported); the
classes below are loaded on first use, so a command-line tool that needs one
of them does not pay for the rest (docs/performance.md, "Import time").
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

# Registers the built-in key types by name; none of their modules is imported yet.
import keyring_types.types  # noqa: F401
from keyring_types.constants import (
    KEY_ADD_PAYLOAD_MAX,
    KEY_GC_DELAY,
    KEY_GRP_ALL,
    KEY_GRP_LINK,
    KEY_GRP_READ,
    KEY_GRP_SEARCH,
    KEY_GRP_SETATTR,
    KEY_GRP_VIEW,
    KEY_GRP_WRITE,
    KEY_MAX_DESC_SIZE,
    KEY_OTH_ALL,
    KEY_OTH_LINK,
    KEY_OTH_READ,
    KEY_OTH_SEARCH,
    KEY_OTH_SETATTR,
    KEY_OTH_VIEW,
    KEY_OTH_WRITE,
    KEY_PERM_MASK,
    KEY_POS_ALL,
    KEY_POS_LINK,
    KEY_POS_READ,
    KEY_POS_SEARCH,
    KEY_POS_SETATTR,
    KEY_POS_VIEW,
    KEY_POS_WRITE,
    KEY_QUOTA_MAXBYTES,
    KEY_QUOTA_MAXKEYS,
    KEY_QUOTA_ROOT_MAXBYTES,
    KEY_QUOTA_ROOT_MAXKEYS,
    KEY_REQKEY_DEFL_DEFAULT,
    KEY_REQKEY_DEFL_GROUP_KEYRING,
    KEY_REQKEY_DEFL_NO_CHANGE,
    KEY_REQKEY_DEFL_PROCESS_KEYRING,
    KEY_REQKEY_DEFL_REQUESTOR_KEYRING,
    KEY_REQKEY_DEFL_SESSION_KEYRING,
    KEY_REQKEY_DEFL_THREAD_KEYRING,
    KEY_REQKEY_DEFL_USER_KEYRING,
    KEY_REQKEY_DEFL_USER_SESSION_KEYRING,
    KEY_SPEC_ALIASES,
    KEY_SPEC_GROUP_KEYRING,
    KEY_SPEC_PROCESS_KEYRING,
    KEY_SPEC_REQKEY_AUTH_KEY,
    KEY_SPEC_REQUESTOR_KEYRING,
    KEY_SPEC_SESSION_KEYRING,
    KEY_SPEC_THREAD_KEYRING,
    KEY_SPEC_USER_KEYRING,
    KEY_SPEC_USER_SESSION_KEYRING,
    KEY_TYPE_NAME_MAX,
    KEY_UPDATE_PAYLOAD_MAX,
    KEY_USR_ALL,
    KEY_USR_LINK,
    KEY_USR_READ,
    KEY_USR_SEARCH,
    KEY_USR_SETATTR,
    KEY_USR_VIEW,
    KEY_USR_WRITE,
    KEYQUOTA_LINK_BYTES,
    KEYRING_SEARCH_MAX_DEPTH,
)
from keyring_types.core.keytype import (
    KeyType,
    Preparsed,
    lookup_key_type,
    register_key_type,
    registered_key_types,
    unregister_key_type,
)
from keyring_types.errors import (
    InvalidKeyArgument,
    KeyAccessError,
    KeyExistsError,
    KeyExpiredError,
    KeyNotFoundError,
    KeyQuotaError,
    KeyRejectedError,
    KeyRevokedError,
    KeyringError,
    NotSupportedError,
)

if TYPE_CHECKING:
    # What type checkers and IDEs see; at run time ``__getattr__`` loads these.
    from keyring_types.core.api import KeyspaceAPI, KeyTarget
    from keyring_types.core.dh import DhKdf
    from keyring_types.core.handle import Key, Keyring
    from keyring_types.core.keyspace import Keyspace
    from keyring_types.core.quota import QuotaLimits
    from keyring_types.core.request_key_handlers import (
        UpcallRequest,
        register_request_key_handler,
        unregister_request_key_handler,
    )
    from keyring_types.core.watch import Notification, WatchQueue
    from keyring_types.integrations.kernel_keyspace import KernelKeyspace
    from keyring_types.secret import SecretBuffer, ct_memcmp

__version__ = "0.1.0"

__all__ = [
    "KEYQUOTA_LINK_BYTES",
    "KEYRING_SEARCH_MAX_DEPTH",
    "KEY_ADD_PAYLOAD_MAX",
    "KEY_GC_DELAY",
    "KEY_GRP_ALL",
    "KEY_GRP_LINK",
    "KEY_GRP_READ",
    "KEY_GRP_SEARCH",
    "KEY_GRP_SETATTR",
    "KEY_GRP_VIEW",
    "KEY_GRP_WRITE",
    "KEY_MAX_DESC_SIZE",
    "KEY_OTH_ALL",
    "KEY_OTH_LINK",
    "KEY_OTH_READ",
    "KEY_OTH_SEARCH",
    "KEY_OTH_SETATTR",
    "KEY_OTH_VIEW",
    "KEY_OTH_WRITE",
    "KEY_PERM_MASK",
    "KEY_POS_ALL",
    "KEY_POS_LINK",
    "KEY_POS_READ",
    "KEY_POS_SEARCH",
    "KEY_POS_SETATTR",
    "KEY_POS_VIEW",
    "KEY_POS_WRITE",
    "KEY_QUOTA_MAXBYTES",
    "KEY_QUOTA_MAXKEYS",
    "KEY_QUOTA_ROOT_MAXBYTES",
    "KEY_QUOTA_ROOT_MAXKEYS",
    "KEY_REQKEY_DEFL_DEFAULT",
    "KEY_REQKEY_DEFL_GROUP_KEYRING",
    "KEY_REQKEY_DEFL_NO_CHANGE",
    "KEY_REQKEY_DEFL_PROCESS_KEYRING",
    "KEY_REQKEY_DEFL_REQUESTOR_KEYRING",
    "KEY_REQKEY_DEFL_SESSION_KEYRING",
    "KEY_REQKEY_DEFL_THREAD_KEYRING",
    "KEY_REQKEY_DEFL_USER_KEYRING",
    "KEY_REQKEY_DEFL_USER_SESSION_KEYRING",
    "KEY_SPEC_ALIASES",
    "KEY_SPEC_GROUP_KEYRING",
    "KEY_SPEC_PROCESS_KEYRING",
    "KEY_SPEC_REQKEY_AUTH_KEY",
    "KEY_SPEC_REQUESTOR_KEYRING",
    "KEY_SPEC_SESSION_KEYRING",
    # keyring_types.constants
    "KEY_SPEC_THREAD_KEYRING",
    "KEY_SPEC_USER_KEYRING",
    "KEY_SPEC_USER_SESSION_KEYRING",
    "KEY_TYPE_NAME_MAX",
    "KEY_UPDATE_PAYLOAD_MAX",
    "KEY_USR_ALL",
    "KEY_USR_LINK",
    "KEY_USR_READ",
    "KEY_USR_SEARCH",
    "KEY_USR_SETATTR",
    "KEY_USR_VIEW",
    "KEY_USR_WRITE",
    "DhKdf",
    "InvalidKeyArgument",
    "KernelKeyspace",
    "Key",
    "KeyAccessError",
    "KeyExistsError",
    "KeyExpiredError",
    "KeyNotFoundError",
    "KeyQuotaError",
    "KeyRejectedError",
    "KeyRevokedError",
    "KeyType",
    "Keyring",
    # keyring_types.errors
    "KeyringError",
    "Keyspace",
    "KeyspaceAPI",
    "NotSupportedError",
    "Preparsed",
    "QuotaLimits",
    "SecretBuffer",
    "add_key",
    "ct_memcmp",
    "default_keyspace",
    "key",
    "lookup_key_type",
    "register_key_type",
    "register_request_key_handler",
    "registered_key_types",
    "request_key",
    "unregister_key_type",
    "unregister_request_key_handler",
    "UpcallRequest",
    "WatchQueue",
    "Notification",
]

#: Public names loaded on first access: name -> module that defines it.
_LAZY: dict[str, str] = {
    "Keyspace": "keyring_types.core.keyspace",
    "KeyspaceAPI": "keyring_types.core.api",
    "KeyTarget": "keyring_types.core.api",
    "Key": "keyring_types.core.handle",
    "Keyring": "keyring_types.core.handle",
    "QuotaLimits": "keyring_types.core.quota",
    "DhKdf": "keyring_types.core.dh",
    "SecretBuffer": "keyring_types.secret",
    "ct_memcmp": "keyring_types.secret",
    "register_request_key_handler": "keyring_types.core.request_key_handlers",
    "unregister_request_key_handler": "keyring_types.core.request_key_handlers",
    "UpcallRequest": "keyring_types.core.request_key_handlers",
    "WatchQueue": "keyring_types.core.watch",
    "Notification": "keyring_types.core.watch",
    # The kernel bridge loads its cffi module only when asked for.
    "KernelKeyspace": "keyring_types.integrations.kernel_keyspace",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keyring_types' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


_default_lock = threading.Lock()
_default: Keyspace | None = None


def default_keyspace() -> Keyspace:
    """The process-wide Keyspace behind the module-level functions (made on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            from keyring_types.core.keyspace import Keyspace

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
