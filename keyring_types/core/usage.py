"""Binding a key to one use (fscrypt, dm-crypt, luks, rpmb, ...): a library extension.

The seed thread's critique: a general-purpose key leaks through its weakest
use.  A key bound at creation (``add_key(..., usage="fscrypt")``) hands its
plaintext only to that consumer: ``key.secret(consumer="fscrypt")``.  Other
consumers, and plain callers, get ``EKEYREJECTED`` (the errno a kernel service
gives a key it will not take), and so does ``read``: of a user or derived key
it is the plaintext, and a sealed type's blob, loaded again where its master
key or TPM is at hand, would make an unbound copy (the store keeps bound keys
across runs instead).  The binding is set once and never changes; it is not
in ``describe()`` (that is the kernel's format).  The kernel keyring has no
such notion, so ``KernelKeyspace`` refuses ``usage=`` (``EOPNOTSUPP``).
"""

from __future__ import annotations

import errno
import re
from typing import Final

from keyring_types.errors import error

__all__ = ["KNOWN_USAGES", "check_consumer", "check_usage"]

#: The consumers this library's own helpers name (a plugin may name its own).
KNOWN_USAGES: Final = ("fscrypt", "dm-crypt", "luks", "rpmb", "encrypted", "ecryptfs")

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")


def check_usage(usage: object) -> str:
    """``usage`` if it is a consumer name (lower-case letters, digits, ``.-_``, 1..32); else ``EINVAL``."""
    if not isinstance(usage, str) or _NAME.fullmatch(usage) is None:
        raise error(errno.EINVAL, "a key usage is a consumer name such as 'fscrypt', 'dm-crypt', 'luks' or 'rpmb'")
    return usage


def check_consumer(serial: int, bound: str | None, consumer: str | None) -> None:
    """``EKEYREJECTED`` unless a key bound to ``bound`` may go to ``consumer`` (None: a plain caller)."""
    if bound is not None and consumer != bound:
        who = f"'{consumer}'" if consumer is not None else "a caller that names no consumer"
        raise error(errno.EKEYREJECTED, f"key {serial} is bound to use '{bound}'; {who} may not have its plaintext")
