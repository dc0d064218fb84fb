"""The ``tsm`` trust source: trusted keys sealed under an SEV-SNP guest's derived key.

The sealing key comes from the guest firmware's derived-key request (MSG_KEY_REQ, the
``SNP_GET_DERIVED_KEY`` ioctl of ``/dev/sev-guest``): a key the firmware derives from a root
only it holds (the chip's VCEK root or the VM's VMRK) and the guest fields the request selects.
A blob sealed with ``measurement`` selected unseals only in a guest launched with the same
measurement; with ``guest_svn`` or ``tcb`` selected, only in a guest at least that new (the
firmware refuses to mix values above the guest's own, and the blob records the ones it used).

Where the firmware comes from (``KEYRING_TYPES_TSM_FIRMWARE``): ``sev-guest`` (default when
``/dev/sev-guest`` exists) or ``emulated``: the emulated SEV-SNP guest in the state directory
(:class:`keyring_types.attest.providers.EmulatedSevSnp`), never chosen silently.
``KEYRING_TYPES_TSM_FIELDS`` (default ``measurement,policy,guest_svn,tcb``) and
``KEYRING_TYPES_TSM_ROOT`` (``vcek`` or ``vmrk``) choose the request; a blob records its own,
so unsealing asks for exactly what sealing asked.

Blob layout (ours; 80 bytes of overhead)::

    magic "KTSM" | version 1 | flags | MSG_KEY_REQ (32) | nonce (12) | AES-256-GCM(key) | tag (16)

``flags`` bit 1: sealed with a ``blobauth``.  The header is GCM associated data; the AES key is
HKDF-SHA-256 of the derived key with the blobauth as context.  No key is ever migratable: the
derived key exists in one guest's firmware.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
from pathlib import Path
from typing import ClassVar, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyring_types.attest import sevguest
from keyring_types.errors import error
from keyring_types.secret import SecretBuffer
from keyring_types.trust.base import TrustedOptions, TrustSource, Unsealed
from keyring_types.trust.options import check_supported

__all__ = ["DEFAULT_FIELDS", "ENV_FIELDS", "ENV_FIRMWARE", "ENV_ROOT", "TsmSource"]

ENV_FIRMWARE: Final = "KEYRING_TYPES_TSM_FIRMWARE"
ENV_FIELDS: Final = "KEYRING_TYPES_TSM_FIELDS"
ENV_ROOT: Final = "KEYRING_TYPES_TSM_ROOT"
DEFAULT_FIELDS: Final = "measurement,policy,guest_svn,tcb"
MAGIC: Final = b"KTSM"
VERSION: Final = 1
FLAG_BLOBAUTH: Final = 0x02
_HEADER: Final = struct.Struct(">4sBB32s12s")
TAG_SIZE: Final = 16
OVERHEAD: Final = _HEADER.size + TAG_SIZE
MIN_KEY, MAX_KEY = 32, 128


def _firmware_from_env() -> sevguest.GuestFirmware:
    choice = os.environ.get(ENV_FIRMWARE) or ("sev-guest" if sevguest.SevGuestDevice.available() else "")
    if choice == "sev-guest":
        return sevguest.SevGuestDevice()
    if choice == "emulated":
        from keyring_types.attest.providers import EmulatedSevSnp

        return EmulatedSevSnp()
    raise error(errno.ENODEV, f"tsm trust source: no {sevguest.DEVICE}, and {ENV_FIRMWARE} is not 'sev-guest' or 'emulated'")


class TsmSource(TrustSource):
    """Seal to the SEV-SNP guest's derived key.

    ``firmware`` is a :class:`keyring_types.attest.sevguest.GuestFirmware` (``None``: from
    ``KEYRING_TYPES_TSM_FIRMWARE``, see the module docstring); ``fields`` names the guest fields
    mixed into new seals (``"measurement,policy"``; ``None``: ``KEYRING_TYPES_TSM_FIELDS`` or
    :data:`DEFAULT_FIELDS`); ``root`` ``"vcek"`` or ``"vmrk"``; ``vmpl`` the VMPL mixed in.
    ``EINVAL`` for an unknown field or root, ``ENODEV`` when there is no firmware.
    """

    name: ClassVar[str] = "tsm"
    migratable: ClassVar[bool] = False
    supported_options: ClassVar[frozenset[str]] = frozenset({"blobauth"})
    has_rng: ClassVar[bool] = False

    def __init__(
        self,
        firmware: sevguest.GuestFirmware | None = None,
        *,
        fields: str | None = None,
        root: str | None = None,
        vmpl: int = 0,
    ) -> None:
        self._fields = sevguest.parse_fields(fields if fields is not None else os.environ.get(ENV_FIELDS, DEFAULT_FIELDS))
        self._root = root or os.environ.get(ENV_ROOT) or "vcek"
        sevguest.DerivedKeyRequest(fields=self._fields, root=self._root, vmpl=vmpl)  # validates
        self._vmpl = vmpl
        self._firmware = firmware if firmware is not None else _firmware_from_env()
        self._lock = threading.Lock()

    @classmethod
    def available(cls) -> bool:
        """A real ``/dev/sev-guest``, or the emulated guest chosen by ``KEYRING_TYPES_TSM_FIRMWARE``."""
        choice = os.environ.get(ENV_FIRMWARE)
        if choice == "emulated":
            return True
        return choice in (None, "", "sev-guest") and sevguest.SevGuestDevice.available()

    @property
    def firmware(self) -> sevguest.GuestFirmware:
        return self._firmware

    @property
    def state_paths(self) -> list[Path]:
        """Where the firmware keeps state on disk (the emulated guest's directory), if anywhere."""
        d = getattr(self._firmware, "state_dir", None)
        return [Path(d)] if d is not None else []

    def _aead(self, request: sevguest.DerivedKeyRequest, blobauth: bytes) -> AESGCM:
        # The derived key and the AES key stay in secret memory (AESGCM keeps its own copy
        # inside libcrypto's context); both are wiped before this returns.
        derived = self._firmware.derived_key(request)
        aes = SecretBuffer(32)
        dv, out = derived.view(), aes.writable()
        try:
            info = b"keyring_types tsm seal v1\0" + bytes([len(blobauth)]) + blobauth
            HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive_into(dv, out)
            return AESGCM(out)
        finally:
            dv.release()
            out.release()
            aes.wipe()
            derived.wipe()

    def seal(self, secret: SecretBuffer, options: TrustedOptions) -> bytes:
        """Seal ``secret`` (32..128 bytes) under the key derived for the current guest.

        ``EINVAL`` for a bad length or an unsupported option; the firmware's errors as they come.
        """
        check_supported(options, self)
        if not MIN_KEY <= len(secret) <= MAX_KEY:
            raise error(errno.EINVAL, f"key length {len(secret)} is outside {MIN_KEY}..{MAX_KEY}")
        # Mix the guest's own SVN and TCB: a guest older than this one cannot derive the key.
        svn, tcb = self._firmware.current_versions()
        request = sevguest.DerivedKeyRequest(
            fields=self._fields,
            vmpl=self._vmpl,
            guest_svn=svn if self._fields & sevguest.FIELDS["guest_svn"] else 0,
            tcb_version=tcb if self._fields & sevguest.FIELDS["tcb"] else 0,
            root=self._root,
        )
        flags = FLAG_BLOBAUTH if options.blobauth else 0
        header = _HEADER.pack(MAGIC, VERSION, flags, request.pack(), os.urandom(12))
        mv = secret.view()
        try:
            sealed = self._aead(request, options.blobauth).encrypt(header[-12:], mv, header)
        finally:
            mv.release()
        return header + sealed

    def unseal(self, blob: bytes, options: TrustedOptions) -> Unsealed:
        """Unseal a ``tsm`` blob in this guest.

        ``EINVAL``: not a ``tsm`` blob (magic, version, length, reserved request bits) or an
        unsupported option; ``EPERM``: the blob needs a ``blobauth`` and none was given, or the
        firmware refuses its request (this guest's SVN or TCB is below the sealing guest's, or
        its VLEK/VMPL differs); ``EBADMSG``: the derived key differs (another measurement, policy,
        chip, ...), or the blob was altered, or the ``blobauth`` is wrong.
        """
        check_supported(options, self)
        blob = bytes(blob)
        if not OVERHEAD + MIN_KEY <= len(blob) <= OVERHEAD + MAX_KEY:
            raise error(errno.EINVAL, f"a tsm-sealed blob is {OVERHEAD + MIN_KEY}..{OVERHEAD + MAX_KEY} bytes, got {len(blob)}")
        magic, version, flags, raw_request, nonce = _HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise error(errno.EINVAL, "not a tsm-sealed blob (bad magic); was it sealed by another trust source?")
        if version != VERSION:
            raise error(errno.EINVAL, f"unsupported tsm blob version {version}")
        if flags & ~FLAG_BLOBAUTH:
            raise error(errno.EBADMSG, f"tsm blob has unknown flags 0x{flags:02x}")
        request = sevguest.DerivedKeyRequest.unpack(raw_request)
        if flags & FLAG_BLOBAUTH and not options.blobauth:
            raise error(errno.EPERM, "blob was sealed with a blobauth; give blobauth= to load it")
        try:
            aead = self._aead(request, options.blobauth)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            raise error(errno.EPERM, f"the guest firmware refuses the blob's derived-key request: {exc.strerror}") from None
        out = SecretBuffer(len(blob) - OVERHEAD)
        # Straight into secret memory: a plaintext ``bytes`` from decrypt() could not be wiped.
        buf = out.writable()
        try:
            aead.decrypt_into(nonce, blob[_HEADER.size :], blob[: _HEADER.size], buf)
        except InvalidTag:
            out.wipe()
            raise error(
                errno.EBADMSG,
                "tsm blob failed authentication: sealed in a guest with another measurement, policy or chip, "
                "or a wrong blobauth, or the blob was altered",
            ) from None
        except BaseException:
            out.wipe()
            raise
        finally:
            buf.release()
        return Unsealed(secret=out, migratable=False)
