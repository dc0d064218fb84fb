"""The ``encrypted`` key type: random or loaded key material wrapped under a master key.

Mirrors the kernel's ``security/keys/encrypted-keys/encrypted.c`` (spec
``kernel-keytypes.md`` §1): the same payload grammar (``new``, ``load``,
``update``), the same formats (``default``, ``ecryptfs``, ``enc32``), the same
limits and errno, and ``read()`` returns exactly the bytes ``keyctl pipe``
prints for the same key.  The decrypted data lives in a :class:`SecretBuffer`
and leaves only through :meth:`EncryptedKeyType.secret`.

The master key (``user:NAME`` or ``trusted:NAME``) is looked up in the
caller's keyrings on ``load`` and on every ``read``, never on ``new`` or
``update``, as the kernel does.
"""

from __future__ import annotations

import binascii
import errno
from typing import TYPE_CHECKING

import attrs

from keyring_types.bindings.encrypted import (
    IV,
    iv_bytes,
    new_ecryptfs_token,
    new_material,
    new_secret,
    seal_export,
    unseal_joined_into,
)
from keyring_types.core.context import current_caller
from keyring_types.core.keytype import (
    KeyType,
    Preparsed,
    lookup_key_type,
)
from keyring_types.core.usage import check_consumer
from keyring_types.errors import error
from keyring_types.grammar import as_payload, is_hex, split_text
from keyring_types.secret import SecretBuffer
from keyring_types.types import encrypted_blob as eb
from keyring_types.types.user import UserKeyType

if TYPE_CHECKING:
    from keyring_types.core.handle import Key
    from keyring_types.core.record import KeyRecord

__all__ = [
    "MAX_PAYLOAD",
    "EncryptedCommand",
    "EncryptedKeyType",
    "EncryptedPayload",
    "ecryptfs_auth_token",
    "master_key_secret",
    "parse_cache_clear",
    "parse_payload",
    "quota_size",
    "set_user_decrypted_data",
]

#: add_key/update payloads the type accepts (the kernel's 32767-byte check).
MAX_PAYLOAD = 32767
_USER_PREFIX = "user:"
_TRUSTED_PREFIX = "trusted:"
_COMMANDS = frozenset(("new", "load", "update"))
_FORMAT_WORDS = frozenset(eb.FORMATS)
_HEX_DIGITS = "0123456789abcdefABCDEF"

# The kernel's module parameter encrypted_keys.user_decrypted_data (default
# CONFIG_USER_DECRYPTED_DATA, off on the reference kernel).  A process-wide
# switch because the kernel's is system-wide.
_user_decrypted_data = False


def set_user_decrypted_data(enabled: bool) -> bool:
    """Allow ``new FMT MASTER LEN HEX`` with caller-supplied plaintext; returns the old setting.

    Mirrors ``encrypted_keys.user_decrypted_data=1``.  Off by default, like the
    reference kernel, where the plaintext token gives ``EINVAL``.
    """
    global _user_decrypted_data
    old, _user_decrypted_data = _user_decrypted_data, bool(enabled)
    return old


@attrs.frozen(repr=False)
class EncryptedCommand:
    """One parsed payload: what ``datablob_parse`` in the kernel extracts.

    The repr gives the command, format and data length; never the blob, the
    plaintext, or the other tokens as typed.
    """

    command: str  # "new" | "load" | "update"
    #: The format word as given; None when omitted (matters for legacy ``load``).
    format: str | None
    master_desc: str
    datalen_str: str | None = None
    datalen: int = 0
    #: ``load``: the hex blob; ``new``: the optional plaintext hex.
    hex_blob: str | None = None
    plaintext_hex: str | None = attrs.field(default=None, repr=False)
    #: The datablob rows of the effective format (what a read MACs), made once at
    #: parse time; derived from the fields above, so not part of equality.
    header: bytes = attrs.field(default=b"", repr=False, eq=False)
    #: Derived at parse time too (0 for ``update``): the quota bytes instantiate
    #: charges, and the length of a well-formed hex blob for ``datalen``.
    quota: int = attrs.field(default=0, repr=False, eq=False)
    blob_hex_len: int = attrs.field(default=0, repr=False, eq=False)
    #: ``new`` of random data: instantiate's inline case.
    plain_new: bool = attrs.field(default=False, repr=False, eq=False)

    def __repr__(self) -> str:
        return f"<EncryptedCommand {self.command} {self.format or '(no format)'} {self.datalen}-byte data>"


@attrs.define(eq=False, repr=False)
class EncryptedPayload:
    """The state of one encrypted key (the kernel's ``encrypted_key_payload``)."""

    format: str
    master_desc: str
    #: The length token exactly as typed ("+32", "032", "32\\n" survive); it is MAC'd and re-emitted.
    datalen_str: str
    datalen: int
    #: 16 bytes; for a key made by ``new``, the opaque native array they were drawn
    #: into (the native seal reads either in place; :meth:`iv_bytes` copies it out).
    iv: IV
    #: The kernel's payload: the decrypted data (``datalen`` bytes; the zero pad
    #: of a loaded blob is dropped, as the kernel drops it), or for ecryptfs the
    #: 740-byte auth token that holds the 64 decrypted bytes.
    data: SecretBuffer
    #: The datablob rows ``format\0master\0datalen\0`` every read MACs (made once).
    header: bytes = attrs.field(
        default=attrs.Factory(lambda self: eb.datablob_header(self.format, self.master_desc, self.datalen_str), takes_self=True)
    )

    def __repr__(self) -> str:
        return f"<EncryptedPayload {self.format} {self.datalen}-byte data>"

    def iv_bytes(self) -> bytes:
        """The IV as ``bytes``, whichever form it is held in."""
        return iv_bytes(self.iv)

    def plaintext(self) -> memoryview:
        """A read-only view of the decrypted data (inside the auth token for ecryptfs)."""
        if self.format == "ecryptfs":
            return eb.ecryptfs_key_view(self.data)
        return self.data.view()[: self.datalen]

    @property
    def quota_size(self) -> int:
        return quota_size(self.format, self.master_desc, self.datalen_str, self.datalen)

    def wipe(self) -> None:
        self.data.wipe()


def quota_size(fmt: str, master_desc: str, datalen_str: str, datalen: int) -> int:
    """Bytes charged to the owner (spec 1.10): payload + datablob + HMAC + 1."""
    return _quota_for(fmt, len(eb.datablob_header(fmt, master_desc, datalen_str)), datalen)


def _quota_for(fmt: str, header_len: int, datalen: int) -> int:
    payload_len = eb.ECRYPTFS_AUTH_TOK_SIZE if fmt == "ecryptfs" else datalen
    return payload_len + header_len + eb.IV_SIZE + 1 + eb.padded_len(datalen) + eb.HASH_SIZE + 1


def _valid_master_desc(desc: str, orig: str | None = None) -> bool:
    # valid_master_desc(): a known prefix, a non-empty name, and (on update) the old prefix.
    if desc.startswith(_USER_PREFIX):
        prefix = _USER_PREFIX
    elif desc.startswith(_TRUSTED_PREFIX):
        prefix = _TRUSTED_PREFIX
    else:
        return False
    if len(desc) == len(prefix):
        return False
    return orig is None or orig.startswith(prefix)


def parse_payload(data: bytes | str) -> EncryptedCommand:
    """Parse an add_key/update payload with the kernel's grammar (spec 1.2).

    ``EINVAL`` for a payload that is not bytes or text, empty or oversize, an
    unknown command, a missing or malformed master, length or blob, a length
    outside the format's limits, or a plaintext token while user-supplied data
    is disabled.  Messages never repeat the tokens.
    """
    if type(data) is not bytes:
        data = as_payload(data, "encrypted key payload")
    if not 0 < len(data) <= MAX_PAYLOAD:
        raise error(errno.EINVAL, f"encrypted key payload must be 1..{MAX_PAYLOAD} bytes, got {len(data)}")
    # The kernel copies the payload into a C string: anything after a NUL is invisible.
    nul = data.find(b"\x00")
    text = (data if nul < 0 else data[:nul]).decode("utf-8", "surrogateescape")
    tokens: list[str | None] = list(split_text(text))
    # Absent trailing tokens read as None, as strsep() returns NULL past the end.
    ntok = len(tokens)
    if ntok < 6:
        tokens += [None] * (6 - ntok)

    command = tokens[0]
    if command not in _COMMANDS:
        raise error(errno.EINVAL, "an encrypted key payload must start with new, load or update")
    word = tokens[1]
    if word is None:
        raise error(errno.EINVAL, "encrypted key payload has no master key")
    if word in _FORMAT_WORDS:
        fmt: str | None = word
        master = tokens[2]
        i = 3
    else:
        # Not a format word: the kernel takes it as the master description.
        fmt, master, i = None, word, 2
    if master is None:
        raise error(errno.EINVAL, "encrypted key payload has no master key")
    if not _valid_master_desc(master):
        raise error(errno.EINVAL, f"the master key (token {i}) must be 'user:NAME' or 'trusted:NAME'")
    if command == "update":
        # The rest of an update payload (a length, anything) is never looked at.
        return EncryptedCommand("update", fmt, master)

    datalen_str = tokens[i]
    if datalen_str is None:
        raise error(errno.EINVAL, "encrypted key payload has no data length")
    extra = tokens[i + 1]
    if command == "load" and extra is None:
        raise error(errno.EINVAL, "encrypted key 'load' needs the hex blob")
    # encrypted_key_alloc(): the length first, then user data, then per-format sizes.
    dlen = eb.parse_datalen(datalen_str)
    if dlen is None or not eb.MIN_DATA_SIZE <= dlen <= eb.MAX_DATA_SIZE:
        raise error(
            errno.EINVAL,
            f"the data length (token {i + 1}) must be a decimal {eb.MIN_DATA_SIZE}..{eb.MAX_DATA_SIZE}",
        )
    plaintext_hex = extra if command == "new" else None
    if plaintext_hex is not None:
        if not _user_decrypted_data:
            raise error(errno.EINVAL, "user-supplied decrypted data is disabled (encrypted_keys.user_decrypted_data=0)")
        if len(plaintext_hex) != 2 * dlen or not is_hex(plaintext_hex):
            raise error(errno.EINVAL, f"user-supplied decrypted data must be {2 * dlen} hex digits")
    if fmt == "ecryptfs" and dlen != eb.ECRYPTFS_KEY_BYTES:
        raise error(errno.EINVAL, f"ecryptfs keys must be {eb.ECRYPTFS_KEY_BYTES} bytes")
    if fmt == "enc32" and dlen != eb.ENC32_KEY_BYTES:
        raise error(errno.EINVAL, f"enc32 keys must be {eb.ENC32_KEY_BYTES} bytes")
    effective = fmt if fmt is not None else "default"
    header = eb.datablob_header(effective, master, datalen_str)
    return EncryptedCommand(
        command, fmt, master, datalen_str, dlen, extra if command == "load" else None, plaintext_hex, header,
        _quota_for(effective, len(header), dlen), eb.hex_blob_len(dlen),
        command == "new" and plaintext_hex is None,
    )


# The parse cache.  Parsing is a pure function of the payload bytes, and
# applications add many keys with one payload ("new default user:kmk 32") or one
# head ("load default user:kmk 32 <blob>"), so parses are kept, in one bounded
# dict with one invariant:
#
#     _parse_cache[K] == parse_payload(K)      for every key K in it.
#
# Two kinds of K are stored: a whole ``new`` payload without caller plaintext,
# and the head of a ``load`` payload up to and including the separator before
# its blob, whose parse took the (empty) token after that separator as the
# blob.  For such a head, ``parse_payload(K + blob)`` is the same command with
# ``blob`` as its blob whenever ``blob`` holds no space, tab or NUL and the
# whole stays within MAX_PAYLOAD; ``preparse`` then hands the blob on beside
# the shared command.  No entry ever holds plaintext.  ``preparse`` is the one
# reader, ``_parse_and_cache`` the one writer.
_parse_cache: dict[bytes, EncryptedCommand] = {}
_PARSE_CACHE_MAX = 256


def parse_cache_clear() -> None:
    """Forget every cached parse (tests; nothing else needs to)."""
    _parse_cache.clear()


def _parse_and_cache(data: bytes) -> tuple[EncryptedCommand, bytes]:
    """:func:`parse_payload` on a cache miss: the parse and, for a ``load`` whose head
    went into the cache, its blob apart (else ``b""``).  Same result, same errors."""
    if data.startswith(b"load ") and len(data) <= MAX_PAYLOAD and 9 not in data and 0 not in data:
        cut = data.rfind(32) + 1
        head = data[:cut]
        try:
            cmd: EncryptedCommand | None = parse_payload(head)
        except OSError:
            cmd = None  # the full parse below gives the error
        # The head qualifies if its parse took its last, empty token as the blob:
        # token 4 with a format word, 3 without.
        if cmd is not None and cmd.command == "load" and cmd.hex_blob == "" and head.count(32) == (4 if cmd.format is not None else 3):
            _remember(head, cmd)
            return cmd, data[cut:]
    cmd = parse_payload(data)
    if cmd.plain_new:
        _remember(data, cmd)
    return cmd, b""


def _remember(key: bytes, cmd: EncryptedCommand) -> None:
    if len(_parse_cache) >= _PARSE_CACHE_MAX:
        _parse_cache.clear()
    _parse_cache[key] = cmd


def master_key_secret(key: KeyRecord, master_desc: str) -> SecretBuffer:
    """The master key's bytes, found in the keyrings of the caller acting on ``key`` (a new SecretBuffer to wipe).

    ``ENOKEY`` (absent or expired), ``EKEYREVOKED``, ``EACCES`` (not searchable) from
    the lookup; ``EOPNOTSUPP`` for ``trusted:`` while no trusted type is registered,
    as on a kernel built without trusted keys (spec 1.9).
    """
    if master_desc.startswith(_TRUSTED_PREFIX):
        type_name, name = "trusted", master_desc[len(_TRUSTED_PREFIX) :]
        try:
            lookup_key_type("trusted")
        except OSError:
            raise error(errno.EOPNOTSUPP, "a trusted: master key needs the trusted key type, which is not registered") from None
    elif master_desc.startswith(_USER_PREFIX):
        type_name, name = "user", master_desc[len(_USER_PREFIX) :]
    else:
        raise error(errno.EINVAL, "the master key has no user: or trusted: prefix")
    record = current_caller(key).lookup_key(type_name, name)
    if record.usage is not None:
        check_consumer(record.serial, record.usage, "encrypted")
    return record.ktype.secret(record)


def _master_material(key: KeyRecord, master_desc: str) -> tuple[SecretBuffer, SecretBuffer | None]:
    """The master key as ``(secret, copy)``; the caller wipes ``copy`` if not None.

    A ``user`` master is used in place, as the kernel's ``request_user_key`` hands
    back the user key's payload itself: the keyspace lock, held for the whole
    operation, keeps an update or revocation of the master from wiping it under
    us.  Other masters go through their type's ``secret()`` (a copy).  Errors as
    :func:`master_key_secret`.
    """
    if master_desc.startswith(_USER_PREFIX):
        record = current_caller(key).lookup_key("user", master_desc[len(_USER_PREFIX) :])
        if record.usage is not None:
            check_consumer(record.serial, record.usage, "encrypted")
        payload = record.payload
        if type(record.ktype) is UserKeyType and type(payload) is SecretBuffer:
            # The user key's payload itself: a user key's payload is its data
            # (user_instantiate/update).  A wiped buffer, which a live payload never
            # is, gets the wrapper's EKEYREVOKED.
            return payload, None
    copy = master_key_secret(key, master_desc)
    return copy, copy


class EncryptedKeyType(KeyType):
    """``encrypted``: see the module docstring; errno as spec §1.11."""

    name = "encrypted"

    def preparse(self, data: bytes) -> Preparsed:
        """Parse the payload (spec 1.2), through the parse cache; ``EINVAL`` on bad
        input, including a payload that is not bytes or text.  Nothing secret yet."""
        if type(data) is not bytes:
            data = as_payload(data, "encrypted key payload")
        # The kernel's type has no preparse, so nothing is charged before instantiate.
        # The base free_preparse suffices: the command holds nothing secret.
        # The cache's one reader (see _parse_cache), inline: the commonest case is a
        # payload seen before, the next a load whose head was seen before.
        cmd = _parse_cache.get(data)
        if cmd is not None:
            return Preparsed(b"", cmd, 0)  # data, payload, quotalen
        # Integer needles: ``9 in data`` is a plain byte scan, several times cheaper than ``b"\t" in data``.
        if data.startswith(b"load ") and len(data) <= MAX_PAYLOAD and 9 not in data and 0 not in data:
            cut = data.rfind(32) + 1
            cmd = _parse_cache.get(data[:cut])
            if cmd is not None:
                return Preparsed(data[cut:], cmd, 0)
        cmd, blob = _parse_and_cache(data)
        return Preparsed(blob, cmd, 0)

    def instantiate(self, key: KeyRecord, prep: Preparsed) -> None:
        """``new`` or ``load``: make the payload.

        ``EINVAL`` (``update`` command, bad ecryptfs description, bad blob or HMAC),
        ``EDQUOT``, and on ``load`` the master's ``ENOKEY``/``EKEYREVOKED``/``EACCES``/
        ``EOPNOTSUPP``.  On any error the key gets no payload and no quota.
        """
        cmd: EncryptedCommand = prep.payload
        if cmd.command == "update":
            raise error(errno.EINVAL, "'update' is only valid for an existing encrypted key")
        assert cmd.datalen_str is not None
        fmt = cmd.format if cmd.format is not None else "default"
        header = cmd.header or eb.datablob_header(fmt, cmd.master_desc, cmd.datalen_str)
        old_reserved = key.datalen
        key.payload_reserve(cmd.quota or _quota_for(fmt, len(header), cmd.datalen))
        try:
            if cmd.plain_new:
                # The commonest instantiation, inline: random data and IV, nothing else
                # to check but an ecryptfs description (EINVAL).
                if fmt == "ecryptfs":
                    desc = key.description
                    # valid_ecryptfs_desc(), inline.
                    if len(desc) != 16 or desc.strip(_HEX_DIGITS):
                        raise error(errno.EINVAL, "ecryptfs key description must be 16 hex digits")
                    data, iv = new_ecryptfs_token(eb.AUTH_TOK_TEMPLATE, desc.encode("ascii"))
                else:
                    data, iv = new_secret(cmd.datalen)
                payload = EncryptedPayload(fmt, cmd.master_desc, cmd.datalen_str, cmd.datalen, iv, data, header)
            else:
                payload = self._make_payload(key, cmd, fmt, header, prep.data)
        except BaseException:
            key.payload_reserve(old_reserved)
            raise
        key.payload = payload
        prep.payload = None

    def _make_payload(
        self, key: KeyRecord, cmd: EncryptedCommand, fmt: str, header: bytes, blob: bytes
    ) -> EncryptedPayload:
        assert cmd.datalen_str is not None
        dlen = cmd.datalen
        if fmt == "ecryptfs":
            # EINVAL for a description that is not 16 hex digits.
            data = eb.ecryptfs_auth_tok_empty(key.description)
            at = eb.ECRYPTFS_KEY_OFFSET
        else:
            data = SecretBuffer(dlen)
            at = 0
        try:
            if cmd.command == "load":
                # The blob as preparse left it: apart (head parse reused) or in the command.
                hx = blob or (cmd.hex_blob or "").encode("utf-8", "surrogateescape")
                if hx.isascii() and len(hx) == (cmd.blob_hex_len or eb.hex_blob_len(dlen)):
                    # The IV, the two separator characters (skipped unchecked, as the
                    # kernel does), then ciphertext || MAC.
                    try:
                        iv = binascii.unhexlify(hx[:32])  # 2 * IV_SIZE
                        ctmac = binascii.unhexlify(hx[34:])  # ciphertext || MAC
                    except (binascii.Error, ValueError):
                        raise error(errno.EINVAL, "encrypted key blob contains a non-hex character") from None
                else:
                    # Only malformed text gets here; the reference parser names the fault.
                    sealed = eb.parse_hex_blob(hx, dlen)
                    iv, ctmac = sealed.iv, sealed.ciphertext + sealed.mac
                # A format-less blob carries the legacy HMAC (no format row).
                mac_header = (
                    header if cmd.format is not None else eb.datablob_header(None, cmd.master_desc, cmd.datalen_str)
                )
                master, copy = _master_material(key, cmd.master_desc)
                try:
                    unseal_joined_into(master, mac_header, iv, ctmac, data, dlen, at)
                finally:
                    if copy is not None:
                        copy.wipe()
            else:
                iv = new_material(data, dlen, at)
                if cmd.plaintext_hex is not None:
                    # Caller-supplied data replaces the random bytes.
                    plain = bytearray.fromhex(cmd.plaintext_hex)
                    mv = data.writable()
                    try:
                        mv[at : at + dlen] = plain
                    finally:
                        mv.release()
                        plain[:] = bytes(len(plain))
        except BaseException:
            data.wipe()
            raise
        return EncryptedPayload(fmt, cmd.master_desc, cmd.datalen_str, dlen, iv, data, header)

    def update(self, key: KeyRecord, prep: Preparsed) -> None:
        """``update [FORMAT] MASTER``: re-wrap under another master of the same kind.

        The format word is ignored, the new master is not looked up, the data and
        IV are kept.  ``EINVAL`` for ``new``/``load`` or a different master prefix;
        ``EDQUOT``.
        """
        cmd: EncryptedCommand = prep.payload
        if cmd.command != "update":
            raise error(errno.EINVAL, f"'{cmd.command}' is not valid for an existing encrypted key; use 'update'")
        old: EncryptedPayload = key.payload
        if not _valid_master_desc(cmd.master_desc, old.master_desc):
            kind = _USER_PREFIX if old.master_desc.startswith(_USER_PREFIX) else _TRUSTED_PREFIX
            raise error(errno.EINVAL, f"the new master key must be a {kind} key, as the old one is")
        new = EncryptedPayload(old.format, cmd.master_desc, old.datalen_str, old.datalen, old.iv, SecretBuffer.from_bytes(old.data.view()))
        try:
            key.payload_reserve(new.quota_size)
        except BaseException:
            new.wipe()
            raise
        key.payload = new
        old.wipe()

    def read(self, key: KeyRecord) -> bytes:
        """The blob ``keyctl pipe`` prints: ``FORMAT MASTER LEN HEX``, wrapped afresh under the master.

        ``ENOKEY``/``EKEYREVOKED``/``EACCES``/``EOPNOTSUPP`` from the master lookup,
        made on every read.
        """
        p: EncryptedPayload = key.payload
        master, copy = _master_material(key, p.master_desc)
        try:
            # Deterministic (same IV, data and master give the same blob), so nothing is cached.
            return seal_export(master, p.header, p.iv, p.data, p.datalen, eb.ECRYPTFS_KEY_OFFSET if p.format == "ecryptfs" else 0)
        finally:
            if copy is not None:
                copy.wipe()

    def describe(self, key: KeyRecord) -> str:
        """``/proc/keys`` column, as ``user_describe``: ``DESC: DATALEN`` once instantiated."""
        if key.payload is None:
            return key.description
        return f"{key.description}: {key.datalen}"

    def destroy(self, key: KeyRecord) -> None:
        """Wipe the decrypted data and cached material."""
        payload = key.payload
        key.payload = None
        if payload is not None:
            payload.wipe()

    def secret(self, key: KeyRecord) -> SecretBuffer:
        """A new SecretBuffer with the decrypted data (64 bytes for ``ecryptfs``).

        The eCryptfs auth token built around it comes from :func:`ecryptfs_auth_token`.
        ``EKEYREVOKED`` if the key has no payload; the master lookup's errors
        (``ENOKEY``, ``EKEYREVOKED``, ``EACCES``) when the caller cannot reach the master.
        """
        p: EncryptedPayload | None = key.payload
        if p is None:
            raise error(errno.EKEYREVOKED, f"encrypted key {key.serial} has no payload")
        # As read does: the master must be reachable with the caller's credentials,
        # so a caller who cannot use the master gets nothing it protects.
        _master, copy = _master_material(key, p.master_desc)
        if copy is not None:
            copy.wipe()
        return SecretBuffer.from_bytes(p.plaintext())


def ecryptfs_auth_token(key: Key) -> SecretBuffer:
    """The 740-byte ``struct ecryptfs_auth_tok`` eCryptfs receives for an ecryptfs key.

    Built, as the kernel's ``ecryptfs_fill_auth_tok`` does, from the key's
    description (the signature) and its 64 decrypted bytes, fetched with
    ``key.secret()`` (so the same access rules apply).  A new SecretBuffer the
    caller wipes.  ``EINVAL`` unless ``key`` is an encrypted key with a 16-hex-digit
    description and 64 bytes of data; ``EOPNOTSUPP``/``EACCES``/... from ``secret()``.
    """
    if key.type != EncryptedKeyType.name:
        raise error(errno.EINVAL, f"key {key.serial} is a '{key.type}' key, not an encrypted key")
    with key.secret(consumer="ecryptfs") as mv:
        if len(mv) != eb.ECRYPTFS_KEY_BYTES:
            raise error(errno.EINVAL, f"key {key.serial} holds {len(mv)} bytes, not an ecryptfs key's 64")
        return eb.ecryptfs_auth_tok(key.description, mv)

