"""Loading the test vectors in ``tests/vectors/`` (see its README.md for where each comes from)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent / "vectors"


def load_vector_file(name: str) -> dict[str, Any]:
    """The whole of ``tests/vectors/<name>.json``; it must say where its vectors come from."""
    doc: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))
    provenance = doc.get("_provenance")
    if not isinstance(provenance, str) or not provenance.strip():
        raise ValueError(f"tests/vectors/{name}.json has no _provenance")
    return doc


def load_vectors(name: str) -> list[dict[str, Any]]:
    """The ``vectors`` list of ``tests/vectors/<name>.json``."""
    vectors: list[dict[str, Any]] = load_vector_file(name)["vectors"]
    return vectors
