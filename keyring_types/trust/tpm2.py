"""The ``tpm2`` trust source: the kernel's TPM 2.0 trusted keys, through tpm2-pytss.

What the kernel's ``trusted_tpm2.c`` does, done from user space with one ESAPI
context per source (spec §2.2, §2.4):

* seal = one TPM2_Create of a KEYEDHASH sealed-data object under the
  persistent parent ``keyhandle=``, authorised with ``keyauth=``; the result is
  wrapped in the kernel's ASN.1 ``TPMKey`` blob (``tpm2_blob``).
* unseal = TPM2_Load + TPM2_Unseal + TPM2_FlushContext, with ``blobauth=`` as
  the object's password, or with the caller's policy session (``policyhandle=``)
  for objects sealed with ``policydigest=``.  The loaded object is flushed on
  every path, errors included.
* The parent's ESYS_TR is looked up once per handle and kept (one
  TPM2_ReadPublic per source and parent, not per operation).

Sessions are plain password sessions, as with ``CONFIG_TCG_TPM2_HMAC=n``: the
kernel (>= 6.10) wraps seal/unseal in an HMAC session with parameter
encryption, which costs a TPM2_StartAuthSession (and a salt key) per call; the
TPM here is reached through the local resource manager or swtpm on loopback.
The blobs are identical either way.

The TPM is reached through the TCTI string in ``KEYRING_TYPES_TPM2_TCTI``
(default ``device:/dev/tpmrm0``, the kernel's resource manager).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from typing import Any

from keyring_types.errors import KeyringError, error
from keyring_types.secret import SecretBuffer
from keyring_types.trust import tpm2_blob
from keyring_types.trust.base import ALL_OPTIONS, TrustedOptions, TrustSource, Unsealed

__all__ = ["Tpm2Source", "TCTI_ENV", "DEFAULT_TCTI", "HASH_ALGORITHMS", "tcti_reachable"]

TCTI_ENV = "KEYRING_TYPES_TPM2_TCTI"
DEFAULT_TCTI = "device:/dev/tpmrm0"

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
_TPM2_RC_HASH = 0x083
_TPM2_RC_FMT1 = 0x080
_TPM_ST_SESSIONS = 0x8002
_TPM_CC_UNSEAL = 0x0000015E
_TSS2_RC_LAYER_SHIFT = 16
_ESYS_RC_BAD_TR = 0x00070018
# Layers whose codes are TPM response codes (the TPM itself, or a resource manager relaying one).
_TPM_LAYERS = {0, 11}
_CAP_SYS_ADMIN = 21
_HR_SHIFT = 24
_HT_TRANSIENT = 0x80
_PCR_COUNT = 24


def _parse_tcti(tcti: str) -> tuple[str, dict[str, str], str]:
    name, _, conf = tcti.partition(":")
    fields: dict[str, str] = {}
    for part in conf.split(","):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return name.strip(), fields, conf


def tcti_reachable(tcti: str, timeout: float = 0.25) -> bool:
    """Cheap probe: can a TPM be reached through ``tcti``?

    ``device:`` checks the character device is openable for read and write;
    ``swtpm:``/``mssim:`` open (and close) a TCP connection to the command port.
    Other TCTIs are assumed reachable when tpm2-pytss is installed.
    """
    import importlib.util

    if importlib.util.find_spec("tpm2_pytss") is None:
        return False
    name, fields, conf = _parse_tcti(tcti)
    if name == "device":
        path = conf or "/dev/tpmrm0"
        return os.access(path, os.R_OK | os.W_OK)
    if name in ("swtpm", "mssim"):
        host = fields.get("host", "localhost")
        try:
            port = int(fields.get("port", "2321"))
        except ValueError:
            return False
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False
    return True


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

    One ESAPI context is opened on first use and reused until :meth:`close`.
    Errors follow the kernel: ``EINVAL`` bad options (missing ``keyhandle=``,
    unknown ``hash=``, wrong-size ``policydigest=``, TPM2_RC_HASH on seal),
    ``EPERM`` any other TPM refusal (wrong ``keyauth``/``blobauth``, tampered
    blob, wrong TPM), ``E2BIG`` inconsistent blob sizes, ``EFAULT`` unsealed
    data of the wrong length, ``ENODEV`` no TPM or no tpm2-pytss, ``EIO`` the
    TCTI failed mid-command.
    """

    name = "tpm2"
    migratable = True
    has_rng = True
    supported_options = ALL_OPTIONS

    def __init__(self, tcti: str | None = None) -> None:
        """Use ``tcti`` (default: ``$KEYRING_TYPES_TPM2_TCTI`` or ``device:/dev/tpmrm0``).

        Nothing is opened until the first operation.
        """
        self.tcti: str = tcti or os.environ.get(TCTI_ENV) or DEFAULT_TCTI
        self._lock = threading.RLock()
        self._tcti_obj: Any = None
        self._esapi: Any = None
        self._parents: dict[int, Any] = {}
        #: keyauth last set on each cached parent ESYS_TR (TR_SetAuth is local, but not free).
        self._parent_auth: dict[int, bytes] = {}
        #: TPM2B_PUBLIC templates by (nameAlg, attributes, policy): built once, read-only to ESAPI.
        self._templates: dict[tuple[int, int, bytes], Any] = {}
        self._lock_digest: bytes | None = None
        #: Set when the transport failed; the context is reopened before the next operation.
        self._broken = False

    def __repr__(self) -> str:
        state = "open" if self._esapi is not None else "closed"
        return f"<Tpm2Source tcti={self.tcti!r} {state}>"

    @classmethod
    def available(cls) -> bool:
        """Whether the TPM named by ``$KEYRING_TYPES_TPM2_TCTI`` answers (no TPM command sent)."""
        return tcti_reachable(os.environ.get(TCTI_ENV) or DEFAULT_TCTI)

    # ------------------------------------------------------------------ context

    def _context(self) -> Any:
        """The ESAPI context, opened on first use; ``ENODEV`` if it cannot be."""
        if self._broken:
            self.close()
        if self._esapi is not None:
            return self._esapi
        try:
            from tpm2_pytss import ESAPI, TSS2_Exception
            from tpm2_pytss.TCTILdr import TCTILdr
        except ImportError:
            raise error(errno.ENODEV, "the tpm2 trust source needs tpm2-pytss (install keyring_types[tpm])") from None
        try:
            tcti = TCTILdr.parse(self.tcti)
        except (TSS2_Exception, ValueError, RuntimeError) as exc:
            raise error(errno.ENODEV, f"cannot open TPM TCTI {self.tcti!r}: {exc}") from None
        try:
            esapi = ESAPI(tcti)
        except TSS2_Exception as exc:
            tcti.finalize()
            raise error(errno.ENODEV, f"cannot initialise ESAPI on {self.tcti!r}: {exc}") from None
        self._tcti_obj = tcti
        self._esapi = esapi
        return esapi

    def close(self) -> None:
        """Finalize the ESAPI context and the TCTI (a later call reopens them)."""
        with self._lock:
            esapi, tcti = self._esapi, self._tcti_obj
            self._esapi = self._tcti_obj = None
            self._broken = False
            self._parents.clear()
            self._parent_auth.clear()
            if esapi is not None:
                esapi.close()
            if tcti is not None:
                tcti.finalize()

    def __enter__(self) -> Tpm2Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _parent(self, esapi: Any, handle: int, keyauth: bytes) -> Any:
        """ESYS_TR of the persistent parent, cached per handle; its auth set to ``keyauth``."""
        from tpm2_pytss import TSS2_Exception

        tr = self._parents.get(handle)
        if tr is not None:
            if self._parent_auth.get(handle) == keyauth:
                return tr
            try:
                esapi.tr_set_auth(tr, keyauth)
                self._parent_auth[handle] = bytes(keyauth)
                return tr
            except TSS2_Exception:
                # Someone sharing this context (see ``esapi``) closed the ESYS_TR.
                del self._parents[handle]
        tr = self._call(esapi.tr_from_tpmpublic, "read the parent key", handle)
        esapi.tr_set_auth(tr, keyauth)
        self._parents[handle] = tr
        self._parent_auth[handle] = bytes(keyauth)
        return tr

    def _forget_parent(self, handle: int) -> None:
        # A refused parent may have been evicted or replaced: look it up afresh next
        # time.  Its ESYS_TR is not closed: ESAPI shares it with anyone using ``esapi``.
        self._parents.pop(handle, None)
        self._parent_auth.pop(handle, None)

    def _with_parent(self, esapi: Any, handle: int, keyauth: bytes, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        """Call ``fn(parent_tr, *args)``; errno as the kernel.  A parent ESYS_TR closed
        behind our back (ESYS_RC_BAD_TR, no TPM command sent) is looked up once more."""
        from tpm2_pytss import TSS2_Exception

        seal = kw.pop("seal", False)
        for attempt in (0, 1):
            parent = self._parent(esapi, handle, keyauth)
            try:
                return fn(parent, *args, **kw)
            except TSS2_Exception as exc:
                self._forget_parent(handle)
                if int(exc.rc) == _ESYS_RC_BAD_TR and attempt == 0:
                    continue
                raise self._map_error(int(exc.rc), what, seal=seal) from None
        raise error(errno.EPERM, f"cannot {what}: parent handle {handle:#x} unusable")

    def _call(self, fn: Any, what: str, *args: Any, seal: bool = False, **kwargs: Any) -> Any:
        """Run one ESAPI call, turning TSS errors into the kernel's errno."""
        from tpm2_pytss import TSS2_Exception

        try:
            return fn(*args, **kwargs)
        except TSS2_Exception as exc:
            raise self._map_error(int(exc.rc), what, seal=seal) from None

    def _map_error(self, rc: int, what: str, *, seal: bool = False) -> KeyringError:
        layer = rc >> _TSS2_RC_LAYER_SHIFT
        code = rc & 0xFFFF
        if layer in _TPM_LAYERS:
            # tpm2_rc_value(): format-1 codes carry a parameter/handle number to mask off.
            value = code & 0xBF if code & _TPM2_RC_FMT1 else code
            if seal and value == _TPM2_RC_HASH:
                return error(errno.EINVAL, f"TPM cannot {what}: hash algorithm not supported (rc {code:#x})")
            return error(errno.EPERM, f"TPM refused to {what} (rc {code:#x})")
        if layer == 10:  # TCTI: the transport broke; reopen before the next operation
            self._broken = True
            return error(errno.EIO, f"TPM transport failed during '{what}' (rc {rc:#x})")
        return error(errno.EPERM, f"cannot {what}: TSS error {rc:#x}")

    # ------------------------------------------------------------------ options

    @staticmethod
    def _hash(options: TrustedOptions) -> tuple[int, int]:
        alg = HASH_ALGORITHMS.get(options.hash)
        if alg is None:
            raise error(errno.EINVAL, f"hash={options.hash!r} is not a hash algorithm TPM2 trusted keys accept")
        return alg

    @staticmethod
    def _check_common(options: TrustedOptions) -> None:
        unknown = options.given - ALL_OPTIONS
        if unknown:
            raise error(errno.EINVAL, f"unknown trusted-key option(s): {', '.join(sorted(unknown))}")
        if len(options.blobauth) > MAX_BLOBAUTH:
            raise error(errno.EINVAL, f"blobauth is {len(options.blobauth)} bytes, at most {MAX_BLOBAUTH} allowed")
        if options.pcrlock is not None and not 0 <= options.pcrlock < _PCR_COUNT:
            raise error(errno.EINVAL, f"pcrlock={options.pcrlock} is not a PCR index (0..{_PCR_COUNT - 1})")
        if options.pcrlock and not _has_cap_sys_admin():
            raise error(errno.EPERM, "pcrlock= needs CAP_SYS_ADMIN")
        if options.keyhandle is not None and not 0 <= options.keyhandle <= 0xFFFFFFFF:
            raise error(errno.EINVAL, f"keyhandle={options.keyhandle:#x} does not fit in 32 bits")
        if options.policyhandle is not None and not 0 <= options.policyhandle <= 0xFFFFFFFF:
            raise error(errno.EINVAL, f"policyhandle={options.policyhandle:#x} does not fit in 32 bits")

    # ------------------------------------------------------------------ seal

    def seal(self, secret: SecretBuffer, options: TrustedOptions) -> bytes:
        """Seal ``secret`` (32..128 bytes) under ``keyhandle=`` and return the kernel's TPMKey blob.

        Raises ``EINVAL`` (no keyhandle, bad size/hash/policydigest, TPM2_RC_HASH),
        ``EPERM`` (TPM refusal, e.g. wrong keyauth; pcrlock without
        CAP_SYS_ADMIN), ``E2BIG`` (blob over 512 bytes), ``ENODEV``/``EIO``.
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

        from tpm2_pytss.constants import ESYS_TR
        from tpm2_pytss.types import TPM2B_SENSITIVE_CREATE

        in_public = self._template(alg, attributes, bytes(policy or b""))
        with self._lock, _SensitiveCreate(TPM2B_SENSITIVE_CREATE, secret, options.blobauth) as in_sensitive:
            esapi = self._context()
            out_private, out_public, *_ = self._with_parent(
                esapi,
                options.keyhandle,
                options.keyauth,
                "seal the key",
                esapi.create,
                in_sensitive,
                in_public,
                session1=ESYS_TR.PASSWORD,
                seal=True,
            )
            blob = tpm2_blob.encode_tpmkey(
                options.keyhandle, out_public.marshal(), out_private.marshal(), empty_auth=not options.blobauth
            )
            if options.pcrlock:
                self._pcrlock(esapi, options.pcrlock)
        return blob

    def _template(self, alg: int, attributes: int, policy: bytes) -> Any:
        """The TPM2B_PUBLIC the kernel sends to TPM2_Create (spec §2.4), cached per shape."""
        key = (alg, attributes, policy)
        cached = self._templates.get(key)
        if cached is not None:
            return cached
        from tpm2_pytss.types import TPM2B_DIGEST, TPM2B_PUBLIC, TPMT_PUBLIC

        template = TPMT_PUBLIC()
        template.type = _TPM_ALG_KEYEDHASH
        template.nameAlg = alg
        template.objectAttributes = attributes
        if policy:
            template.authPolicy = TPM2B_DIGEST(policy)
        template.parameters.keyedHashDetail.scheme.scheme = _TPM_ALG_NULL
        in_public = TPM2B_PUBLIC(publicArea=template)
        if len(self._templates) >= 32:  # policies vary; keep the cache small
            self._templates.clear()
        self._templates[key] = in_public
        return in_public

    # ------------------------------------------------------------------ unseal

    def unseal(self, blob: bytes, options: TrustedOptions) -> Unsealed:
        """Load ``blob`` (TPMKey or the old raw format) and unseal it; the object is always flushed.

        Raises ``EINVAL`` (old-format blob without keyhandle), ``E2BIG``
        (inconsistent sizes), ``EPERM`` (TPM refusal: wrong keyauth/blobauth,
        unsatisfied policy, tampered blob, another TPM), ``EFAULT`` (unsealed
        length outside 32..128), ``ENODEV``/``EIO``.
        """
        self._check_common(options)
        parsed = tpm2_blob.decode(blob if isinstance(blob, bytes) else bytes(blob))
        keyhandle = parsed.parent if parsed.parent is not None else options.keyhandle
        if not keyhandle:
            raise error(errno.EINVAL, "keyhandle= is required to load an old-format TPM2 blob")

        from tpm2_pytss import TSS2_Exception
        from tpm2_pytss.constants import ESYS_TR
        from tpm2_pytss.types import TPM2B_PRIVATE, TPM2B_PUBLIC

        try:
            in_public, used_pub = TPM2B_PUBLIC.unmarshal(parsed.public)
            in_private, used_priv = TPM2B_PRIVATE.unmarshal(parsed.private)
        except TSS2_Exception as exc:
            # The kernel hands these bytes to the TPM, which refuses them: EPERM.
            raise error(errno.EPERM, f"sealed object does not unmarshal: {exc}") from None
        if used_pub != len(parsed.public) or used_priv != len(parsed.private):
            raise error(errno.EPERM, "sealed object: TPM2B size disagrees with the structure inside it")

        with self._lock:
            esapi = self._context()
            try:
                obj = self._with_parent(
                    esapi, keyhandle, options.keyauth, "load the sealed object", esapi.load, in_private, in_public
                )
            except KeyringError:
                self._pcrlock_after_failure(esapi, options)
                raise
            data: SecretBuffer | None = None
            try:
                if options.policyhandle:
                    data = self._unseal_with_policy(esapi, obj, options.policyhandle, options.blobauth)
                else:
                    if options.blobauth:  # a freshly loaded ESYS_TR already has the empty auth
                        esapi.tr_set_auth(obj, options.blobauth)
                    out = self._call(esapi.unseal, "unseal the key", obj, session1=ESYS_TR.PASSWORD)
                    data = _take_sensitive(out)
            except KeyringError:
                self._pcrlock_after_failure(esapi, options)
                raise
            finally:
                try:
                    self._flush(esapi, obj)
                except BaseException:
                    if data is not None:
                        data.wipe()
                    raise
            assert data is not None  # both branches above assign it or raise
            try:
                result = _split_unsealed(data, parsed)
            except BaseException:
                data.wipe()
                raise
            if result.secret is not data:
                data.wipe()
            if options.pcrlock:
                try:
                    self._pcrlock(esapi, options.pcrlock)
                except KeyringError:
                    result.secret.wipe()
                    raise
        return result

    def _flush(self, esapi: Any, obj: Any) -> None:
        from tpm2_pytss import TSS2_Exception

        try:
            esapi.flush_context(obj)
        except TSS2_Exception as exc:
            # Only a broken transport stops a flush; the next operation starts a clean context.
            self._broken = True
            raise error(errno.EIO, f"cannot flush the loaded sealed object: {exc}") from None

    def _unseal_with_policy(self, esapi: Any, obj: Any, session: int, blobauth: bytes) -> SecretBuffer:
        """TPM2_Unseal authorised by the caller's policy session, sent through the TCTI.

        ESAPI cannot use a session it did not start, so the command is built
        here as the kernel builds it: the session handle, an empty nonce,
        attributes 0 (the TPM ends the session after use) and ``blobauth`` in
        the clear (which satisfies TPM2_PolicyPassword; PolicyPCR needs none).
        """
        item = int(esapi.tr_get_tpm_handle(obj))
        auth = struct.pack(">IHBH", session, 0, 0, len(blobauth)) + bytes(blobauth)
        params = struct.pack(">II", item, len(auth)) + auth
        command = struct.pack(">HII", _TPM_ST_SESSIONS, 10 + len(params), _TPM_CC_UNSEAL) + params
        from tpm2_pytss import TSS2_Exception

        try:
            self._tcti_obj.transmit(command)
            response = self._tcti_obj.receive(4096, -1)
        except TSS2_Exception as exc:
            raise self._map_error(int(exc.rc), "unseal the key with a policy session") from None
        if len(response) < 10:
            raise error(errno.EFAULT, "short TPM2_Unseal response")
        tag, size, rc = struct.unpack_from(">HII", response, 0)
        if rc != 0:
            raise self._map_error(rc, "unseal the key with the policy session")
        if tag != _TPM_ST_SESSIONS or size != len(response) or len(response) < 16:
            raise error(errno.EFAULT, "malformed TPM2_Unseal response")
        data_len = int.from_bytes(response[14:16], "big")
        if 16 + data_len > len(response):
            raise error(errno.EFAULT, "TPM2_Unseal response shorter than its data")
        return SecretBuffer.from_bytes(memoryview(response)[16 : 16 + data_len])

    # ------------------------------------------------------------------ pcrlock / rng

    def _pcrlock_after_failure(self, esapi: Any, options: TrustedOptions) -> None:
        # The kernel extends the PCR after an unseal attempt whatever its outcome;
        # so do we, but the unseal error is what the caller sees (no masking).
        if options.pcrlock:
            try:
                self._pcrlock(esapi, options.pcrlock)
            except KeyringError:
                pass

    def _pcrlock(self, esapi: Any, pcr: int) -> None:
        """Extend PCR ``pcr`` in every allocated bank with this source's random digest (EINVAL on failure)."""
        from tpm2_pytss import TSS2_Exception
        from tpm2_pytss.constants import ESYS_TR, TPM2_CAP
        from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA

        if self._lock_digest is None:
            # trusted_tpm1.c init_digests(): one random digest, chosen once, extended into all banks.
            self._lock_digest = self.get_random(64)
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
                ffi = _tss_ffi()
                ffi.memmove(ha._cdata.digest.sha512, self._lock_digest[:size], size)
                values.append(ha)
            esapi.pcr_extend(ESYS_TR.PCR0 + pcr, TPML_DIGEST_VALUES(values), session1=ESYS_TR.PASSWORD)
        except TSS2_Exception as exc:
            raise error(errno.EINVAL, f"cannot extend PCR {pcr} for pcrlock: {exc}") from None

    def get_random(self, n: int) -> bytes:
        """``n`` bytes from the TPM's RNG (TPM2_GetRandom, repeated as the TPM returns at most a digest).

        Raises ``EINVAL`` for negative ``n``, ``EIO`` if the TPM returns nothing.
        """
        if n < 0:
            raise error(errno.EINVAL, f"cannot return {n} random bytes")
        out = bytearray()
        with self._lock:
            esapi = self._context()
            while len(out) < n:
                chunk = bytes(self._call(esapi.get_random, "return random bytes", min(n - len(out), 64)))
                if not chunk:
                    raise error(errno.EIO, "TPM2_GetRandom returned no bytes")
                out += chunk
        return bytes(out)

    # ------------------------------------------------------------------ diagnostics

    @property
    def esapi(self) -> Any:
        """The source's ESAPI context (opened if needed).

        For callers that build a policy session for ``policyhandle=``: behind a
        resource manager (``/dev/tpmrm0``) a session is visible only on the
        connection that started it, so it must be started on this one.  ESAPI
        keeps one ESYS_TR per TPM handle: a caller that closes the parent's is
        tolerated, one that changes its auth must :meth:`close` the source.
        """
        with self._lock:
            return self._context()

    def transient_handles(self) -> list[int]:
        """The transient object handles the TPM holds now (TPM2_GetCapability; for leak checks)."""
        from tpm2_pytss.constants import TPM2_CAP

        with self._lock:
            esapi = self._context()
            _, cap = self._call(esapi.get_capability, "list handles", TPM2_CAP.HANDLES, _HT_TRANSIENT << _HR_SHIFT, 64)
            handles = cap.data.handles
            return [int(handles.handle[i]) for i in range(handles.count)]


def _tss_ffi() -> Any:
    from tpm2_pytss._libtpm2_pytss import ffi

    return ffi


class _SensitiveCreate:
    """A TPM2B_SENSITIVE_CREATE holding the key, zeroed when the block ends.

    The key is copied from secret memory straight into the C structure (never
    into a Python bytes object) and wiped there after TPM2_Create.
    """

    def __init__(self, cls: Any, secret: SecretBuffer, blobauth: bytes) -> None:
        self._cls = cls
        self._secret = secret
        self._blobauth = bytes(blobauth)
        self._obj: Any = None

    def __enter__(self) -> Any:
        ffi = _tss_ffi()
        obj = self._cls()
        c = obj._cdata
        n = len(self._secret)
        c.sensitive.data.size = n
        ffi.memmove(c.sensitive.data.buffer, self._secret.view(), n)
        c.sensitive.userAuth.size = len(self._blobauth)
        if self._blobauth:
            ffi.memmove(c.sensitive.userAuth.buffer, self._blobauth, len(self._blobauth))
        self._obj = obj
        return obj

    def __exit__(self, *exc: object) -> None:
        ffi = _tss_ffi()
        c = self._obj._cdata
        size = ffi.sizeof(c.sensitive)
        ffi.memmove(ffi.addressof(c.sensitive), bytes(size), size)


def _take_sensitive(out: Any) -> SecretBuffer:
    """Copy a TPM2B_SENSITIVE_DATA returned by ESAPI into secret memory and zero the original."""
    ffi = _tss_ffi()
    c = out._cdata
    n = int(c.size)
    try:
        return SecretBuffer.from_bytes(ffi.buffer(c.buffer, n))
    finally:
        ffi.memmove(c.buffer, bytes(n), n)


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
