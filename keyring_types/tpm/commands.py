"""The few TPM 2.0 commands that carry secrets, marshalled by hand into secret memory.

TPM2_Create (the key to seal and its password go in), TPM2_Load (the parent's
password), TPM2_Unseal (the key comes out), TPM2_FlushContext, and for derived
keys TPM2_CreatePrimary, TPM2_Hash and TPM2_Sign (an HMAC key's output), each with a
single authorisation: a password session (``TPM_RS_PW``) or a policy session
the caller started, the password sent in the clear as the kernel sends it.
Commands are built in and responses read from :meth:`TpmConnection.scratch`
buffers; only non-secret results (handles, the encrypted TPM2B_PRIVATE, the
TPM2B_PUBLIC) leave them as ``bytes``, and unsealed data leaves as a
:class:`SecretBuffer`.  Part 3 of the TPM 2.0 library specification gives the
layouts.

Why by hand and not through tpm2-pytss's ESAPI, which the rest of the project
uses: ESAPI keeps the last response (an unsealed key) in tpm2-tss's command
buffer, a copy of TPM2_Create's sensitive input (key and blobauth) in its
context and passwords in its object records, all in ordinary heap memory (seen
in a core dump; ``tests/tpm/test_tpm_secrets.py`` scans the process for them).
It was also slower (``docs/performance.md``: ESAPI's Load alone cost 427 µs
against 53 µs for the same command sent directly).  What these commands make is
checked against tpm2-tools, the peer implementation, in
``tests/tpm/test_tpm2_interop.py`` and ``tests/derived/``.
"""

from __future__ import annotations

import errno
import struct

from keyring_types.errors import error
from keyring_types.secret import SecretBuffer
from keyring_types.tpm.connection import TpmConnection

__all__ = [
    "TPM_RH_OWNER",
    "TPM_RS_PW",
    "CommandWriter",
    "ResponseReader",
    "create",
    "create_primary",
    "flush_context",
    "get_random_into",
    "hash_with_ticket",
    "load",
    "sign_hmac_into",
    "unseal",
]

Buffer = bytes | bytearray | memoryview

TPM_RS_PW = 0x40000009
TPM_RH_OWNER = 0x40000001
_TPM_ST_NO_SESSIONS = 0x8001
_TPM_ST_SESSIONS = 0x8002
_TPM_CC_CREATE = 0x00000153
_TPM_CC_LOAD = 0x00000157
_TPM_CC_UNSEAL = 0x0000015E
_TPM_CC_FLUSH_CONTEXT = 0x00000165
_TPM_CC_GET_RANDOM = 0x0000017B
_TPM_CC_CREATE_PRIMARY = 0x00000131
_TPM_CC_HASH = 0x0000017D
_TPM_CC_SIGN = 0x0000015D
_TPM_ALG_HMAC = 0x0005
_TPM_ALG_SHA256 = 0x000B
_SHA256_SIZE = 32
_HEADER_SIZE = 10


class CommandWriter:
    """Appends big-endian fields to a command buffer (bounds-checked: ``E2BIG``).

    For other commands that carry secrets (e.g. a derived key's TPM2_Sign): write
    the handles, :meth:`password_auth`, the parameters, then :meth:`finish` with
    the tag and command code, and pass the length to ``TpmConnection.exchange``.
    """

    __slots__ = ("buf", "pos")

    def __init__(self, buf: memoryview) -> None:
        """Write into ``buf`` after the 10-byte header, which :meth:`finish` fills in."""
        self.buf = buf
        self.pos = _HEADER_SIZE

    def _room(self, n: int) -> int:
        start = self.pos
        if start + n > len(self.buf):
            raise error(errno.E2BIG, f"TPM command longer than {len(self.buf)} bytes")
        self.pos = start + n
        return start

    def u16(self, v: int) -> None:
        """Append a UINT16 (``E2BIG`` past the buffer)."""
        struct.pack_into(">H", self.buf, self._room(2), v)

    def u32(self, v: int) -> None:
        """Append a UINT32 (``E2BIG`` past the buffer)."""
        struct.pack_into(">I", self.buf, self._room(4), v)

    def raw(self, data: Buffer) -> None:
        """Append ``data`` as is, copied from the caller's buffer (``E2BIG``)."""
        start = self._room(len(data))
        self.buf[start : self.pos] = data

    def tpm2b(self, data: Buffer) -> None:
        """Append a TPM2B: the size, then ``data`` (``E2BIG``)."""
        self.u16(len(data))
        self.raw(data)

    def password_auth(self, session: int, auth: Buffer) -> None:
        """authorizationSize + one TPMS_AUTH_COMMAND: handle, empty nonce, attributes 0, the password."""
        self.u32(4 + 2 + 1 + 2 + len(auth))
        self.u32(session)
        self.u16(0)
        self.raw(b"\x00")
        self.tpm2b(auth)

    def finish(self, tag: int, cc: int) -> int:
        """Write the header (``tag``, the size, command code ``cc``); return the command's length."""
        struct.pack_into(">HII", self.buf, 0, tag, self.pos, cc)
        return self.pos


class ResponseReader:
    """Reads a response's fields; running past its end is ``EFAULT`` (a malformed response, as the kernel says)."""

    __slots__ = ("buf", "end", "pos", "what")

    def __init__(self, buf: memoryview, end: int, what: str) -> None:
        """Read ``buf[:end]`` (the response of ``what``) from just after its header."""
        self.buf, self.pos, self.end, self.what = buf, _HEADER_SIZE, end, what

    def _take(self, n: int) -> int:
        start = self.pos
        if start + n > self.end:
            raise error(errno.EFAULT, f"malformed TPM response to '{self.what}'")
        self.pos = start + n
        return start

    def u16(self) -> int:
        """Read a UINT16 (``EFAULT`` past the response)."""
        return int(struct.unpack_from(">H", self.buf, self._take(2))[0])

    def u32(self) -> int:
        """Read a UINT32 (``EFAULT`` past the response)."""
        return int(struct.unpack_from(">I", self.buf, self._take(4))[0])

    def tpm2b_span(self) -> tuple[int, int]:
        """(start, end) of a TPM2B *including* its size prefix."""
        start = self.pos
        n = self.u16()
        self._take(n)
        return start, self.pos


def create(
    conn: TpmConnection,
    parent: int,
    parent_auth: Buffer,
    data: Buffer,
    user_auth: Buffer,
    public: bytes,
    what: str = "seal the key",
) -> tuple[bytes, bytes]:
    """TPM2_Create of ``data`` under ``parent``: returns (TPM2B_PRIVATE, TPM2B_PUBLIC), size prefixes included.

    ``public`` is the marshalled TPM2B_PUBLIC template.  TPM errors as
    :func:`keyring_types.tpm.errors.tpm_error` with ``seal=True`` (TPM_RC_HASH is
    ``EINVAL``); ``E2BIG`` when the command does not fit; ``EIO``/``ENODEV``.
    """
    with conn.lock, conn.scratch() as (cmd, rsp):
        w = CommandWriter(cmd)
        w.u32(parent)
        w.password_auth(TPM_RS_PW, parent_auth)
        # inSensitive: TPM2B_SENSITIVE_CREATE { userAuth, data }
        w.u16(2 + len(user_auth) + 2 + len(data))
        w.tpm2b(user_auth)
        w.tpm2b(data)
        w.raw(public)
        w.u16(0)  # outsideInfo
        w.u32(0)  # creationPCR: empty TPML_PCR_SELECTION
        n = conn.exchange(cmd, w.finish(_TPM_ST_SESSIONS, _TPM_CC_CREATE), rsp, what, seal=True)
        r = ResponseReader(rsp, n, what)
        r.u32()  # parameterSize
        p0, p1 = r.tpm2b_span()
        q0, q1 = r.tpm2b_span()
        return bytes(rsp[p0:p1]), bytes(rsp[q0:q1])


def load(
    conn: TpmConnection, parent: int, parent_auth: Buffer, private: bytes, public: bytes, what: str = "load the sealed object"
) -> int:
    """TPM2_Load of marshalled ``private``/``public`` under ``parent``; returns the transient handle.

    TPM errors as :func:`keyring_types.tpm.errors.tpm_error`; ``EIO``/``ENODEV``.
    The caller flushes the handle (:func:`flush_context`).
    """
    with conn.lock, conn.scratch() as (cmd, rsp):
        w = CommandWriter(cmd)
        w.u32(parent)
        w.password_auth(TPM_RS_PW, parent_auth)
        w.raw(private)
        w.raw(public)
        n = conn.exchange(cmd, w.finish(_TPM_ST_SESSIONS, _TPM_CC_LOAD), rsp, what)
        return ResponseReader(rsp, n, what).u32()


def unseal(conn: TpmConnection, item: int, session: int, auth: Buffer, what: str = "unseal the key") -> SecretBuffer:
    """TPM2_Unseal of loaded ``item``, authorised by ``session`` (``TPM_RS_PW`` or a policy session) with ``auth``.

    A policy session is used once: attributes 0 ends it after success.  Returns
    the unsealed data in secret memory.  TPM errors as
    :func:`keyring_types.tpm.errors.tpm_error`; ``EIO``/``ENODEV``.
    """
    with conn.lock, conn.scratch() as (cmd, rsp):
        w = CommandWriter(cmd)
        w.u32(item)
        w.password_auth(session, auth)
        n = conn.exchange(cmd, w.finish(_TPM_ST_SESSIONS, _TPM_CC_UNSEAL), rsp, what)
        r = ResponseReader(rsp, n, what)
        r.u32()  # parameterSize
        start, end = r.tpm2b_span()
        return SecretBuffer.from_bytes(rsp[start + 2 : end])


def flush_context(conn: TpmConnection, handle: int, what: str = "flush the loaded object") -> None:
    """TPM2_FlushContext of ``handle``; TPM errors as :func:`keyring_types.tpm.errors.tpm_error`."""
    with conn.lock, conn.scratch() as (cmd, rsp):
        w = CommandWriter(cmd)
        w.u32(handle)
        conn.exchange(cmd, w.finish(_TPM_ST_NO_SESSIONS, _TPM_CC_FLUSH_CONTEXT), rsp, what)


def get_random_into(conn: TpmConnection, out: memoryview, what: str = "return random bytes") -> None:
    """Fill ``out`` from the TPM's RNG (TPM2_GetRandom, repeated: the TPM returns at most a digest per call).

    The bytes go from the secret-memory response buffer straight into ``out``.
    ``EIO`` if the TPM returns nothing; TPM errors as
    :func:`keyring_types.tpm.errors.tpm_error`; ``ENODEV``.
    """
    done = 0
    while done < len(out):
        with conn.lock, conn.scratch() as (cmd, rsp):
            w = CommandWriter(cmd)
            w.u16(min(len(out) - done, 64))
            n = conn.exchange(cmd, w.finish(_TPM_ST_NO_SESSIONS, _TPM_CC_GET_RANDOM), rsp, what)
            start, end = ResponseReader(rsp, n, what).tpm2b_span()
            got = min(end - start - 2, len(out) - done)
            if got <= 0:
                raise error(errno.EIO, "TPM2_GetRandom returned no bytes")
            out[done : done + got] = rsp[start + 2 : start + 2 + got]
            done += got


def create_primary(
    conn: TpmConnection, hierarchy: int, hierarchy_auth: Buffer, public: bytes, what: str = "create the primary key"
) -> int:
    """TPM2_CreatePrimary in ``hierarchy`` from the marshalled TPM2B_PUBLIC ``public``; returns the transient handle.

    The sensitive part is empty (no userAuth, no data: the TPM makes the key
    from the hierarchy's seed and the template), as are outsideInfo and the
    creation PCR selection.  TPM errors as
    :func:`keyring_types.tpm.errors.tpm_error` (``ENOMEM`` when it has no
    object slot); ``EIO``/``ENODEV``.  The caller flushes the handle.
    """
    with conn.lock, conn.scratch() as (cmd, rsp):
        w = CommandWriter(cmd)
        w.u32(hierarchy)
        w.password_auth(TPM_RS_PW, hierarchy_auth)
        w.u16(4)  # inSensitive: TPM2B_SENSITIVE_CREATE with an empty userAuth and data
        w.u16(0)
        w.u16(0)
        w.raw(public)
        w.u16(0)  # outsideInfo
        w.u32(0)  # creationPCR: empty TPML_PCR_SELECTION
        n = conn.exchange(cmd, w.finish(_TPM_ST_SESSIONS, _TPM_CC_CREATE_PRIMARY), rsp, what)
        return ResponseReader(rsp, n, what).u32()


def hash_with_ticket(conn: TpmConnection, data: Buffer, hierarchy: int, what: str = "hash the data") -> tuple[bytes, bytes]:
    """TPM2_Hash of ``data`` with SHA-256 for ``hierarchy``: (outHash as a TPM2B, the TPMT_TK_HASHCHECK ticket).

    Both come back marshalled, ready for :func:`sign_hmac_into`; neither is
    secret.  ``data`` is a TPM2B_MAX_BUFFER, so a TPM refuses more than its
    MAX_DIGEST_BUFFER (1024 bytes on common TPMs) with TPM_RC_SIZE.  TPM errors as
    :func:`keyring_types.tpm.errors.tpm_error`; ``E2BIG``, ``EIO``/``ENODEV``.
    """
    with conn.lock, conn.scratch() as (cmd, rsp):
        w = CommandWriter(cmd)
        w.tpm2b(data)
        w.u16(_TPM_ALG_SHA256)
        w.u32(hierarchy)
        n = conn.exchange(cmd, w.finish(_TPM_ST_NO_SESSIONS, _TPM_CC_HASH), rsp, what)
        r = ResponseReader(rsp, n, what)
        d0, d1 = r.tpm2b_span()
        t0 = r.pos
        r.u16()  # ticket tag
        r.u32()  # ticket hierarchy
        r.tpm2b_span()  # ticket digest
        return bytes(rsp[d0:d1]), bytes(rsp[t0 : r.pos])


def sign_hmac_into(
    conn: TpmConnection,
    key: int,
    digest: bytes,
    ticket: bytes,
    out: memoryview,
    what: str = "sign the digest",
    session: int = TPM_RS_PW,
) -> None:
    """TPM2_Sign of ``digest`` (a marshalled TPM2B) with the HMAC-SHA256 key ``key``, ``ticket`` as validation.

    Authorised by ``session``: the empty password (``TPM_RS_PW``), or a policy
    session the caller satisfied on this connection (attributes 0: the TPM
    ends it after success).  The 32-byte HMAC goes from the secret-memory
    response straight into ``out`` (at least 32 bytes).  ``EFAULT`` when the
    signature is not an HMAC-SHA256 of 32 bytes (as the kernel checks the
    response's size); TPM errors as :func:`keyring_types.tpm.errors.tpm_error`;
    ``EIO``/``ENODEV``.
    """
    with conn.lock, conn.scratch() as (cmd, rsp):
        w = CommandWriter(cmd)
        w.u32(key)
        w.password_auth(session, b"")
        w.raw(digest)
        w.u16(_TPM_ALG_HMAC)  # inScheme: HMAC with SHA-256
        w.u16(_TPM_ALG_SHA256)
        w.raw(ticket)
        n = conn.exchange(cmd, w.finish(_TPM_ST_SESSIONS, _TPM_CC_SIGN), rsp, what)
        r = ResponseReader(rsp, n, what)
        size = r.u32()  # parameterSize
        if size != 2 + 2 + _SHA256_SIZE or r.u16() != _TPM_ALG_HMAC or r.u16() != _TPM_ALG_SHA256:
            raise error(errno.EFAULT, f"TPM answered '{what}' with a signature that is not a 32-byte HMAC-SHA256")
        start = r.pos
        if start + _SHA256_SIZE > n:
            raise error(errno.EFAULT, f"malformed TPM response to '{what}'")
        out[:_SHA256_SIZE] = rsp[start : start + _SHA256_SIZE]
