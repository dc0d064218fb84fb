"""An EMULATED flash device that answers this project's authenticated vendor commands
(:mod:`keyring_types.rpmb.vendor`; the command set is ours, not Micron's).

It checks each command's HMAC under its provisioned key, a monotonic counter on
write-class commands against replay, and its policy: locked regions refuse writes,
the key is provisioned once.  State (key, counter, lock map, 64 KiB of flash) is one
file in the emulator's state directory, replaced atomically after each change.
"""

from __future__ import annotations

import errno
import hashlib
import struct
import threading
from pathlib import Path

from keyring_types.errors import error
from keyring_types.rpmb.emulator_store import fsync_dir, replace_file
from keyring_types.rpmb.vendor import (
    OP_READ,
    OP_WRITE,
    SUB_COUNTER,
    SUB_LOCK,
    SUB_MEASURE,
    SUB_PROVISION,
    SUB_WRITE,
    Command,
    build_response,
    parse_command,
)
from keyring_types.secret import ct_memcmp

__all__ = ["EmulatedAuthFlash", "FLASH_SIZE", "SECTOR"]

FLASH_SIZE = 64 * 1024
SECTOR = 4096
_STATE = struct.Struct(">4s32sBI16s")  # magic, key, has_key, counter, lock bitmap (one bit per sector)
OK, AUTH, REPLAY, BAD, ADDRESS, LOCKED, NO_KEY, KEYED = range(8)


class EmulatedAuthFlash:
    """The device: ``handle(packet) -> response``.  Thread-safe."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / "vendor-flash"
        self._lock = threading.Lock()
        try:
            raw = self._path.read_bytes()
            if len(raw) != _STATE.size + FLASH_SIZE or raw[:4] != b"KTVF":
                raise error(errno.EINVAL, f"{self._path} is not an emulated flash state")
            _, key, has_key, counter, locks = _STATE.unpack_from(raw)
            self.key: bytes | None = key if has_key else None
            self.counter, self.locks, self.flash = counter, bytearray(locks), bytearray(raw[_STATE.size :])
        except FileNotFoundError:
            self.key, self.counter, self.locks, self.flash = None, 0, bytearray(16), bytearray(b"\xff" * FLASH_SIZE)

    def _save(self) -> None:
        """Replace the state file.  On a failure before the rename the old file is
        untouched and the temporary one removed; after the rename (only the directory
        sync can fail) the new state is the device's state, and :class:`_Replaced`
        says so."""
        raw = _STATE.pack(b"KTVF", self.key or bytes(32), 1 if self.key else 0, self.counter, bytes(self.locks)) + self.flash
        replace_file(self._path, raw)
        try:
            fsync_dir(self._path.parent)  # the rename itself is durable before the device answers
        except OSError as exc:
            raise _Replaced(exc.errno or errno.EIO, f"{self._path}: replaced, but the directory sync failed: {exc.strerror}") from None

    def _locked(self, start: int, end: int) -> bool:
        return any(self.locks[s // 8] >> (s % 8) & 1 for s in range(start // SECTOR, (end - 1) // SECTOR + 1))

    def handle(self, packet: bytes) -> bytes:
        """Run one command packet; the signed response (unsigned while no key is provisioned)."""
        try:
            cmd = parse_command(packet)
        except OSError:
            empty = Command(0, 0, 0, 0, bytes(16), b"", b"", b"")
            return build_response(None, BAD, empty, 0)
        with self._lock:
            before = (self.key, self.counter, bytes(self.locks), bytes(self.flash))
            try:
                return self._run(cmd)
            except _Replaced:
                # The new state file is in place (a restart reads it): keep what it holds;
                # the caller learns only that the outcome is uncertain (an errno, no response).
                raise
            except BaseException:
                # The state could not be saved: the device answers with an error, so
                # nothing of the command may stay in effect (key, counter, flash, locks).
                self.key, self.counter = before[0], before[1]
                self.locks[:] = before[2]
                self.flash[:] = before[3]
                raise

    def _run(self, cmd: Command) -> bytes:
        if (cmd.opcode, cmd.sub) == (OP_WRITE, SUB_PROVISION):
            if self.key is not None:
                return build_response(self.key, KEYED, cmd, self.counter)
            if len(cmd.payload) != 32 or not ct_memcmp(_hmac(cmd.payload, cmd.block), cmd.mac):
                return build_response(None, BAD, cmd, self.counter)
            self.key = bytes(cmd.payload)
            self._save()
            return build_response(self.key, OK, cmd, self.counter)
        if self.key is None:
            return build_response(None, NO_KEY, cmd, self.counter)
        if not ct_memcmp(_hmac(self.key, cmd.block), cmd.mac):
            return build_response(self.key, AUTH, cmd, self.counter)
        if cmd.opcode == OP_READ:
            if cmd.sub == SUB_COUNTER:
                return build_response(self.key, OK, cmd, self.counter)
            if cmd.sub == SUB_MEASURE:
                (length,) = struct.unpack(">I", cmd.payload) if len(cmd.payload) == 4 else (0,)
                if not length or cmd.address + length > FLASH_SIZE:
                    return build_response(self.key, ADDRESS, cmd, self.counter)
                digest = hashlib.sha256(self.flash[cmd.address : cmd.address + length]).digest()
                return build_response(self.key, OK, cmd, self.counter, digest)
            return build_response(self.key, BAD, cmd, self.counter)
        if cmd.opcode != OP_WRITE or cmd.sub not in (SUB_WRITE, SUB_LOCK):
            return build_response(self.key, BAD, cmd, self.counter)
        if cmd.counter != self.counter:
            return build_response(self.key, REPLAY, cmd, self.counter)
        if cmd.sub == SUB_WRITE:
            end = cmd.address + len(cmd.payload)
            if not cmd.payload or end > FLASH_SIZE:
                return build_response(self.key, ADDRESS, cmd, self.counter)
            if self._locked(cmd.address, end):
                return build_response(self.key, LOCKED, cmd, self.counter)
            self.flash[cmd.address : end] = cmd.payload
        else:
            (length,) = struct.unpack(">I", cmd.payload) if len(cmd.payload) == 4 else (0,)
            if not length or cmd.address + length > FLASH_SIZE or cmd.address % SECTOR or length % SECTOR:
                return build_response(self.key, ADDRESS, cmd, self.counter)
            for s in range(cmd.address // SECTOR, (cmd.address + length) // SECTOR):
                self.locks[s // 8] |= 1 << (s % 8)
        self.counter += 1
        self._save()
        return build_response(self.key, OK, cmd, self.counter)


class _Replaced(OSError):
    """The state file was replaced but its directory could not be synced."""


def _hmac(key: bytes, data: bytes) -> bytes:
    from keyring_types.hmac import HmacSha256

    with HmacSha256(key) as h:
        return h.mac(data)
