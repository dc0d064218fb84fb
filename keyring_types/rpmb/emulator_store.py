"""The emulated RPMB partition's state on disk: key, data blocks and write counter, crash-safe.

A state directory (0700, checked by :mod:`keyring_types.state`) holds::

    device      geometry fixed when the directory was made (size_mult, slot size, slots)
    key         the 32-byte authentication key, 0400, created once (atomic: the
                file appears whole or not at all); its presence means "programmed"
    image       size_mult * 128 KiB of data blocks
    journal     SLOTS (128) fixed-size slots of write records
    checkpoint  (sequence, counter) that ``image`` fully reflects, replaced atomically
    lock        flock'ed by the one emulator serving the directory

An authenticated write is one journal record ``{seq, counter after the write, address,
blocks, data, SHA-256 of all of it}`` written into slot ``seq % SLOTS`` and made
durable by one ``fdatasync``: that is the commit point.  Only then is the data
copied into ``image`` (page cache, no sync) and the device answers.  After a
``kill -9`` (or a power loss) at any point, start-up replays every intact record
newer than the checkpoint, in sequence order, into ``image``: a write whose record
is complete is there with its counter, a torn record fails its checksum and the
write is wholly absent.  The counter is that of the last replayed record, so it
never goes back past a write the device acknowledged.

Before a slot is reused, the record it holds must be in a durable ``image``: every
``SLOTS`` writes the store syncs ``image`` and replaces ``checkpoint`` (write a
temporary file, fsync, rename, fsync the directory).  A write therefore costs one
fsync of its own record, plus that checkpoint once per ``SLOTS`` writes.

What the device answers always matches what a restart will find (JEDEC: a write
either takes effect with the counter advanced, or fails with neither):

* a failure before the commit point (checkpoint, journal write or sync) rolls the
  record back (its slot invalidated and synced) and the write fails, nothing done;
* a failure after it (the copy into ``image``) does not fail the write: the record
  is durable and would be replayed, so the write succeeded.  The data is kept in
  memory and served to reads until a later copy into ``image`` works;
* when a rollback fails too, nobody can tell whether a restart will replay the
  record: the store answers every later call with ``EIO`` (:class:`OutcomeUnknown`)
  until it is opened again, and the recovery at that open decides.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

from keyring_types.errors import error
from keyring_types.secret import SecretBuffer
from keyring_types.state import create_secret_file, load_secret_file, private_dir

__all__ = ["RpmbStore", "SLOTS", "BLOCK", "write_checkpoint", "CrashHook", "OutcomeUnknown", "fsync_dir", "replace_file"]

BLOCK = 256
SLOTS = 128
_RECORD_MAGIC = b"KTRJ"
_CKPT_MAGIC = b"KTRC"
# magic, seq, counter, address, blocks
_HEAD = struct.Struct("<4sQIHH")
_DIGEST = 32
_CKPT = struct.Struct("<4sQI")

#: Called with a stage name at each step of a write (tests kill the process there).
CrashHook = Callable[[str], None]


def _no_crash(stage: str) -> None:
    return None


def fsync_dir(path: Path) -> None:
    """fsync the directory ``path``, so that a rename in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes, crash: CrashHook = _no_crash) -> None:
    """Replace ``path`` with ``data`` through ``.<name>.tmp``: write, fsync, rename.

    On any failure before the rename the old file is untouched and the temporary
    one removed.  The directory is not synced: the caller decides what a failure
    of that (:func:`fsync_dir`) means, the rename having happened.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        crash("checkpoint-tmp")
        os.replace(tmp, path)
    except BaseException:
        # The old file is untouched; leave no half-written temporary beside it.
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _atomic_write(path: Path, data: bytes, crash: CrashHook = _no_crash) -> None:
    """Replace ``path`` with ``data``: temporary file, fsync, rename, fsync the directory."""
    replace_file(path, data, crash)
    fsync_dir(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    mv = memoryview(data)
    while mv:
        mv = mv[os.write(fd, mv) :]


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    mv = memoryview(data)
    while mv:
        n = os.pwrite(fd, mv, offset)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        mv, offset = mv[n:], offset + n


class OutcomeUnknown(OSError):
    """``EIO``: a write failed and could not be rolled back, so whether it takes effect
    is decided only by the recovery when the state is opened again."""


def _ckpt_bytes(seq: int, counter: int) -> bytes:
    body = _CKPT.pack(_CKPT_MAGIC, seq, counter)
    return body + hashlib.sha256(body).digest()


def write_checkpoint(state: Path, seq: int, counter: int) -> None:
    """Replace the checkpoint of ``state`` (used by the store, and by tests to
    start a device near the end of its counter)."""
    _atomic_write(state / "checkpoint", _ckpt_bytes(seq, counter))


class RpmbStore:
    """One state directory, opened for exclusive use by one emulator.

    ``EBUSY`` when another emulator serves the directory; ``EINVAL`` when a
    geometry is asked for that differs from the one the directory was made with,
    or a file is damaged beyond what a crash can leave; ``EACCES`` from the
    directory checks.
    """

    def __init__(self, state: Path, *, size_mult: int, slot_blocks: int, crash: CrashHook = _no_crash) -> None:
        private_dir(state, create=True)
        self.dir = state
        self._crash = crash
        self._lock_fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise error(errno.EBUSY, f"{state} is served by another emulated RPMB device") from None
        try:
            self._open(size_mult, slot_blocks)
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- opening and recovery -------------------------------------------------

    def _open(self, size_mult: int, slot_blocks: int) -> None:
        dev = self.dir / "device"
        want = {"format": 1, "size_mult": size_mult, "slot_blocks": slot_blocks, "slots": SLOTS}
        if dev.exists():
            try:
                have = json.loads(dev.read_text())
            except ValueError:
                raise error(errno.EINVAL, f"{dev} is not a device description") from None
            if have.get("size_mult") != size_mult:
                raise error(
                    errno.EINVAL,
                    f"{self.dir} holds a device of size_mult {have.get('size_mult')}, not {size_mult}",
                )
            if not isinstance(have.get("slot_blocks"), int) or have["slot_blocks"] < slot_blocks:
                raise error(
                    errno.EINVAL, f"{self.dir} was made for writes of at most {have.get('slot_blocks')} blocks"
                )
            want = have
        self.size_mult = int(want["size_mult"])
        self.blocks = self.size_mult * 512
        self.slot_blocks = int(want["slot_blocks"])
        self.slot_size = _HEAD.size + self.slot_blocks * BLOCK + _DIGEST
        # Create the image and journal at full size first, then the description:
        # a directory with a description always has both files.
        self._image = self._sized(self.dir / "image", self.blocks * BLOCK)
        self._journal = self._sized(self.dir / "journal", SLOTS * self.slot_size)
        if not dev.exists():
            _atomic_write(dev, json.dumps(want).encode())
        self._recover()

    def _sized(self, path: Path, size: int) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        st = os.fstat(fd)
        if st.st_size < size:
            os.ftruncate(fd, size)
            os.fsync(fd)
            fsync_dir(self.dir)
        elif st.st_size != size:
            os.close(fd)
            raise error(errno.EINVAL, f"{path} is {st.st_size} bytes, expected {size}")
        return fd

    def _read_checkpoint(self) -> tuple[int, int]:
        try:
            raw = (self.dir / "checkpoint").read_bytes()
        except FileNotFoundError:
            return 0, 0
        body, digest = raw[: _CKPT.size], raw[_CKPT.size :]
        if len(body) != _CKPT.size or hashlib.sha256(body).digest() != digest:
            # The checkpoint is only ever replaced by rename, so a bad one is damage, not a crash.
            raise error(errno.EINVAL, f"{self.dir / 'checkpoint'} is damaged")
        magic, seq, counter = _CKPT.unpack(body)
        if magic != _CKPT_MAGIC:
            raise error(errno.EINVAL, f"{self.dir / 'checkpoint'} is not a checkpoint")
        return seq, counter

    def _record(self, slot: int) -> tuple[int, int, int, int, bytes] | None:
        raw = os.pread(self._journal, self.slot_size, slot * self.slot_size)
        magic, seq, counter, address, blocks = _HEAD.unpack_from(raw)
        if magic != _RECORD_MAGIC or not 1 <= blocks <= self.slot_blocks:
            return None
        end = _HEAD.size + blocks * BLOCK
        if hashlib.sha256(raw[:end]).digest() != raw[end : end + _DIGEST]:
            return None  # torn: the write it held never committed
        return seq, counter, address, blocks, raw[_HEAD.size : end]

    def _recover(self) -> None:
        #: Committed writes whose copy into ``image`` failed, oldest first: (address, data).
        self._unapplied: list[tuple[int, bytes]] = []
        #: Set when a failed write could not be rolled back (see the module docstring).
        self._unknown: str | None = None
        seq, counter = self._read_checkpoint()
        self._checkpoint_seq = seq
        records = {}
        for slot in range(SLOTS):
            rec = self._record(slot)
            if rec is not None and rec[0] > seq:
                records[rec[0]] = rec
        replayed = False
        while seq + 1 in records:
            _, counter, address, _blocks, data = records[seq + 1]
            os.pwrite(self._image, data, address * BLOCK)
            seq += 1
            replayed = True
        self.seq, self.counter = seq, counter
        if replayed:
            # Make the replay durable before any slot can be reused.
            os.fsync(self._image)
            _atomic_write(self.dir / "checkpoint", _ckpt_bytes(seq, counter))
            self._checkpoint_seq = seq

    # -- the key ----------------------------------------------------------------

    def key(self) -> SecretBuffer | None:
        """The programmed key in secret memory (the caller wipes it), or ``None``."""
        try:
            return load_secret_file(self.dir / "key", 32, "RPMB authentication key")
        except OSError as exc:
            if exc.errno == errno.ENOKEY:
                return None
            raise

    def program_key(self, key: SecretBuffer) -> bool:
        """Store the key once; ``False`` when one was already there (it is kept)."""
        self._crash("key-before")
        return create_secret_file(self.dir / "key", key)

    # -- data -------------------------------------------------------------------

    def read(self, address: int, blocks: int) -> bytes:
        """``blocks`` data blocks from ``address`` (the caller checked the range);
        ``EIO`` while the outcome of a failed write is unknown."""
        self.check()
        self._try_apply()
        out = bytearray(os.pread(self._image, blocks * BLOCK, address * BLOCK))
        # Committed writes not yet in the image, in commit order, over what the image holds.
        for at, data in self._unapplied:
            lo, hi = max(at, address), min(at + len(data) // BLOCK, address + blocks)
            if lo < hi:
                out[(lo - address) * BLOCK : (hi - address) * BLOCK] = data[(lo - at) * BLOCK : (hi - at) * BLOCK]
        return bytes(out)

    def check(self) -> None:
        """``EIO`` (:class:`OutcomeUnknown`) once a failed write could not be rolled back."""
        if self._unknown is not None:
            raise OutcomeUnknown(errno.EIO, self._unknown)

    def _apply_unapplied(self) -> None:
        """Copy committed writes into ``image`` (``OSError`` when the disk still refuses)."""
        while self._unapplied:
            address, data = self._unapplied[0]
            _pwrite_all(self._image, data, address * BLOCK)
            self._unapplied.pop(0)

    def _try_apply(self) -> None:
        try:
            self._apply_unapplied()
        except OSError:
            pass  # kept in memory for reads; copied by a later call, or replayed at the next open

    def write(self, address: int, data: bytes, new_counter: int) -> None:
        """Commit ``data`` at ``address`` with the counter it leaves behind (see the
        module docstring); returns once the write is durable.  ``EIO`` when the disk
        refuses before the commit point (the write is then rolled back: not done, and
        no restart replays it); :class:`OutcomeUnknown` (``EIO``) when the rollback
        failed too.  A failure after the commit point is no failure of the write."""
        self.check()
        blocks = len(data) // BLOCK
        assert len(data) == blocks * BLOCK and 1 <= blocks <= self.slot_blocks
        seq = self.seq + 1
        self._try_apply()
        try:
            if seq - self._checkpoint_seq > SLOTS:
                # Slot seq % SLOTS still holds a record the image may not have durably.
                self._apply_unapplied()
                os.fsync(self._image)
                _atomic_write(self.dir / "checkpoint", _ckpt_bytes(self.seq, self.counter), self._crash)
                self._checkpoint_seq = self.seq
        except OSError as exc:
            # Nothing of this write is in the journal: it simply did not happen.
            raise error(errno.EIO, f"emulated RPMB checkpoint failed: {exc.strerror}") from None
        head = _HEAD.pack(_RECORD_MAGIC, seq, new_counter, address, blocks)
        body = head + data
        rec = body + hashlib.sha256(body).digest()
        off = (seq % SLOTS) * self.slot_size
        try:
            half = len(rec) // 2
            _pwrite_all(self._journal, rec[:half], off)
            self._crash("journal-torn")
            _pwrite_all(self._journal, rec[half:], off + half)
            os.fdatasync(self._journal)
        except OSError as exc:
            self._roll_back(off, exc)
            raise error(errno.EIO, f"emulated RPMB journal write failed: {exc.strerror}") from None
        # Committed: a restart replays the record, so from here the write has happened.
        self._crash("journal-synced")
        self.seq, self.counter = seq, new_counter
        self._unapplied.append((address, bytes(data)))
        self._try_apply()
        self._crash("image-written")

    def _roll_back(self, off: int, exc: OSError) -> None:
        """Invalidate the record at ``off`` durably (its whole record may be in the page
        cache, where a restart would find it intact and replay it)."""
        try:
            _pwrite_all(self._journal, bytes(_HEAD.size), off)
            os.fdatasync(self._journal)
        except OSError as again:
            self._unknown = (
                f"an emulated RPMB write failed ({exc.strerror}) and could not be rolled back ({again.strerror}): "
                "whether it took effect is decided when the device is restarted"
            )
            raise OutcomeUnknown(errno.EIO, self._unknown) from None

    def close(self) -> None:
        """Release the files and the directory lock."""
        for fd in (self._image, self._journal, self._lock_fd):
            try:
                os.close(fd)
            except OSError:
                pass
