"""Measurement event logs: TCG crypto-agile logs, the CCEL ACPI table, replay, and checking a log
against a TDX quote.

A TCG PC Client crypto-agile log starts with a SHA-1-format ``EV_NO_ACTION`` event whose data is
the ``Spec ID Event03`` structure (the digest algorithms and sizes of every later event), then
``TCG_PCR_EVENT2`` records, each with one digest per bank.  A TDX guest's firmware writes one in
the CCEL area the ACPI ``CCEL`` table points to; its MR index 0 is MRTD, 1..4 are RTMR0..3.

:func:`replay` folds the log into register values: ``new = H(old ‖ digest)`` from all zero, except
``EV_NO_ACTION`` events (never extended) and a TPM ``StartupLocality`` event (sets PCR 0's first
value).  :func:`check_quote` replays a log against a quote's RTMRs and says which events explain
which register.  IMA's ``ascii_runtime_measurements`` is read by :mod:`keyring_types.imalog`
(re-exported here).

Errors: ``EBADMSG`` for a malformed log or table, ``EKEYREJECTED`` for a log that does not
explain a quote, ``EINVAL`` for bad arguments.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import attrs

from keyring_types.errors import error
from keyring_types.imalog import ImaEntry, parse_ima, replay_ima

__all__ = [
    "ALGORITHMS",
    "EV_NO_ACTION",
    "EV_EVENT_TAG",
    "Event",
    "EventLog",
    "Registers",
    "CcelTable",
    "RtmrExplanation",
    "parse",
    "replay",
    "parse_ccel",
    "check_quote",
    "rtmrs_of",
    "pack_spec_id_event",
    "pack_event",
    "ImaEntry",
    "parse_ima",
    "replay_ima",
]

#: TCG algorithm ids -> (hashlib name, digest size).
ALGORITHMS: Final = {
    0x0004: ("sha1", 20),
    0x000B: ("sha256", 32),
    0x000C: ("sha384", 48),
    0x000D: ("sha512", 64),
    0x0012: ("sm3_256", 32),
}
_BY_NAME: Final = {name: alg for alg, (name, _size) in ALGORITHMS.items()}
EV_NO_ACTION: Final = 0x00000003
EV_EVENT_TAG: Final = 0x00000006
_SPEC_ID: Final = b"Spec ID Event03\x00"
_STARTUP_LOCALITY: Final = b"StartupLocality\x00"
_OLD_HEADER: Final = struct.Struct("<II20sI")
_CCEL: Final = struct.Struct("<4sIBB6s8sIIIBBHQQ")
_CC_TYPES: Final = {1: "sev", 2: "tdx"}


def _bad(msg: str) -> OSError:
    return error(errno.EBADMSG, msg)


@attrs.frozen
class Event:
    """One log event.  ``index`` is the PCR or MR index; ``digests`` maps TCG algorithm id to
    digest; ``offset`` is where the event starts in the log."""

    index: int
    type: int
    digests: Mapping[int, bytes]
    data: bytes = attrs.field(repr=False)
    offset: int


@attrs.frozen
class EventLog:
    """A parsed crypto-agile log: the banks its Spec ID event declares, and the events after it
    (the Spec ID event itself is ``header``)."""

    algorithms: Mapping[int, int]  # algorithm id -> digest size
    header: Event
    events: tuple[Event, ...]
    end: int  # where the last event ends


def pack_spec_id_event(algorithms: Sequence[int] = (0x000C,), *, platform_class: int = 0, uintn_size: int = 2) -> bytes:
    """The SHA-1-format first event of a crypto-agile log declaring ``algorithms``.  ``EINVAL``
    for an algorithm id this module does not know."""
    for alg in algorithms:
        if alg not in ALGORITHMS:
            raise error(errno.EINVAL, f"event log: unknown algorithm id {alg:#x}")
    spec = _SPEC_ID + struct.pack("<IBBBBI", platform_class, 0, 2, 0, uintn_size, len(algorithms))
    spec += b"".join(struct.pack("<HH", a, ALGORITHMS[a][1]) for a in algorithms) + b"\x00"
    return _OLD_HEADER.pack(0, EV_NO_ACTION, bytes(20), len(spec)) + spec


def pack_event(index: int, type_: int, digests: Mapping[int, bytes], data: bytes = b"") -> bytes:
    """One ``TCG_PCR_EVENT2`` record.  ``EINVAL`` for an unknown algorithm or a digest of the
    wrong size."""
    out = struct.pack("<III", index, type_, len(digests))
    for alg, digest in digests.items():
        if alg not in ALGORITHMS or len(digest) != ALGORITHMS[alg][1]:
            raise error(errno.EINVAL, "event log: a digest has an unknown algorithm or the wrong size")
        out += struct.pack("<H", alg) + digest
    return out + struct.pack("<I", len(data)) + data


def _parse_spec(data: bytes) -> dict[int, int]:
    if len(data) < 28 or data[:16] != _SPEC_ID:
        raise _bad("event log: the first event is not a 'Spec ID Event03'")
    (count,) = struct.unpack_from("<I", data, 24)
    if count == 0 or 28 + 4 * count + 1 > len(data):
        raise _bad("event log: Spec ID event's algorithm count does not fit its data")
    algs: dict[int, int] = {}
    for i in range(count):
        alg, size = struct.unpack_from("<HH", data, 28 + 4 * i)
        if alg in algs:
            raise _bad("event log: Spec ID event names an algorithm twice")
        if alg in ALGORITHMS and ALGORITHMS[alg][1] != size:
            raise _bad(f"event log: Spec ID event gives {ALGORITHMS[alg][0]} a digest size of {size}")
        algs[alg] = size
    vendor = data[28 + 4 * count]
    if 28 + 4 * count + 1 + vendor != len(data):
        raise _bad("event log: Spec ID event's vendor info size does not match its data")
    return algs


def parse(log: bytes) -> EventLog:
    """Parse a TCG crypto-agile event log (e.g. a CCEL area or
    ``/sys/kernel/security/tpm0/binary_bios_measurements``).

    The log ends at its last complete event: where an event would start with index
    0xFFFFFFFF, or the rest of the area is all 0x00 or all 0xFF (unused log space).  ``EBADMSG``
    for a log without a Spec ID event, an event running past the end, or a digest of an
    algorithm the Spec ID event does not declare.
    """
    b = bytes(log)
    if len(b) < _OLD_HEADER.size:
        raise _bad("event log: shorter than its first event")
    index, type_, sha1, size = _OLD_HEADER.unpack_from(b)
    # Its index is 0 in a TPM log; TDX firmware writes 1 (RTMR0's MR index).
    if type_ != EV_NO_ACTION:
        raise _bad("event log: the first event is not EV_NO_ACTION")
    start = _OLD_HEADER.size
    if start + size > len(b):
        raise _bad("event log: the Spec ID event runs past the end")
    algs = _parse_spec(b[start : start + size])
    header = Event(index, type_, {0x0004: sha1}, b[start : start + size], 0)
    pos = start + size
    events: list[Event] = []
    while pos + 12 <= len(b):
        rest = b[pos:]
        if rest.count(0) == len(rest) or rest.count(0xFF) == len(rest):
            break
        index, type_, count = struct.unpack_from("<III", b, pos)
        if index == 0xFFFFFFFF:
            break
        p = pos + 12
        if count == 0 or count > len(algs):
            raise _bad(f"event log: event at offset {pos} has {count} digests for {len(algs)} banks")
        digests: dict[int, bytes] = {}
        for _ in range(count):
            if p + 2 > len(b):
                raise _bad(f"event log: event at offset {pos} is truncated")
            (alg,) = struct.unpack_from("<H", b, p)
            n = algs.get(alg)
            if n is None or alg in digests:
                raise _bad(f"event log: event at offset {pos} has a digest of an undeclared or repeated algorithm")
            if p + 2 + n + 4 > len(b):
                raise _bad(f"event log: event at offset {pos} is truncated")
            digests[alg] = b[p + 2 : p + 2 + n]
            p += 2 + n
        (data_len,) = struct.unpack_from("<I", b, p)
        p += 4
        if p + data_len > len(b):
            raise _bad(f"event log: event at offset {pos} has data running past the end")
        events.append(Event(index, type_, digests, b[p : p + data_len], pos))
        pos = p + data_len
    return EventLog(algs, header, tuple(events), pos)


def _bank(log: EventLog, algorithm: str | int | None) -> int:
    if algorithm is None:
        if len(log.algorithms) == 1:
            return next(iter(log.algorithms))
        for preferred in (0x000C, 0x000B):
            if preferred in log.algorithms:
                return preferred
        return next(iter(log.algorithms))
    alg = _BY_NAME.get(algorithm) if isinstance(algorithm, str) else algorithm
    if alg is None or alg not in log.algorithms:
        raise error(errno.EINVAL, "event log: the log has no bank of that algorithm")
    if alg not in ALGORITHMS:
        raise error(errno.EINVAL, "event log: cannot replay an algorithm this module does not know")
    return alg


class Registers(dict[int, bytes]):
    """Replayed values, index → value.  Only extended registers are stored (and iterated); any
    other index reads as all zero, the value a register the log never extends has."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __missing__(self, index: int) -> bytes:
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise KeyError(index)
        return bytes(self.size)


def _replay(log: EventLog, alg: int) -> tuple[Registers, dict[int, list[Event]]]:
    name, size = ALGORITHMS[alg]
    values = Registers(size)
    by_index: dict[int, list[Event]] = {}
    for ev in log.events:
        if ev.type == EV_NO_ACTION:
            # TPM logs: PCR 0 starts at the locality that ran TPM2_Startup (PC Client spec 10.4.5.3).
            if ev.index == 0 and ev.data[:16] == _STARTUP_LOCALITY and len(ev.data) == 17 and 0 not in values:
                values[0] = bytes(size - 1) + ev.data[16:17]
            continue
        digest = ev.digests.get(alg)
        if digest is None:
            raise _bad(f"event log: event at offset {ev.offset} has no {name} digest")
        old = values.get(ev.index, bytes(size))
        values[ev.index] = hashlib.new(name, old + digest).digest()
        by_index.setdefault(ev.index, []).append(ev)
    return values, by_index


def replay(log: bytes, *, algorithm: str | int | None = None) -> dict[int, bytes]:
    """Register values (index → value) after every extend of ``log``.

    ``algorithm`` picks the bank (``"sha384"`` or a TCG id); by default the only bank, else
    SHA-384, else SHA-256.  The dict holds the registers the log extends; any other index reads
    as all zero (e.g. ``replay(ccel)[4]`` is RTMR3 of a TD that never extended it).
    ``EBADMSG`` as :func:`parse`; ``EINVAL`` for a bank the log lacks.
    """
    parsed = parse(log)
    return _replay(parsed, _bank(parsed, algorithm))[0]


def rtmrs_of(values: Mapping[int, bytes]) -> tuple[bytes, bytes, bytes, bytes]:
    """The four RTMRs from replayed TDX values (MR index 1..4; a missing one is all zero)."""
    size = len(next(iter(values.values()))) if values else 48
    return (values.get(1, bytes(size)), values.get(2, bytes(size)), values.get(3, bytes(size)), values.get(4, bytes(size)))


@attrs.frozen
class RtmrExplanation:
    """For one RTMR: whether the log reproduces the quote's value, and the events that do."""

    rtmr: int
    matches: bool
    events: tuple[Event, ...]


def check_quote(log: bytes, quote: object, *, strict: bool = True) -> tuple[RtmrExplanation, ...]:
    """Replay a TDX event log (SHA-384 bank, MR index i+1 → RTMR i) against ``quote`` (anything
    with ``rtmrs``, e.g. :class:`~keyring_types.attest.tdx.TdxQuote`).

    Returns, per RTMR, whether it matches and which events explain it.  With ``strict``
    (default) a mismatch is ``EKEYREJECTED`` naming the first RTMR the log does not explain;
    events of MR index 0 (MRTD) or above 4 are ``EBADMSG``.  Verify the quote first: this only
    says the log agrees with the quote.
    """
    rtmrs = getattr(quote, "rtmrs", None)
    if not isinstance(rtmrs, tuple) or len(rtmrs) != 4:
        raise error(errno.EINVAL, "check_quote: quote has no four RTMRs")
    parsed = parse(log)
    if 0x000C not in parsed.algorithms:
        raise _bad("event log: no SHA-384 bank (a TDX log extends RTMRs with SHA-384)")
    values, by_index = _replay(parsed, 0x000C)
    for index in by_index:
        if not 1 <= index <= 4:
            raise _bad(f"event log: MR index {index} is not an RTMR (1..4)")
    out = []
    for i in range(4):
        got = values.get(i + 1, bytes(48))
        ok = hmac.compare_digest(got, rtmrs[i])
        out.append(RtmrExplanation(i, ok, tuple(by_index.get(i + 1, ()))))
        if strict and not ok:
            raise error(errno.EKEYREJECTED, f"event log: replay does not reproduce RTMR{i}")
    return tuple(out)


@attrs.frozen
class CcelTable:
    """The ACPI CCEL table: the confidential-computing type, and where the log area is."""

    cc_type: int
    cc_subtype: int
    log_length: int  # LAML: minimum length of the log area
    log_address: int  # LASA: physical address of the log area
    oem_id: bytes
    revision: int

    @property
    def cc_name(self) -> str:
        """``"tdx"``, ``"sev"`` or ``"unknown"``."""
        return _CC_TYPES.get(self.cc_type, "unknown")


def parse_ccel(table: bytes) -> CcelTable:
    """Parse an ACPI ``CCEL`` table (``/sys/firmware/acpi/tables/CCEL``).  ``EBADMSG`` for
    another signature, a length that does not match, or a bad checksum."""
    b = bytes(table)
    if len(b) < _CCEL.size:
        raise _bad(f"CCEL table: {len(b)} bytes, shorter than {_CCEL.size}")
    sig, length, rev, _csum, oem, _oem_table, _oem_rev, _creator, _creator_rev, cc_type, sub, _res, laml, lasa = _CCEL.unpack_from(b)
    if sig != b"CCEL":
        raise _bad("CCEL table: signature is not 'CCEL'")
    if length != len(b):
        raise _bad("CCEL table: length field does not match its size")
    if sum(b) & 0xFF:
        raise _bad("CCEL table: checksum does not sum to zero")
    return CcelTable(cc_type, sub, laml, lasa, oem, rev)


def events_for(log: EventLog, indices: Iterable[int]) -> list[Event]:
    """The events of ``log`` that extend one of ``indices``, in log order."""
    wanted = set(indices)
    return [e for e in log.events if e.index in wanted and e.type != EV_NO_ACTION]
