"""Declarations for ``ffibuilder.cdef()`` read from a header in this folder.

Each C function is declared once, in its header; the cffi build scripts take
their cdef from there so the two cannot drift.  Comments and preprocessor lines
are dropped (cdef does not run the preprocessor).
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent


def header_cdef(name: str) -> str:
    """The declarations of ``_native/<name>`` without comments or ``#`` lines."""
    text = (HERE / name).read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
