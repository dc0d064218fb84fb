"""The ``trusted`` key type (security/keys/trusted-keys/trusted_core.c).

Payloads follow the kernel's grammar exactly (spec §2.1)::

    new    KEYLEN [options]     KEYLEN 32..128 (decimal, as kstrtol)
    load   BLOB_HEX [options]   at most 512 blob bytes; an odd trailing nibble is dropped
    update [options]            keyctl update only; EPERM unless the key is migratable

tokenised on single spaces/tabs (``strsep``), the payload cut at its first NUL
byte as the kernel's C string is, 1..32767 bytes.  Options are the kernel's
(:mod:`keyring_types.trust.options`), each accepted only where the chosen trust
source supports it (``EINVAL`` otherwise), plus two of ours:

* ``source=<name>`` — the trust source for this key (default: see
  :mod:`keyring_types.trust.registry`); on ``update`` it may move a migratable key;
* ``rng=<name>`` — on ``new``, take the key from the trust source's RNG instead of
  the OS CSPRNG (``rng=kernel`` names the default explicitly).

``read()`` is the lowercase hex of the sealed blob, as ``keyctl pipe`` prints it;
the plaintext key stays in a SecretBuffer on the key and leaves only through
``secret()`` (a copy the caller wipes).  Every check happens in
``instantiate``/``update`` because the kernel's type has no ``preparse``: the
key's quota is charged first, and errors come in the kernel's order.
"""

from __future__ import annotations

import errno

import attrs

from keyring_types.core.keytype import (
    KeyType,
    Preparsed,
)
from keyring_types.core.record import KeyRecord
from keyring_types.errors import error
from keyring_types.grammar import as_payload, hex2bin, kstrtol, split_tokens
from keyring_types.osrng import fill_random
from keyring_types.secret import SecretBuffer
from keyring_types.trust.base import TrustSource
from keyring_types.trust.options import ParsedOptions, check_supported, parse_options
from keyring_types.trust.registry import (
    canonical_name,
    get_trust_source,
    is_source_name,
    source_names,
)

__all__ = [
    "MAX_BLOB_SIZE",
    "MAX_KEY_SIZE",
    "MIN_KEY_SIZE",
    "TRUSTED_PAYLOAD_DATALEN",
    "TrustedCommand",
    "TrustedKeyType",
    "TrustedPayload",
    "parse_payload",
    "trusted_payload",
]

MIN_KEY_SIZE = 32
MAX_KEY_SIZE = 128
MAX_BLOB_SIZE = 512
MAX_PAYLOAD = 32767
#: sizeof(struct trusted_key_payload) on 64-bit: rcu_head 16 + 2*u32 + 2 flags
#: + key[129] + blob[512] = 667, aligned to 8.  /proc/keys shows this constant.
TRUSTED_PAYLOAD_DATALEN = 672
#: ``rng=`` values meaning the OS CSPRNG (the kernel's ``trusted.rng=kernel``).
OS_RNG_NAMES = frozenset({"kernel", "os"})


@attrs.frozen(repr=False)
class TrustedCommand:
    """A parsed payload: ``command`` is new/load/update.

    The repr gives the command, the key length, the blob's size and the names of
    the options given; never the blob or an option's value.
    """

    command: str
    keylen: int = 0
    blob: bytes = b""
    opts: ParsedOptions = attrs.field(factory=lambda: parse_options(b""))

    def __repr__(self) -> str:
        return f"TrustedCommand({self.command!r}, keylen={self.keylen}, blob=<{len(self.blob)} bytes>, {self.opts!r})"


@attrs.define(eq=False, repr=False)
class TrustedPayload:
    """What a trusted key holds: its source, its blob, and the plaintext in secret memory."""

    source: str
    blob: bytes
    key: SecretBuffer
    migratable: bool

    def __repr__(self) -> str:
        return f"<TrustedPayload {self.source} {len(self.key)}-byte key, {len(self.blob)}-byte blob>"

    def wipe(self) -> None:
        self.key.wipe()


def parse_payload(data: bytes | str) -> TrustedCommand:
    """Parse a trusted-key payload (``datablob_parse`` + ``getoptions``).

    ``EINVAL``: not bytes or text, empty or over 32767 bytes, unknown command,
    KEYLEN not 32..128, blob over 512 bytes or not hex, or a bad option.
    Messages never repeat what was typed.
    """
    data = as_payload(data, "trusted key payload")
    if not 0 < len(data) <= MAX_PAYLOAD:
        raise error(errno.EINVAL, f"a trusted key payload must be 1..{MAX_PAYLOAD} bytes, got {len(data)}")
    text = data.split(b"\0", 1)[0]
    tokens = split_tokens(text)
    command = tokens[0]
    rest = tokens[1:]
    if command == b"new":
        if not rest:
            raise error(errno.EINVAL, "'new' needs a key length")
        try:
            keylen = kstrtol(rest[0], 10, "the key length")
        except OSError:
            # datablob_parse folds kstrtol's ERANGE into EINVAL.
            keylen = -1
        if not MIN_KEY_SIZE <= keylen <= MAX_KEY_SIZE:
            raise error(errno.EINVAL, f"the key length after 'new' must be a decimal {MIN_KEY_SIZE}..{MAX_KEY_SIZE}")
        return TrustedCommand("new", keylen=keylen, opts=parse_options(b" ".join(rest[1:])))
    if command == b"load":
        if not rest:
            raise error(errno.EINVAL, "'load' needs a hex blob")
        nbytes = len(rest[0]) // 2
        if nbytes > MAX_BLOB_SIZE:
            raise error(errno.EINVAL, f"sealed blob is {nbytes} bytes, more than {MAX_BLOB_SIZE}")
        blob = hex2bin(rest[0], nbytes, "the sealed blob")
        return TrustedCommand("load", blob=blob, opts=parse_options(b" ".join(rest[1:])))
    if command == b"update":
        return TrustedCommand("update", opts=parse_options(b" ".join(rest)))
    raise error(errno.EINVAL, "a trusted key payload must start with new, load or update")


def trusted_payload(command: str, arg: int | bytes | str | None = None, **options: object) -> bytes:
    """Write a payload in the kernel grammar from Python values.

    ``trusted_payload("new", 32, source="tpm2", keyhandle=0x81000001)`` gives
    ``b"new 32 source=tpm2 keyhandle=0x81000001"``; ``arg`` is the key length for
    ``new``, the blob (bytes, or its hex) for ``load``, nothing for ``update``.
    Handles are written in hex, ``keyauth``/``pcrinfo``/``policydigest`` bytes in
    hex, ``blobauth`` bytes in hex (they must then be 20 bytes) or a ``str``
    password as-is, ``migratable`` as 0/1.  The result is parsed back, so anything
    the grammar rejects is ``EINVAL`` here too.
    """
    if not isinstance(command, str):
        raise error(errno.EINVAL, f"the trusted key command must be a str, not {type(command).__name__}")
    parts: list[bytes] = [as_payload(command, "trusted key command")]
    if arg is not None:
        if isinstance(arg, bytes):
            parts.append(arg.hex().encode())
        elif isinstance(arg, (int, str)) and not isinstance(arg, bool):
            parts.append(_decimal(arg) if isinstance(arg, int) else as_payload(arg, "blob"))
        else:
            raise error(errno.EINVAL, f"the argument of '{command}' must be an int, bytes or str, not {type(arg).__name__}")
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = b"1" if value else b"0"
        elif name in ("keyhandle", "policyhandle") and isinstance(value, int):
            text = f"0x{value:x}".encode()
        elif isinstance(value, int):
            text = _decimal(value)
        elif isinstance(value, bytes):
            text = value.hex().encode()
        elif isinstance(value, str):
            text = as_payload(value, f"{name}= value")
        else:
            raise error(errno.EINVAL, f"{name}= takes an int, bytes or str, not {type(value).__name__}")
        parts.append(name.encode() + b"=" + text)
    payload = b" ".join(parts)
    parse_payload(payload)
    return payload


def _decimal(value: int) -> bytes:
    # str() of an int over 4300 digits raises ValueError; no such number fits the grammar.
    if value.bit_length() > 64:
        raise error(errno.EINVAL, "a number in a trusted key payload must fit in 64 bits")
    return str(value).encode()


class _Failed:
    """A preparse that could not make the key: the error, for instantiate to raise."""

    __slots__ = ("exc",)

    def __init__(self, exc: OSError) -> None:
        self.exc = exc

    def wipe(self) -> None:
        """Nothing secret to wipe (free_preparse calls this)."""


class TrustedKeyType(KeyType):
    """``trusted``: a random key sealed by a trust source; errno as spec §2.10."""

    name = "trusted"
    def_datalen = TRUSTED_PAYLOAD_DATALEN

    #: The seal or unseal of ``new``/``load`` happens in preparse, which the core
    #: runs without the keyspace lock: a slow or silent trust source holds up
    #: only this call, not every thread's key operations.
    preparse_blocks = True

    def preparse(self, data: bytes) -> Preparsed:
        """Keep the payload, and for ``new``/``load`` make the key now (seal or unseal).

        ``EINVAL`` if ``data`` is not bytes or text.  Any error making the key is
        kept for :meth:`instantiate` to raise, so errors come in the same order as
        when the kernel's type (which has no preparse) does it all in instantiate;
        ``update`` ignores the made key.
        """
        prep = Preparsed(data=as_payload(data), payload=None, quotalen=TRUSTED_PAYLOAD_DATALEN)
        try:
            prep.payload = self._make(prep.data)
        except OSError as exc:
            exc.__traceback__ = None
            prep.payload = _Failed(exc)
        return prep

    @staticmethod
    def _source(name: str | None) -> TrustSource:
        # A name from source= is an option value: an unknown one is not repeated.
        if name is not None and not is_source_name(name):
            raise error(errno.ENODEV, f"source= names no trust source this library knows (known: {', '.join(source_names())})")
        return get_trust_source(name)

    @staticmethod
    def _new_key(keylen: int, rng: str | None, source: TrustSource) -> SecretBuffer:
        buf = SecretBuffer(keylen)
        try:
            if rng is None or rng in OS_RNG_NAMES:
                fill_random(buf)
                return buf
            if canonical_name(rng) != source.name:
                raise error(errno.EINVAL, f"rng= must be 'kernel' or the key's trust source '{source.name}'")
            if not source.has_rng:
                raise error(errno.EINVAL, f"trust source '{source.name}' has no RNG of its own for rng=")
            source.get_random_into(buf.writable())
            return buf
        except BaseException:
            buf.wipe()
            raise

    @staticmethod
    def _seal(source: TrustSource, key: SecretBuffer, cmd: TrustedCommand, migratable: bool) -> bytes:
        # The flag is passed explicitly but not marked as given, so sources
        # without a migratable= option still accept it.
        options = attrs.evolve(cmd.opts.options, migratable=migratable)
        blob = source.seal(key, options)
        if len(blob) > MAX_BLOB_SIZE:
            raise error(errno.E2BIG, f"trust source '{source.name}' made a {len(blob)}-byte blob (max {MAX_BLOB_SIZE})")
        return blob

    def instantiate(self, key: KeyRecord, prep: Preparsed) -> None:
        """``new`` or ``load``: install the key :meth:`preparse` made.

        ``EINVAL`` (grammar, unsupported option, bad ``rng=``, ``update`` command),
        ``ENODEV`` (no such / unavailable source), ``EIO`` (short RNG), and the
        source's own errors on seal/unseal (``EBADMSG``, ``EFAULT``, ``EPERM`` ...).
        On error the key gets no payload.
        """
        made = prep.payload
        if isinstance(made, _Failed):
            raise made.exc
        payload = made if isinstance(made, TrustedPayload) else self._make(prep.data)
        prep.payload = None
        try:
            key.payload_reserve(TRUSTED_PAYLOAD_DATALEN)
        except BaseException:
            payload.wipe()
            raise
        key.payload = payload

    def _make(self, data: bytes) -> TrustedPayload:
        """Parse a ``new``/``load`` payload and seal a new key or unseal the blob (the source's I/O)."""
        cmd = parse_payload(data)
        if cmd.command == "update":
            raise error(errno.EINVAL, "'update' is only valid for an existing trusted key (keyctl update)")
        source = self._source(cmd.opts.source)
        check_supported(cmd.opts.options, source)
        if cmd.command == "new":
            migratable = source.migratable if cmd.opts.options.migratable is None else cmd.opts.options.migratable
            secret = self._new_key(cmd.keylen, cmd.opts.rng, source)
            try:
                blob = self._seal(source, secret, cmd, migratable)
            except BaseException:
                secret.wipe()
                raise
        else:
            if cmd.opts.rng is not None:
                raise error(errno.EINVAL, "rng= only applies to 'new'")
            unsealed = source.unseal(cmd.blob, cmd.opts.options)
            secret, migratable, blob = unsealed.secret, unsealed.migratable, cmd.blob
            if not MIN_KEY_SIZE <= len(secret) <= MAX_KEY_SIZE:
                secret.wipe()
                raise error(errno.EFAULT, f"unsealed key is {len(secret)} bytes, outside {MIN_KEY_SIZE}..{MAX_KEY_SIZE}")
        return TrustedPayload(source=source.name, blob=blob, key=secret, migratable=migratable)

    def update(self, key: KeyRecord, prep: Preparsed) -> None:
        """``update [options]``: reseal the same key with new options.

        ``ENOKEY`` for a negative key, ``EPERM`` unless the key is migratable,
        then ``EINVAL`` for a bad payload or a command other than ``update``;
        the source's errors on seal.  On error the key is unchanged.
        """
        old: TrustedPayload | None = key.payload
        if old is None:
            raise error(errno.ENOKEY, f"trusted key {key.serial} has no payload")
        if not old.migratable:
            raise error(errno.EPERM, f"trusted key {key.serial} is not migratable, so it cannot be updated")
        cmd = parse_payload(prep.data)
        if cmd.command != "update":
            raise error(errno.EINVAL, f"keyctl update of a trusted key takes 'update [options]', not '{cmd.command}'")
        if cmd.opts.rng is not None:
            raise error(errno.EINVAL, "rng= only applies to 'new'")
        source = self._source(cmd.opts.source or old.source)
        check_supported(cmd.opts.options, source)
        migratable = old.migratable and cmd.opts.options.migratable is not False
        secret = SecretBuffer.from_bytes(old.key.view())
        try:
            blob = self._seal(source, secret, cmd, migratable)
        except BaseException:
            secret.wipe()
            raise
        key.payload = TrustedPayload(source=source.name, blob=blob, key=secret, migratable=migratable)
        old.wipe()

    def read(self, key: KeyRecord) -> bytes:
        """The sealed blob as lowercase hex (what ``keyctl pipe`` prints); never the key."""
        p: TrustedPayload = key.payload
        return p.blob.hex().encode("ascii")

    def describe(self, key: KeyRecord) -> str:
        if key.payload is None:
            return key.description
        return f"{key.description}: {key.datalen}"

    def destroy(self, key: KeyRecord) -> None:
        """Wipe the plaintext key."""
        p: TrustedPayload | None = key.payload
        key.payload = None
        if p is not None:
            p.wipe()

    def secret(self, key: KeyRecord) -> SecretBuffer:
        """A new SecretBuffer with the unsealed key; ``EKEYREVOKED`` if it has none."""
        p: TrustedPayload | None = key.payload
        if p is None:
            raise error(errno.EKEYREVOKED, f"trusted key {key.serial} has no payload")
        return SecretBuffer.from_bytes(p.key.view())

