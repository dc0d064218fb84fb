"""One connection to a TPM 2.0: the TCTI, an ESAPI context on it, and raw command exchange.

The TPM is named by a tpm2-tss TCTI string, from ``KEYRING_TYPES_TPM2_TCTI``
(default ``device:/dev/tpmrm0``, the kernel's resource manager).  Nothing is
opened until first use; a transport failure marks the connection broken and
the next use reopens it.

Commands that carry secrets (a key to seal, unsealed data, passwords) are not
sent through ESAPI: tpm2-tss keeps its command/response buffer and a copy of
TPM2_Create's sensitive input in its context, in ordinary heap memory, until a
later command happens to overwrite them.  :meth:`TpmConnection.exchange` sends
a command built in secret memory straight to the TCTI and receives the
response into secret memory; both are zeroed after every command.  The ESAPI
context (:attr:`TpmConnection.esapi`) shares the same TCTI for everything
else (capabilities, PCRs, sessions).
"""

from __future__ import annotations

import errno
import importlib.util
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

from keyring_types.errors import error
from keyring_types.secret import SecretBuffer
from keyring_types.tpm.errors import TSS2_RC_LAYER_SHIFT, tpm_error

__all__ = [
    "DEFAULT_TCTI",
    "MAX_COMMAND_SIZE",
    "TCTI_ENV",
    "TpmConnection",
    "configured_tcti",
    "is_persistent_handle",
    "parse_tcti",
    "tcti_reachable",
]

TCTI_ENV = "KEYRING_TYPES_TPM2_TCTI"
DEFAULT_TCTI = "device:/dev/tpmrm0"

#: Largest command or response exchanged here (TPM2_PT_MAX_COMMAND_SIZE of common TPMs).
MAX_COMMAND_SIZE = 4096

_HEADER = struct.Struct(">HII")
_ZEROS = bytes(2 * MAX_COMMAND_SIZE)
_LAYER_TCTI = 10
_HR_SHIFT = 24
_HT_TRANSIENT = 0x80
_HT_PERSISTENT = 0x81
#: TPM_RC_YIELDED, TPM_RC_TESTING, TPM_RC_RETRY: the TPM did not start the command; send it again.
_RESUBMIT = frozenset({0x908, 0x90A, 0x922})
#: How often a command is sent before its TPM_RC_RETRY is reported (ESAPI's _ESYS_MAX_SUBMISSIONS).
_SUBMISSIONS = 5


def configured_tcti() -> str:
    """The TCTI string in ``$KEYRING_TYPES_TPM2_TCTI``, else ``device:/dev/tpmrm0``."""
    return os.environ.get(TCTI_ENV) or DEFAULT_TCTI


def parse_tcti(tcti: str) -> tuple[str, dict[str, str], str]:
    """Split ``name:conf`` into the name, the ``key=value`` fields of conf, and conf itself."""
    name, _, conf = tcti.partition(":")
    fields: dict[str, str] = {}
    for part in conf.split(","):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return name.strip(), fields, conf


def tcti_reachable(tcti: str, timeout: float = 0.25) -> bool:
    """Cheap probe, no TPM command sent: can a TPM be reached through ``tcti``?

    ``device:`` checks the character device is openable for read and write;
    ``swtpm:``/``mssim:`` open (and close) a TCP connection to the command port.
    Other TCTIs are assumed reachable when tpm2-pytss is installed.
    """
    if importlib.util.find_spec("tpm2_pytss") is None:
        return False
    name, fields, conf = parse_tcti(tcti)
    if name == "device":
        return os.access(conf or "/dev/tpmrm0", os.R_OK | os.W_OK)
    if name in ("swtpm", "mssim"):
        host = fields.get("host", "localhost")
        try:
            port = int(fields.get("port", "2321"))
        except ValueError:
            return False
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False
    return True


def is_persistent_handle(handle: int) -> bool:
    """Whether ``handle`` is in the TPM's persistent-object range (0x81xxxxxx)."""
    return 0 <= handle <= 0xFFFFFFFF and handle >> _HR_SHIFT == _HT_PERSISTENT


def _pytss() -> tuple[Any, Any]:
    """tpm2-pytss' cffi ``ffi`` and ``lib`` (``ENODEV`` when it is not installed)."""
    try:
        from tpm2_pytss._libtpm2_pytss import ffi, lib
    except ImportError:
        raise error(errno.ENODEV, "the TPM needs tpm2-pytss (install keyring_types[tpm])") from None
    return ffi, lib


class TpmConnection:
    """A lazily opened connection to one TPM.

    Thread-safe: every exchange holds :attr:`lock` (an ``RLock``; callers that
    send several commands as one operation hold it around all of them).
    Raises ``ENODEV`` when tpm2-pytss is missing or the TCTI cannot be opened,
    ``EIO`` when the transport fails mid-command.
    """

    def __init__(self, tcti: str | None = None) -> None:
        """Use ``tcti`` (default: :func:`configured_tcti`); nothing is opened yet."""
        self.tcti: str = tcti or configured_tcti()
        self.lock = threading.RLock()
        self._tcti_obj: Any = None
        self._esapi: Any = None
        self._scratch: SecretBuffer | None = None
        self._scratch_busy = False
        #: Set when the transport failed; everything is reopened before the next use.
        self._broken = False

    def __repr__(self) -> str:
        state = "open" if self._tcti_obj is not None else "closed"
        return f"<TpmConnection tcti={self.tcti!r} {state}>"

    # ------------------------------------------------------------------ open / close

    def _transport(self) -> Any:
        """The TCTI, opened on first use (``ENODEV`` if it cannot be)."""
        if self._broken:
            self.close()
        if self._tcti_obj is not None:
            return self._tcti_obj
        _pytss()
        from tpm2_pytss import TSS2_Exception
        from tpm2_pytss.TCTILdr import TCTILdr

        try:
            self._tcti_obj = TCTILdr.parse(self.tcti)
        except (TSS2_Exception, ValueError, RuntimeError) as exc:
            raise error(errno.ENODEV, f"cannot open TPM TCTI {self.tcti!r}: {exc}") from None
        return self._tcti_obj

    @property
    def esapi(self) -> Any:
        """The ESAPI context on this connection's TCTI, opened on first use (``ENODEV``).

        Behind a resource manager a session exists only on the connection that
        started it: callers that build a policy session for a command sent
        here start it on this context.
        """
        with self.lock:
            tcti = self._transport()
            if self._esapi is None:
                from tpm2_pytss import ESAPI, TSS2_Exception

                try:
                    self._esapi = ESAPI(tcti)
                except TSS2_Exception as exc:
                    raise error(errno.ENODEV, f"cannot initialise ESAPI on {self.tcti!r}: {exc}") from None
            return self._esapi

    @property
    def is_open(self) -> bool:
        """Whether the TCTI is open now."""
        return self._tcti_obj is not None

    def close(self) -> None:
        """Finalize the ESAPI context and the TCTI (a later call reopens them)."""
        with self.lock:
            esapi, tcti = self._esapi, self._tcti_obj
            self._esapi = self._tcti_obj = None
            self._broken = False
            if esapi is not None:
                esapi.close()
            if tcti is not None:
                tcti.finalize()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ raw commands

    @contextmanager
    def scratch(self) -> Iterator[tuple[memoryview, memoryview]]:
        """Command and response buffers in secret memory, zeroed when the block ends.

        The buffers belong to the connection: the block holds :attr:`lock`, and
        a nested block is ``EBUSY``.
        """
        with self.lock:
            if self._scratch_busy:
                # The lock is re-entrant: a nested block would zero the outer one's command.
                raise error(errno.EBUSY, "the TPM connection's command buffers are already in use")
            if self._scratch is None:
                self._scratch = SecretBuffer(2 * MAX_COMMAND_SIZE)
            whole = self._scratch.writable()
            self._scratch_busy = True
            try:
                yield whole[:MAX_COMMAND_SIZE], whole[MAX_COMMAND_SIZE:]
            finally:
                whole[:] = _ZEROS
                self._scratch_busy = False

    def exchange(self, command: memoryview, length: int, response: memoryview, what: str, *, seal: bool = False) -> int:
        """Send ``command[:length]`` to the TPM and receive into ``response``; return the response length.

        Raises the decoded TPM error (see :func:`keyring_types.tpm.errors.tpm_error`)
        when the response code is not success, ``EIO`` when the transport fails or
        the response is malformed, ``ENODEV`` when the TPM cannot be reached.
        """
        ffi, _ = _pytss()
        with self.lock:
            tcti = self._transport()
            v1, ctx = tcti._v1, tcti._ctx
            size = ffi.new("size_t *")
            cmd_ptr, rsp_ptr = ffi.from_buffer(command), ffi.from_buffer(response)
            for attempt in range(_SUBMISSIONS):
                size[0] = len(response)
                rc = v1.transmit(ctx, length, cmd_ptr)
                if rc == 0:
                    rc = v1.receive(ctx, size, rsp_ptr, -1)
                if rc != 0:
                    self._broken = True
                    if rc >> TSS2_RC_LAYER_SHIFT != _LAYER_TCTI:
                        rc = (_LAYER_TCTI << TSS2_RC_LAYER_SHIFT) | (rc & 0xFFFF)
                    raise tpm_error(rc, what)
                n = int(size[0])
                if n < _HEADER.size:
                    self._broken = True
                    raise error(errno.EIO, f"TPM answered '{what}' with a {n}-byte response")
                _, declared, code = _HEADER.unpack_from(response, 0)
                if declared != n:
                    self._broken = True
                    raise error(errno.EIO, f"TPM response to '{what}' declares {declared} bytes, {n} arrived")
                if code in _RESUBMIT and attempt + 1 < _SUBMISSIONS:
                    # The TPM did not start the command (as ESAPI and the kernel do: send it again).
                    if attempt:
                        time.sleep(0.001 * (1 << attempt))
                    continue
                if code != 0:
                    raise tpm_error(code, what, seal=seal)
                return n
            raise AssertionError("unreachable: the last submission returns or raises")

    def call(self, fn: Any, what: str, *args: Any, **kwargs: Any) -> Any:
        """Run one ESAPI call, turning TSS errors into errno (a transport error marks the connection broken)."""
        from tpm2_pytss import TSS2_Exception

        try:
            return fn(*args, **kwargs)
        except TSS2_Exception as exc:
            rc = int(exc.rc)
            if rc >> TSS2_RC_LAYER_SHIFT == _LAYER_TCTI:
                self._broken = True
            raise tpm_error(rc, what) from None

    # ------------------------------------------------------------------ diagnostics

    def transient_handles(self) -> list[int]:
        """The transient object handles the TPM holds now (TPM2_GetCapability; for leak checks)."""
        from tpm2_pytss.constants import TPM2_CAP

        with self.lock:
            esapi = self.esapi
            _, cap = self.call(esapi.get_capability, "list handles", TPM2_CAP.HANDLES, _HT_TRANSIENT << _HR_SHIFT, 64)
            handles = cap.data.handles
            return [int(handles.handle[i]) for i in range(handles.count)]
