"""Opening a store that another process is making: SQLITE_BUSY answered at once is retried."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from keyring_types.store import db


def _busy() -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("database is locked")
    exc.sqlite_errorcode = 5  # type: ignore[attr-defined]  # SQLITE_BUSY
    return exc


def test_an_immediate_busy_while_opening_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Seen in CI under load: two processes making one store, one answered "database is locked"
    # from a statement SQLite does not run its busy handler for.
    real = db._open_once
    calls: list[int] = []

    def flaky(path: Path) -> Any:
        calls.append(1)
        if len(calls) < 3:
            raise _busy()
        return real(path)

    monkeypatch.setattr(db, "_open_once", flaky)
    conn, fresh = db.open_connection(tmp_path / "keys.db")
    conn.close()
    assert fresh and len(calls) == 3


def test_a_busy_that_lasts_past_the_timeout_is_ebusy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def always(path: Path) -> Any:
        raise _busy()

    monkeypatch.setattr(db, "_open_once", always)
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 50)
    with pytest.raises(OSError) as info:
        db.open_connection(tmp_path / "keys.db")
    assert info.value.errno == errno.EBUSY and "keys.db" in str(info.value)


def test_other_errors_are_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def broken(path: Path) -> Any:
        calls.append(1)
        exc = sqlite3.OperationalError("disk I/O error")
        exc.sqlite_errorcode = 10  # type: ignore[attr-defined]  # SQLITE_IOERR
        raise exc

    monkeypatch.setattr(db, "_open_once", broken)
    with pytest.raises(OSError):
        db.open_connection(tmp_path / "keys.db")
    assert calls == [1]
