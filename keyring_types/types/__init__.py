"""Built-in key types; importing this package registers them."""

from keyring_types.core.keytype import register_key_type, registered_key_types
from keyring_types.types.encrypted import EncryptedKeyType  # noqa: F401  (registers itself)
from keyring_types.types.keyring import KeyringType
from keyring_types.types.logon import LogonKeyType
from keyring_types.types.user import UserKeyType
from keyring_types.types.trusted import TrustedKeyType  # noqa: F401  (registers itself)

for _cls in (KeyringType, UserKeyType, LogonKeyType):
    if _cls.name not in registered_key_types():
        register_key_type(_cls)
