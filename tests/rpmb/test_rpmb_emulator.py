"""The emulated eMMC RPMB device model, driven in-process with command lists whose frames
are built by an independent struct/cryptography reference (not by our frames module)."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import errno_of
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac

from keyring_types.rpmb.codes import Result
from keyring_types.rpmb.emulator import Behaviour, EmulatedEmmcRpmb
from keyring_types.rpmb.emulator_store import SLOTS, RpmbStore, write_checkpoint
from keyring_types.rpmb.wire import RELIABLE_WRITE, MmcCmd, decode_mmc, encode_mmc

LAYOUT = struct.Struct(">196s32s256s16sIHHHH")
KEY = bytes(range(32))


def frame(req: int, *, key_mac: bytes = bytes(32), data: bytes = bytes(256), nonce: bytes = bytes(16),
          counter: int = 0, address: int = 0, blocks: int = 0, result: int = 0) -> bytes:
    return LAYOUT.pack(bytes(196), key_mac, data, nonce, counter, address, blocks, result, req)


def mac(key: bytes, frames: bytes) -> bytes:
    h = c_hmac.HMAC(key, hashes.SHA256())
    for i in range(0, len(frames), 512):
        h.update(frames[i + 228 : i + 512])
    return h.finalize()


def signed_write(key: bytes, data: bytes, address: int, counter: int, blocks: int | None = None) -> bytes:
    n = len(data) // 256
    fs = b"".join(frame(3, data=data[i * 256 : (i + 1) * 256], counter=counter, address=address,
                        blocks=n if blocks is None else blocks) for i in range(n))
    m = mac(key, fs)
    return fs[: -512 + 196] + m + fs[-512 + 228 :]


def fields(f: bytes) -> dict[str, object]:
    _, key_mac, data, nonce, counter, address, blocks, result, typ = LAYOUT.unpack(f[-512:])
    return {"mac": key_mac, "data": data, "nonce": nonce, "counter": counter, "address": address,
            "blocks": blocks, "result": result, "type": typ}


class Card:
    """The device model plus the JEDEC sequences of spec 2.3, built by hand."""

    def __init__(self, d: Path, behaviour: Behaviour | None = None, size_mult: int = 1) -> None:
        self.store = RpmbStore(d, size_mult=size_mult, slot_blocks=(behaviour or Behaviour()).max_write_blocks)
        self.dev = EmulatedEmmcRpmb(self.store, behaviour or Behaviour())

    def run(self, cmds: list[MmcCmd]) -> list[bytes]:
        # Through the wire encoding too: what the socket carries is what the model sees.
        return self.dev.run(decode_mmc(encode_mmc(cmds)[4:]))

    def write_seq(self, req: bytes, reliable: bool = True) -> dict[str, object]:
        out = self.run([MmcCmd((RELIABLE_WRITE if reliable else 0) | 1, 25, len(req) // 512, data=req),
                        MmcCmd(1, 25, 1, data=frame(5)), MmcCmd(0, 18, 1)])
        return fields(out[0])

    def read_seq(self, req: bytes, n: int = 1) -> bytes:
        return self.run([MmcCmd(1, 25, 1, data=req), MmcCmd(0, 18, n)])[0]

    def counter(self, nonce: bytes = b"N" * 16) -> dict[str, object]:
        return fields(self.read_seq(frame(2, nonce=nonce)))

    def program(self, key: bytes = KEY) -> dict[str, object]:
        return self.write_seq(frame(1, key_mac=key))

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def card(tdir: Path) -> Iterator[Card]:
    c = Card(tdir / "st")
    yield c
    c.close()


def test_before_the_key_every_request_but_programming_says_key_not_programmed(card: Card) -> None:
    c = card.counter()
    assert (c["type"], c["result"], c["mac"]) == (0x0200, Result.KEY_NOT_PROGRAMMED, bytes(32))
    w = card.write_seq(signed_write(KEY, bytes(256), 0, 0))
    assert (w["type"], w["result"]) == (0x0300, Result.KEY_NOT_PROGRAMMED)
    r = card.read_seq(frame(4, nonce=b"n" * 16), 2)
    assert len(r) == 1024 and fields(r)["result"] == Result.KEY_NOT_PROGRAMMED


def test_key_programming_once_and_the_signed_counter(card: Card) -> None:
    assert card.program() == {**fields(frame(0x0100)), "type": 0x0100, "result": 0}
    c = card.counter(b"x" * 16)
    assert (c["result"], c["counter"], c["nonce"]) == (0, 0, b"x" * 16)
    assert c["mac"] == mac(KEY, card.read_seq(frame(2, nonce=b"x" * 16)))
    # Programming again: general failure (a real eMMC's answer), the key kept.
    assert card.program(bytes(32))["result"] == Result.GENERAL_FAILURE
    assert card.counter()["mac"] == mac(KEY, card.read_seq(frame(2, nonce=b"N" * 16)))


def test_rekey_result_write_failure_is_selectable(tdir: Path) -> None:
    c = Card(tdir / "st", Behaviour(rekey_result=Result.WRITE_FAILURE))
    try:
        assert c.program()["result"] == 0
        assert c.program()["result"] == Result.WRITE_FAILURE
    finally:
        c.close()


def test_key_programming_must_be_one_reliable_frame(card: Card) -> None:
    assert card.write_seq(frame(1, key_mac=KEY), reliable=False)["result"] == Result.GENERAL_FAILURE
    assert card.write_seq(frame(1, key_mac=KEY) * 2)["result"] == Result.GENERAL_FAILURE
    assert card.counter()["result"] == Result.KEY_NOT_PROGRAMMED  # nothing was stored


def test_write_then_read_and_counter(card: Card) -> None:
    card.program()
    data = os.urandom(256 * 3)
    w = card.write_seq(signed_write(KEY, data, 10, 0))
    assert (w["type"], w["result"], w["counter"], w["address"], w["blocks"]) == (0x0300, 0, 1, 10, 3)
    # The result read is repeatable: the stored frame again.
    assert fields(card.run([MmcCmd(1, 25, 1, data=frame(5)), MmcCmd(0, 18, 1)])[0]) == w
    r = card.read_seq(frame(4, nonce=b"r" * 16, address=10), 3)
    fs = [fields(r[i * 512 : (i + 1) * 512]) for i in range(3)]
    assert b"".join(f["data"] for f in fs) == data  # type: ignore[misc]
    assert all(f["type"] == 0x0400 and f["nonce"] == b"r" * 16 and f["address"] == 10 and f["blocks"] == 3 for f in fs)
    assert fs[2]["mac"] == mac(KEY, r) and fs[0]["mac"] == bytes(32)
    assert card.counter()["counter"] == 1


def test_write_failures(card: Card) -> None:
    card.program()
    blk = bytes(256)
    assert card.write_seq(signed_write(b"k" * 32, blk, 0, 0))["result"] == Result.AUTH_FAILURE
    assert card.write_seq(signed_write(KEY, blk, 0, 5))["result"] == Result.COUNTER_FAILURE
    assert card.write_seq(signed_write(KEY, blk, 512, 0))["result"] == Result.ADDRESS_FAILURE  # 1 x 128 KiB = 512 blocks
    assert card.write_seq(signed_write(KEY, blk * 2, 511, 0))["result"] == Result.ADDRESS_FAILURE
    assert card.write_seq(signed_write(KEY, blk * 34, 0, 0))["result"] == Result.GENERAL_FAILURE  # above 32 blocks
    assert card.write_seq(signed_write(KEY, blk, 0, 0), reliable=False)["result"] == Result.GENERAL_FAILURE
    assert card.write_seq(signed_write(KEY, blk * 2, 0, 0, blocks=3))["result"] == Result.GENERAL_FAILURE
    failed = card.write_seq(signed_write(KEY, blk, 0, 5))
    assert failed["counter"] == 0 and failed["mac"] == mac(KEY, card.run([MmcCmd(1, 25, 1, data=frame(5)), MmcCmd(0, 18, 1)])[0])
    assert card.counter()["counter"] == 0  # no failure moved the counter


def test_check_orders_differ_on_a_write_past_the_end(tdir: Path) -> None:
    # Starts inside, runs past the end, with a stale counter: virtio checks the whole
    # span before the counter, rpmb_sim checks the counter before the span's end.
    req = signed_write(KEY, bytes(512), 511, 7)
    results = {}
    for order in ("virtio", "rpmb-sim"):
        c = Card(tdir / order, Behaviour(check_order=order))
        try:
            c.program()
            results[order] = c.write_seq(req)["result"]
            results[order + "+counter"] = c.write_seq(signed_write(KEY, bytes(512), 511, 0))["result"]
        finally:
            c.close()
    assert results == {"virtio": Result.ADDRESS_FAILURE, "rpmb-sim": Result.COUNTER_FAILURE,
                       "virtio+counter": Result.ADDRESS_FAILURE, "rpmb-sim+counter": Result.WRITE_FAILURE}


def test_mac_is_checked_before_the_counter(card: Card) -> None:
    card.program()
    assert card.write_seq(signed_write(b"w" * 32, bytes(256), 0, 9))["result"] == Result.AUTH_FAILURE


def test_counter_per_block_and_block_count_echo(tdir: Path) -> None:
    seen = {}
    for name, b in {"per-block": Behaviour(counter_per_block=True), "zero": Behaviour(block_count_echo="zero"),
                    "host": Behaviour(block_count_echo="host-endian")}.items():
        c = Card(tdir / name, b)
        try:
            c.program()
            w = c.write_seq(signed_write(KEY, bytes(256 * 3), 0, 0))
            r = fields(c.read_seq(frame(4, nonce=bytes(16)), 3))
            seen[name] = (w["counter"], w["blocks"], r["blocks"])
        finally:
            c.close()
    assert seen == {"per-block": (3, 3, 3), "zero": (1, 0, 0), "host": (1, 0x0300, 0x0300)}


def test_expired_counter_flags_every_result_and_refuses_writes(tdir: Path) -> None:
    state = tdir / "st"
    c = Card(state)
    c.program()
    c.close()
    write_checkpoint(state, 0, 0xFFFFFFFE)
    c = Card(state)
    try:
        w = c.write_seq(signed_write(KEY, bytes(256), 0, 0xFFFFFFFE))
        assert (w["result"], w["counter"]) == (0x0080, 0xFFFFFFFF)
        assert c.write_seq(signed_write(KEY, bytes(256), 0, 0xFFFFFFFF))["result"] == 0x0085
        assert c.counter()["result"] == 0x0080
        assert fields(c.read_seq(frame(4, nonce=bytes(16)), 1))["result"] == 0x0080
    finally:
        c.close()


def test_reads_beyond_the_partition_and_above_the_read_limit(tdir: Path) -> None:
    c = Card(tdir / "st", Behaviour(max_read_blocks=4))
    try:
        c.program()
        assert fields(c.read_seq(frame(4, nonce=bytes(16), address=510), 4))["result"] == Result.ADDRESS_FAILURE
        assert fields(c.read_seq(frame(4, nonce=bytes(16)), 5))["result"] == Result.GENERAL_FAILURE
        assert fields(c.read_seq(frame(4, nonce=bytes(16), address=508), 4))["result"] == 0
    finally:
        c.close()


def test_command_lists_a_card_rejects(card: Card) -> None:
    assert errno_of(card.run, [MmcCmd(0, 18, 1)]) == errno.EIO  # nothing to read
    assert errno_of(card.run, [MmcCmd(1, 24, 1, data=bytes(512))]) == errno.EINVAL  # CMD24 is not RPMB's
    assert errno_of(card.run, [MmcCmd(1, 25, 1, blksz=256, data=bytes(256))]) == errno.EINVAL
    assert errno_of(encode_mmc, [MmcCmd(0, 18, 1025)]) == errno.EOVERFLOW  # MMC_IOC_MAX_BYTES per command
    assert errno_of(encode_mmc, []) == errno.EINVAL
    # A mixed or unknown request: general failure in the frame the next read returns.
    mixed = frame(2) + frame(4)
    out = card.run([MmcCmd(1, 25, 2, data=mixed), MmcCmd(0, 18, 1)])[0]
    assert fields(out)["result"] == Result.GENERAL_FAILURE
    # A result read before any write reports a general failure.
    assert fields(card.run([MmcCmd(1, 25, 1, data=frame(5)), MmcCmd(0, 18, 1)])[0])["result"] == Result.GENERAL_FAILURE


def test_state_survives_and_geometry_is_fixed(tdir: Path) -> None:
    state = tdir / "st"
    c = Card(state)
    c.program()
    data = os.urandom(512)
    c.write_seq(signed_write(KEY, data, 100, 0))
    assert errno_of(RpmbStore, state, size_mult=1, slot_blocks=32) == errno.EBUSY  # one emulator per state
    c.close()
    assert errno_of(RpmbStore, state, size_mult=4, slot_blocks=32) == errno.EINVAL
    assert errno_of(RpmbStore, state, size_mult=1, slot_blocks=64) == errno.EINVAL
    c = Card(state)
    try:
        assert c.counter()["counter"] == 1
        r = c.read_seq(frame(4, nonce=bytes(16), address=100), 2)
        assert fields(r[:512])["data"] + fields(r)["data"] == data  # type: ignore[operator]
        assert oct((state / "key").stat().st_mode & 0o777) == "0o400"
    finally:
        c.close()


def test_many_writes_cross_checkpoints(tdir: Path) -> None:
    # More writes than journal slots: the checkpoint keeps older records durable.
    state = tdir / "st"
    c = Card(state)
    c.program()
    total = SLOTS + 10
    for i in range(total):
        assert c.write_seq(signed_write(KEY, bytes([i % 256]) * 256, i % 5, i))["result"] == 0
    c.close()
    c = Card(state)
    try:
        assert c.counter()["counter"] == total
        for a in range(5):
            last = max(i for i in range(total) if i % 5 == a)
            assert fields(c.read_seq(frame(4, nonce=bytes(16), address=a), 1))["data"] == bytes([last % 256]) * 256
    finally:
        c.close()


def test_behaviour_values_are_checked() -> None:
    assert errno_of(Behaviour, rekey_result=3) == errno.EINVAL
    assert errno_of(Behaviour, block_count_echo="twice") == errno.EINVAL
    assert errno_of(Behaviour, check_order="qemu") == errno.EINVAL
    assert errno_of(Behaviour, max_write_blocks=3) == errno.EINVAL
    assert errno_of(Behaviour, max_write_blocks=512) == errno.EINVAL
