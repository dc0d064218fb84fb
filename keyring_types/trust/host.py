"""The ``host`` trust source: keys sealed under a host key file.

This is the embedded default where no TPM is reachable, in the spirit of
systemd-creds' host key: a random 32-byte key in ``<state dir>/host.key``,
created by the first seal (mode 0400, atomically; see :mod:`keyring_types.state`
for the checks it passes before it is trusted).  An unseal never creates it: with
the file gone, old blobs cannot open, and the error says which file is missing
(``ENOKEY``) instead of quietly starting a new key.  It protects a blob against being read
anywhere else, and against an attacker who can read the blob but not the key
file; it does not protect against root on this host — a TPM does better.

Blob layout (all ours; 42 bytes of overhead, so 74..170 bytes)::

    magic "KTHK" | version 1 | flags | host-key id (8) | nonce (12) | AES-256-GCM(key) | tag (16)

``flags``: bit 0 migratable, bit 1 sealed with a ``blobauth``.  The whole header
is GCM associated data, so no bit of the blob can change unnoticed.  The
sealing key is HKDF-SHA256 of the host key with the blobauth as context, so a
wrong blobauth fails authentication exactly as a tampered blob does.  The
host-key id (a hash of the key, not the key) lets a blob from another host be
reported as such instead of as mere corruption.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import struct
import threading
from pathlib import Path
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyring_types.errors import error
from keyring_types.secret import SecretBuffer
from keyring_types.state import load_or_create_secret, load_secret_file, state_dir
from keyring_types.trust.base import TrustedOptions, TrustSource, Unsealed
from keyring_types.trust.options import check_supported

__all__ = ["HOST_KEY_FILE", "HostSource"]

HOST_KEY_FILE = "host.key"
HOST_KEY_SIZE = 32
MAGIC = b"KTHK"
VERSION = 1
FLAG_MIGRATABLE = 0x01
FLAG_BLOBAUTH = 0x02
_HEADER = struct.Struct(">4sBB8s12s")
TAG_SIZE = 16
OVERHEAD = _HEADER.size + TAG_SIZE
MIN_KEY, MAX_KEY = 32, 128


class HostSource(TrustSource):
    """Seal to the host key file under the state directory."""

    name: ClassVar[str] = "host"
    migratable: ClassVar[bool] = True
    supported_options: ClassVar[frozenset[str]] = frozenset({"blobauth", "migratable"})
    has_rng: ClassVar[bool] = False

    def __init__(self, directory: Path | None = None) -> None:
        self._path = (directory or state_dir()) / HOST_KEY_FILE
        self._lock = threading.Lock()
        self._key: SecretBuffer | None = None
        self._id = b""
        self._pid = os.getpid()

    @property
    def key_path(self) -> Path:
        return self._path

    def _host_key(self, create: bool) -> tuple[SecretBuffer, bytes]:
        """The host key and its id; only a seal (``create``) may make the key file."""
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: the inherited copy reads as zeros (secret memory is
                # wiped on fork), so it would seal and unseal under the wrong key.
                self._key, self._pid = None, os.getpid()
            if self._key is None or self._key.wiped:
                if create:
                    self._key = load_or_create_secret(self._path, HOST_KEY_SIZE, "host key")
                else:
                    self._key = self._load_for_unseal()
                with_view = self._key.view()
                try:
                    self._id = hashlib.sha256(b"keyring_types host key id\0" + with_view).digest()[:8]
                finally:
                    with_view.release()
            return self._key, self._id

    def _load_for_unseal(self) -> SecretBuffer:
        try:
            return load_secret_file(self._path, HOST_KEY_SIZE, "host key")
        except OSError as exc:
            if exc.errno != errno.ENOKEY or os.path.isdir(self._path.parent):
                raise
        # Not even the key's directory exists: this host never sealed anything, so
        # the blob is simply not one of ours, as a blob from another host is not.
        raise error(
            errno.EBADMSG,
            f"blob was sealed under another host key (this host has none: {self._path.parent} does not exist)",
        )

    def _aead(self, host_key: SecretBuffer, blobauth: bytes) -> AESGCM:
        mv = host_key.view()
        try:
            info = b"keyring_types host seal v1\0" + bytes([len(blobauth)]) + blobauth
            derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(mv)
        finally:
            mv.release()
        return AESGCM(derived)

    def seal(self, secret: SecretBuffer, options: TrustedOptions) -> bytes:
        """Seal ``secret`` (32..128 bytes); ``EINVAL`` on a bad length or unsupported option."""
        check_supported(options, self)
        if not MIN_KEY <= len(secret) <= MAX_KEY:
            raise error(errno.EINVAL, f"key length {len(secret)} is outside {MIN_KEY}..{MAX_KEY}")
        migratable = self.migratable if options.migratable is None else options.migratable
        flags = (FLAG_MIGRATABLE if migratable else 0) | (FLAG_BLOBAUTH if options.blobauth else 0)
        host_key, key_id = self._host_key(create=True)
        header = _HEADER.pack(MAGIC, VERSION, flags, key_id, os.urandom(12))
        mv = secret.view()
        try:
            sealed = self._aead(host_key, options.blobauth).encrypt(header[-12:], mv, header)
        finally:
            mv.release()
        return header + sealed

    def unseal(self, blob: bytes, options: TrustedOptions) -> Unsealed:
        """Unseal a host blob.

        ``EINVAL``: not a host blob (magic, version, length) or unsupported option;
        ``EBADMSG``: sealed under another host key, or tampered, or wrong ``blobauth``;
        ``EPERM``: the blob needs a ``blobauth`` and none was given;
        ``ENOKEY``: the host key file is missing (the message names it; when its
        whole directory is missing, nothing was ever sealed here: ``EBADMSG``);
        ``EACCES``: the state directory or key file fails its owner/mode checks.
        """
        check_supported(options, self)
        blob = bytes(blob)
        if len(blob) < OVERHEAD + MIN_KEY or len(blob) > OVERHEAD + MAX_KEY:
            raise error(errno.EINVAL, f"a host-sealed blob is {OVERHEAD + MIN_KEY}..{OVERHEAD + MAX_KEY} bytes, got {len(blob)}")
        magic, version, flags, key_id, nonce = _HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise error(errno.EINVAL, "not a host-sealed blob (bad magic); was it sealed by another trust source?")
        if version != VERSION:
            raise error(errno.EINVAL, f"unsupported host blob version {version}")
        if flags & ~(FLAG_MIGRATABLE | FLAG_BLOBAUTH):
            raise error(errno.EBADMSG, f"host blob has unknown flags 0x{flags:02x}")
        host_key, my_id = self._host_key(create=False)
        if not hmac.compare_digest(key_id, my_id):
            raise error(
                errno.EBADMSG,
                f"blob was sealed under another host key (id {key_id.hex()}; this host's is {my_id.hex()}, {self._path})",
            )
        if flags & FLAG_BLOBAUTH and not options.blobauth:
            raise error(errno.EPERM, "blob was sealed with a blobauth; give blobauth= to load it")
        out = SecretBuffer(len(blob) - OVERHEAD)
        try:
            plain = bytearray(self._aead(host_key, options.blobauth).decrypt(nonce, blob[_HEADER.size :], blob[: _HEADER.size]))
        except InvalidTag:
            out.wipe()
            raise error(errno.EBADMSG, "host blob failed authentication: wrong blobauth, or the blob was altered") from None
        try:
            out.writable()[:] = plain
        finally:
            plain[:] = bytes(len(plain))
        return Unsealed(secret=out, migratable=bool(flags & FLAG_MIGRATABLE))

    def close(self) -> None:
        """Wipe the cached host key."""
        with self._lock:
            if self._key is not None:
                self._key.wipe()
                self._key = None
