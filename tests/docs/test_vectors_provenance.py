"""Every file in tests/vectors/ says where its vectors come from and is listed in its README."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vector_data import VECTORS, load_vector_file

FILES = sorted(VECTORS.glob("*.json"))


def test_there_are_vector_files() -> None:
    assert {p.stem for p in FILES} >= {"hmac_sha256_rfc4231", "rpmb_frames", "encrypted_blobs", "tpm2_tpmkey_der"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_vector_file_has_provenance_and_is_listed(path: Path) -> None:
    doc = load_vector_file(path.stem)
    assert len(doc["_provenance"]) >= 40, "say where the vectors come from, not just a name"
    assert doc.get("vectors"), "a vector file holds a non-empty 'vectors' list"
    assert f"`{path.name}`" in (VECTORS / "README.md").read_text(encoding="utf-8")


def test_missing_provenance_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vector_data

    (tmp_path / "bare.json").write_text(json.dumps({"vectors": [1]}))
    monkeypatch.setattr(vector_data, "VECTORS", tmp_path)
    with pytest.raises(ValueError, match="no _provenance"):
        vector_data.load_vector_file("bare")
