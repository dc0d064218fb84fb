"""setuptools shim: cffi_modules is a setup() keyword that pyproject.toml cannot carry.

Every ``_native/build_*.py`` script defines one out-of-line API-mode extension
(``ffibuilder``); adding a C area means adding one such script.  ``build_ext``
also compiles the RPMB ``LD_PRELOAD`` harness (``_native/rpmb_harness.c``), a
plain shared library rather than a Python extension, next to the extensions.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext


class BuildExtWithHarness(build_ext):
    """The cffi extensions, then ``keyring_types/bindings/libkt_rpmb_harness.so``."""

    def run(self) -> None:
        super().run()
        self.build_rpmb_harness()

    def build_rpmb_harness(self) -> None:
        if getattr(self, "editable_mode", False):
            # An editable install imports the package from the source tree, where
            # setuptools copies the extensions it knows of; this library it does not.
            out_dir = Path(self.get_finalized_command("build_py").get_package_dir("keyring_types.bindings"))
        else:
            out_dir = Path(self.get_ext_fullpath("keyring_types.bindings._hmac")).parent
        target = out_dir / "libkt_rpmb_harness.so"
        src = Path("_native/rpmb_harness.c")
        if target.exists() and target.stat().st_mtime >= src.stat().st_mtime and not self.force:
            return
        objects = self.compiler.compile([str(src)], output_dir=self.build_temp, extra_preargs=["-fPIC", "-O2"])
        self.compiler.link_shared_object(objects, str(target), libraries=["dl", "pthread"])


setup(
    cffi_modules=[f"{p.as_posix()}:ffibuilder" for p in sorted(Path("_native").glob("build_*.py"))],
    cmdclass={"build_ext": BuildExtWithHarness},
)
