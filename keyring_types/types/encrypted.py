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
import re
from typing import TYPE_CHECKING, Any

import attrs

from keyring_types.bindings._encrypted import ffi as _ffi
from keyring_types.core.context import current_caller
from keyring_types.core.keytype import KeyType, Preparsed, lookup_key_type, register_key_type, registered_key_types
from keyring_types.errors import error
from keyring_types.secret import SecretBuffer
from keyring_types.types import encrypted_blob as eb
from keyring_types.types.user import UserKeyType

if TYPE_CHECKING:
    from keyring_types.core.handle import Key
    from keyring_types.core.record import KeyRecord

__all__ = ["EncryptedKeyType", "ecryptfs_auth_token", "EncryptedCommand", "EncryptedPayload", "MAX_PAYLOAD", "parse_payload", "master_key_secret", "quota_size", "set_user_decrypted_data"]

#: add_key/update payloads the type accepts (the kernel's 32767-byte check).
MAX_PAYLOAD = 32767
_USER_PREFIX = "user:"
_TRUSTED_PREFIX = "trusted:"
#: strsep(" \t"): every single space or tab separates, so doubled ones make empty tokens.
_SEPARATORS = re.compile("[ \t]")
_HEX = re.compile("[0-9A-Fa-f]*")
_COMMANDS = frozenset(("new", "load", "update"))
_FORMAT_WORDS = frozenset(eb.FORMATS)

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


@attrs.frozen
class EncryptedCommand:
    """One parsed payload: what ``datablob_parse`` in the kernel extracts."""

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


@attrs.define(eq=False, repr=False)
class EncryptedPayload:
    """The state of one encrypted key (the kernel's ``encrypted_key_payload``)."""

    format: str
    master_desc: str
    #: The length token exactly as typed ("+32", "032", "32\\n" survive); it is MAC'd and re-emitted.
    datalen_str: str
    datalen: int
    #: 16 bytes; for a key made by ``new``, the cffi ``char[16]`` they were drawn into
    #: (the native seal reads either in place; :meth:`iv_bytes` copies it out).
    iv: Any
    #: The kernel's payload: the decrypted data (``datalen`` bytes; the zero pad
    #: of a loaded blob is dropped, as the kernel drops it), or for ecryptfs the
    #: 740-byte auth token that holds the 64 decrypted bytes.
    data: SecretBuffer
    #: The datablob rows ``format\0master\0datalen\0`` every read MACs (made once).
    header: bytes = attrs.field(
        default=attrs.Factory(lambda self: eb.datablob_header(self.format, self.master_desc, self.datalen_str), takes_self=True)
    )

    def __repr__(self) -> str:
        return f"<EncryptedPayload {self.format} {self.master_desc} {self.datalen_str!r}>"

    def iv_bytes(self) -> bytes:
        """The IV as ``bytes``, whichever form it is held in."""
        return bytes(_ffi.buffer(self.iv)) if isinstance(self.iv, _ffi.CData) else self.iv

    def plaintext(self) -> memoryview:
        """A read-only view of the decrypted data (inside the auth token for ecryptfs)."""
        if self.format == "ecryptfs":
            return eb.ecryptfs_key_view(self.data)
        return self.data.view()[: self.datalen]

    def plaintext_address(self) -> Any:
        """A cffi pointer to the decrypted data, for the native seal (no copy)."""
        if self.format == "ecryptfs":
            return _ffi.cast("uint8_t *", self.data.address) + eb.ECRYPTFS_KEY_OFFSET
        return self.data.address


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


def parse_payload(data: bytes) -> EncryptedCommand:
    """Parse an add_key/update payload with the kernel's grammar (spec 1.2).

    ``EINVAL`` for an empty or oversize payload, an unknown command, a missing or
    malformed master, length or blob, a length outside the format's limits, or a
    plaintext token while user-supplied data is disabled.
    """
    if not 0 < len(data) <= MAX_PAYLOAD:
        raise error(errno.EINVAL, f"encrypted key payload must be 1..{MAX_PAYLOAD} bytes, got {len(data)}")
    # The kernel copies the payload into a C string: anything after a NUL is invisible.
    nul = data.find(b"\x00")
    text = (data if nul < 0 else data[:nul]).decode("utf-8", "surrogateescape")
    # str.split is the same cut as strsep(" \t") when there is no tab, and cheaper.
    tokens = _SEPARATORS.split(text) if "\t" in text else text.split(" ")
    # Absent trailing tokens read as None, as strsep() returns NULL past the end.
    ntok = len(tokens)
    if ntok < 6:
        tokens += [None] * (6 - ntok)  # type: ignore[list-item]

    command = tokens[0]
    if command not in _COMMANDS:
        raise error(errno.EINVAL, f"encrypted key command must be new, load or update, got {command!r}")
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
        raise error(errno.EINVAL, f"master key must be 'user:NAME' or 'trusted:NAME', got {master!r}")
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
        raise error(errno.EINVAL, f"encrypted key data length must be {eb.MIN_DATA_SIZE}..{eb.MAX_DATA_SIZE}, got {datalen_str!r}")
    plaintext_hex = extra if command == "new" else None
    if plaintext_hex is not None:
        if not _user_decrypted_data:
            raise error(errno.EINVAL, "user-supplied decrypted data is disabled (encrypted_keys.user_decrypted_data=0)")
        if len(plaintext_hex) != 2 * dlen or _HEX.fullmatch(plaintext_hex) is None:
            raise error(errno.EINVAL, f"user-supplied decrypted data must be {2 * dlen} hex digits")
    if fmt == "ecryptfs" and dlen != eb.ECRYPTFS_KEY_BYTES:
        raise error(errno.EINVAL, f"ecryptfs keys must be {eb.ECRYPTFS_KEY_BYTES} bytes, got {dlen}")
    if fmt == "enc32" and dlen != eb.ENC32_KEY_BYTES:
        raise error(errno.EINVAL, f"enc32 keys must be {eb.ENC32_KEY_BYTES} bytes, got {dlen}")
    effective = fmt if fmt is not None else "default"
    header = eb.datablob_header(effective, master, datalen_str)
    return EncryptedCommand(
        command, fmt, master, datalen_str, dlen, extra if command == "load" else None, plaintext_hex, header,
        _quota_for(effective, len(header), dlen), eb.hex_blob_len(dlen),
        command == "new" and plaintext_hex is None,
    )


# Parsing is a pure function of the payload bytes, and applications add many keys
# with one payload ("new default user:kmk 32") or one head ("load default
# user:kmk 32 <blob>"), so parses are reused: whole ``new`` payloads without
# caller plaintext, and the head of ``load`` payloads (everything before the
# blob, the last token).  Neither ever holds plaintext; both are bounded.
_parsed: dict[bytes, EncryptedCommand] = {}
_load_heads: dict[bytes, EncryptedCommand] = {}
_PARSED_MAX = 256


def _remember(cache: dict[bytes, EncryptedCommand], key: bytes, cmd: EncryptedCommand) -> None:
    if len(cache) >= _PARSED_MAX:
        cache.clear()
    cache[key] = cmd


def _parse_load_head(data: bytes) -> tuple[EncryptedCommand, bytes] | None:
    """:func:`parse_payload` of a ``load`` payload from the parse of its head, or None
    where that shortcut does not apply (the caller then parses in full).

    Returns the head's parse, shared and with an empty ``hex_blob``, and the blob:
    together they are the payload's parse.
    """
    # Tabs and NULs change the token cut; leave them to the full parser.  (Integer
    # needles: ``9 in data`` is a plain byte scan, several times cheaper than ``b"\t" in data``.)
    if len(data) > MAX_PAYLOAD or 9 in data or 0 in data:
        return None
    cut = data.rfind(32)
    head = data[:cut]
    tmpl = _load_heads.get(head)
    if tmpl is None:
        try:
            # The head with an empty last token: if the parser takes that very token
            # as the blob (the blob is token 4, or 3 without a format word, and the
            # head has that many spaces), the full payload's blob is exactly the real
            # last token and every other field is the same.
            tmpl = parse_payload(head + b" ")
        except OSError:
            return None
        blob_index = 4 if tmpl.format is not None else 3
        if tmpl.command != "load" or tmpl.hex_blob != "" or head.count(b" ") != blob_index - 1:
            return None
        _remember(_load_heads, head, tmpl)
    return tmpl, data[cut + 1 :]


def _parse_reusable(data: bytes) -> tuple[EncryptedCommand, bytes]:
    """:func:`parse_payload`, reusing earlier parses (same result, same errors).

    Returns the parse and, for a ``load`` whose head was reused, the blob, which
    the shared parse leaves empty (else ``b""``).
    """
    cmd = _parsed.get(data)
    if cmd is not None:
        return cmd, b""
    if data.startswith(b"load "):
        reused = _parse_load_head(data)
        if reused is not None:
            return reused
    cmd = parse_payload(data)
    if cmd.command == "new" and cmd.plaintext_hex is None:
        _remember(_parsed, data, cmd)
    return cmd, b""


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
            raise error(errno.EOPNOTSUPP, f"master key {master_desc!r}: trusted keys are not available") from None
    elif master_desc.startswith(_USER_PREFIX):
        type_name, name = "user", master_desc[len(_USER_PREFIX) :]
    else:
        raise error(errno.EINVAL, f"master key {master_desc!r} has no user: or trusted: prefix")
    record = current_caller(key).lookup_key(type_name, name)
    return record.ktype.secret(record)


def _master_material(key: KeyRecord, master_desc: str) -> tuple[Any, int, SecretBuffer | None]:
    """The master key as ``(pointer, length, copy)``; the caller wipes ``copy`` if not None.

    A ``user`` master is used in place, as the kernel's ``request_user_key`` hands
    back the user key's payload itself: the keyspace lock, held for the whole
    operation, keeps an update or revocation of the master from wiping it under
    us.  Other masters go through their type's ``secret()`` (a copy).  Errors as
    :func:`master_key_secret`.
    """
    if master_desc.startswith(_USER_PREFIX):
        record = current_caller(key).lookup_key("user", master_desc[len(_USER_PREFIX) :])
        payload = record.payload
        if type(record.ktype) is UserKeyType and type(payload) is SecretBuffer:
            # A user key's datalen is its payload's length (user_instantiate/update).
            # The slot is read directly (a property call costs as much as the rest of
            # this branch); a wiped buffer, which a live payload never is, would take
            # the property and its EKEYREVOKED.
            ptr = payload._ptr
            return (ptr if ptr is not None else payload.address), record.datalen, None
    copy = master_key_secret(key, master_desc)
    return copy.address, len(copy), copy


def _ecryptfs_data(description: str) -> tuple[SecretBuffer, Any]:
    """An ecryptfs key's payload (an empty auth token) and a pointer to where its key bytes go."""
    tok = eb.ecryptfs_auth_tok_empty(description)
    return tok, _ffi.cast("uint8_t *", tok.address) + eb.ECRYPTFS_KEY_OFFSET


class EncryptedKeyType(KeyType):
    """``encrypted``: see the module docstring; errno as spec §1.11."""

    name = "encrypted"

    def preparse(self, data: bytes) -> Preparsed:
        """Parse the payload (spec 1.2); ``EINVAL`` on bad input.  Nothing secret yet."""
        if type(data) is not bytes:
            data = bytes(data)
        # The kernel's type has no preparse, so nothing is charged before instantiate.
        # The base free_preparse suffices: the command holds nothing secret.
        cmd = _parsed.get(data)  # the commonest case, a "new" payload seen before
        if cmd is not None:
            return Preparsed(b"", cmd, 0)  # data, payload, quotalen
        # A load's blob rides in ``data`` when the (shared) parse of its head was reused:
        # the next commonest case, a load whose head was seen before, is inline here.
        if data.startswith(b"load ") and len(data) <= MAX_PAYLOAD and 9 not in data and 0 not in data:
            cut = data.rfind(32)
            cmd = _load_heads.get(data[:cut])
            if cmd is not None:
                return Preparsed(data[cut + 1 :], cmd, 0)
        cmd, blob = _parse_reusable(data)
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
                    data, iv = eb.native_new_ecryptfs(key.description)
                else:
                    data, iv = eb.native_new_secret(cmd.datalen)
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
            data, out = _ecryptfs_data(key.description)
        else:
            data = SecretBuffer(dlen)
            out = data.address
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
                mptr, mlen, copy = _master_material(key, cmd.master_desc)
                try:
                    eb.native_unseal_joined_into(mptr, mlen, mac_header, iv, ctmac, dlen, out)
                finally:
                    if copy is not None:
                        copy.wipe()
            else:
                iv = eb.native_new_material(out, dlen)
                if cmd.plaintext_hex is not None:
                    # Caller-supplied data replaces the random bytes.
                    _ffi.memmove(out, bytes.fromhex(cmd.plaintext_hex), dlen)
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
            raise error(errno.EINVAL, f"master key {cmd.master_desc!r} is not of the same kind as {old.master_desc!r}")
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
        mptr, mlen, copy = _master_material(key, p.master_desc)
        try:
            # Deterministic (same IV, data and master give the same blob), so nothing is cached.
            return eb.native_export(mptr, mlen, p.header, p.iv, p.plaintext_address(), p.datalen)
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
        ``EKEYREVOKED`` if the key has no payload.
        """
        p: EncryptedPayload | None = key.payload
        if p is None:
            raise error(errno.EKEYREVOKED, f"encrypted key {key.serial} has no payload")
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
    with key.secret() as mv:
        if len(mv) != eb.ECRYPTFS_KEY_BYTES:
            raise error(errno.EINVAL, f"key {key.serial} holds {len(mv)} bytes, not an ecryptfs key's 64")
        return eb.ecryptfs_auth_tok(key.description, mv)


if EncryptedKeyType.name not in registered_key_types():
    register_key_type(EncryptedKeyType)
