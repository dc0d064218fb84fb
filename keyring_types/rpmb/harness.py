"""The ``LD_PRELOAD`` harness that relays a program's MMC RPMB ioctls to the emulator.

``_native/rpmb_harness.c``, built by ``setup.py build_ext`` as
``keyring_types/bindings/libkt_rpmb_harness.so``, intercepts ``open``/``ioctl``/``close``
(and ``dup``/``dup2``/``dup3``/``fcntl(F_DUPFD)``, so a copy of the descriptor is the device too)
of one device path in an unmodified program (Debian's ``mmc``, or our own
:class:`~keyring_types.rpmb.transport.MmcTransport`) and sends the
``MMC_IOC_CMD``/``MMC_IOC_MULTI_CMD`` command lists to a running emulator.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from keyring_types.errors import error
from keyring_types.rpmb.transport import HARNESS_DEVICE_ENV, HARNESS_SOCKET_ENV

__all__ = ["LIBRARY_NAME", "library_path", "harness_env"]

LIBRARY_NAME = "libkt_rpmb_harness.so"


def library_path() -> Path:
    """The built harness library.  ``ENOENT`` when it was not built."""
    import keyring_types.bindings as b

    path = Path(b.__path__[0]) / LIBRARY_NAME
    if not path.is_file():
        raise error(errno.ENOENT, f"the RPMB harness is not built ({path}): run `python setup.py build_ext --inplace`")
    return path.resolve()


def harness_env(socket: str | os.PathLike[str], device: str | os.PathLike[str]) -> dict[str, str]:
    """The environment under which a program that opens ``device`` reaches the
    emulator on ``socket`` (absolute paths, so the program may change directory).
    ``ENOENT`` when the library is not built, ``EINVAL`` for a socket path too long
    for ``sockaddr_un``."""
    sock = os.path.abspath(os.fspath(socket))
    if len(sock.encode()) >= 108:
        raise error(errno.EINVAL, "the emulator's socket path is longer than a Unix socket address allows")
    return {
        "LD_PRELOAD": os.fspath(library_path()),
        HARNESS_SOCKET_ENV: sock,
        HARNESS_DEVICE_ENV: os.path.abspath(os.fspath(device)),
    }
