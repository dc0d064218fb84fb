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

import errno
import hashlib
import os
import re
from typing import TYPE_CHECKING

import attrs

from keyring_types.core.context import current_caller
from keyring_types.core.keytype import KeyType, Preparsed, lookup_key_type, register_key_type, registered_key_types
from keyring_types.errors import error
from keyring_types.secret import SecretBuffer, ct_memcmp
from keyring_types.types import encrypted_blob as eb

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

    @property
    def effective_format(self) -> str:
        return self.format if self.format is not None else "default"


@attrs.define(eq=False, repr=False)
class EncryptedPayload:
    """The state of one encrypted key (the kernel's ``encrypted_key_payload``)."""

    format: str
    master_desc: str
    #: The length token exactly as typed ("+32", "032", "32\\n" survive); it is MAC'd and re-emitted.
    datalen_str: str
    datalen: int
    iv: bytes
    #: The kernel's payload: the decrypted data (its first ``datalen`` bytes; a loaded
    #: key keeps the zero pad after them), or for ecryptfs the 740-byte auth token
    #: that holds the 64 decrypted bytes.
    data: SecretBuffer
    #: The last export and a fingerprint (SHA-256 of the AUTH key) of the master it
    #: was made under: a read under the same master is deterministic (same IV, same
    #: plaintext), so it is reused.  The fingerprint tells no more than the public
    #: blob's HMAC already does.
    cache_tag: bytes | None = None
    cache_blob: bytes | None = None

    def __repr__(self) -> str:
        return f"<EncryptedPayload {self.format} {self.master_desc} {self.datalen_str!r}>"

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
        self.cache_tag = None
        self.cache_blob = None


def _fingerprint(auth_key: bytes) -> bytes:
    return hashlib.sha256(auth_key).digest()


_urandom_fd = -1


def _fill_random(out: memoryview) -> None:
    """Fill ``out`` from the OS CSPRNG straight into secret memory (``os.urandom``
    would leave a ``bytes`` copy of the key on the heap).  ``EIO`` on a short read."""
    global _urandom_fd
    if _urandom_fd < 0:
        # Opened once: an open() per key would cost more than the rest of ``new``.
        _urandom_fd = os.open("/dev/urandom", os.O_RDONLY | os.O_CLOEXEC)
    done = 0
    while done < len(out):
        n = os.readv(_urandom_fd, [out[done:]])
        if n <= 0:
            raise error(errno.EIO, f"the OS RNG returned {done} of {len(out)} bytes")
        done += n


def quota_size(fmt: str, master_desc: str, datalen_str: str, datalen: int) -> int:
    """Bytes charged to the owner (spec 1.10): payload + datablob + HMAC + 1."""
    payload_len = eb.ECRYPTFS_AUTH_TOK_SIZE if fmt == "ecryptfs" else datalen
    datablob_len = len(eb.datablob_header(fmt, master_desc, datalen_str)) + eb.IV_SIZE + 1 + eb.padded_len(datalen)
    return payload_len + datablob_len + eb.HASH_SIZE + 1


def _valid_master_desc(desc: str, orig: str | None = None) -> bool:
    # valid_master_desc(): a known prefix, a non-empty name, and (on update) the old prefix.
    for prefix in (_TRUSTED_PREFIX, _USER_PREFIX):
        if desc.startswith(prefix):
            if len(desc) == len(prefix):
                return False
            return orig is None or orig.startswith(prefix)
    return False


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

    def tok(i: int) -> str | None:
        return tokens[i] if i < len(tokens) else None

    command = tokens[0]
    if command not in ("new", "load", "update"):
        raise error(errno.EINVAL, f"encrypted key command must be new, load or update, got {command!r}")
    word = tok(1)
    if word is None:
        raise error(errno.EINVAL, "encrypted key payload has no master key")
    if word in eb.FORMATS:
        fmt: str | None = word
        master = tok(2)
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

    datalen_str = tok(i)
    if datalen_str is None:
        raise error(errno.EINVAL, "encrypted key payload has no data length")
    extra = tok(i + 1)
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
    return EncryptedCommand(command, fmt, master, datalen_str, dlen, extra if command == "load" else None, plaintext_hex)


def master_key_secret(master_desc: str) -> SecretBuffer:
    """The master key's bytes, found in the caller's keyrings (a new SecretBuffer to wipe).

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
    record = current_caller().lookup_key(type_name, name)
    return record.ktype.secret(record)


class EncryptedKeyType(KeyType):
    """``encrypted``: see the module docstring; errno as spec §1.11."""

    name = "encrypted"

    def preparse(self, data: bytes) -> Preparsed:
        """Parse the payload (spec 1.2); ``EINVAL`` on bad input.  Nothing secret yet."""
        cmd = parse_payload(bytes(data))
        # The kernel's type has no preparse, so nothing is charged before instantiate.
        return Preparsed(data=b"", payload=cmd, quotalen=0)

    def free_preparse(self, prep: Preparsed) -> None:
        prep.payload = None

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
        fmt = cmd.effective_format
        old_reserved = key.datalen
        key.payload_reserve(quota_size(fmt, cmd.master_desc, cmd.datalen_str, cmd.datalen))
        try:
            payload = self._make_payload(key, cmd, fmt)
        except BaseException:
            key.payload_reserve(old_reserved)
            raise
        key.payload = payload
        prep.payload = None

    def _make_payload(self, key: KeyRecord, cmd: EncryptedCommand, fmt: str) -> EncryptedPayload:
        assert cmd.datalen_str is not None
        if fmt == "ecryptfs" and not eb.valid_ecryptfs_desc(key.description):
            raise error(errno.EINVAL, f"ecryptfs key description must be 16 hex digits, got {key.description!r}")
        if cmd.command == "load":
            assert cmd.hex_blob is not None
            sealed = eb.parse_hex_blob(cmd.hex_blob.encode("utf-8", "surrogateescape"), cmd.datalen)
            master = master_key_secret(cmd.master_desc)
            try:
                mview = master.view()
                auth = eb.derive_auth_key(mview)
                # A format-less blob carries the legacy HMAC (no format row).
                eb.verify(auth, cmd.format, cmd.master_desc, cmd.datalen_str, cmd.datalen, sealed)
                # Kept with its zero pad: plaintext() and secret() cut it to datalen.
                plain = eb.decrypt_padded(eb.derive_enc_key(mview), sealed.iv, sealed.ciphertext)
            finally:
                master.wipe()
            tag = _fingerprint(auth) if cmd.format is not None else None
            iv = sealed.iv
        else:
            iv = os.urandom(eb.IV_SIZE)
            plain = SecretBuffer(cmd.datalen)
            out = plain.writable()
            try:
                if cmd.plaintext_hex is not None:
                    out[:] = bytes.fromhex(cmd.plaintext_hex)
                else:
                    _fill_random(out)
            except BaseException:
                plain.wipe()
                raise
            finally:
                out.release()
            tag = None
        if fmt == "ecryptfs":
            try:
                data = eb.ecryptfs_auth_tok(key.description, plain.view()[: eb.ECRYPTFS_KEY_BYTES])
            finally:
                plain.wipe()
        else:
            data = plain
        payload = EncryptedPayload(fmt, cmd.master_desc, cmd.datalen_str, cmd.datalen, iv, data)
        if tag is not None:
            # The loaded blob is what a read under this master returns (the
            # separator normalised to 00, hex lowercased).
            payload.cache_tag = tag
            payload.cache_blob = eb.export(fmt, cmd.master_desc, cmd.datalen_str, sealed)
        return payload

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
        master = master_key_secret(p.master_desc)
        try:
            mview = master.view()
            auth = eb.derive_auth_key(mview)
            tag = _fingerprint(auth)
            if p.cache_blob is not None and p.cache_tag is not None and ct_memcmp(p.cache_tag, tag):
                return p.cache_blob
            sealed = eb.seal_with(eb.derive_enc_key(mview), auth, p.format, p.master_desc, p.datalen_str, p.iv, p.plaintext())
            blob = eb.export(p.format, p.master_desc, p.datalen_str, sealed)
        finally:
            master.wipe()
        p.cache_tag, p.cache_blob = tag, blob
        return blob

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
