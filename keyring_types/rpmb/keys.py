"""RPMB MAC keys in the forms the client accepts: a key handle, 32 raw bytes, an HmacSha256."""

from __future__ import annotations

import errno
from typing import Any

from keyring_types.errors import error
from keyring_types.hmac import HmacSha256

__all__ = ["MacKey", "KEY_SIZE", "rpmb_secret"]

KEY_SIZE = 32


def rpmb_secret(key: Any) -> Any:
    """``key.secret()`` as the ``rpmb`` consumer when the key knows use bindings (a
    ``Key`` handle has ``usage``: a key bound to another use refuses with
    ``EKEYREJECTED``), plain ``secret()`` for other objects that have one."""
    return key.secret(consumer="rpmb") if hasattr(key, "usage") else key.secret()


class MacKey:
    """An HmacSha256 for the duration of one call, from any accepted key form."""

    def __init__(self, key: Any) -> None:
        self.owned = False
        if isinstance(key, HmacSha256):
            self.h = key
            return
        if isinstance(key, (bytes, bytearray, memoryview)):
            if len(key) != KEY_SIZE:
                raise error(errno.EINVAL, f"an RPMB authentication key is {KEY_SIZE} bytes, got {len(key)}")
            self.h, self.owned = HmacSha256(key), True
            return
        if hasattr(key, "secret"):
            try:
                with rpmb_secret(key) as mv:
                    if len(mv) != KEY_SIZE:
                        raise error(errno.EINVAL, f"an RPMB authentication key is {KEY_SIZE} bytes, got {len(mv)}")
                    self.h, self.owned = HmacSha256(mv), True
            except OSError as exc:
                if exc.errno == errno.EOPNOTSUPP:
                    serial = getattr(key, "serial", "?")
                    raise error(
                        errno.EOPNOTSUPP,
                        f"key {serial} cannot be read from user space (a kernel logon, trusted or encrypted key "
                        "keeps its plaintext in the kernel): use a key the caller may read, or pre-signed frames (submit)",
                    ) from None
                raise
            return
        raise error(errno.EINVAL, f"an RPMB key is a Key handle, 32 bytes or an HmacSha256, not {type(key).__name__}")

    def __enter__(self) -> HmacSha256:
        return self.h

    def __exit__(self, *exc: object) -> None:
        if self.owned:
            self.h.wipe()
