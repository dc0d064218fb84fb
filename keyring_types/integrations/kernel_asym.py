"""``KEYCTL_RESTRICT_KEYRING`` and ``KEYCTL_PKEY_*`` on the real kernel keyring.

The system-call wrappers (through ``keyring_types.bindings._keyctl_pkey``) and
:class:`KernelAsymCalls`, the ``sys_*`` methods :class:`KernelKeyspace` gets
from them.  As everywhere on the kernel side, the kernel's errno comes back
unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from keyring_types.bindings._keyctl_pkey import ffi, lib
from keyring_types.core.pkey import PkeyQuery
from keyring_types.core.syscall_args import key_id
from keyring_types.errors import KeyringError, error

__all__ = [
    "KEYCTL_PKEY_DECRYPT",
    "KEYCTL_PKEY_ENCRYPT",
    "KEYCTL_PKEY_QUERY",
    "KEYCTL_PKEY_SIGN",
    "KEYCTL_PKEY_VERIFY",
    "KEYCTL_RESTRICT_KEYRING",
    "KernelAsymCalls",
    "keyctl_pkey_op",
    "keyctl_pkey_query",
    "keyctl_pkey_verify",
    "keyctl_restrict_keyring",
]

T = TypeVar("T")

# include/uapi/linux/keyctl.h
KEYCTL_PKEY_QUERY = 24
KEYCTL_PKEY_ENCRYPT = 25
KEYCTL_PKEY_DECRYPT = 26
KEYCTL_PKEY_SIGN = 27
KEYCTL_PKEY_VERIFY = 28
KEYCTL_RESTRICT_KEYRING = 29

_OP_NAMES = {
    KEYCTL_PKEY_ENCRYPT: "keyctl_pkey_encrypt",
    KEYCTL_PKEY_DECRYPT: "keyctl_pkey_decrypt",
    KEYCTL_PKEY_SIGN: "keyctl_pkey_sign",
    KEYCTL_PKEY_VERIFY: "keyctl_pkey_verify",
}


def _fail(rc: int, what: str) -> KeyringError:
    return error(-rc, f"{what}: {os.strerror(-rc)}")


def _cstr(text: str | None) -> Any:
    return ffi.NULL if text is None else text.encode()


def keyctl_restrict_keyring(ringid: int, type_name: str | None, restriction: str | None) -> None:
    """``KEYCTL_RESTRICT_KEYRING``: ``EEXIST`` (already restricted), ``ENOTDIR``, ``EACCES``
    (no SETATTR), ``EINVAL`` (bad restriction, or only one of type/restriction), ``ENOKEY``
    (unknown type or key), ``ENOENT`` (type has no restrictions), ``EDEADLK`` (cycle), ``EPERM``."""
    ringid = key_id(ringid, "keyring id")
    rc = lib.kt_keyctl_restrict(ringid, _cstr(type_name), _cstr(restriction))
    if rc < 0:
        raise _fail(rc, f"keyctl_restrict_keyring(keyring {ringid}, type {type_name!r})")


def keyctl_pkey_query(keyid: int, info: str) -> PkeyQuery:
    """``KEYCTL_PKEY_QUERY``: ``EINVAL`` (bad info), ``EOPNOTSUPP`` (not an asymmetric key),
    ``ENOPKG``/``ENOENT`` (no such algorithm), ``EACCES``, ``ENOKEY``, ``EKEYREVOKED``."""
    keyid = key_id(keyid)
    out = ffi.new("uint32_t[6]")
    rc = lib.kt_keyctl_pkey_query(keyid, info.encode(), out)
    if rc < 0:
        raise _fail(rc, f"keyctl_pkey_query(key {keyid})")
    return PkeyQuery(*out)


def keyctl_pkey_op(op: int, keyid: int, info: str, data: bytes, out_len: int) -> bytes:
    """``KEYCTL_PKEY_ENCRYPT``/``DECRYPT``/``SIGN`` with an output buffer of ``out_len`` bytes."""
    keyid = key_id(keyid)
    # Room for the largest answer whatever out_len says: the kernel copies out as
    # many bytes as the operation produced, which out_len does not always bound.
    buf = ffi.new("char[]", max(out_len, 65536))
    rc = lib.kt_keyctl_pkey_op(op, keyid, info.encode(), ffi.from_buffer(data), len(data), buf, out_len)
    if rc < 0:
        raise _fail(rc, f"{_OP_NAMES[op]}(key {keyid}, {len(data)} bytes)")
    return bytes(ffi.buffer(buf, rc))


def keyctl_pkey_verify(keyid: int, info: str, digest: bytes, signature: bytes) -> None:
    """``KEYCTL_PKEY_VERIFY``: returns if the signature is good; ``EKEYREJECTED`` if not."""
    keyid = key_id(keyid)
    rc = lib.kt_keyctl_pkey_op(
        KEYCTL_PKEY_VERIFY,
        keyid,
        info.encode(),
        ffi.from_buffer(digest),
        len(digest),
        ffi.from_buffer(signature),
        len(signature),
    )
    if rc < 0:
        raise _fail(rc, f"keyctl_pkey_verify(key {keyid}, {len(digest)}-byte digest)")


def _eds(op: int, keyid: int, info: str, data: bytes) -> bytes:
    # The output buffer is sized from the key's own query (as keyutils does): the
    # kernel refuses one larger than the operation's maximum with EINVAL.
    q = keyctl_pkey_query(keyid, info)
    out_len = {KEYCTL_PKEY_ENCRYPT: q.max_enc_size, KEYCTL_PKEY_DECRYPT: q.max_dec_size}.get(op, q.max_sig_size)
    return keyctl_pkey_op(op, keyid, info, data, out_len)


class KernelAsymCalls:
    """The restrict and public-key ``sys_*`` methods of :class:`KernelKeyspace`."""

    __slots__ = ()

    _call: Callable[..., Any]

    def sys_restrict_keyring(self, ringid: int, type_name: str | None, restriction: str | None) -> None:
        """``KEYCTL_RESTRICT_KEYRING``; errno as :func:`keyctl_restrict_keyring`."""
        self._call(keyctl_restrict_keyring, ringid, type_name, restriction)

    def sys_pkey_query(self, keyid: int, info: str) -> PkeyQuery:
        """``KEYCTL_PKEY_QUERY``; errno as :func:`keyctl_pkey_query`."""
        return PkeyQuery.unpack(self._call(_query_packed, keyid, info))

    def sys_pkey_encrypt(self, keyid: int, info: str, data: bytes) -> bytes:
        """``KEYCTL_PKEY_ENCRYPT``; ``EINVAL`` (too long for the key), ``EOPNOTSUPP``, ``ENOPKG``."""
        return self._call(_eds, KEYCTL_PKEY_ENCRYPT, keyid, info, data)  # type: ignore[no-any-return]

    def sys_pkey_decrypt(self, keyid: int, info: str, data: bytes) -> bytes:
        """``KEYCTL_PKEY_DECRYPT``; ``EINVAL``, ``EOPNOTSUPP`` (a public key), ``EBADMSG``."""
        return self._call(_eds, KEYCTL_PKEY_DECRYPT, keyid, info, data)  # type: ignore[no-any-return]

    def sys_pkey_sign(self, keyid: int, info: str, digest: bytes) -> bytes:
        """``KEYCTL_PKEY_SIGN``; ``EINVAL``, ``EOPNOTSUPP`` (a public key), ``ENOPKG``."""
        return self._call(_eds, KEYCTL_PKEY_SIGN, keyid, info, digest)  # type: ignore[no-any-return]

    def sys_pkey_verify(self, keyid: int, info: str, digest: bytes, signature: bytes) -> None:
        """``KEYCTL_PKEY_VERIFY``; ``EKEYREJECTED`` (bad signature), ``EINVAL``, ``EBADMSG``."""
        self._call(keyctl_pkey_verify, keyid, info, digest, signature)


def _query_packed(keyid: int, info: str) -> bytes:
    # An as_user child sends back ints, str or bytes only: the six numbers go packed.
    return keyctl_pkey_query(keyid, info).pack()
