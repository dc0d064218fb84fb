"""Regression found in review: the emulated vendor flash changes nothing when its state cannot be saved."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from keyring_types.rpmb import vendor as V
from keyring_types.rpmb.vendor_emulator import EmulatedAuthFlash

KEY = bytes(range(90, 122))


def _failing_save(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(self: EmulatedAuthFlash) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(EmulatedAuthFlash, "_save", no_space)


def test_a_provisioning_that_is_not_saved_leaves_the_device_unkeyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = EmulatedAuthFlash(tmp_path)
    prov = V.sign_command(KEY, V.OP_WRITE, V.SUB_PROVISION, payload=KEY)
    with monkeypatch.context() as m:
        _failing_save(m)
        with pytest.raises(OSError):
            dev.handle(prov)
    # The device answered with an error: it must not act keyed (a restart would forget the
    # key, and anyone could then provision their own).
    q = V.sign_command(KEY, V.OP_READ, V.SUB_COUNTER, nonce=bytes(16))
    with pytest.raises(OSError) as info:
        V.check_response(KEY, dev.handle(q), q)
    assert info.value.errno == errno.ENOKEY
    # Provisioning works once the disk is back.
    assert V.check_response(KEY, dev.handle(prov), prov).status == 0


def test_a_write_that_is_not_saved_changes_neither_flash_nor_counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = EmulatedAuthFlash(tmp_path)
    dev.handle(V.sign_command(KEY, V.OP_WRITE, V.SUB_PROVISION, payload=KEY))
    before = (dev.counter, bytes(dev.flash), bytes(dev.locks))
    w = V.sign_command(KEY, V.OP_WRITE, V.SUB_WRITE, counter=0, address=0, payload=b"new data")
    lock = V.sign_command(KEY, V.OP_WRITE, V.SUB_LOCK, counter=0, address=0, payload=(4096).to_bytes(4, "big"))
    with monkeypatch.context() as m:
        _failing_save(m)
        for packet in (w, lock):
            with pytest.raises(OSError):
                dev.handle(packet)
    assert (dev.counter, bytes(dev.flash), bytes(dev.locks)) == before
    # The same signed write, retried once the disk is back, is not a replay.
    assert V.check_response(KEY, dev.handle(w), w).counter == 1


def _fail_fsync(monkeypatch: pytest.MonkeyPatch, directory: bool) -> list[int]:
    """``os.fsync`` of a regular file (the temporary state) or of a directory raises EIO."""
    real = os.fsync
    refused: list[int] = []

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode) == directory:
            refused.append(fd)
            raise OSError(errno.EIO, "injected I/O error")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return refused


@pytest.mark.parametrize("how", ["fsync", "replace"])
def test_a_failed_save_leaves_no_temporary_and_the_old_flash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    dev = EmulatedAuthFlash(tmp_path)
    dev.handle(V.sign_command(KEY, V.OP_WRITE, V.SUB_PROVISION, payload=KEY))
    saved = (tmp_path / "vendor-flash").read_bytes()
    w = V.sign_command(KEY, V.OP_WRITE, V.SUB_WRITE, counter=0, address=0, payload=b"new data")
    with monkeypatch.context() as m:
        if how == "fsync":
            _fail_fsync(m, directory=False)
        else:
            def no_rename(src: object, dst: object) -> None:
                raise OSError(errno.EIO, "injected I/O error")

            m.setattr(os, "replace", no_rename)
        with pytest.raises(OSError):
            dev.handle(w)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vendor-flash"], "a failed save left its temporary file"
    assert (tmp_path / "vendor-flash").read_bytes() == saved
    assert EmulatedAuthFlash(tmp_path).counter == dev.counter == 0


def test_a_save_whose_directory_sync_fails_keeps_the_state_it_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = EmulatedAuthFlash(tmp_path)
    dev.handle(V.sign_command(KEY, V.OP_WRITE, V.SUB_PROVISION, payload=KEY))
    w = V.sign_command(KEY, V.OP_WRITE, V.SUB_WRITE, counter=0, address=0, payload=b"new data")
    with monkeypatch.context() as m:
        refused = _fail_fsync(m, directory=True)
        with pytest.raises(OSError):
            dev.handle(w)  # the outcome is uncertain to the caller: an errno, no response
        assert refused
    # The renamed file is what a restart reads: the running device agrees with it.
    again = EmulatedAuthFlash(tmp_path)
    assert (again.counter, bytes(again.flash[:8])) == (dev.counter, bytes(dev.flash[:8])) == (1, b"new data")
