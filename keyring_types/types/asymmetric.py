"""The ``asymmetric`` key type (crypto/asymmetric_keys/asymmetric_type.c).

Payloads: a DER X.509 certificate (the key is its public key; the description,
when the caller gives none, is the one the kernel proposes: ``"<O>: <CN>: <skid
hex>"``, the serial number's hex without a subject key identifier) or a DER
PKCS#8 RSA private key (no proposed description).  Not readable, not updatable;
``/proc/keys`` shows ``<description>: X509.rsa <last 4 bytes of skid> []``.  The
public-key keyctls (query, encrypt, decrypt, sign, verify) are in
:mod:`~keyring_types.types.asymmetric_rsa`; the keyring restrictions
(``builtin_trusted``, ``builtin_and_secondary_trusted``,
``key_or_keyring:<id>[:chain]``) here.

In-process, the builtin and secondary trusted keyrings are per-Keyspace keyrings
(see :func:`builtin_trusted_keyring`, :func:`add_builtin_trusted_key`): a test or
application fills them, where the kernel fills its own at boot.
"""

from __future__ import annotations

import errno
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization

from keyring_types.constants import (
    KEY_POS_ALL,
    KEY_POS_SETATTR,
    KEY_USR_READ,
    KEY_USR_SEARCH,
    KEY_USR_VIEW,
    KEY_USR_WRITE,
)
from keyring_types.core.keytype import KeyType, Preparsed, lookup_key_type
from keyring_types.core.perm import NEED_SEARCH, permitted
from keyring_types.core.pkey import PkeyParams, PkeyQuery
from keyring_types.core.record import KeyRecord
from keyring_types.core.restrict import KeyRestriction
from keyring_types.core.world import World
from keyring_types.errors import error
from keyring_types.types import asymmetric_rsa
from keyring_types.types.asymmetric_x509 import AsymmetricPayload, CertSignature, parse_asymmetric

if TYPE_CHECKING:
    # Annotations only: a key type sits below the public API and never imports it.
    from keyring_types.core.api import KeyspaceAPI
    from keyring_types.core.handle import Key, Keyring

__all__ = [
    "AsymmetricKeyType",
    "add_builtin_trusted_key",
    "builtin_trusted_keyring",
    "secondary_trusted_keyring",
]


class AsymmetricKeyType(KeyType):
    """X.509 certificates and PKCS#8 private keys, with the kernel's public-key operations."""

    name = "asymmetric"

    def preparse(self, data: bytes) -> Preparsed:
        """``EINVAL`` (empty), ``EBADMSG`` (not a certificate or PKCS#8 key), ``ENOPKG``
        (unsupported algorithm), ``EKEYREJECTED`` (bad self-signature), ``ENOENT`` (ECDSA)."""
        description, payload = parse_asymmetric(data)
        return Preparsed(b"", payload, 100, description)  # x509_key_preparse charges 100

    def describe(self, key: KeyRecord) -> str:
        payload: AsymmetricPayload | None = key.payload
        if payload is None:
            return key.description
        kid = payload.kids[1]
        tail = f" {kid[-4:].hex()}" if kid else ""
        return f"{key.description}: {payload.id_type}.{payload.pkey_algo}{tail} []"

    def destroy(self, key: KeyRecord) -> None:
        payload, key.payload = key.payload, None
        if payload is not None:
            payload.wipe()

    # -- searching by key id (asymmetric_key_match_preparse) -----------------------
    def match_preparse(self, description: str) -> Callable[[KeyRecord], bool] | None:
        """``id:<hex>`` (a key id ending in these bytes), ``ex:<hex>`` (a key id exactly),
        ``dn:<hex>`` (the subject name exactly); None for any other description (matched
        as is).  ``EINVAL`` for empty, odd-length or non-hex ``<hex>``."""
        kind = description[:3]
        if kind not in ("id:", "ex:", "dn:"):
            return None
        text = description[3:]
        try:
            if not text or len(text) % 2:
                raise ValueError
            wanted = bytes.fromhex(text)
            if len(wanted) * 2 != len(text):  # fromhex skips spaces; hex2bin does not
                raise ValueError
        except ValueError:
            raise error(errno.EINVAL, f"'{kind}' needs an even number of hex digits") from None

        def match(key: KeyRecord) -> bool:
            payload = key.payload
            if not isinstance(payload, AsymmetricPayload):
                return False
            kids = payload.kids
            if kind == "dn:":
                return kids[2] == wanted
            if kind == "ex:":
                return wanted in (kids[0], kids[1])
            return any(kid is not None and len(kid) >= len(wanted) and kid.endswith(wanted) for kid in kids[:2])

        return match

    # -- a persistent Keyspace (keyring_types.store) writes the blob the key came from --
    def store_encode(self, key: KeyRecord) -> bytes:
        payload = self._payload(key)
        if payload.private_key is not None:
            der: bytes = payload.private_key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            return der
        return payload.der

    def store_decode(self, key: KeyRecord, data: bytes) -> AsymmetricPayload:
        return parse_asymmetric(data)[1]

    # -- the kernel's asym_* operations (keyctl_pkey.c calls these) ---------------
    def asym_query(self, key: KeyRecord, params: PkeyParams) -> PkeyQuery:
        return asymmetric_rsa.query(self._payload(key), params)

    def asym_eds_op(self, key: KeyRecord, params: PkeyParams, op: str, data: bytes) -> bytes:
        return asymmetric_rsa.eds_op(self._payload(key), params, op, data)

    def asym_verify_signature(self, key: KeyRecord, params: PkeyParams, digest: bytes, sig: bytes) -> None:
        asymmetric_rsa.verify(self._payload(key), params, digest, sig)

    @staticmethod
    def _payload(key: KeyRecord) -> AsymmetricPayload:
        if key.payload is None:
            raise error(errno.EINVAL, f"key {key.serial} has no public key")
        payload: AsymmetricPayload = key.payload
        return payload

    # -- keyring restrictions (asymmetric_lookup_restriction) ----------------------
    def lookup_restriction(self, world: World, restriction: str) -> KeyRestriction:
        """``EINVAL`` for an unknown restriction or a bad key id, ``ENOKEY`` for a missing key."""
        if restriction == "builtin_trusted":
            return KeyRestriction(_restrict_by_builtin, None, self)
        if restriction == "builtin_and_secondary_trusted":
            return KeyRestriction(_restrict_by_secondary, None, self)
        method, sep, rest = restriction.partition(":")
        if method != "key_or_keyring" or not sep:
            raise error(errno.EINVAL, "restriction must be builtin_trusted, builtin_and_secondary_trusted or "
                        "key_or_keyring:<id>[:chain]")
        key_text, sep2, tail = rest.partition(":")
        chain = bool(sep2)
        if chain and tail != "chain":
            raise error(errno.EINVAL, "key_or_keyring:<id>:<x> accepts only 'chain' as <x>")
        serial = _kstrtos32(key_text)
        if serial == 0 and chain:
            return KeyRestriction(_restrict_chain, None, self)
        trusted = world.keys.get(serial)
        if trusted is None or trusted.dead:
            raise error(errno.ENOKEY, f"key {serial} does not exist")
        return KeyRestriction(_restrict_chain if chain else _restrict_key_or_keyring, trusted, self)


def _kstrtos32(text: str) -> int:
    """``kstrtos32(text, 0)``: optional sign, 0x/0 prefixes, one trailing newline; EINVAL else."""
    body = text[:-1] if text.endswith("\n") else text
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body[:2].lower() == "0x":
        base, digits = 16, body[2:]
    elif body[:1] == "0" and len(body) > 1:
        base, digits = 8, body[1:]
    else:
        base, digits = 10, body
    valid = "0123456789abcdef"[:base]
    if not digits or any(c not in valid for c in digits.lower()):
        raise error(errno.EINVAL, "key_or_keyring needs a key id (a 32-bit integer)")
    value = sign * int(digits, base)
    if not -(1 << 31) <= value < (1 << 31):
        raise error(errno.EINVAL, "key id does not fit a key_serial_t")
    return value


# -- finding the signer --------------------------------------------------------------


def _find_asymmetric_key(world: World, ring: KeyRecord, sig: CertSignature) -> KeyRecord | None:
    """``find_asymmetric_key``: the key in ``ring``'s tree whose ids match the signature's
    authority ids exactly, or None (every failure, as the restrictions treat them)."""
    id0, id1, id2 = sig.auth_ids
    by_name = id0 is None and id1 is None  # "dn:" lookup: the signer's subject is our issuer
    caller = world.caller
    if caller is None:
        return None
    cred = caller.cred
    now = world.now()
    if ring.links is None or not permitted(ring, cred, True, NEED_SEARCH):
        return None
    stack = [ring]
    seen: set[int] = set()
    while stack:
        cur = stack.pop(0)
        if cur.serial in seen or cur.revoked or cur.invalidated:
            continue
        seen.add(cur.serial)
        assert cur.links is not None
        for cand in cur.links.values():
            if cand.is_keyring:
                if permitted(cand, cred, True, NEED_SEARCH):
                    stack.append(cand)
                continue
            if cand.ktype.name != "asymmetric" or cand.payload is None:
                continue
            if cand.revoked or cand.invalidated or cand.dead or cand.expired_at(now):
                continue
            kids = cand.payload.kids
            if by_name:
                if id2 is None or kids[2] != id2:
                    continue
            elif (id0 if id0 is not None else id1) not in (kids[0], kids[1]):
                continue
            if not permitted(cand, cred, True, NEED_SEARCH):
                continue
            if id0 is not None and id1 is not None and kids[1] != id1:
                return None  # EKEYREJECTED in the kernel, which the callers turn into ENOKEY
            return cand
    return None


def _verify_with(world: World, signer: KeyRecord, sig: CertSignature) -> None:
    signer.validate(world.now())
    asymmetric_rsa.verify_cert_signature(signer.payload, sig)


def _candidate_sig(ktype: KeyType, payload: Any) -> CertSignature:
    """The checks every signature restriction starts with: EOPNOTSUPP, ENOPKG, ENOKEY."""
    if ktype.name != "asymmetric":
        raise error(errno.EOPNOTSUPP, f"this keyring accepts only asymmetric keys, not '{ktype.name}' keys")
    sig: CertSignature | None = payload.auth if isinstance(payload, AsymmetricPayload) else None
    if sig is None:
        raise error(errno.ENOPKG, "the key carries no certificate signature to check")
    if sig.auth_ids[0] is None and sig.auth_ids[1] is None and sig.auth_ids[2] is None:
        raise error(errno.ENOKEY, "the certificate does not say which key signed it (no authority key identifier)")
    return sig


def _restrict_by_signature(world: World, trust: KeyRecord | None, ktype: KeyType, payload: Any) -> None:
    """``restrict_link_by_signature``."""
    if trust is None:
        raise error(errno.ENOKEY, "no trusted keyring")
    sig = _candidate_sig(ktype, payload)
    signer = _find_asymmetric_key(world, trust, sig)
    if signer is None:
        raise error(errno.ENOKEY, "the certificate's signer is not in the trusted keyring")
    asymmetric_rsa.verify_cert_signature(signer.payload, sig)


def _restrict_by_builtin(world: World, dest: KeyRecord, ktype: KeyType, payload: Any, key: KeyRecord | None) -> None:
    _restrict_by_signature(world, _trusted_rings(world)[0], ktype, payload)


def _restrict_by_secondary(world: World, dest: KeyRecord, ktype: KeyType, payload: Any, key: KeyRecord | None) -> None:
    _restrict_by_signature(world, _trusted_rings(world)[1], ktype, payload)


def _key_or_keyring(
    world: World, dest: KeyRecord, ktype: KeyType, payload: Any, trusted: KeyRecord | None, check_dest: bool
) -> None:
    """``key_or_keyring_common``."""
    if trusted is None and not check_dest:
        raise error(errno.ENOKEY, "no trusted key")
    sig = _candidate_sig(ktype, payload)
    signer = None
    if trusted is not None:
        if trusted.is_keyring:
            signer = _find_asymmetric_key(world, trusted, sig)
        elif trusted.ktype.name == "asymmetric" and trusted.payload is not None:
            kids = trusted.payload.kids
            id0, id1, id2 = sig.auth_ids
            if id0 is None and id1 is None:
                if id2 is not None and kids[2] == id2:
                    signer = trusted
            elif id0 is None or id1 is None:
                only = id0 if id0 is not None else id1
                if only in (kids[0], kids[1]):
                    signer = trusted
            elif kids[1] == id1 and id0 in (kids[0], kids[1]):
                signer = trusted
        else:
            raise error(errno.EOPNOTSUPP, f"the restriction's key {trusted.serial} is neither a keyring nor asymmetric")
    if check_dest and signer is None:
        signer = _find_asymmetric_key(world, dest, sig)
    if signer is None:
        raise error(errno.ENOKEY, "the certificate's signer is not the trusted key or in the trusted keyring")
    _verify_with(world, signer, sig)


def _restrict_key_or_keyring(
    world: World, dest: KeyRecord, ktype: KeyType, payload: Any, key: KeyRecord | None
) -> None:
    _key_or_keyring(world, dest, ktype, payload, key, False)


def _restrict_chain(world: World, dest: KeyRecord, ktype: KeyType, payload: Any, key: KeyRecord | None) -> None:
    _key_or_keyring(world, dest, ktype, payload, key, True)


# -- the per-Keyspace builtin and secondary trusted keyrings ----------------------------

_TRUSTED: weakref.WeakKeyDictionary[World, tuple[KeyRecord, KeyRecord]] = weakref.WeakKeyDictionary()
_RING_PERM = (KEY_POS_ALL & ~KEY_POS_SETATTR) | KEY_USR_VIEW | KEY_USR_READ | KEY_USR_SEARCH
_SECONDARY_PERM = _RING_PERM | KEY_USR_WRITE
_BUILTIN_KEY_PERM = (KEY_POS_ALL & ~KEY_POS_SETATTR) | KEY_USR_VIEW | KEY_USR_READ


def _trusted_rings(world: World) -> tuple[KeyRecord, KeyRecord]:
    """``.builtin_trusted_keys`` and ``.secondary_trusted_keys`` of ``world`` (made on first use, lock held)."""
    rings = _TRUSTED.get(world)
    if rings is None:
        ktype = lookup_key_type("keyring")
        made = []
        for name, perm in ((".builtin_trusted_keys", _RING_PERM), (".secondary_trusted_keys", _SECONDARY_PERM)):
            rec = world.alloc(ktype, name, 0, 0, perm, in_quota=False)
            ktype.instantiate(rec, ktype.preparse(b""))
            rec.instantiated = True
            rec.user.nikeys += 1
            rec.pins += 1  # held by the "kernel" for the world's lifetime
            made.append(rec)
        builtin, secondary = made
        world.add_link(secondary, builtin)  # the secondary keyring trusts what the builtin one does
        secondary.restriction = KeyRestriction(
            _restrict_by_secondary, None, lookup_key_type("asymmetric"), "asymmetric", "builtin_and_secondary_trusted"
        )
        rings = _TRUSTED[world] = (builtin, secondary)
    return rings


def _world_of(ks: KeyspaceAPI) -> World:
    world = getattr(ks, "_world", None)
    if not isinstance(world, World):
        raise error(errno.EOPNOTSUPP, "only an in-process Keyspace has keyrings to fill; the kernel fills its own at boot")
    return world


def builtin_trusted_keyring(ks: KeyspaceAPI) -> Keyring:
    """The Keyspace's ``.builtin_trusted_keys`` (what ``builtin_trusted`` restrictions trust).

    ``EOPNOTSUPP`` for a :class:`~keyring_types.KernelKeyspace`.
    """
    world = _world_of(ks)
    with world.lock:
        ring = _trusted_rings(world)[0]
    return ks.handle(ring.serial, "keyring", ring.description)  # type: ignore[return-value]


def secondary_trusted_keyring(ks: KeyspaceAPI) -> Keyring:
    """The Keyspace's ``.secondary_trusted_keys`` (links the builtin one; restricted to keys they vouch for)."""
    world = _world_of(ks)
    with world.lock:
        ring = _trusted_rings(world)[1]
    return ks.handle(ring.serial, "keyring", ring.description)  # type: ignore[return-value]


def add_builtin_trusted_key(ks: KeyspaceAPI, der: bytes) -> Key:
    """Load a certificate into the Keyspace's ``.builtin_trusted_keys``, as the kernel does at boot.

    Bypasses every restriction and quota (the kernel's ``KEY_ALLOC_BUILT_IN``);
    raises what ``add_key("asymmetric", ...)`` would for a bad certificate.
    """
    world = _world_of(ks)
    ktype = lookup_key_type("asymmetric")
    prep = ktype.preparse(bytes(der))
    if prep.description is None:
        raise error(errno.EINVAL, "a builtin trusted key must be a certificate")
    with world.lock:
        ring = _trusted_rings(world)[0]
        rec = world.alloc(ktype, prep.description, 0, 0, _BUILTIN_KEY_PERM, in_quota=False)
        ktype.instantiate(rec, prep)
        rec.instantiated = True
        rec.user.nikeys += 1
        displaced = world.add_link(ring, rec)
        if displaced is not None:
            world.maybe_destroy(displaced)
        return ks.handle(rec.serial, "asymmetric", rec.description)
