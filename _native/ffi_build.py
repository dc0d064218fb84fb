"""What every ``_native/build_*.py`` shares: one cffi extension from headers and sources.

Each C function is declared once, in its header; the build scripts take their
cdef from there so the two cannot drift.  Comments and preprocessor lines
are dropped (cdef does not run the preprocessor), except object-like
``#define``s: integer literals are kept as they are, and any other value becomes
``#define NAME ...``, which cffi's API mode asks the C compiler for.
"""

from __future__ import annotations

import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent


_INT_DEFINE = re.compile(
    r"#\s*define\s+([A-Za-z_]\w*)\s+\(?\s*(-?(?:0x[0-9A-Fa-f]+|\d+))[uUlL]*\s*\)?\s*$"
)
_ANY_DEFINE = re.compile(r"#\s*define\s+([A-Za-z_]\w*)\s+\S")


def header_cdef(name: str) -> str:
    """The declarations and integer constants of ``_native/<name>``."""
    text = (HERE / name).read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    out = []
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            out.append(line)
        elif m := _INT_DEFINE.match(line.strip()):
            out.append(f"#define {m.group(1)} {m.group(2)}")
        elif m := _ANY_DEFINE.match(line.strip()):
            out.append(f"#define {m.group(1)} ...")
    return "\n".join(out)


def make_ffi(
    module: str,
    headers: list[str],
    sources: list[str],
    libraries: list[str] | None = None,
) -> FFI:
    """An out-of-line API-mode FFI for ``module`` built from ``_native`` headers and sources."""
    ffibuilder = FFI()
    ffibuilder.cdef("\n".join(header_cdef(h) for h in headers))
    ffibuilder.set_source(
        module,
        "\n".join(f'#include "{h}"' for h in headers),
        sources=[f"_native/{src}" for src in sources],
        include_dirs=["_native"],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
        libraries=libraries or [],
    )
    return ffibuilder
