"""Handing keys to dm-crypt through the kernel keyring.

A dm-crypt table can name its key instead of carrying it: the key field
``:<size>:<type>:<description>`` makes the kernel (drivers/md/dm-crypt.c,
``crypt_set_keyring_key``) ``request_key`` a ``logon``, ``user``, ``encrypted``
or ``trusted`` key of that description in the keyrings of the process that
loads the table, and use its payload (``user``/``logon``), decrypted data
(``encrypted``) or key (``trusted``), which must be exactly ``size`` bytes.
The kernel refuses a key string with whitespace in it.

cryptsetup (lib/luks2/luks2_digest.c) loads a LUKS2 volume key as a ``logon``
key described ``cryptsetup:<uuid>-d<digest>``, ``<digest>`` being the number of
the LUKS2 digest that the segment uses (0 for a freshly formatted device);
:func:`load_volume_key` does the same from a key of this library.
"""

from __future__ import annotations

import errno
import uuid as _uuid
from typing import Final

from keyring_types.core.handle import Key
from keyring_types.errors import error
from keyring_types.integrations import kernel_syscalls
from keyring_types.integrations.kernel_keyspace import KernelKeyspace

__all__ = ["TABLE_KEY_TYPES", "load_volume_key", "table_key", "volume_key_description"]

#: The key types dm-crypt looks up (a kernel without CONFIG_ENCRYPTED_KEYS or
#: CONFIG_TRUSTED_KEYS refuses those two with EINVAL).
TABLE_KEY_TYPES: Final = ("logon", "user", "encrypted", "trusted")


def _kernel_size(key: Key) -> int:
    """The key length dm-crypt will compare with, for a kernel key."""
    if key.type in ("user", "logon"):
        # /proc/keys shows "<description>: <datalen>" for both (logon cannot be read).
        wanted = f"{key.serial:08x}"
        with open("/proc/keys", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(wanted + " "):
                    return int(line.rstrip("\n").rsplit(": ", 1)[1])
        raise error(errno.ENOKEY, f"key {key.serial} is not visible in /proc/keys")
    if key.type == "encrypted":
        # read() gives "<format> <master-desc> <datalen> <hex blob>"
        fields = key.read().split(b" ")
        return int(fields[2])
    raise error(
        errno.EINVAL,
        f"the length of kernel {key.type} key {key.serial} is not visible to user space: pass size=",
    )


def table_key(key: Key, size: int | None = None) -> str:
    """The dm-crypt table key field ``:<size>:<type>:<description>`` for ``key``.

    ``size`` is the key length in bytes; when omitted it is taken from the key
    (the plaintext length of an in-process key; for a kernel key its datalen,
    or an encrypted key's decrypted length; a kernel trusted key needs
    ``size=``).  ``EINVAL`` for a type dm-crypt does not take, a description
    with whitespace (dm-crypt refuses it), a size that is not positive, or a
    kernel trusted key without ``size``.
    """
    if key.type not in TABLE_KEY_TYPES:
        raise error(errno.EINVAL, f"dm-crypt takes {', '.join(TABLE_KEY_TYPES)} keys, not {key.type!r}")
    description = key.description
    if any(c.isspace() for c in description):
        raise error(errno.EINVAL, "dm-crypt refuses a key description with whitespace in it")
    if size is None:
        if isinstance(key.keyspace, KernelKeyspace):
            size = _kernel_size(key)
        else:
            with key.secret(consumer="dm-crypt") as mv:
                size = mv.nbytes
    if type(size) is not int or size <= 0:
        raise error(errno.EINVAL, f"a dm-crypt key size is a positive number of bytes, got {size!r}")
    return f":{size}:{key.type}:{description}"


def volume_key_description(uuid: str, digest: int = 0) -> str:
    """cryptsetup's description of a LUKS2 volume key: ``cryptsetup:<uuid>-d<digest>``.

    ``EINVAL`` unless ``uuid`` is a UUID string and ``digest`` a non-negative int.
    """
    try:
        _uuid.UUID(uuid)
    except (TypeError, ValueError, AttributeError):
        raise error(errno.EINVAL, f"not a UUID: {uuid!r}") from None
    if type(digest) is not int or digest < 0:
        raise error(errno.EINVAL, f"a LUKS2 digest number is a non-negative int, got {digest!r}")
    return f"cryptsetup:{uuid}-d{digest}"


def load_volume_key(key: Key, uuid: str, digest: int = 0, keyring: int | str = "@s") -> Key:
    """Put ``key``'s plaintext into the kernel keyring as the ``logon`` key
    cryptsetup would load for LUKS2 device ``uuid`` (see
    :func:`volume_key_description`), linked into ``keyring`` (an ``@x`` alias or
    a serial, resolved for this process); returns its handle.

    The plaintext goes from secret memory to the ``add_key`` system call
    without a ``bytes`` copy.  Raises ``secret()``'s errors (``EOPNOTSUPP`` for
    a kernel logon, encrypted or trusted key, whose plaintext user space cannot
    have), ``EINVAL`` (bad uuid/digest, empty key), and add_key's (``EDQUOT``,
    ``EACCES``, ``ENOKEY`` for the keyring).
    """
    description = volume_key_description(uuid, digest)
    kernel = KernelKeyspace()
    ringid = kernel.resolve(keyring)
    with key.secret(consumer="dm-crypt") as mv:
        if not mv.nbytes:
            raise error(errno.EINVAL, "a volume key cannot be empty")
        serial = kernel_syscalls.add_key("logon", description, mv, ringid)
    return kernel.handle(serial, "logon", description)
