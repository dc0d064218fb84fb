"""Reading a secret from a file descriptor into secret memory, for the CLI families.

A raw key or passphrase piped into ``ktctl`` (``ktctl pipe %user:k | ktctl
fscrypt add-key /mnt``) goes from the pipe straight into a
:class:`~keyring_types.secret.SecretBuffer`, never into a Python ``bytes``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from keyring_types.errors import error
from keyring_types.secret import SecretBuffer


@contextmanager
def read_secret(fd: int, limit: int, what: str) -> Iterator[memoryview]:
    """Everything readable from ``fd`` (up to end of file), as a read-only view
    of secret memory wiped on exit.

    ``EINVAL`` when there is more than ``limit`` bytes (the rest is not read);
    ``read(2)``'s errno otherwise.  An empty input gives an empty view: the
    consumer says what it needs.
    """
    buf = SecretBuffer(limit + 1)
    try:
        out = buf.writable()
        got = 0
        try:
            while got <= limit:
                n = os.readv(fd, [out[got:]])
                if n == 0:
                    break
                got += n
        except OSError as exc:
            raise error(exc.errno or errno.EIO, f"cannot read the {what}: {exc.strerror}") from None
        finally:
            out.release()
        if got > limit:
            raise error(errno.EINVAL, f"the {what} is longer than {limit} bytes")
        view = buf.view()
        part = view[:got]
        try:
            yield part
        finally:
            part.release()
            view.release()
    finally:
        buf.wipe()
