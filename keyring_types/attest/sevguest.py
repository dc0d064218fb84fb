"""The SEV-SNP guest's firmware requests through ``/dev/sev-guest``: SNP_GET_REPORT and
SNP_GET_DERIVED_KEY (``include/uapi/linux/sev-guest.h``), and the derived-key request itself.

:class:`DerivedKeyRequest` is the firmware's MSG_KEY_REQ (SEV-SNP firmware ABI): which root key
(the chip's VCEK, or the VM's VMRK; VCEK or VLEK), which guest fields to mix into the key
(``GUEST_FIELD_SELECT``), the VMPL, and the guest SVN and TCB version to mix (at most the
guest's current ones: the firmware refuses higher, so a key bound to an SVN cannot be derived
by an older guest).  :class:`SevGuestDevice` sends it to the real firmware;
:meth:`keyring_types.attest.providers.EmulatedSevSnp.derived_key` answers it in emulation.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from typing import Final, Protocol

import attrs

from keyring_types.errors import error
from keyring_types.secret import SecretBuffer

__all__ = [
    "DEVICE",
    "FIELDS",
    "DerivedKeyRequest",
    "GuestFirmware",
    "SevGuestDevice",
    "parse_fields",
]

DEVICE: Final = "/dev/sev-guest"
#: GUEST_FIELD_SELECT bits, by the names the trust source's ``fields`` use.
FIELDS: Final = {
    "policy": 1 << 0,
    "image_id": 1 << 1,
    "family_id": 1 << 2,
    "measurement": 1 << 3,
    "guest_svn": 1 << 4,
    "tcb": 1 << 5,
    "launch_mit_vector": 1 << 6,
}
_ALL_FIELDS: Final = sum(FIELDS.values())
#: ROOT_KEY_SELECT: bit 0 the root (0 VCEK, 1 VMRK); bits 2:1 KEY_SEL (0 VLEK if loaded else
#: VCEK, 1 VCEK, 2 VLEK).
_ROOTS: Final = {"vcek": 0, "vmrk": 1}
_KEY_SEL: Final = {"default": 0, "vcek": 1, "vlek": 2}

# struct snp_guest_request_ioctl: u8 msg_version, u64 req_data, u64 resp_data, u64 exitinfo2
# (fw_error low, vmm_error high); natural alignment puts req_data at 8.
_IOCTL: Final = struct.Struct("<B7xQQQ")
_KEY_REQ: Final = struct.Struct("<IIQIIQ")  # struct snp_derived_key_req
_REPORT_REQ: Final = struct.Struct("<64sI28s")  # struct snp_report_req
_KEY_RESP_SIZE: Final = 64
_REPORT_RESP_SIZE: Final = 4000


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord("S") << 8) | nr


SNP_GET_REPORT: Final = _iowr(0x0, _IOCTL.size)
SNP_GET_DERIVED_KEY: Final = _iowr(0x1, _IOCTL.size)


def parse_fields(text: str) -> int:
    """``"measurement,policy"`` → the GUEST_FIELD_SELECT bits; ``""`` or ``"none"`` → 0.
    ``EINVAL`` naming an unknown field."""
    bits = 0
    for name in filter(None, (t.strip() for t in text.split(","))):
        if name == "none":
            continue
        if name not in FIELDS:
            raise error(errno.EINVAL, f"unknown derived-key field '{name}' (known: {', '.join(FIELDS)})")
        bits |= FIELDS[name]
    return bits


@attrs.frozen
class DerivedKeyRequest:
    """MSG_KEY_REQ.  ``root`` ``"vcek"`` or ``"vmrk"``; ``key_sel`` ``"default"``, ``"vcek"`` or
    ``"vlek"``; ``fields`` the GUEST_FIELD_SELECT bits (:data:`FIELDS`)."""

    fields: int
    vmpl: int = 0
    guest_svn: int = 0
    tcb_version: int = 0
    root: str = "vcek"
    key_sel: str = "default"

    def __attrs_post_init__(self) -> None:
        if self.root not in _ROOTS or self.key_sel not in _KEY_SEL:
            raise error(errno.EINVAL, "derived key: root must be vcek or vmrk, key_sel default, vcek or vlek")
        if self.fields & ~_ALL_FIELDS or self.fields < 0:
            raise error(errno.EINVAL, "derived key: reserved GUEST_FIELD_SELECT bits set")
        if not (0 <= self.vmpl <= 3 and 0 <= self.guest_svn < 1 << 32 and 0 <= self.tcb_version < 1 << 64):
            raise error(errno.EINVAL, "derived key: vmpl, guest_svn or tcb_version out of range")

    @property
    def root_key_select(self) -> int:
        return _ROOTS[self.root] | (_KEY_SEL[self.key_sel] << 1)

    def pack(self) -> bytes:
        """``struct snp_derived_key_req`` (32 bytes)."""
        return _KEY_REQ.pack(self.root_key_select, 0, self.fields, self.vmpl, self.guest_svn, self.tcb_version)

    @classmethod
    def unpack(cls, raw: bytes) -> DerivedKeyRequest:
        """The inverse of :meth:`pack`; ``EINVAL`` for reserved bits or values."""
        rks, rsvd, fields, vmpl, svn, tcb = _KEY_REQ.unpack(raw)
        roots = {v: k for k, v in _ROOTS.items()}
        sels = {v: k for k, v in _KEY_SEL.items()}
        if rsvd or rks >> 3 or (rks >> 1) not in sels:
            raise error(errno.EINVAL, "derived key: reserved ROOT_KEY_SELECT bits set")
        return cls(fields=fields, vmpl=vmpl, guest_svn=svn, tcb_version=tcb, root=roots[rks & 1], key_sel=sels[rks >> 1])


class GuestFirmware(Protocol):
    """What the ``tsm`` trust source needs of an SEV-SNP guest's firmware."""

    name: str

    def derived_key(self, request: DerivedKeyRequest) -> SecretBuffer:
        """The 32-byte key for ``request`` in secret memory (the caller wipes it); ``EINVAL``
        where the firmware refuses it."""
        ...

    def current_versions(self) -> tuple[int, int]:
        """(GUEST_SVN, COMMITTED_TCB) of this guest: the most a derived-key request may ask for."""
        ...


class SevGuestDevice:
    """The real firmware behind ``/dev/sev-guest`` (name ``"sev-guest"``).  Each call opens the
    device; errors are the driver's errno (``EINVAL`` for a request the firmware refuses,
    ``EIO`` with the firmware's status otherwise)."""

    name = "sev-guest"

    def __init__(self, path: str = DEVICE, msg_version: int = 1) -> None:
        self.path = path
        self.msg_version = msg_version

    @classmethod
    def available(cls, path: str = DEVICE) -> bool:
        return os.path.exists(path)

    def _request(self, nr: int, req: bytes, resp: ctypes.Array[ctypes.c_char]) -> None:
        """One guest request; the firmware's response lands in ``resp`` (the caller wipes it)."""
        req_buf = ctypes.create_string_buffer(req, len(req))
        arg = bytearray(_IOCTL.pack(self.msg_version, ctypes.addressof(req_buf), ctypes.addressof(resp), 0))
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            try:
                fcntl.ioctl(fd, nr, arg, True)
            except OSError as exc:
                exitinfo2 = _IOCTL.unpack(bytes(arg))[3]
                raise error(
                    exc.errno or errno.EIO,
                    f"{self.path}: request refused (firmware status 0x{exitinfo2 & 0xFFFFFFFF:x}, "
                    f"VMM status 0x{exitinfo2 >> 32:x})",
                ) from None
        finally:
            os.close(fd)

    def derived_key(self, request: DerivedKeyRequest) -> SecretBuffer:
        """SNP_GET_DERIVED_KEY: MSG_KEY_RSP holds STATUS at 0 and the key at 0x20.  The key goes
        from the response buffer into secret memory (the caller wipes it); the buffer is zeroed."""
        resp = ctypes.create_string_buffer(_KEY_RESP_SIZE)
        try:
            self._request(SNP_GET_DERIVED_KEY, request.pack(), resp)
            (status,) = struct.unpack_from("<I", resp)
            if status:
                raise error(errno.EINVAL, f"{self.path}: the firmware refused the derived-key request (status 0x{status:x})")
            with memoryview(resp).cast("B") as raw:
                return SecretBuffer.from_bytes(raw[0x20:0x40])
        finally:
            ctypes.memset(resp, 0, _KEY_RESP_SIZE)

    def report(self, report_data: bytes, vmpl: int = 0) -> bytes:
        """SNP_GET_REPORT: MSG_REPORT_RSP is STATUS, REPORT_SIZE, 24 reserved bytes, the report."""
        if len(report_data) != 64:
            raise error(errno.EINVAL, "SNP_GET_REPORT: report data must be 64 bytes")
        buf = ctypes.create_string_buffer(_REPORT_RESP_SIZE)
        self._request(SNP_GET_REPORT, _REPORT_REQ.pack(report_data, vmpl, bytes(28)), buf)
        resp = buf.raw  # a report is public
        status, size = struct.unpack_from("<II", resp)
        if status or not 0 < size <= _REPORT_RESP_SIZE - 0x20:
            raise error(errno.EIO, f"{self.path}: report request failed (status 0x{status:x})")
        return resp[0x20 : 0x20 + size]

    def current_versions(self) -> tuple[int, int]:
        from keyring_types.attest import snp

        r = snp.parse_report(self.report(bytes(64)))
        return r.guest_svn, r.committed_tcb
