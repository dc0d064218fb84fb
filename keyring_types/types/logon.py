"""The ``logon`` key type: a user key whose payload user space can never read back."""

from __future__ import annotations

import errno

from keyring_types.core.keytype import KeyType
from keyring_types.errors import error
from keyring_types.types.user import UserKeyType

__all__ = ["LogonKeyType"]


class LogonKeyType(UserKeyType):
    """Like ``user`` but unreadable (EOPNOTSUPP) and with a ``prefix:`` description."""

    name = "logon"
    # No read op: KEYCTL_READ gives EOPNOTSUPP and add_key grants no possessor READ.
    read = KeyType.read

    def vet_description(self, description: str) -> None:
        """EINVAL unless the description has a ':' that is not its first character."""
        colon = description.find(":")
        if colon <= 0:
            raise error(
                errno.EINVAL,
                f"a logon key description must look like 'prefix:name' (a ':' after a non-empty prefix), "
                f"got {description!r}",
            )
