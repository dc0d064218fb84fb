"""An emulated configfs-tsm report tree, served as a FUSE file system by the emulated SEV-SNP guest.

Mounted somewhere (``python -m keyring_types.attest.configfs_fuse MOUNTPOINT``), the directory
behaves as ``/sys/kernel/config/tsm/report`` does on an SEV-SNP guest whose ``sev_guest`` driver
is loaded: ``mkdir`` makes a report entry with the attributes sev-guest shows, ``rmdir`` drops
it, and reads and writes follow the kernel's rules (``drivers/virt/coco/tsm.c``; see
``docs/attest.md``):

* ``inblob`` (write only, binary): at most 64 bytes (``EFBIG`` from ``write``); kept in a buffer
  per open file and committed when the file is closed, whose result is dropped as configfs
  drops it: a commit the generation guard refuses is visible only through ``generation``;
* ``privlevel`` (decimal, ``0x`` hex or ``0`` octal, ``privlevel_floor``..3), and under an
  SVSM ``service_provider``, ``service_guid``, ``service_manifest_version``: one ``write`` is one
  store; ``EINVAL`` for a bad value.  A bad ``service_guid`` still advances the generation
  (the kernel advances before it parses); ``privlevel`` and ``service_manifest_version`` are
  parsed first; ``service_provider`` is checked only when the report is made;
* every accepted store advances ``generation``; a store that would lap the last read
  (``write == read - 1``) is ``EBUSY``;
* ``outblob``, ``auxblob`` (the GHCB certificate table) and, under an SVSM, ``manifestblob``
  (read only): made together when the entry's generation is newer than the last report,
  ``EINVAL`` while ``inblob`` is not 64 bytes or ``service_provider`` is not ``svsm``, ``ENXIO``
  when the provider is gone, ``EFBIG`` beyond the outblob maximum (16 MiB);
* ``provider`` (``sev_guest``), ``generation``, ``privlevel_floor`` (read only, text);
* opening a read-only attribute for writing, or the reverse, is ``EACCES``; ``mkdir`` with no
  provider is ``ENXIO``.

Emulator-only controls (not in the kernel's ABI; for tests): ``SIGUSR1`` unloads the provider
(``ENXIO`` from then on), ``SIGUSR2`` loads it again; ``--start-generation`` starts new entries'
counter there (to reach the lap without 2**64 writes); ``--outblob-pad`` appends zero bytes to
every outblob (to exercise readers with quotes as large as TDX DICE ones).  Under ``--svsm``
the report is the SVSM's: REPORT_DATA = SHA-512(inblob ‖ manifest), VMPL 0, as the SVSM
specification's attestation protocol makes it.

``--tdx`` serves the tree as a TDX guest's ``tdx_guest`` driver shows it instead, answered by
the emulated TDX guest: no ``privlevel``, ``privlevel_floor`` or ``auxblob`` (the driver hides
them), ``provider`` ``tdx_guest``, ``outblob`` a TDX quote v4 for the 64-byte ``inblob``.

Needs the ``mfusepy`` package (the ``test`` extra) and libfuse 3.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import signal
import stat
import struct
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Final

import attrs

from keyring_types.attest.providers import EmulatedSevSnp, EmulatedTdx
from keyring_types.errors import error

__all__ = ["ConfigfsTsmEmulator", "main"]

INBLOB_MAX: Final = 64
OUTBLOB_MAX: Final = 16 << 20
PRIVLEVEL_MAX: Final = 3
_U64: Final = 1 << 64
_TEXT_RO: Final = ("provider", "generation", "privlevel_floor")
_TEXT_WO: Final = ("privlevel",)
_SVSM_WO: Final = ("service_provider", "service_guid", "service_manifest_version")
_BLOBS: Final = ("outblob", "auxblob")
#: SVSM specification, "Services Manifest": the header's GUID.
_MANIFEST_GUID: Final = uuid.UUID("63849ebb-3d92-4670-a1ff-58f9c94b87bb")
#: The one service the emulated SVSM lists: its vTPM (the SVSM vTPM protocol's GUID).
_VTPM_GUID: Final = uuid.UUID("c476f1eb-0123-45a5-9641-b4e7dde5bfe3")


def _kstrtouint(text: bytes, what: str) -> int:
    """``kstrtouint(buf, 0)``: one optional trailing newline, base by prefix; EINVAL / ERANGE."""
    if text.endswith(b"\n"):
        text = text[:-1]
    s = text.decode("ascii", "replace")
    if s.startswith("+"):
        s = s[1:]
    base = 10
    if s[:2].lower() == "0x":
        base, s = 16, s[2:]
    elif s.startswith("0") and len(s) > 1:
        base, s = 8, s[1:]
    if not s or any(c not in "0123456789abcdefABCDEF"[: base + (6 if base == 16 else 0)] for c in s):
        raise error(errno.EINVAL, f"{what}: not a number")
    value = int(s, base)
    if value >= 1 << 32:
        raise error(errno.ERANGE, f"{what}: out of range")
    return value


def _guid_parse(text: bytes) -> uuid.UUID:
    """The kernel's ``guid_parse``: 36 characters 8-4-4-4-12 (what follows is not looked at)."""
    s = text[:36].decode("ascii", "replace")
    if len(s) != 36 or any(s[i] != "-" for i in (8, 13, 18, 23)):
        raise error(errno.EINVAL, "service_guid: not a GUID")
    if any(c not in "0123456789abcdefABCDEF" for i, c in enumerate(s) if i not in (8, 13, 18, 23)):
        raise error(errno.EINVAL, "service_guid: not a GUID")
    return uuid.UUID(s)


@attrs.define
class _Entry:
    write_gen: int
    read_gen: int = 0
    inblob: bytes = b""
    privlevel: int = 0
    service_provider: str = ""
    service_guid: uuid.UUID = attrs.field(factory=lambda: uuid.UUID(int=0))
    manifest_version: int = 0
    blobs: dict[str, bytes] | None = None


@attrs.define
class _Handle:
    entry: str
    attr: str
    writing: bytearray | None = None  # a binary attribute's buffered write
    data: bytes | None = None  # what this open file reads (filled by its first read)


class ConfigfsTsmEmulator:
    """The file-system operations (mfusepy's ``Operations`` interface) of the emulated tree."""

    use_ns = True

    def __init__(self, guest: EmulatedSevSnp | EmulatedTdx, *, svsm: bool = False, privlevel_floor: int = 0,
                 start_generation: int = 0, outblob_pad: int = 0, outblob_max: int = OUTBLOB_MAX) -> None:  # fmt: skip
        if isinstance(guest, EmulatedTdx) and (svsm or privlevel_floor):
            raise error(errno.EINVAL, "a TDX guest has no SVSM and no privilege levels")
        self.guest = guest
        self.tdx = isinstance(guest, EmulatedTdx)
        self.svsm = svsm
        self.floor = privlevel_floor
        self.start_generation = start_generation % _U64
        self.outblob_pad = outblob_pad
        self.outblob_max = outblob_max
        self.provider_loaded = True
        self._lock = threading.Lock()  # the kernel's tsm_rwsem, taken for writing throughout
        self._entries: dict[str, _Entry] = {}
        self._handles: dict[int, _Handle] = {}
        self._next_fh = 1

    # -- the tree --------------------------------------------------------------------------
    def _attrs(self) -> tuple[str, ...]:
        if self.tdx:  # tdx_guest's visibility hooks hide privlevel, privlevel_floor and auxblob
            return ("inblob", "outblob", "provider", "generation")
        base = ("inblob", *_BLOBS, *_TEXT_RO, *_TEXT_WO)
        return (*base, *_SVSM_WO, "manifestblob") if self.svsm else base

    def _split(self, path: str) -> tuple[str | None, str | None]:
        parts = [p for p in path.split("/") if p]
        if not parts:
            return None, None
        if parts[0] not in self._entries or len(parts) > 2:
            raise error(errno.ENOENT, "no such report entry or attribute")
        if len(parts) == 1:
            return parts[0], None
        if parts[1] not in self._attrs():
            raise error(errno.ENOENT, "no such attribute")
        return parts[0], parts[1]

    @staticmethod
    def _writable(attr: str) -> bool:
        return attr in ("inblob", *_TEXT_WO, *_SVSM_WO)

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        with self._lock:
            _entry, attr = self._split(path)
        now = 0
        if attr is None:
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_mtime": now, "st_ctime": now, "st_atime": now}
        mode = 0o200 if self._writable(attr) else 0o444
        return {"st_mode": stat.S_IFREG | mode, "st_nlink": 1, "st_size": 4096}

    def readdir(self, path: str, fh: int) -> list[str]:
        with self._lock:
            entry, attr = self._split(path)
            if attr is not None:
                raise error(errno.ENOTDIR, "not a directory")
            names = list(self._entries) if entry is None else list(self._attrs())
        return [".", "..", *names]

    def mkdir(self, path: str, mode: int) -> int:
        parts = [p for p in path.split("/") if p]
        with self._lock:
            if len(parts) != 1:
                raise error(errno.EPERM, "report entries hold no directories")
            if parts[0] in self._entries:
                raise error(errno.EEXIST, "report entry exists")
            if not self.provider_loaded:
                raise error(errno.ENXIO, "no TSM provider is registered")
            self._entries[parts[0]] = _Entry(write_gen=self.start_generation)
        return 0

    def rmdir(self, path: str) -> int:
        with self._lock:
            entry, attr = self._split(path)
            if entry is None or attr is not None:
                raise error(errno.EPERM if entry is None else errno.ENOTDIR, "not a report entry")
            del self._entries[entry]
        return 0

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        raise error(errno.EACCES, "configfs makes no files")

    def unlink(self, path: str) -> int:
        raise error(errno.EPERM, "attributes cannot be removed")

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        return 0  # O_TRUNC on an attribute: nothing to cut, as configfs

    # -- open files ------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        with self._lock:
            entry, attr = self._split(path)
            if entry is None or attr is None:
                raise error(errno.EISDIR, "a directory")
            acc = flags & os.O_ACCMODE
            if (acc != os.O_RDONLY and not self._writable(attr)) or (acc != os.O_WRONLY and self._writable(attr)):
                raise error(errno.EACCES, "attribute opened against its mode")
            fh = self._next_fh
            self._next_fh += 1
            self._handles[fh] = _Handle(entry=entry, attr=attr)
            return fh

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            self._handles.pop(fh, None)
        return 0

    def flush(self, path: str, fh: int) -> int:
        # configfs commits a binary write at close and ignores what the store returned.
        with self._lock:
            h = self._handles.get(fh)
            if h is None or h.writing is None:
                return 0
            data, h.writing = bytes(h.writing), None
            e = self._entries.get(h.entry)
            if e is None:
                return 0
            try:
                self._advance(e)
            except OSError:
                return 0
            e.inblob = data
        return 0

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._lock:
            h = self._handles[fh]
            e = self._entries.get(h.entry)
            if e is None:
                raise error(errno.ENOENT, "report entry removed")
            if h.attr == "inblob":
                if offset + len(data) > INBLOB_MAX:
                    raise error(errno.EFBIG, f"inblob holds at most {INBLOB_MAX} bytes")
                buf = h.writing if h.writing is not None else bytearray()
                if len(buf) < offset + len(data):
                    buf.extend(bytes(offset + len(data) - len(buf)))
                buf[offset : offset + len(data)] = data
                h.writing = buf
                return len(data)
            self._store(e, h.attr, bytes(data))
            return len(data)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._lock:
            h = self._handles[fh]
            if h.data is None:
                e = self._entries.get(h.entry)
                if e is None:
                    raise error(errno.ENOENT, "report entry removed")
                h.data = self._show(e, h.attr)
            return h.data[offset : offset + size]

    # -- the kernel's rules ----------------------------------------------------------------
    @staticmethod
    def _advance(e: _Entry) -> None:
        if e.write_gen == (e.read_gen - 1) % _U64:
            raise error(errno.EBUSY, "the generation would lap the last read")
        e.write_gen = (e.write_gen + 1) % _U64

    def _store(self, e: _Entry, attr: str, data: bytes) -> None:
        if attr == "privlevel":
            value = _kstrtouint(data, "privlevel")
            if not self.floor <= value <= PRIVLEVEL_MAX:
                raise error(errno.EINVAL, f"privlevel must be {self.floor}..{PRIVLEVEL_MAX}")
            if not self.provider_loaded:
                raise error(errno.ENXIO, "no TSM provider is registered")
            self._advance(e)
            e.privlevel = value
        elif attr == "service_provider":
            self._advance(e)
            e.service_provider = data[:-1].decode("ascii", "replace") if data.endswith(b"\n") else data.decode("ascii", "replace")
        elif attr == "service_guid":
            self._advance(e)  # before parsing, as the kernel does: a bad GUID still counts
            e.service_guid = uuid.UUID(int=0)
            e.service_guid = _guid_parse(data)
        elif attr == "service_manifest_version":
            value = _kstrtouint(data, "service_manifest_version")
            self._advance(e)
            e.manifest_version = value

    def _show(self, e: _Entry, attr: str) -> bytes:
        if attr == "generation":
            return f"{e.write_gen}\n".encode()
        if attr in ("provider", "privlevel_floor"):
            if not self.provider_loaded:
                raise error(errno.ENXIO, "no TSM provider is registered")
            if attr == "provider":
                return b"tdx_guest\n" if self.tdx else b"sev_guest\n"
            return f"{self.floor}\n".encode()
        return self._blobs(e)[attr]

    def _manifest(self, e: _Entry) -> bytes:
        if e.manifest_version != 0:
            raise error(errno.EINVAL, "the emulated SVSM has only manifest version 0")
        assert isinstance(self.guest, EmulatedSevSnp)  # an SVSM exists only on SEV-SNP (checked in __init__)
        services = {_VTPM_GUID: hashlib.sha384(b"emulated SVSM vTPM " + self.guest.chip_id).digest()}
        if e.service_guid.int:
            if e.service_guid not in services:
                raise error(errno.EINVAL, "the emulated SVSM has no such service")
            services = {e.service_guid: services[e.service_guid]}
        head = 24 + 24 * len(services)
        index, body = b"", b""
        for guid, data in services.items():
            index += struct.pack("<16sII", guid.bytes_le, head + len(body), len(data))
            body += data
        return struct.pack("<16sII", _MANIFEST_GUID.bytes_le, head + len(body), len(services)) + index + body

    def _blobs(self, e: _Entry) -> dict[str, bytes]:
        if not self.provider_loaded:
            raise error(errno.ENXIO, "no TSM provider is registered")
        if e.blobs is not None and e.read_gen == e.write_gen:
            return e.blobs
        e.blobs = None
        if len(e.inblob) != INBLOB_MAX:
            raise error(errno.EINVAL, f"inblob must be {INBLOB_MAX} bytes")
        manifest = b""
        report_data, vmpl = e.inblob, e.privlevel
        if self.svsm and e.service_provider:
            if e.service_provider != "svsm":
                raise error(errno.EINVAL, "the only service provider is svsm")
            manifest = self._manifest(e)
            report_data, vmpl = hashlib.sha512(e.inblob + manifest).digest(), 0
        out = self.guest.report(report_data, vmpl) + bytes(self.outblob_pad)
        aux = b"" if isinstance(self.guest, EmulatedTdx) else self.guest.cert_table()
        if max(len(out), len(aux), len(manifest)) > self.outblob_max:
            raise error(errno.EFBIG, "the report is larger than the outblob maximum")
        e.blobs = {"outblob": out, "auxblob": aux, "manifestblob": manifest}
        e.read_gen = e.write_gen
        return e.blobs


def main(argv: list[str] | None = None) -> int:
    """Serve the emulated tree at MOUNTPOINT until SIGTERM/SIGINT, then unmount."""
    p = argparse.ArgumentParser(prog="python -m keyring_types.attest.configfs_fuse", description=__doc__.split("\n")[0])
    p.add_argument("mountpoint")
    p.add_argument("--state-dir", help="the emulated guest's state directory (default: the library's)")
    p.add_argument("--svsm", action="store_true", help="show the SVSM service attributes and manifestblob")
    p.add_argument("--privlevel-floor", type=int, default=0)
    p.add_argument("--start-generation", type=int, default=0)
    p.add_argument("--outblob-pad", type=int, default=0)
    p.add_argument("--measurement", help="the guest's MEASUREMENT (96 hex digits)")
    p.add_argument("--tdx", action="store_true", help="a TDX guest (tdx_guest) answered by the emulated TDX guest")
    args = p.parse_args(argv)
    import mfusepy

    config: dict[str, Any] = {}
    guest: EmulatedSevSnp | EmulatedTdx
    if args.tdx:
        guest = EmulatedTdx(args.state_dir)
    else:
        if args.measurement:
            config["measurement"] = bytes.fromhex(args.measurement)
        guest = EmulatedSevSnp(args.state_dir, **config)
    ops = ConfigfsTsmEmulator(guest, svsm=args.svsm, privlevel_floor=args.privlevel_floor,
                              start_generation=args.start_generation, outblob_pad=args.outblob_pad)  # fmt: skip

    # libfuse's threads run the loop in C, where Python signal handlers never run: the signals
    # are blocked here (libfuse's threads inherit the mask) and taken by a thread of our own.
    controls = {signal.SIGUSR1, signal.SIGUSR2}
    signal.pthread_sigmask(signal.SIG_BLOCK, controls)

    def watch() -> None:
        while True:
            ops.provider_loaded = signal.sigwait(controls) == signal.SIGUSR2

    threading.Thread(target=watch, name="provider-control", daemon=True).start()
    Path(args.mountpoint).mkdir(parents=True, exist_ok=True)
    try:
        mfusepy.FUSE(ops, args.mountpoint, foreground=True, direct_io=True, fsname="emulated-configfs-tsm")
    except RuntimeError:
        pass  # libfuse reports the signal that ended its loop; the mount is gone either way
    return 0


if __name__ == "__main__":
    sys.exit(main())
