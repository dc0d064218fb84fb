"""Regression found in review: ``ktctl attest verify`` closes the file it reads."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

from keyring_types.cli import attest


def test_verify_closes_the_report_file(tmp_path: Path) -> None:
    path = tmp_path / "report.bin"
    path.write_bytes(b"not a report")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert attest.main(["verify", str(path)]) == 1
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
