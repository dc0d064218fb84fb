"""Measurement registers of a confidential guest: read them, and extend the runtime ones.

Three back-ends, one interface (:class:`Measurements`):

* :class:`SysfsMeasurements` -- the kernel's ``measurements/`` attribute group (v6.16+), for TDX
  ``/sys/class/misc/tdx_guest/measurements/``: one file per register named ``NAME[:HASH]``
  (``mrtd:sha384``, ``rtmr0:sha384`` ... ``rtmr3:sha384``, ``mrconfigid``, ``mrowner``,
  ``mrownerconfig``), read-only unless the register is an RTMR.  A write is an extend and must
  be exactly the digest size at offset 0, else ``EINVAL``; new = H(old ‖ data).
* :class:`LegacyRtmrs` -- the unmerged configfs layout some peers still use,
  ``/sys/kernel/config/tsm/rtmrs/<entry>/{index,digest,tcg_map}``: one directory per RTMR index
  (made with ``mkdir`` and an ``index`` write), ``digest`` read for the value and written to
  extend.
* :class:`EmulatedMeasurements` -- the same registers and rules over an
  :class:`~keyring_types.attest.emulated_tdx.EmulatedTdx`: an extend changes the RTMRs of the
  guest's later quotes and is appended to its event log.

:func:`open_measurements` picks the first that exists: sysfs, then the legacy configfs, then
the emulated guest.  Errors are ``OSError``: ``EINVAL`` for a write of the wrong size or offset,
``ENOENT`` for an unknown register, ``EACCES`` for a write to a read-only one, and the kernel's
own errors as raised.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Final

import attrs

from keyring_types.attest.emulated_tdx import EmulatedTdx
from keyring_types.errors import error

__all__ = [
    "SYSFS_TDX",
    "LEGACY_RTMRS",
    "Register",
    "Measurements",
    "SysfsMeasurements",
    "LegacyRtmrs",
    "EmulatedMeasurements",
    "detect",
    "open_measurements",
]

SYSFS_TDX: Final = "/sys/class/misc/tdx_guest/measurements"
LEGACY_RTMRS: Final = "/sys/kernel/config/tsm/rtmrs"
#: Digest sizes of the kernel's ``hash_algo_name`` strings a register file may carry.
HASH_SIZES: Final = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64, "sm3": 32}
_FILE_NAME: Final = re.compile(r"^([A-Za-z0-9_]+)(?::([a-z0-9_-]+))?$")


@attrs.frozen
class Register:
    """One register: ``name`` (``rtmr0``), its hash (``None`` for a NOHASH register), its size,
    whether it can be extended, and its file name (``rtmr0:sha384``)."""

    name: str
    hash: str | None
    size: int
    writable: bool

    @property
    def file(self) -> str:
        return self.name if self.hash is None else f"{self.name}:{self.hash}"


class Measurements(ABC):
    """A set of measurement registers.  ``kind`` is ``"sysfs"``, ``"configfs-legacy"`` or
    ``"emulated"``."""

    kind: str

    @abstractmethod
    def registers(self) -> list[Register]:
        """Every register, in name order."""

    @abstractmethod
    def _read(self, reg: Register) -> bytes: ...

    @abstractmethod
    def _write(self, reg: Register, data: bytes, offset: int) -> int: ...

    def register(self, name: str | int) -> Register:
        """The register called ``name`` (``"rtmr0"``, ``"rtmr0:sha384"``, or an RTMR index).
        ``ENOENT`` if there is none; ``EINVAL`` if a bare name has several hashes."""
        if isinstance(name, int):
            name = f"rtmr{name}"
        regs = [r for r in self.registers() if name in (r.file, r.name)]
        if not regs:
            raise error(errno.ENOENT, "no such measurement register")
        if len(regs) > 1:
            raise error(errno.EINVAL, "the register has several hashes: name one as NAME:HASH")
        return regs[0]

    def read(self, name: str | int) -> bytes:
        """The register's value.  ``ENOENT`` as :meth:`register`."""
        return self._read(self.register(name))

    def write(self, name: str | int, data: bytes, offset: int = 0) -> int:
        """A raw write, as to the sysfs file: an extend when it is exactly the digest size at
        offset 0.  ``EINVAL`` otherwise (the kernel's "partial writes are not supported"),
        ``EACCES`` for a read-only register."""
        reg = self.register(name)
        if not reg.writable:
            raise error(errno.EACCES, f"measurement register {reg.file} is read-only")
        if offset != 0 or len(data) != reg.size:
            raise error(errno.EINVAL, f"an extend of {reg.file} must write exactly {reg.size} bytes at offset 0")
        return self._write(reg, bytes(data), offset)

    def extend(self, name: str | int, digest: bytes) -> bytes:
        """Extend a runtime register with ``digest`` (new = H(old ‖ digest)); returns the new
        value.  Errors as :meth:`write`."""
        self.write(name, digest, 0)
        return self.read(name)

    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        """RTMR0..3 (``ENOENT`` when the guest has no four RTMRs)."""
        return (self.read(0), self.read(1), self.read(2), self.read(3))


class SysfsMeasurements(Measurements):
    """The kernel's ``measurements/`` group at ``path`` (default the TDX guest's)."""

    kind = "sysfs"

    def __init__(self, path: str | Path = SYSFS_TDX) -> None:
        self.path = Path(path)

    def registers(self) -> list[Register]:
        """The files of the group.  ``ENOENT`` when the directory does not exist."""
        out = []
        try:
            entries = sorted(os.scandir(self.path), key=lambda e: e.name)
        except FileNotFoundError:
            raise error(errno.ENOENT, f"no measurement registers at {self.path}") from None
        for entry in entries:
            m = _FILE_NAME.match(entry.name)
            if m is None or not entry.is_file():
                continue
            name, hash_ = m.group(1), m.group(2)
            st = entry.stat()
            size = HASH_SIZES.get(hash_, st.st_size) if hash_ else st.st_size
            out.append(Register(name, hash_, size, bool(st.st_mode & 0o200)))
        return out

    def _read(self, reg: Register) -> bytes:
        with open(self.path / reg.file, "rb", buffering=0) as f:
            return f.read(reg.size)

    def _write(self, reg: Register, data: bytes, offset: int) -> int:
        fd = os.open(self.path / reg.file, os.O_WRONLY | os.O_CLOEXEC)
        try:
            return os.pwrite(fd, data, offset)
        finally:
            os.close(fd)


class LegacyRtmrs(Measurements):
    """The unmerged configfs ``tsm/rtmrs`` layout at ``path``: RTMRs only, SHA-384."""

    kind = "configfs-legacy"

    def __init__(self, path: str | Path = LEGACY_RTMRS, count: int = 4) -> None:
        self.path = Path(path)
        self.count = count

    def registers(self) -> list[Register]:
        return [Register(f"rtmr{i}", "sha384", 48, True) for i in range(self.count)]

    def _entry(self, index: int) -> Path:
        """The entry directory for ``index``, made (mkdir, then the index written) if none has it."""
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError:
            raise error(errno.ENOENT, f"no configfs rtmrs at {self.path}") from None
        for name in names:
            try:
                if int((self.path / name / "index").read_bytes().strip() or b"-1") == index:
                    return self.path / name
            except (OSError, ValueError):
                continue
        entry = Path(tempfile.mkdtemp(prefix=f"rtmr{index}-", dir=self.path))
        (entry / "index").write_bytes(str(index).encode())
        return entry

    def _read(self, reg: Register) -> bytes:
        return (self._entry(int(reg.name[4:])) / "digest").read_bytes()[: reg.size]

    def _write(self, reg: Register, data: bytes, offset: int) -> int:
        fd = os.open(self._entry(int(reg.name[4:])) / "digest", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            return os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def tcg_map(self, index: int) -> str:
        """The PCRs the RTMR stands for (``tcg_map``, e.g. ``"4-8"``)."""
        return (self._entry(index) / "tcg_map").read_text().strip()


class EmulatedMeasurements(Measurements):
    """The registers of an emulated TDX guest, with the sysfs group's names and rules."""

    kind = "emulated"

    def __init__(self, guest: EmulatedTdx | None = None) -> None:
        self.guest = guest if guest is not None else EmulatedTdx()

    def registers(self) -> list[Register]:
        fixed = [Register(n, None, 48, False) for n in ("mrconfigid", "mrowner", "mrownerconfig")]
        return sorted([*fixed, Register("mrtd", "sha384", 48, False), *(Register(f"rtmr{i}", "sha384", 48, True) for i in range(4))],
                      key=lambda r: r.file)  # fmt: skip

    def _read(self, reg: Register) -> bytes:
        c = self.guest.config
        if reg.name.startswith("rtmr"):
            return self.guest.rtmrs()[int(reg.name[4:])]
        value: bytes = {"mrtd": c.mrtd, "mrconfigid": c.mrconfigid, "mrowner": c.mrowner, "mrownerconfig": c.mrownerconfig}[reg.name]
        return value

    def _write(self, reg: Register, data: bytes, offset: int) -> int:
        self.guest.extend(int(reg.name[4:]), data, b"")
        return len(data)

    def event_log(self) -> bytes:
        """The guest's log of every extend (a crypto-agile SHA-384 log; MR index i+1 = RTMR i)."""
        return self.guest.event_log()


def detect(sysfs: str | Path = SYSFS_TDX, legacy: str | Path = LEGACY_RTMRS) -> str:
    """Which back-end :func:`open_measurements` would use: ``"sysfs"``, ``"configfs-legacy"`` or
    ``"emulated"``."""
    if Path(sysfs).is_dir():
        return "sysfs"
    if Path(legacy).is_dir():
        return "configfs-legacy"
    return "emulated"


def open_measurements(*, guest: EmulatedTdx | None = None, sysfs: str | Path = SYSFS_TDX,
                      legacy: str | Path = LEGACY_RTMRS) -> Measurements:  # fmt: skip
    """The guest's measurement registers: the kernel's sysfs group when present, else the legacy
    configfs rtmrs, else the emulated guest ``guest`` (default :class:`EmulatedTdx` on the state
    directory).  Passing ``guest`` forces the emulated one."""
    if guest is not None:
        return EmulatedMeasurements(guest)
    kind = detect(sysfs, legacy)
    if kind == "sysfs":
        return SysfsMeasurements(sysfs)
    if kind == "configfs-legacy":
        return LegacyRtmrs(legacy)
    return EmulatedMeasurements()

