"""Authenticated vendor commands: a host-side relay for command blocks signed off-device.

What is public about Micron's Authenta A-CRTM (spec ``rpmb.md`` section 6) is the
*shape* only: the bytes sent to the flash are a message block (opcode, sub-opcode,
arguments) followed by an HMAC signature of that block, signed by a key kept off
the host (an on-site server or a cloud service), so the host relays pre-built
packets and returns the device's answer; a kernel would allow-list the opcodes,
let read-class commands through a read-only open and write-class ones only
through a writable open.  The byte layout, sub-opcodes, counter handling and
status codes of the real parts are not public.

**The command set below is this project's own**, shaped after that description
(its two opcodes are the secure-packet write 0x9B and read 0x96 the Authenta RFC
named); it is not Micron's and no real flash understands it.  All integers are
big endian::

    command  := block | HMAC-SHA256(key, block)                    (32 bytes)
    block    := u8 opcode | u8 sub | u16 reserved(0) | u32 counter | u32 address
                | u16 length | nonce[16] | payload[length]
    response := rblock | HMAC-SHA256(key, rblock)
    rblock   := u8 status | u8 opcode | u8 sub | u8 reserved | u32 counter
                | nonce[16] (echoed) | u16 length | payload[length]

    opcode 0x9B (write class)                 opcode 0x96 (read class)
      0x00 PROVISION  payload = key, once        0x01 COUNTER  -> counter, signed
      0x01 WRITE      payload at address         0x02 MEASURE  -> SHA-256 of [address, +length)
      0x02 LOCK       address, length = u32 payload

A write-class command must carry the device's current counter (replay protection)
and advances it by one; a read-class command is bound to its nonce instead.
:class:`VendorRelay` never holds the key: it checks the allow-list and the open
mode, relays, and appends one audit record per command (accepted or refused).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from keyring_types.errors import error
from keyring_types.secret import ct_memcmp

__all__ = [
    "OP_WRITE",
    "OP_READ",
    "SUB_PROVISION",
    "SUB_WRITE",
    "SUB_LOCK",
    "SUB_COUNTER",
    "SUB_MEASURE",
    "DEFAULT_ALLOW",
    "STATUS_NAMES",
    "VendorResponse",
    "sign_command",
    "parse_command",
    "check_response",
    "VendorRelay",
]

OP_WRITE, OP_READ = 0x9B, 0x96
SUB_PROVISION, SUB_WRITE, SUB_LOCK = 0x00, 0x01, 0x02
SUB_COUNTER, SUB_MEASURE = 0x01, 0x02
DEFAULT_ALLOW = frozenset({(OP_WRITE, SUB_PROVISION), (OP_WRITE, SUB_WRITE), (OP_WRITE, SUB_LOCK),
                           (OP_READ, SUB_COUNTER), (OP_READ, SUB_MEASURE)})
STATUS_NAMES = {0x00: "OK", 0x01: "AUTH_FAILURE", 0x02: "REPLAY", 0x03: "BAD_COMMAND", 0x04: "ADDRESS_FAILURE",
                0x05: "LOCKED", 0x06: "NO_KEY", 0x07: "KEY_PROGRAMMED"}
_STATUS_ERRNO = {0x01: errno.EKEYREJECTED, 0x02: errno.ESTALE, 0x03: errno.EINVAL, 0x04: errno.EINVAL,
                 0x05: errno.EACCES, 0x06: errno.ENOKEY, 0x07: errno.EEXIST}
HEAD = struct.Struct(">BBHIIH16s")
RHEAD = struct.Struct(">BBBBI16sH")
MAC = 32
MAX_PAYLOAD = 4096


def _mac(key: Any, data: bytes) -> bytes:
    from keyring_types.hmac import HmacSha256

    if isinstance(key, HmacSha256):
        return key.mac(data)
    with HmacSha256(key) as h:
        return h.mac(data)


def sign_command(key: Any, opcode: int, sub: int, *, counter: int = 0, address: int = 0,
                 payload: bytes = b"", nonce: bytes = bytes(16)) -> bytes:
    """The signer's side: one command packet (``EINVAL`` for out-of-range fields)."""
    if len(payload) > MAX_PAYLOAD or len(nonce) != 16:
        raise error(errno.EINVAL, f"vendor payload is at most {MAX_PAYLOAD} bytes and the nonce 16")
    try:
        block = HEAD.pack(opcode, sub, 0, counter, address, len(payload), nonce) + payload
    except struct.error:
        raise error(errno.EINVAL, "vendor command field out of range") from None
    return block + _mac(key, block)


@attrs.frozen
class Command:
    """A parsed command (what the relay and the device read from a packet)."""

    opcode: int
    sub: int
    counter: int
    address: int
    nonce: bytes
    payload: bytes
    block: bytes
    mac: bytes


def parse_command(packet: bytes) -> Command:
    """Split a packet; ``EINVAL`` when it is malformed (the relay reads only the header)."""
    if len(packet) < HEAD.size + MAC:
        raise error(errno.EINVAL, f"vendor command is {len(packet)} bytes, shorter than a header and a MAC")
    opcode, sub, reserved, counter, address, length, nonce = HEAD.unpack_from(packet)
    if reserved or len(packet) != HEAD.size + length + MAC or length > MAX_PAYLOAD:
        raise error(errno.EINVAL, "vendor command length or reserved field is wrong")
    block = packet[: HEAD.size + length]
    return Command(opcode, sub, counter, address, nonce, packet[HEAD.size : HEAD.size + length], block, packet[-MAC:])


@attrs.frozen
class VendorResponse:
    """A response whose MAC the signer checked."""

    status: int
    opcode: int
    sub: int
    counter: int
    nonce: bytes
    payload: bytes


def build_response(key: Any, status: int, cmd: Command, counter: int, payload: bytes = b"") -> bytes:
    """The device's side: a response, signed when the device has a key (``key`` not None)."""
    block = RHEAD.pack(status, cmd.opcode, cmd.sub, 0, counter, cmd.nonce, len(payload)) + payload
    return block + (_mac(key, block) if key is not None else bytes(MAC))


def check_response(key: Any, packet: bytes, cmd: bytes) -> VendorResponse:
    """The signer's check of a response to ``cmd``: the status (its errno:
    ``EKEYREJECTED``, ``ESTALE`` replay, ``EACCES`` locked, ``ENOKEY``, ``EEXIST``,
    ``EINVAL``), the MAC and the echoed opcode and nonce (``EBADMSG``)."""
    c = parse_command(cmd)
    if len(packet) < RHEAD.size + MAC:
        raise error(errno.EBADMSG, "vendor response is truncated")
    status, opcode, sub, _, counter, nonce, length = RHEAD.unpack_from(packet)
    if len(packet) != RHEAD.size + length + MAC:
        raise error(errno.EBADMSG, "vendor response length is wrong")
    block = packet[:-MAC]
    mac_ok = ct_memcmp(_mac(key, block), packet[-MAC:])
    if status:
        raise error(_STATUS_ERRNO.get(status, errno.EIO),
                    f"vendor device reported {STATUS_NAMES.get(status, hex(status))} ({'authenticated' if mac_ok else 'unauthenticated'})")
    if not mac_ok:
        raise error(errno.EBADMSG, "vendor response MAC does not verify")
    if (opcode, sub) != (c.opcode, c.sub) or not ct_memcmp(nonce, c.nonce):
        raise error(errno.EBADMSG, "vendor response does not answer the command (opcode or nonce)")
    return VendorResponse(status, opcode, sub, counter, nonce, packet[RHEAD.size : RHEAD.size + length])


class VendorRelay:
    """Relays signed command packets to a device and audits each one.

    ``transport`` has ``vendor(packet) -> bytes`` (the emulator's transport);
    ``writable`` is the open mode; ``allow`` the (opcode, sub) pairs let through;
    ``audit`` a file that gets one JSON line per command.
    """

    def __init__(self, transport: Any, *, writable: bool, audit: str | os.PathLike[str],
                 allow: Iterable[tuple[int, int]] = DEFAULT_ALLOW) -> None:
        self._t = transport
        self.writable = writable
        self.allow = frozenset(allow)
        self._audit = Path(audit)

    def _record(self, packet: bytes, cmd: Command | None, outcome: str, err: int, status: int | None) -> None:
        rec = {
            "time": time.time(),
            "opcode": cmd.opcode if cmd else None,
            "sub": cmd.sub if cmd else None,
            "class": None if cmd is None else ("write" if cmd.opcode == OP_WRITE else "read" if cmd.opcode == OP_READ else "unknown"),
            "counter": cmd.counter if cmd else None,
            "open": "rw" if self.writable else "ro",
            "outcome": outcome,
            "errno": err,
            "status": status,
            "packet_sha256": hashlib.sha256(packet).hexdigest(),  # never the payload: it may be a key
        }
        fd = os.open(self._audit, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (json.dumps(rec) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def relay(self, packet: bytes) -> bytes:
        """Relay one packet; the device's response, unchecked (the signer checks it).

        ``EINVAL`` for a malformed packet, ``EOPNOTSUPP`` for an opcode not on the
        allow-list, ``EPERM`` for a write-class command on a read-only open, the
        transport's errno when the device is gone.  Each is audited."""
        packet = bytes(packet)
        try:
            cmd = parse_command(packet)
        except OSError as exc:
            self._record(packet, None, "refused", exc.errno or errno.EINVAL, None)
            raise
        if (cmd.opcode, cmd.sub) not in self.allow:
            self._record(packet, cmd, "refused", errno.EOPNOTSUPP, None)
            raise error(errno.EOPNOTSUPP, f"vendor command {cmd.opcode:#04x}/{cmd.sub:#04x} is not on the allow-list")
        if cmd.opcode != OP_READ and not self.writable:
            self._record(packet, cmd, "refused", errno.EPERM, None)
            raise error(errno.EPERM, "a write-class vendor command needs the device opened for writing")
        try:
            resp = self._t.vendor(packet)
        except OSError as exc:
            self._record(packet, cmd, "failed", exc.errno or errno.EIO, None)
            raise
        self._record(packet, cmd, "relayed", 0, resp[0] if resp else None)
        return bytes(resp)
