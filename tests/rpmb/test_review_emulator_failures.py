"""Regression found in review: what the emulated RPMB device answers when its disk fails
mid-write is what a restart finds (JEDEC: a write takes effect with its counter, or fails
with neither; a client told "failed" must never see the write appear later)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_rpmb_emulator import KEY, Card, fields, frame, signed_write

from keyring_types.rpmb.codes import Result

DATA = b"\xa5" * 256


@contextmanager
def failing(monkeypatch: pytest.MonkeyPatch, name: str, when: Callable[[int], bool]) -> Iterator[list[int]]:
    """``os.<name>`` raises EIO for the fds ``when`` picks; yields the list of refused fds."""
    real = getattr(os, name)
    refused: list[int] = []

    def fake(fd: int, *args: object) -> object:
        if when(fd):
            refused.append(fd)
            raise OSError(errno.EIO, "injected I/O error")
        return real(fd, *args)

    with monkeypatch.context() as m:
        m.setattr(os, name, fake)
        yield refused


def reopened(d: Path, card: Card) -> Card:
    card.close()
    return Card(d)


def read_block(card: Card, address: int) -> dict[str, object]:
    return fields(card.read_seq(frame(4, nonce=b"r" * 16, address=address)))


def test_image_write_failing_after_the_commit_still_reports_the_write(tdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tdir / "st"
    card = Card(d)
    try:
        card.program()
        with failing(monkeypatch, "pwrite", lambda fd: fd == card.store._image) as refused:
            w = card.write_seq(signed_write(KEY, DATA, 3, 0))
            # The journal record is durable, so the write has happened: OK, counter advanced.
            assert refused
            assert (w["result"], w["counter"]) == (Result.OK, 1)
            # Reads see it while the image still refuses the copy.
            assert (read_block(card, 3)["result"], read_block(card, 3)["data"]) == (Result.OK, DATA)
            assert card.counter()["counter"] == 1
        # The image works again: the next write copies the pending one in as well.
        assert card.write_seq(signed_write(KEY, b"\x5a" * 256, 4, 1))["result"] == Result.OK
        assert os.pread(card.store._image, 256, 3 * 256) == DATA
        card = reopened(d, card)
        assert card.counter()["counter"] == 2
        assert read_block(card, 3)["data"] == DATA
    finally:
        card.close()


def test_image_failure_then_restart_keeps_what_was_reported(tdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tdir / "st"
    card = Card(d)
    try:
        card.program()
        with failing(monkeypatch, "pwrite", lambda fd: fd == card.store._image):
            w = card.write_seq(signed_write(KEY, DATA, 7, 0))
            card.close()  # the emulator stops before the image took the write
        card = Card(d)
        # Recovery replays the record: the device after restart agrees with the answer given.
        assert (w["result"], w["counter"]) == (Result.OK, 1)
        assert card.counter()["counter"] == 1
        assert read_block(card, 7)["data"] == DATA
    finally:
        card.close()


def test_journal_sync_failure_is_rolled_back_before_reporting_failure(tdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tdir / "st"
    card = Card(d)
    try:
        card.program()
        journal = card.store._journal
        seen = {"n": 0}

        def first_sync_only(fd: int) -> bool:
            seen["n"] += fd == journal
            return fd == journal and seen["n"] == 1  # the record's sync fails, the rollback's works

        with monkeypatch.context() as m:
            m.setattr(os, "fdatasync", _fail_when(os.fdatasync, first_sync_only))
            w = card.write_seq(signed_write(KEY, DATA, 2, 0))
        assert (w["result"], w["counter"]) == (Result.WRITE_FAILURE, 0)
        assert card.counter()["counter"] == 0
        # The whole record reached the page cache before the sync failed; a restart must
        # not replay a write the client was told failed.
        card = reopened(d, card)
        assert card.counter()["counter"] == 0
        assert read_block(card, 2)["data"] == bytes(256)
        # And the device goes on at the same counter.
        assert card.write_seq(signed_write(KEY, DATA, 2, 0))["result"] == Result.OK
    finally:
        card.close()


def _fail_when(real: Callable[[int], None], when: Callable[[int], bool]) -> Callable[[int], None]:
    def fake(fd: int) -> None:
        if when(fd):
            raise OSError(errno.EIO, "injected I/O error")
        real(fd)

    return fake


def test_a_failed_rollback_answers_eio_until_restart(tdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tdir / "st"
    card = Card(d)
    try:
        card.program()
        with failing(monkeypatch, "fdatasync", lambda fd: fd == card.store._journal):
            # Neither the record nor its rollback can be made durable: no result frame is
            # true, so the command list fails as a card that stops answering.
            with pytest.raises(OSError) as info:
                card.write_seq(signed_write(KEY, DATA, 2, 0))
            assert info.value.errno == errno.EIO
            with pytest.raises(OSError) as info:
                card.counter()
            assert info.value.errno == errno.EIO
        card = reopened(d, card)
        # Recovery decides; whatever it decided, counter and data agree.
        c = card.counter()["counter"]
        assert read_block(card, 2)["data"] == (DATA if c == 1 else bytes(256))
    finally:
        card.close()


def test_key_file_made_but_its_sync_failing_reports_the_key_programmed(tdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tdir / "st"
    card = Card(d)
    try:
        with failing(monkeypatch, "fsync", lambda fd: stat.S_ISDIR(os.fstat(fd).st_mode)) as refused:
            r = card.program()
        assert refused
        # The key file exists: after a restart the device is programmed, so it is now.
        assert r["result"] == Result.OK
        assert card.counter()["result"] == Result.OK
        card = reopened(d, card)
        assert card.counter()["result"] == Result.OK
    finally:
        card.close()
