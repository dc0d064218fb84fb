"""``KEYCTL_RESTRICT_KEYRING`` and ``KEYCTL_PKEY_*`` in process (security/keys/keyctl.c,
keyctl_pkey.c).

:class:`AsymKeyctl` adds these ``sys_*`` methods to the in-process keyspace.
Each follows its kernel entry point: arguments and the info string first, then
``lookup_user_key`` with the permission it needs, then the key type's operation
(``asym_query``, ``asym_eds_op``, ``asym_verify_signature``; a type without them
answers ``EOPNOTSUPP``).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from keyring_types.core.keyctl import check_type_name
from keyring_types.core.perm import NEED_SEARCH, NEED_SETATTR
from keyring_types.core.restrict import keyring_restrict
from keyring_types.core.watch import NOTIFY_KEY_SETATTR, notify_key
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.pkey import PkeyParams, PkeyQuery
    from keyring_types.core.record import KeyRecord
    from keyring_types.core.world import World

__all__ = ["AsymKeyctl", "RESTRICTION_MAX"]

#: strndup_user(restriction, PAGE_SIZE): the string and its NUL must fit one page.
RESTRICTION_MAX = 4096


class AsymKeyctl:
    """The restrict and public-key system calls of :class:`~keyring_types.Keyspace`."""

    _world: World
    _scope: Any
    _lookup: Any

    def sys_restrict_keyring(self, ringid: int, type_name: str | None, restriction: str | None) -> None:
        """``KEYCTL_RESTRICT_KEYRING``: needs SETATTR on the keyring.

        ``EINVAL`` unless type and restriction are both given or both None (or for a
        bad type name or a restriction over a page), ``EPERM`` (type name starting
        with '.'), then what :func:`~keyring_types.core.restrict.keyring_restrict` raises.
        """
        with self._scope:
            ring, _ = self._lookup(ringid, NEED_SETATTR)
            if (type_name is None) != (restriction is None):
                raise error(errno.EINVAL, "a restriction needs both a key type and a restriction string, or neither")
            if type_name is not None:
                check_type_name(type_name)
                assert restriction is not None
                if len(restriction.encode()) >= RESTRICTION_MAX:
                    raise error(errno.EINVAL, f"restriction is longer than {RESTRICTION_MAX - 1} bytes")
            keyring_restrict(self._world, ring, type_name, restriction)
            if ring.watchers:
                notify_key(ring, NOTIFY_KEY_SETATTR)

    # -- public-key operations ------------------------------------------------
    def _pkey_key(self, keyid: int, info: str) -> tuple[KeyRecord, PkeyParams, Any]:
        """``keyctl_pkey_params_get``: parse ``info``, look the key up (SEARCH), check the type."""
        # Imported here: its classes use attrs, which one-shot commands without pkey_* do not load.
        from keyring_types.core.pkey import parse_pkey_info

        params = parse_pkey_info(info)
        rec, _ = self._lookup(keyid, NEED_SEARCH)
        ops = rec.ktype
        if getattr(ops, "asym_query", None) is None:
            raise error(errno.EOPNOTSUPP, f"'{rec.ktype.name}' keys have no public-key operations (key {rec.serial})")
        return rec, params, ops

    def sys_pkey_query(self, keyid: int, info: str) -> PkeyQuery:
        """``KEYCTL_PKEY_QUERY``: ``EINVAL`` (info), ``ENOKEY``/``EACCES``/``EKEYREVOKED``
        (lookup), ``EOPNOTSUPP`` (not a public-key type), the type's errors."""
        with self._scope:
            rec, params, ops = self._pkey_key(keyid, info)
            return ops.asym_query(rec, params)  # type: ignore[no-any-return]

    def _pkey_sized(self, keyid: int, info: str, op: str, in_len: int) -> tuple[KeyRecord, PkeyParams, Any]:
        """``keyctl_pkey_params_get_2``: the query's size limits applied to the input (``EINVAL``)."""
        rec, params, ops = self._pkey_key(keyid, info)
        q: PkeyQuery = ops.asym_query(rec, params)
        limit = {"encrypt": q.max_dec_size, "decrypt": q.max_enc_size}.get(op, q.max_data_size)
        if in_len > limit:
            raise error(errno.EINVAL, f"{in_len} bytes of input exceed this key's limit of {limit} for {op}")
        return rec, params, ops

    def _pkey_eds(self, keyid: int, info: str, op: str, data: bytes) -> bytes:
        with self._scope:
            rec, params, ops = self._pkey_sized(keyid, info, op, len(data))
            return ops.asym_eds_op(rec, params, op, data)  # type: ignore[no-any-return]

    def sys_pkey_encrypt(self, keyid: int, info: str, data: bytes) -> bytes:
        """``KEYCTL_PKEY_ENCRYPT``; ``EINVAL`` (too long, bad info or value), ``EOPNOTSUPP``."""
        return self._pkey_eds(keyid, info, "encrypt", data)

    def sys_pkey_decrypt(self, keyid: int, info: str, data: bytes) -> bytes:
        """``KEYCTL_PKEY_DECRYPT``; ``EINVAL`` (no private key, bad length or padding)."""
        return self._pkey_eds(keyid, info, "decrypt", data)

    def sys_pkey_sign(self, keyid: int, info: str, digest: bytes) -> bytes:
        """``KEYCTL_PKEY_SIGN``; ``EINVAL`` (no private key, wrong digest length), ``EOVERFLOW``."""
        return self._pkey_eds(keyid, info, "sign", digest)

    def sys_pkey_verify(self, keyid: int, info: str, digest: bytes, signature: bytes) -> None:
        """``KEYCTL_PKEY_VERIFY``: returns if good; ``EKEYREJECTED`` (wrong digest),
        ``EBADMSG`` (bad padding), ``EINVAL`` (lengths, bad signature value), ``ENOENT``."""
        with self._scope:
            rec, params, ops = self._pkey_sized(keyid, info, "verify", len(digest))
            q: PkeyQuery = ops.asym_query(rec, params)
            if len(signature) > q.max_sig_size:
                raise error(errno.EINVAL, f"a {len(signature)}-byte signature exceeds this key's {q.max_sig_size}")
            ops.asym_verify_signature(rec, params, digest, signature)
