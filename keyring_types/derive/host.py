"""The ``host`` root: a seed file in the state directory, where no TPM is reachable.

The seed is 32 random bytes in ``<state dir>/derived.seed``, created (mode
0400, atomically, in a checked directory: see :mod:`keyring_types.state`) by the
first derivation and read by every later one.  The PRF is the TPM root's with
the seed in place of the TPM's primary key: ``HMAC-SHA256(seed, SHA-256(m))``,
so a vector pinned with a known seed checks the whole construction.

Anyone who can read the seed file (its owner, root) can compute every key it
roots; deleting it makes every key it rooted unrecoverable, as clearing the
TPM's owner hierarchy does.  A process keeps the seed it loaded (in secret
memory) until :meth:`HostRoot.close`.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import ClassVar

from keyring_types.derive.base import DeriveRoot
from keyring_types.hmac import HmacSha256
from keyring_types.state import load_or_create_secret, state_dir

__all__ = ["SEED_FILE", "SEED_SIZE", "HostRoot"]

SEED_FILE = "derived.seed"
SEED_SIZE = 32


class HostRoot(DeriveRoot):
    """Derive from the host seed file (see the module docstring)."""

    name: ClassVar[str] = "host"

    def __init__(self, directory: Path | None = None) -> None:
        """Use ``directory`` (default: the state directory, resolved now, created on first use)."""
        self._path = (directory or state_dir(create=False)) / SEED_FILE
        self._lock = threading.Lock()
        self._mac: HmacSha256 | None = None

    @property
    def seed_path(self) -> Path:
        """Where the seed lives."""
        return self._path

    def _hmac(self) -> HmacSha256:
        mac = self._mac
        if mac is not None:
            return mac
        with self._lock:
            if self._mac is None:
                seed = load_or_create_secret(self._path, SEED_SIZE, "derived-key host seed")
                try:
                    self._mac = HmacSha256(seed)
                finally:
                    seed.wipe()
            return self._mac

    def prf_into(self, message: bytes, out: memoryview) -> None:
        """``HMAC-SHA256(seed, SHA-256(message))`` into ``out[:32]``.

        The first call creates the seed file if it is missing.  ``EACCES`` when
        the state directory or the seed file fails its checks, ``EINVAL`` when
        the file is not 32 bytes (see :func:`keyring_types.state.load_secret_file`).
        """
        # The message (length, euid, label, path or digest) is public; only the seed is secret.
        self._hmac().mac_batch(hashlib.sha256(message).digest(), 32, out[:32])

    def close(self) -> None:
        """Wipe the cached seed state; the next derivation reads the file again."""
        with self._lock:
            mac, self._mac = self._mac, None
        if mac is not None:
            mac.wipe()
