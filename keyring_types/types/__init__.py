"""Built-in key types, registered by name from one table and imported on first use.

Importing this package imports none of the type modules: each is loaded the
first time its type is looked up (``add_key``, ``lookup_key_type``), so
``import keyring_types`` does not pay for the crypto behind encrypted and trusted.
"""

from __future__ import annotations

from keyring_types.core.keytype import register_key_type_lazily, registered_key_types

__all__ = ["BUILTIN_KEY_TYPES"]

#: (type name, module, class) of every built-in key type.  ``keyring`` lives in the
#: core, which makes every process, session and user keyring of that type.
BUILTIN_KEY_TYPES: tuple[tuple[str, str, str], ...] = (
    ("keyring", "keyring_types.core.keyring", "KeyringType"),
    ("user", "keyring_types.types.user", "UserKeyType"),
    ("logon", "keyring_types.types.logon", "LogonKeyType"),
    ("encrypted", "keyring_types.types.encrypted", "EncryptedKeyType"),
    ("trusted", "keyring_types.types.trusted", "TrustedKeyType"),
    ("fscrypt-provisioning", "keyring_types.types.fscrypt_provisioning", "FscryptProvisioningKeyType"),
    ("derived", "keyring_types.types.derived", "DerivedKeyType"),
    ("tsm", "keyring_types.types.tsm", "TsmKeyType"),
    ("asymmetric", "keyring_types.types.asymmetric", "AsymmetricKeyType"),
)

_present = registered_key_types()
for _name, _module, _class in BUILTIN_KEY_TYPES:
    if _name not in _present:
        register_key_type_lazily(_name, _module, _class)
