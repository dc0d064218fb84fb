"""Random bytes from the OS CSPRNG, written straight into secret memory."""

from __future__ import annotations

from keyring_types.secret import SecretBuffer

__all__ = ["fill_random"]


def fill_random(buf: SecretBuffer) -> None:
    """Fill ``buf`` from the OS CSPRNG; ``EIO`` if the OS refuses.

    The bytes come from the native ``getrandom(2)`` buffer that new encrypted keys
    also draw from (``_native/rand.c``: locked, excluded from core dumps, wiped as
    handed out and in a forked child), so a key never exists as a ``bytes`` copy on
    the Python heap and no file is opened per key.
    """
    # Imported here: the cffi extension loads on the first key made, not at import.
    from keyring_types.bindings.encrypted import random_into

    random_into(buf, len(buf))
