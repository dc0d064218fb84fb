"""setuptools shim: cffi_modules is a setup() keyword that pyproject.toml cannot carry.

Every ``_native/build_*.py`` script defines one out-of-line API-mode extension
(``ffibuilder``); adding a C area means adding one such script.
"""

from pathlib import Path

from setuptools import setup

setup(
    cffi_modules=[f"{p.as_posix()}:ffibuilder" for p in sorted(Path("_native").glob("build_*.py"))],
)
