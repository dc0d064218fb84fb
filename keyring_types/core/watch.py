"""Key notifications (``KEYCTL_WATCH_KEY``): watch queues, watches and the records posted.

The kernel delivers key notifications into a *watch queue*, a pipe opened with
``O_NOTIFICATION_PIPE`` (kernel/watch_queue.c); :class:`WatchQueue` is its
in-process counterpart.  Each record has the kernel's byte layout
(include/uapi/linux/watch_queue.h and keyctl.h), in this machine's byte order:

* ``struct watch_notification`` (8 bytes): ``type`` in the low 24 bits and
  ``subtype`` in the high 8 bits of the first word; ``info`` holds the record
  length (bits 0-6) and the watch id (bits 8-15);
* ``struct key_notification`` (16 bytes): that header, ``key_id``, ``aux`` (the
  linked or unlinked key's serial, or ``-errno`` for a negative instantiation);
* ``struct watch_notification_removal`` (16 bytes): the header and the key's
  serial as a 64-bit id, when a watch goes away;
* a bare header with subtype ``WATCH_META_LOSS_NOTIFICATION`` after the record
  that was last in the queue when later ones did not fit.

:func:`notify_key` is called exactly where the kernel calls ``notify_key()``;
the functions here run with the world lock held.
"""

from __future__ import annotations

import errno
import resource
import struct
import threading
from collections import deque
from typing import TYPE_CHECKING, Self

from keyring_types.core.immutable import FrozenValue
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.record import KeyRecord

__all__ = [
    "NOTIFY_KEY_CLEARED",
    "NOTIFY_KEY_INSTANTIATED",
    "NOTIFY_KEY_INVALIDATED",
    "NOTIFY_KEY_LINKED",
    "NOTIFY_KEY_REVOKED",
    "NOTIFY_KEY_SETATTR",
    "NOTIFY_KEY_UNLINKED",
    "NOTIFY_KEY_UPDATED",
    "SUBTYPE_NAMES",
    "WATCH_META_LOSS_NOTIFICATION",
    "WATCH_META_REMOVAL_NOTIFICATION",
    "WATCH_TYPE_KEY_NOTIFY",
    "WATCH_TYPE_META",
    "Notification",
    "Watch",
    "WatchQueue",
    "decode",
    "notify_key",
    "remove_all_watches",
    "watch_key",
]

WATCH_TYPE_META = 0
WATCH_TYPE_KEY_NOTIFY = 1
WATCH_META_REMOVAL_NOTIFICATION = 0
WATCH_META_LOSS_NOTIFICATION = 1

NOTIFY_KEY_INSTANTIATED = 0
NOTIFY_KEY_UPDATED = 1
NOTIFY_KEY_LINKED = 2
NOTIFY_KEY_UNLINKED = 3
NOTIFY_KEY_CLEARED = 4
NOTIFY_KEY_REVOKED = 5
NOTIFY_KEY_INVALIDATED = 6
NOTIFY_KEY_SETATTR = 7

#: The key subtypes by the names keyutils' ``keyctl watch`` prints.
SUBTYPE_NAMES = {
    NOTIFY_KEY_INSTANTIATED: "inst",
    NOTIFY_KEY_UPDATED: "upd",
    NOTIFY_KEY_LINKED: "link",
    NOTIFY_KEY_UNLINKED: "unlk",
    NOTIFY_KEY_CLEARED: "clr",
    NOTIFY_KEY_REVOKED: "rev",
    NOTIFY_KEY_INVALIDATED: "inv",
    NOTIFY_KEY_SETATTR: "attr",
}

WATCH_INFO_LENGTH = 0x0000007F
WATCH_INFO_ID = 0x0000FF00
WATCH_INFO_ID__SHIFT = 8

#: Each note takes one slot of this size in the pipe (WATCH_QUEUE_NOTE_SIZE).
NOTE_SIZE = 128
#: watch_queue_set_size refuses more notes than this.
MAX_NOTES = 512

_HEADER = struct.Struct("=II")
_KEY_NOTE = struct.Struct("=IIIi")
_REMOVAL = struct.Struct("=IIQ")


def _header_word(wtype: int, subtype: int) -> int:
    # The bitfields type:24, subtype:8 as a little-endian compiler lays them out.
    return (wtype & 0xFFFFFF) | (subtype << 24)


class Notification(FrozenValue):
    """One decoded record: ``type``/``subtype`` (WATCH_TYPE_*, NOTIFY_KEY_* or WATCH_META_*),
    ``watch_id``, ``key_id`` (0 for a loss record) and ``aux`` (0 unless linked/unlinked
    serial or ``-errno``), plus ``raw``, the record's bytes.

    Immutable, compared and hashed by value.  This class and :class:`Watch` are
    not attrs, as every command loads this module (:mod:`keyring_types.core.immutable`
    says why)."""

    __slots__ = ("aux", "key_id", "raw", "subtype", "type", "watch_id")
    _fields = ("type", "subtype", "watch_id", "key_id", "aux", "raw")

    type: int
    subtype: int
    watch_id: int
    key_id: int
    aux: int
    raw: bytes

    def __init__(self, type: int, subtype: int, watch_id: int, key_id: int, aux: int, raw: bytes) -> None:
        setter = object.__setattr__
        setter(self, "type", type)
        setter(self, "subtype", subtype)
        setter(self, "watch_id", watch_id)
        setter(self, "key_id", key_id)
        setter(self, "aux", aux)
        setter(self, "raw", raw)

    @property
    def name(self) -> str:
        """``inst``, ``upd``, ... as ``keyctl watch`` prints; ``removed`` or ``lost`` for meta records."""
        if self.type == WATCH_TYPE_KEY_NOTIFY:
            return SUBTYPE_NAMES.get(self.subtype, f"type-{self.subtype}")
        return "removed" if self.subtype == WATCH_META_REMOVAL_NOTIFICATION else "lost"


def decode(data: bytes) -> list[Notification]:
    """Split what :meth:`WatchQueue.read` returned into records; ``EINVAL`` for a bad length."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < _HEADER.size:
            raise error(errno.EINVAL, f"short notification header at offset {pos}")
        word, info = _HEADER.unpack_from(data, pos)
        length = info & WATCH_INFO_LENGTH
        if length < _HEADER.size or pos + length > len(data):
            raise error(errno.EINVAL, f"bad notification length {length} at offset {pos}")
        wtype, subtype = word & 0xFFFFFF, word >> 24
        watch_id = (info & WATCH_INFO_ID) >> WATCH_INFO_ID__SHIFT
        key_id = aux = 0
        if wtype == WATCH_TYPE_KEY_NOTIFY and length >= _KEY_NOTE.size:
            _, _, key_id, aux = _KEY_NOTE.unpack_from(data, pos)
        elif wtype == WATCH_TYPE_META and length >= _REMOVAL.size:
            key_id = _REMOVAL.unpack_from(data, pos)[2]
        out.append(Notification(wtype, subtype, watch_id, key_id, aux, bytes(data[pos : pos + length])))
        pos += length
    return out


class WatchQueue:
    """An in-process notification queue: the pipe ``keyctl watch`` reads, emulated.

    ``pages`` sizes it as ``IOC_WATCH_QUEUE_SET_SIZE`` does (one note slot per
    128 bytes of a page; ``EINVAL`` for none or more than 512 notes).  Records
    that do not fit are dropped and the last one queued is marked, so a loss
    record follows it when read.  :meth:`close` makes it defunct, as closing the
    pipe does: its watches go away and new ones get ``ENOENT``.
    """

    def __init__(self, pages: int = 1) -> None:
        notes = pages * (resource.getpagesize() // NOTE_SIZE) if isinstance(pages, int) else 0
        if notes <= 0 or notes > MAX_NOTES:
            raise error(errno.EINVAL, f"a watch queue of {pages!r} pages is outside 1..{MAX_NOTES} notes")
        self.capacity = notes
        self._notes: deque[list[bytes | bool]] = deque()
        self._note_loss = False
        self._cond = threading.Condition(threading.Lock())
        self.defunct = False
        #: The keys this queue watches, so :meth:`close` can take the watches off them.
        self._watched: dict[KeyRecord, None] = {}

    def __repr__(self) -> str:
        return f"<WatchQueue {len(self._notes)}/{self.capacity} notes{' defunct' if self.defunct else ''}>"

    def __len__(self) -> int:
        """The records waiting (a pending loss record not counted)."""
        return len(self._notes)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post(self, raw: bytes) -> bool:
        """Queue one record (``post_one_notification``); False when full (the loss is marked)."""
        with self._cond:
            if self.defunct:
                return False
            if len(self._notes) >= self.capacity:
                self._notes[-1][1] = True
                return False
            self._notes.append([raw, False])
            self._cond.notify_all()
            return True

    def read(self, size: int = 65536, timeout: float | None = 0) -> bytes:
        """Take whole records up to ``size`` bytes, as ``read(2)`` on the pipe does.

        ``timeout`` 0 does not wait (``EAGAIN`` when nothing is queued, as with
        ``O_NONBLOCK``), None waits for ever; ``ENOBUFS`` when the next record is
        larger than ``size``.
        """
        with self._cond:
            if not self._notes and not self._note_loss:
                if timeout == 0 or not self._cond.wait_for(lambda: bool(self._notes), timeout):
                    raise error(errno.EAGAIN, "no notification is queued")
            out = bytearray()
            while True:
                if self._note_loss:
                    if len(out) + _HEADER.size > size:
                        break
                    out += _HEADER.pack(
                        _header_word(WATCH_TYPE_META, WATCH_META_LOSS_NOTIFICATION), _HEADER.size
                    )
                    self._note_loss = False
                if not self._notes:
                    break
                raw, lost = self._notes[0]
                assert isinstance(raw, bytes)
                if len(out) + len(raw) > size:
                    break
                self._notes.popleft()
                out += raw
                if lost:
                    self._note_loss = True
            if not out:
                raise error(errno.ENOBUFS, f"the next notification does not fit in {size} bytes")
            return bytes(out)

    def notifications(self, timeout: float | None = 0) -> list[Notification]:
        """Everything queued, decoded (``[]`` when nothing is; waits as :meth:`read`)."""
        try:
            return decode(self.read(timeout=timeout))
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return []
            raise

    def close(self) -> None:
        """Make the queue defunct and take its watches off every key (``watch_queue_clear``)."""
        with self._cond:
            self.defunct = True
            watched = list(self._watched)
            self._watched.clear()
        for rec in watched:
            if rec.watchers:
                for w in rec.watchers:
                    if w.queue is self:
                        w.uncharge()
                rec.watchers = [w for w in rec.watchers if w.queue is not self] or None


class Watch:
    """One watch on a key: the queue it posts to, the watch id put into ``info``, and
    the per-uid count (``nr_watches``) it is charged to."""

    __slots__ = ("counts", "queue", "uid", "watch_id")

    def __init__(self, queue: WatchQueue, watch_id: int, counts: dict[int, int], uid: int) -> None:
        self.queue = queue
        self.watch_id = watch_id
        self.counts = counts
        self.uid = uid

    def __repr__(self) -> str:
        return f"Watch(watch_id={self.watch_id}, uid={self.uid})"

    def uncharge(self) -> None:
        self.counts[self.uid] -= 1


def watch_key(rec: KeyRecord, queue: WatchQueue, watch_id: int, counts: dict[int, int], uid: int) -> None:
    """``keyctl_watch_key`` past the lookup: add (``watch_id`` 0..255) or remove (-1) a watch.

    ``ENOENT`` (queue closed), ``EBUSY`` (this queue already watches the key),
    ``EAGAIN`` (``uid`` would hold more watches than its RLIMIT_NOFILE, counted in
    ``counts``), ``EBADSLT`` (removing a watch that is not there).  A removal
    posts the removal record to the queue.
    """
    watchers = rec.watchers
    if watch_id >= 0:
        if queue.defunct:
            raise error(errno.ENOENT, "the watch queue has been closed")
        if watchers and any(w.queue is queue for w in watchers):
            raise error(errno.EBUSY, f"this queue already watches key {rec.serial}")
        held = counts.get(uid, 0)
        if held + 1 > resource.getrlimit(resource.RLIMIT_NOFILE)[0]:
            raise error(errno.EAGAIN, f"uid {uid} holds {held} watches, its RLIMIT_NOFILE")
        counts[uid] = held + 1
        if watchers is None:
            rec.watchers = watchers = []
        watchers.append(Watch(queue, watch_id, counts, uid))
        queue._watched[rec] = None
        return
    for w in watchers or ():
        if w.queue is queue:
            assert watchers is not None
            watchers.remove(w)
            if not watchers:
                rec.watchers = None
            queue._watched.pop(rec, None)
            w.uncharge()
            _post_removal(rec, w)
            return
    raise error(errno.EBADSLT, f"this queue does not watch key {rec.serial}")


def _post_removal(rec: KeyRecord, w: Watch) -> None:
    info = (w.watch_id << WATCH_INFO_ID__SHIFT) | _REMOVAL.size
    w.queue.post(_REMOVAL.pack(_header_word(WATCH_TYPE_META, WATCH_META_REMOVAL_NOTIFICATION), info, rec.serial))


def notify_key(rec: KeyRecord, subtype: int, aux: int = 0) -> None:
    """Post a key notification to every watch on ``rec`` (callers test ``rec.watchers`` first)."""
    word = _header_word(WATCH_TYPE_KEY_NOTIFY, subtype)
    for w in rec.watchers or ():
        info = (w.watch_id << WATCH_INFO_ID__SHIFT) | _KEY_NOTE.size
        w.queue.post(_KEY_NOTE.pack(word, info, rec.serial, aux))


def remove_all_watches(rec: KeyRecord) -> None:
    """The key is gone (``remove_watch_list``): every watch on it ends with a removal record."""
    watchers, rec.watchers = rec.watchers, None
    for w in watchers or ():
        w.queue._watched.pop(rec, None)
        w.uncharge()
        _post_removal(rec, w)
