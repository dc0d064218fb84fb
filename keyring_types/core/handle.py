"""Public key handles: :class:`Key` and :class:`Keyring`.

A handle is a serial plus the keyspace view that acts through it; every call
is one system call on that keyspace (the in-process emulation or the real
kernel), so possession and permissions are judged afresh each time, as the
kernel does for every ``keyctl``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from keyring_types.core.syscall_args import (
    c_string,
    key_id,
    owner_id,
    payload_bytes,
    u32,
)

if TYPE_CHECKING:
    from keyring_types.core.api import KeyspaceAPI, KeyTarget
    from keyring_types.core.pkey import PkeyQuery

__all__ = ["Key", "Keyring"]


class Key:
    """A handle on one key in a keyspace."""

    __slots__ = ("_description", "_ks", "_serial", "_type")

    def __init__(
        self,
        keyspace: KeyspaceAPI,
        serial: int,
        type_name: str | None = None,
        description: str | None = None,
    ) -> None:
        """A handle on ``serial`` in ``keyspace``; ``EINVAL`` if it is not a ``key_serial_t``."""
        # int32 bounds as literals (constants, not global lookups): this is on the hot path.
        if type(serial) is not int or not -0x80000000 <= serial <= 0x7FFFFFFF:
            serial = key_id(serial)  # an __index__ object, or EINVAL
        self._ks = keyspace
        self._serial = serial
        self._type = type_name
        self._description = description

    # -- identity -------------------------------------------------------------
    @property
    def serial(self) -> int:
        return self._serial

    @property
    def keyspace(self) -> KeyspaceAPI:
        return self._ks

    def _fill(self) -> None:
        type_name, _uid, _gid, _perm, desc = self._ks.sys_describe(self._serial).split(";", 4)
        self._type, self._description = type_name, desc

    @property
    def type(self) -> str:
        """The key type's name (needs VIEW permission if not already known)."""
        if self._type is None:
            self._fill()
        assert self._type is not None
        return self._type

    @property
    def description(self) -> str:
        if self._description is None:
            self._fill()
        assert self._description is not None
        return self._description

    @property
    def usage(self) -> str | None:
        """The one use this key is bound to (``"fscrypt"``...), or None; EACCES without VIEW."""
        return self._ks.sys_key_usage(self._serial)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Key):
            return NotImplemented
        return self._serial == other._serial and self._ks.same_world(other._ks)

    def __hash__(self) -> int:
        return hash(self._serial)

    def __repr__(self) -> str:
        t = self._type or "?"
        d = self._description if self._description is not None else "?"
        return f"<{type(self).__name__} {self._serial} {t}:{d!r}>"

    def __int__(self) -> int:
        return self._serial

    # -- keyctl operations ----------------------------------------------------
    def read(self) -> bytes:
        """``keyctl read``: the payload (a sealed type's blob, never its plaintext).

        Raises ``EACCES`` (no READ and not possessed), ``EOPNOTSUPP`` (type has no
        read, e.g. logon), ``EKEYREVOKED``, ``EKEYEXPIRED``, ``ENOKEY``.
        """
        return self._ks.sys_read(self._serial)

    def describe(self) -> str:
        """``keyctl rdescribe``: ``type;uid;gid;perm;description`` (perm as 8 hex digits).

        Raises ``EACCES`` without VIEW, ``EKEYREVOKED``, ``EKEYEXPIRED``, ``ENOKEY``.
        """
        return self._ks.sys_describe(self._serial)

    def update(self, payload: bytes | bytearray | memoryview | str) -> None:
        """``keyctl update``: replace the payload (one page at most).

        Raises ``EINVAL`` (bad or oversize payload, or not bytes-like/str), ``EOPNOTSUPP``
        (type cannot be updated), ``EACCES`` (no WRITE), ``EKEYREVOKED``, ``EKEYEXPIRED``,
        ``EDQUOT``.
        """
        data = payload if type(payload) is bytes else payload_bytes(payload)
        self._ks.sys_update(self._serial, data or b"")

    def revoke(self) -> None:
        """``keyctl revoke``; ``EACCES`` without WRITE or SETATTR, ``EKEYREVOKED`` if already."""
        self._ks.sys_revoke(self._serial)

    def invalidate(self) -> None:
        """``keyctl invalidate``: unlink everywhere and destroy; ``EACCES`` without SEARCH."""
        self._ks.sys_invalidate(self._serial)

    def set_timeout(self, seconds: int) -> None:
        """``keyctl timeout``: expire ``seconds`` from now (0 clears); ``EACCES`` without SETATTR.

        The kernel takes an ``unsigned int``: ``EINVAL`` outside 0..2**32-1 (so -1 is
        refused rather than meaning "never" or 136 years).
        """
        self._ks.sys_set_timeout(self._serial, u32(seconds, "timeout"))

    def set_perm(self, mask: int) -> None:
        """``keyctl setperm``: ``EINVAL`` for bits outside 0x3f3f3f3f, ``EACCES`` unless owner/admin."""
        self._ks.sys_setperm(self._serial, u32(mask, "permission mask"))

    def chown(self, uid: int = -1, gid: int = -1) -> None:
        """``keyctl chown/chgrp`` (-1 leaves a field); ``EACCES`` unless privileged, ``EDQUOT``.

        ``EINVAL`` for an id that does not fit ``uid_t``/``gid_t`` (2**32-1 is -1).
        """
        self._ks.sys_chown(self._serial, owner_id(uid, "uid"), owner_id(gid, "gid"))

    def get_security(self) -> str:
        """``keyctl security``: the key's LSM label, "" where no LSM labels keys.

        Needs VIEW; without it the kernel reports ``ENOKEY`` (it looks for an
        authority to instantiate the key instead).  ``EKEYREVOKED``, ``EKEYEXPIRED``.
        """
        return self._ks.sys_get_security(self._serial)

    def watch(self, queue: object, watch_id: int = 0) -> None:
        """``keyctl watch`` on this key: see :meth:`KeyspaceAPI.watch_key` (``watch_id`` -1 removes)."""
        self._ks.watch_key(self._serial, queue, watch_id)

    @contextmanager
    def secret(self, consumer: str | None = None) -> Iterator[memoryview]:
        """Plaintext for in-process consumers, as a read-only view wiped on exit.

        Sealed types unseal here (never in :meth:`read`).  Needs the same access as
        ``read``; ``EOPNOTSUPP`` for types with no in-process secret.  ``consumer``
        names the use (``"fscrypt"``...): a key bound to another use (see
        :attr:`usage`) raises ``EKEYREJECTED``.
        """
        buf = self._ks.sys_secret(self._serial) if consumer is None else self._ks.sys_secret(self._serial, consumer)
        mv = buf.view()
        try:
            yield mv
        finally:
            mv.release()
            buf.wipe()


    # -- public-key operations (KEYCTL_PKEY_*; the asymmetric key type) ----------
    def pkey_query(self, info: str = "") -> PkeyQuery:
        """``keyctl pkey_query``: what the key can do under ``info`` and its sizes.

        ``info`` is the kernel's grammar: ``enc=<encoding> hash=<hash>`` (e.g.
        ``"enc=pkcs1 hash=sha256"``; default encoding ``raw``).  Raises ``EINVAL``
        (bad info, or an encoding/hash the key's algorithm lacks), ``EOPNOTSUPP``
        (not an asymmetric key), ``EACCES`` (no SEARCH), ``ENOKEY``, ``EKEYREVOKED``.
        """
        return self._ks.sys_pkey_query(self._serial, _info(info))

    def pkey_encrypt(self, info: str, data: bytes | bytearray | memoryview) -> bytes:
        """``keyctl pkey_encrypt``: ``EINVAL`` (data too long for the key, bad info), ``EOPNOTSUPP``."""
        return self._ks.sys_pkey_encrypt(self._serial, _info(info), _data(data, "data"))

    def pkey_decrypt(self, info: str, data: bytes | bytearray | memoryview) -> bytes:
        """``keyctl pkey_decrypt``: needs the private key (``EINVAL`` without); ``EINVAL`` for bad padding."""
        return self._ks.sys_pkey_decrypt(self._serial, _info(info), _data(data, "data"))

    def pkey_sign(self, info: str, digest: bytes | bytearray | memoryview) -> bytes:
        """``keyctl pkey_sign``: sign a digest; needs the private key (``EINVAL`` without),
        ``EINVAL`` for a digest of the wrong length for ``hash=``."""
        return self._ks.sys_pkey_sign(self._serial, _info(info), _data(digest, "digest"))

    def pkey_verify(
        self, info: str, digest: bytes | bytearray | memoryview, signature: bytes | bytearray | memoryview
    ) -> None:
        """``keyctl pkey_verify``: returns if ``signature`` is good for ``digest``.

        ``EKEYREJECTED`` (a valid signature of another digest), ``EBADMSG`` (bad
        padding), ``EINVAL`` (wrong lengths, bad info), ``ENOENT`` (``enc=raw``).
        """
        self._ks.sys_pkey_verify(self._serial, _info(info), _data(digest, "digest"), _data(signature, "signature"))

class Keyring(Key):
    """A handle on a keyring (a key of type ``keyring``)."""

    __slots__ = ()

    def link(self, key: KeyTarget) -> None:
        """``keyctl link``: link ``key`` (handle, serial or ``@x``) into this keyring.

        Raises ``EACCES`` (no WRITE here or no LINK on the key), ``EDEADLK`` (cycle),
        ``ENOTDIR``, ``EDQUOT``, ``EKEYREVOKED``, ``EINVAL`` (not a key id).
        """
        self._ks.sys_link(self._ks.resolve(key), self._serial)

    def unlink(self, key: KeyTarget) -> None:
        """``keyctl unlink``; ``ENOENT`` if not linked here, ``EACCES`` without WRITE, ``EINVAL``."""
        self._ks.sys_unlink(self._ks.resolve(key), self._serial)

    def search(self, type_name: str, description: str, dest: KeyTarget | None = None) -> Key:
        """``keyctl search``: depth-first through this keyring and those it links.

        Raises ``ENOKEY`` (no match, or an unknown type, as the kernel does),
        ``EKEYREVOKED``/``EKEYEXPIRED``/``EACCES`` when the only matches were unusable,
        ``EFAULT`` (type or description None), ``EINVAL`` (not text, bad ``dest``).
        """
        type_name = c_string(type_name, "key type")  # type: ignore[assignment]
        description = c_string(description, "description")  # type: ignore[assignment]
        dest_id = 0 if dest is None else self._ks.resolve(dest)
        serial = self._ks.sys_search(self._serial, type_name, description, dest_id)
        return self._ks.handle(serial, type_name, description)

    def keys(self) -> list[Key]:
        """The keys linked here (``keyctl rlist``); needs READ or possession."""
        raw = self._ks.sys_read(self._serial)
        serials = struct.unpack(f"={len(raw) // 4}i", raw)  # native-endian, as KEYCTL_READ gives
        return [self._ks.handle(s) for s in serials]

    def clear(self) -> None:
        """``keyctl clear``: unlink everything; ``EACCES`` without WRITE."""
        self._ks.sys_clear(self._serial)

    def restrict(self, type_name: str | None = None, restriction: str | None = None) -> None:
        """``keyctl restrict_keyring``: limit what may be linked into this keyring from now on.

        No arguments: reject everything (``EPERM`` for every later add or link).
        ``("asymmetric", "builtin_trusted")``, ``"builtin_and_secondary_trusted"`` or
        ``"key_or_keyring:<id>[:chain]"``: only certificates signed by a trusted key.
        Raises ``EEXIST`` (already restricted), ``EACCES`` (no SETATTR), ``ENOTDIR``,
        ``EINVAL`` (only one of the two given, or a bad restriction), ``ENOKEY``
        (unknown type or key), ``ENOENT`` (the type has no restrictions), ``EDEADLK``.
        """
        type_name = c_string(type_name, "key type", None)
        restriction = c_string(restriction, "restriction", None)
        self._ks.sys_restrict_keyring(self._serial, type_name, restriction)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (Key, int)):
            return False
        return int(key) in {k.serial for k in self.keys()}


def _info(info: object) -> str:
    """A pkey info string: a C string (``EINVAL`` otherwise; None is refused as ``EFAULT`` would be)."""
    checked = c_string(info, "info string")
    assert checked is not None
    return checked


def _data(data: object, what: str) -> bytes:
    """Bytes-like input of a pkey operation (``EINVAL`` otherwise)."""
    checked = payload_bytes(data, what)
    return b"" if checked is None else checked
