"""The configfs-tsm provider: attestation reports through ``/sys/kernel/config/tsm/report``.

Linux 6.7 merged the RFC's idea as a configfs interface (``drivers/virt/coco/tsm.c``, later
``guest/report.c``).  One request, as go-configfs-tsm's one-shot ``Get`` does it:

1. ``mkdir <root>/<entry>`` (``ENXIO`` when no provider is registered in the kernel);
2. read ``generation``: the expected value, plus one for every attribute written after;
3. write ``inblob`` (user data, zero-padded to 64 bytes: sev-guest and tdx-guest demand
   exactly 64), then ``privlevel`` and ``service_provider``/``service_guid``/
   ``service_manifest_version`` where the entry shows them and the request asks;
4. read ``auxblob``, ``outblob``, ``manifestblob`` (those shown), ``provider``;
5. read ``generation`` again: a value other than the expected one means another writer
   touched the entry between steps 2 and 5, so the blobs may answer someone else's inblob.
   The request is repeated (:attr:`ConfigfsTsm.attempts` times, then ``EBUSY``);
6. ``rmdir`` the entry, if this provider made it.

configfs commits a binary attribute only when its file is closed and ignores the result, so a
write the kernel refused (``EBUSY`` when the generation counter would lap the reads) is seen
only through ``generation``; step 5 catches it too.  Blobs are read to end of file, whatever
their size: kernels since 6.x allow 16 MiB outblobs (TDX DICE quotes), older ones 32 KiB.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import uuid
from pathlib import Path
from typing import Final

import attrs

from keyring_types.attest.tsm import TsmRequest
from keyring_types.errors import error

__all__ = ["DEFAULT_ROOT", "EXTENDED_OFFSET", "INBLOB_SIZE", "ConfigfsReport", "ConfigfsTsm"]

DEFAULT_ROOT: Final = "/sys/kernel/config/tsm/report"
#: ``TSM_REPORT_INBLOB_MAX``; both merged providers require exactly this many bytes.
INBLOB_SIZE: Final = 64
#: Where ``format=extended`` puts the auxblob in a ``tsm`` key's blob (as the RFC's SEV provider did).
EXTENDED_OFFSET: Final = 16384
_CHUNK: Final = 1 << 20
_GENERATION_WRAP: Final = 1 << 64
#: service_provider, service_guid, service_manifest_version (None: not written).
_Service = tuple[str | None, str | None, int | None]


@attrs.frozen
class ConfigfsReport:
    """What one request returned, all from one generation of one entry.

    ``auxblob`` and ``manifestblob`` are ``None`` where the entry does not show them (tdx-guest
    shows neither; sev-guest shows ``manifestblob`` only under an SVSM) and ``b""`` when empty.
    """

    outblob: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    auxblob: bytes | None = attrs.field(repr=lambda b: "None" if b is None else f"<{len(b)} bytes>")
    manifestblob: bytes | None = attrs.field(repr=lambda b: "None" if b is None else f"<{len(b)} bytes>")
    provider: str
    generation: int


def _os_error(exc: OSError, what: str) -> OSError:
    # Keep the kernel's errno; say which step of the ABI failed (never what was written).
    return error(exc.errno or errno.EIO, f"configfs-tsm: {what}: {os.strerror(exc.errno or errno.EIO)}")


class ConfigfsTsm:
    """A ``tsm`` provider (``name`` ``"configfs-tsm"``) on the kernel's configfs-tsm report ABI.

    ``root`` is the report directory (a test gives the mount of the emulated one,
    :mod:`keyring_types.attest.configfs_fuse`).  ``entry`` ``None`` makes a fresh entry per
    request and removes it afterwards (no other writer can know its name); a name uses that
    entry (made if missing, kept), as an agent that owns a bind-mounted entry would, and
    relies on the generation check against other writers (requests through one provider
    object take turns).  Thread-safe.
    """

    name = "configfs-tsm"
    #: How many times a request is made before a concurrent writer is reported as ``EBUSY``.
    attempts: int = 8

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_ROOT, *, entry: str | None = None) -> None:
        """``EINVAL`` for an ``entry`` that is not one plain directory name."""
        if entry is not None and (not entry or "/" in entry or entry in (".", "..")):
            raise error(errno.EINVAL, "configfs-tsm: entry must be a plain directory name")
        self.root = Path(root)
        self.entry = entry
        self._lock = threading.Lock()

    @classmethod
    def available(cls, root: str | os.PathLike[str] = DEFAULT_ROOT) -> bool:
        """Whether ``root`` exists (configfs mounted and the tsm module loaded)."""
        return Path(root).is_dir()

    # -- file system calls, one per ABI step -----------------------------------------------
    @staticmethod
    def _read(path: Path) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                parts = []
                while chunk := os.read(fd, _CHUNK):
                    parts.append(chunk)
                return b"".join(parts)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _os_error(exc, f"read of {path.name}") from None

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        # One write() and close(): configfs takes a text attribute's value from one write and
        # commits a binary attribute at close.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                n = os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _os_error(exc, f"write of {path.name}") from None
        if n != len(data):
            raise error(errno.EIO, f"configfs-tsm: short write to {path.name}")

    def _generation(self, entry: Path) -> int:
        text = self._read(entry / "generation")
        try:
            return int(text.strip())
        except ValueError:
            raise error(errno.EBADMSG, "configfs-tsm: generation is not a decimal number") from None

    def _once(self, entry: Path, inblob: bytes, privlevel: int | None, service: _Service) -> ConfigfsReport | None:
        # The kernel's counter is an unsigned long: it wraps.
        expected = self._generation(entry)
        self._write(entry / "inblob", inblob)
        expected = (expected + 1) % _GENERATION_WRAP
        if privlevel is not None:
            if not (entry / "privlevel").exists():
                raise error(errno.EINVAL, "configfs-tsm: this provider has no privlevel attribute")
            self._write(entry / "privlevel", f"{privlevel}\n".encode())
            expected = (expected + 1) % _GENERATION_WRAP
        for attr, value in zip(("service_provider", "service_guid", "service_manifest_version"), service, strict=True):
            if value is None:
                continue
            if not (entry / attr).exists():
                raise error(errno.EINVAL, f"configfs-tsm: this provider has no {attr} attribute (no SVSM)")
            self._write(entry / attr, f"{value}\n".encode())
            expected = (expected + 1) % _GENERATION_WRAP
        aux = self._read(entry / "auxblob") if (entry / "auxblob").exists() else None
        out = self._read(entry / "outblob")
        manifest = self._read(entry / "manifestblob") if (entry / "manifestblob").exists() else None
        provider = self._read(entry / "provider").decode("ascii", "replace").strip()
        if self._generation(entry) != expected:
            return None
        return ConfigfsReport(outblob=out, auxblob=aux, manifestblob=manifest, provider=provider, generation=expected)

    # -- the request -----------------------------------------------------------------------
    def get_report(
        self,
        inblob: bytes,
        *,
        privlevel: int | None = None,
        service_provider: str | None = None,
        service_guid: str | uuid.UUID | None = None,
        service_manifest_version: int | None = None,
    ) -> ConfigfsReport:
        """One report for ``inblob`` (at most 64 bytes, zero-padded to 64).

        Errors are the kernel's, as ``OSError``: ``ENXIO`` (no provider in the kernel, or it
        went away), ``EINVAL`` (a value the provider refuses, an attribute this provider does
        not show), ``EFBIG`` (an inblob over 64 bytes, a report larger than the kernel's maximum), ``ENOENT`` (``root``
        missing), ``EBUSY`` (another writer changed the entry on every attempt).
        """
        if len(inblob) > INBLOB_SIZE:
            # What the kernel's inblob write would answer (a configfs bin attribute's maximum).
            raise error(errno.EFBIG, f"configfs-tsm: inblob is at most {INBLOB_SIZE} bytes")
        padded = bytes(inblob) + bytes(INBLOB_SIZE - len(inblob))
        guid = str(service_guid) if service_guid is not None else None
        service = (service_provider, guid, service_manifest_version)
        # Fresh entries need no lock: no two requests share one.
        with self._lock if self.entry is not None else contextlib.nullcontext():
            for _ in range(self.attempts):
                got = self._attempt(padded, privlevel, service)
                if got is not None:
                    return got
        raise error(errno.EBUSY, f"configfs-tsm: another writer changed the report entry on each of {self.attempts} attempts")

    def _attempt(self, inblob: bytes, privlevel: int | None, service: _Service) -> ConfigfsReport | None:
        if self.entry is not None:
            entry = self.root / self.entry
            try:
                os.mkdir(entry, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise _os_error(exc, "mkdir of the report entry") from None
            return self._once(entry, inblob, privlevel, service)
        entry = self.root / f"kt-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            os.mkdir(entry, 0o700)
        except OSError as exc:
            raise _os_error(exc, "mkdir of the report entry") from None
        try:
            got = self._once(entry, inblob, privlevel, service)
        except BaseException:
            with contextlib.suppress(OSError):  # the request's own error is the one to report
                os.rmdir(entry)
            raise
        try:
            os.rmdir(entry)
        except OSError as exc:
            raise _os_error(exc, "rmdir of the report entry") from None
        return got

    def auth_new(self, request: TsmRequest) -> bytes:
        """The ``tsm`` key's blob: ``outblob``; with ``format=extended``, ``outblob`` zero-padded
        to 16 KiB and then ``auxblob`` (the layout of the RFC's SEV provider).

        ``EINVAL`` for user data that is not 64 bytes without ``nonce=`` (both merged providers
        demand 64), another format, or ``extended`` where there is no ``auxblob`` or the
        ``outblob`` does not fit in 16 KiB; otherwise :meth:`get_report`'s errors.
        """
        if request.format not in ("", "extended"):
            raise error(errno.EINVAL, "configfs-tsm: the only format is 'extended'")
        if request.nonce is None and len(request.pubkey) != INBLOB_SIZE:
            raise error(errno.EINVAL, f"configfs-tsm: the user data must be {INBLOB_SIZE} bytes (or use nonce=)")
        got = self.get_report(request.report_data, privlevel=request.privlevel or None)
        if request.format != "extended":
            return got.outblob
        if got.auxblob is None or len(got.outblob) > EXTENDED_OFFSET:
            raise error(errno.EINVAL, f"configfs-tsm: provider '{got.provider}' has no certificate table for format=extended")
        return got.outblob + bytes(EXTENDED_OFFSET - len(got.outblob)) + got.auxblob
