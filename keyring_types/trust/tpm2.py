"""The ``tpm2`` trust source: the kernel's TPM 2.0 trusted keys, on :mod:`keyring_types.tpm`.

What the kernel's ``trusted_tpm2.c`` does, done from user space on one
:class:`~keyring_types.tpm.connection.TpmConnection` per source (spec §2.2, §2.4):

* seal = one TPM2_Create of a KEYEDHASH sealed-data object under the
  persistent parent ``keyhandle=``, authorised with ``keyauth=``; the result is
  wrapped in the kernel's ASN.1 ``TPMKey`` blob (``tpm2_blob``).
* unseal = TPM2_Load + TPM2_Unseal + TPM2_FlushContext, with ``blobauth=`` as
  the object's password, or with the caller's policy session (``policyhandle=``)
  for objects sealed with ``policydigest=``.  The loaded object is flushed on
  every path, errors included.

These commands are marshalled in secret memory and sent straight to the TCTI
(:mod:`keyring_types.tpm.commands`): the key, the unsealed data and the
passwords never pass through tpm2-tss' heap buffers, and no password is kept
between operations.  Sessions are plain password sessions, as with
``CONFIG_TCG_TPM2_HMAC=n``: the kernel (>= 6.10) wraps seal/unseal in an HMAC
session with parameter encryption, which costs a TPM2_StartAuthSession (and a
salt key) per call; the TPM here is reached through the local resource manager
or swtpm on loopback.  The blobs are identical either way.

The TPM is named by ``KEYRING_TYPES_TPM2_TCTI`` (default ``device:/dev/tpmrm0``).
"""

from __future__ import annotations

import errno
import os
import struct
from typing import Any, Self

from keyring_types.errors import KeyringError, error
from keyring_types.secret import SecretBuffer
from keyring_types.tpm import commands
from keyring_types.tpm.connection import TpmConnection, configured_tcti, tcti_reachable
from keyring_types.trust import tpm2_blob
from keyring_types.trust.base import ALL_OPTIONS, TrustedOptions, TrustSource, Unsealed

__all__ = ["HASH_ALGORITHMS", "Tpm2Source"]

#: ``hash=`` names (the kernel's hash_algo_name[] entries TPM2 accepts) -> (TPM_ALG_ID, digest size).
HASH_ALGORITHMS: dict[str, tuple[int, int]] = {
    "sha1": (0x0004, 20),
    "sha256": (0x000B, 32),
    "sha384": (0x000C, 48),
    "sha512": (0x000D, 64),
    "sm3-256": (0x0012, 32),
}

# include/keys/trusted-type.h MIN_KEY_SIZE / MAX_KEY_SIZE.
MIN_KEY_SIZE = 32
MAX_KEY_SIZE = 128
#: The kernel passes blobauth in a TPM_DIGEST_SIZE (SHA-1 sized) buffer.
MAX_BLOBAUTH = 20

_TPM_ALG_KEYEDHASH = 0x0008
_TPM_ALG_NULL = 0x0010
_CAP_SYS_ADMIN = 21
_PCR_COUNT = 24


def _has_cap_sys_admin() -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    except OSError:
        pass
    return os.geteuid() == 0


class Tpm2Source(TrustSource):
    """Trusted keys sealed by a TPM 2.0 (the kernel's ``trusted.source=tpm``).

    One TPM connection is opened on first use and reused until :meth:`close`.
    Errors follow the kernel: ``EINVAL`` bad options (missing ``keyhandle=``,
    unknown ``hash=``, wrong-size ``policydigest=``, TPM2_RC_HASH on seal),
    ``EPERM`` any other TPM refusal (wrong ``keyauth``/``blobauth``, tampered
    blob, wrong TPM, missing parent, dictionary-attack lockout), ``E2BIG``
    inconsistent blob sizes, ``EFAULT`` unsealed data of the wrong length,
    ``ENODEV`` no TPM or no tpm2-pytss, ``EIO`` the TCTI failed mid-command.
    Where EPERM would point the wrong way the TPM's code decides
    (:mod:`keyring_types.tpm.errors`): ``ENOMEM`` TPM out of object or session
    memory, ``EAGAIN`` TPM busy.  Every message names the decoded TPM code and
    the fix.
    """

    name = "tpm2"
    migratable = True
    has_rng = True
    supported_options = ALL_OPTIONS

    def __init__(self, tcti: str | None = None) -> None:
        """Use ``tcti`` (default: ``$KEYRING_TYPES_TPM2_TCTI`` or ``device:/dev/tpmrm0``).

        Nothing is opened until the first operation.
        """
        self._conn = TpmConnection(tcti)
        self.tcti: str = self._conn.tcti
        #: TPM2B_PUBLIC templates by (nameAlg, attributes, policy), marshalled once.
        self._templates: dict[tuple[int, int, bytes], bytes] = {}
        self._lock_digest: bytes | None = None

    def __repr__(self) -> str:
        state = "open" if self._conn.is_open else "closed"
        return f"<Tpm2Source tcti={self.tcti!r} {state}>"

    @classmethod
    def available(cls) -> bool:
        """Whether the TPM named by ``$KEYRING_TYPES_TPM2_TCTI`` answers (no TPM command sent)."""
        return tcti_reachable(configured_tcti())

    @property
    def connection(self) -> TpmConnection:
        """The source's TPM connection."""
        return self._conn

    def close(self) -> None:
        """Finalize the ESAPI context and the TCTI (a later call reopens them)."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ options

    @staticmethod
    def _hash(options: TrustedOptions) -> tuple[int, int]:
        alg = HASH_ALGORITHMS.get(options.hash)
        if alg is None:
            known = ", ".join(sorted(HASH_ALGORITHMS))
            raise error(errno.EINVAL, f"hash= names no hash algorithm TPM2 trusted keys accept (known: {known})")
        return alg

    @staticmethod
    def _check_common(options: TrustedOptions) -> None:
        unknown = options.given - ALL_OPTIONS
        if unknown:
            raise error(errno.EINVAL, f"unknown trusted-key option(s): {', '.join(sorted(unknown))}")
        if len(options.blobauth) > MAX_BLOBAUTH:
            raise error(errno.EINVAL, f"blobauth is {len(options.blobauth)} bytes, at most {MAX_BLOBAUTH} allowed")
        if options.pcrlock is not None and not 0 <= options.pcrlock < _PCR_COUNT:
            raise error(errno.EINVAL, f"pcrlock= is not a PCR index (0..{_PCR_COUNT - 1})")
        if options.pcrlock and not _has_cap_sys_admin():
            raise error(errno.EPERM, "pcrlock= needs CAP_SYS_ADMIN")
        if options.keyhandle is not None and not 0 <= options.keyhandle <= 0xFFFFFFFF:
            raise error(errno.EINVAL, "keyhandle= does not fit in 32 bits")
        if options.policyhandle is not None and not 0 <= options.policyhandle <= 0xFFFFFFFF:
            raise error(errno.EINVAL, "policyhandle= does not fit in 32 bits")

    # ------------------------------------------------------------------ seal

    def seal(self, secret: SecretBuffer, options: TrustedOptions) -> bytes:
        """Seal ``secret`` (32..128 bytes) under ``keyhandle=`` and return the kernel's TPMKey blob.

        Raises ``EINVAL`` (no keyhandle, bad size/hash/policydigest, TPM2_RC_HASH),
        ``EPERM`` (TPM refusal, e.g. wrong keyauth; pcrlock without
        CAP_SYS_ADMIN), ``ENOMEM`` (TPM out of object memory), ``E2BIG`` (blob
        over 512 bytes), ``ENODEV``/``EIO``.
        """
        self._check_common(options)
        if not options.keyhandle:
            raise error(errno.EINVAL, "keyhandle= is required to seal a TPM2 trusted key")
        if not MIN_KEY_SIZE <= len(secret) <= MAX_KEY_SIZE:
            raise error(errno.EINVAL, f"key of {len(secret)} bytes; TPM2 seals {MIN_KEY_SIZE}..{MAX_KEY_SIZE}")
        alg, digest_size = self._hash(options)
        policy = options.policydigest
        if policy is not None and len(policy) != digest_size:
            raise error(
                errno.EINVAL, f"policydigest is {len(policy)} bytes, {options.hash} needs {digest_size}"
            )
        migratable = self.migratable if options.migratable is None else options.migratable
        attributes = 0
        if not policy:
            attributes |= tpm2_blob.TPMA_OBJECT_USER_WITH_AUTH
        if not migratable:
            attributes |= tpm2_blob.TPMA_OBJECT_FIXED_TPM | tpm2_blob.TPMA_OBJECT_FIXED_PARENT
        in_public = self._template(alg, attributes, bytes(policy or b""))
        conn = self._conn
        with conn.lock:
            key = secret.view()
            try:
                private, public = commands.create(
                    conn, options.keyhandle, options.keyauth, key, options.blobauth, in_public
                )
            finally:
                key.release()
            blob = tpm2_blob.encode_tpmkey(options.keyhandle, public, private, empty_auth=not options.blobauth)
            if options.pcrlock:
                self._pcrlock(options.pcrlock)
        return blob

    def _template(self, alg: int, attributes: int, policy: bytes) -> bytes:
        """The marshalled TPM2B_PUBLIC the kernel sends to TPM2_Create (spec §2.4), cached per shape."""
        key = (alg, attributes, policy)
        cached = self._templates.get(key)
        if cached is not None:
            return cached
        # TPMT_PUBLIC: type, nameAlg, objectAttributes, authPolicy, keyedHash scheme NULL, empty unique.
        area = struct.pack(">HHIH", _TPM_ALG_KEYEDHASH, alg, attributes, len(policy)) + policy
        area += struct.pack(">HH", _TPM_ALG_NULL, 0)
        in_public = struct.pack(">H", len(area)) + area
        if len(self._templates) >= 32:  # policies vary; keep the cache small
            self._templates.clear()
        self._templates[key] = in_public
        return in_public

    # ------------------------------------------------------------------ unseal

    def unseal(self, blob: bytes, options: TrustedOptions) -> Unsealed:
        """Load ``blob`` (TPMKey or the old raw format) and unseal it; the object is always flushed.

        Raises ``EINVAL`` (old-format blob without keyhandle), ``E2BIG``
        (inconsistent sizes), ``EPERM`` (TPM refusal: wrong keyauth/blobauth,
        unsatisfied policy, tampered blob, another TPM, lockout), ``ENOMEM`` (TPM
        out of object memory), ``EFAULT`` (unsealed length outside 32..128),
        ``ENODEV``/``EIO``.
        """
        self._check_common(options)
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise error(errno.EINVAL, f"a TPM2 blob is bytes, not {type(blob).__name__}")
        parsed = tpm2_blob.decode(bytes(blob))
        keyhandle = parsed.parent if parsed.parent is not None else options.keyhandle
        if not keyhandle:
            raise error(errno.EINVAL, "keyhandle= is required to load an old-format TPM2 blob")
        conn = self._conn
        with conn.lock:
            try:
                item = commands.load(conn, keyhandle, options.keyauth, parsed.private, parsed.public)
            except KeyringError:
                self._pcrlock_after_failure(options)
                raise
            data: SecretBuffer | None = None
            try:
                session = options.policyhandle or commands.TPM_RS_PW
                data = commands.unseal(conn, item, session, options.blobauth)
            except KeyringError:
                self._pcrlock_after_failure(options)
                self._flush_quietly(item)
                raise
            try:
                commands.flush_context(conn, item)
                result = _split_unsealed(data, parsed)
            except BaseException:
                data.wipe()
                raise
            if result.secret is not data:
                data.wipe()
            if options.pcrlock:
                try:
                    self._pcrlock(options.pcrlock)
                except KeyringError:
                    result.secret.wipe()
                    raise
        return result

    def _flush_quietly(self, item: int) -> None:
        # The operation's own error is what the caller sees; a flush that fails
        # too means the transport broke, and the connection is reopened anyway.
        try:
            commands.flush_context(self._conn, item)
        except KeyringError:
            pass

    # ------------------------------------------------------------------ pcrlock / rng

    def _pcrlock_after_failure(self, options: TrustedOptions) -> None:
        # The kernel extends the PCR after an unseal attempt whatever its outcome;
        # so do we, but the unseal error is what the caller sees (no masking).
        if options.pcrlock:
            try:
                self._pcrlock(options.pcrlock)
            except KeyringError:
                pass

    def _pcrlock(self, pcr: int) -> None:
        """Extend PCR ``pcr`` in every allocated bank with this source's random digest (EINVAL on failure)."""
        from tpm2_pytss import TSS2_Exception
        from tpm2_pytss._libtpm2_pytss import ffi
        from tpm2_pytss.constants import ESYS_TR, TPM2_CAP
        from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA

        if self._lock_digest is None:
            # trusted_tpm1.c init_digests(): one random digest, chosen once, extended into all banks.
            self._lock_digest = self.get_random(64)
        esapi = self._conn.esapi
        try:
            _, cap = esapi.get_capability(TPM2_CAP.PCRS, 0, 1)
            selections = cap.data.assignedPCR
            values = []
            for i in range(selections.count):
                sel = selections.pcrSelections[i]
                if not any(bytes(sel.pcrSelect)[: sel.sizeofSelect]):
                    continue
                size = {0x0004: 20, 0x000B: 32, 0x000C: 48, 0x000D: 64, 0x0012: 32}.get(int(sel.hash))
                if size is None:
                    continue
                ha = TPMT_HA(hashAlg=sel.hash)
                ffi.memmove(ha._cdata.digest.sha512, self._lock_digest[:size], size)
                values.append(ha)
            esapi.pcr_extend(ESYS_TR.PCR0 + pcr, TPML_DIGEST_VALUES(values), session1=ESYS_TR.PASSWORD)
        except TSS2_Exception as exc:
            raise error(errno.EINVAL, f"cannot extend PCR {pcr} for pcrlock: {exc}") from None

    def get_random(self, n: int) -> bytes:
        """``n`` bytes from the TPM's RNG (TPM2_GetRandom, repeated as the TPM returns at most a digest).

        Raises ``EINVAL`` for negative ``n``, ``EIO`` if the TPM returns nothing.
        Key material is better taken with :meth:`get_random_into` (no ``bytes`` copy).
        """
        if n < 0:
            raise error(errno.EINVAL, f"cannot return {n} random bytes")
        out = bytearray(n)
        commands.get_random_into(self._conn, memoryview(out))
        return bytes(out)

    def get_random_into(self, out: memoryview) -> None:
        """Fill ``out`` (e.g. ``SecretBuffer.writable()``) from the TPM's RNG, through secret memory only.

        Raises ``EIO`` if the TPM returns nothing, ``ENODEV`` without a TPM.
        """
        commands.get_random_into(self._conn, out)

    # ------------------------------------------------------------------ diagnostics

    @property
    def esapi(self) -> Any:
        """The source's ESAPI context (opened if needed).

        For callers that build a policy session for ``policyhandle=``: behind a
        resource manager (``/dev/tpmrm0``) a session is visible only on the
        connection that started it, so it must be started on this one.
        """
        return self._conn.esapi

    def transient_handles(self) -> list[int]:
        """The transient object handles the TPM holds now (TPM2_GetCapability; for leak checks)."""
        return self._conn.transient_handles()


def _split_unsealed(data: SecretBuffer, parsed: tpm2_blob.Tpm2Blob) -> Unsealed:
    """Apply the kernel's length check and migratable rule to unsealed bytes (EFAULT on bad length)."""
    view = data.view()
    if parsed.old_format:
        # Pre-5.13 kernels sealed key || migratable byte, attributes told nothing.
        if len(view) < 1:
            raise error(errno.EFAULT, "old-format unsealed data is empty")
        key_len = len(view) - 1
        migratable = bool(view[key_len])
    else:
        key_len = len(view)
        migratable = parsed.migratable
    if not MIN_KEY_SIZE <= key_len <= MAX_KEY_SIZE:
        raise error(errno.EFAULT, f"unsealed key of {key_len} bytes is outside {MIN_KEY_SIZE}..{MAX_KEY_SIZE}")
    if key_len == len(view):
        return Unsealed(secret=data, migratable=migratable)  # already exactly the key: no second copy
    return Unsealed(secret=SecretBuffer.from_bytes(view[:key_len]), migratable=migratable)
