"""Random bytes from the OS CSPRNG, written straight into secret memory."""

from __future__ import annotations

import errno

from keyring_types.errors import error
from keyring_types.secret import SecretBuffer

__all__ = ["fill_random"]


def fill_random(buf: SecretBuffer) -> None:
    """Fill ``buf`` from the OS CSPRNG.

    Reading ``/dev/urandom`` into the buffer avoids a ``bytes`` copy of the key on
    the Python heap (``os.urandom`` would leave one).  ``EIO`` on a short read.
    """
    mv = buf.writable()
    try:
        with open("/dev/urandom", "rb", buffering=0) as f:
            done = 0
            while done < len(mv):
                n = f.readinto(mv[done:])
                if not n:
                    raise error(errno.EIO, f"the OS RNG returned {done} of {len(mv)} bytes")
                done += n
    finally:
        mv.release()
