"""The ``tpm2`` root: the RFC's restricted HMAC primary key in the owner hierarchy.

PRF(m) is TPM2_Hash(m, SHA-256, owner) followed by TPM2_Sign of that digest,
with its ticket, by the primary made from this template (TPM2B_PUBLIC, 22 bytes)::

    keyedHash, nameAlg SHA-256, attributes 0x00050072 (fixedTPM | fixedParent |
    sensitiveDataOrigin | userWithAuth | restricted | sign), no policy,
    scheme HMAC-SHA256, unique "kernel"

A primary is a function of the hierarchy's seed and the template, so every
process and every boot gets the same key, and TPM2_Clear (a new owner seed)
changes every key at once.  The TPM computes HMAC-SHA256(K, SHA-256(m)).

The RFC creates and flushes the primary for every 32-byte block.  Here it is
made once per connection and kept; a kept primary can only go stale through
something that also makes it unusable -- TPM2_Clear flushes every owner
object, a TPM reset or restart flushes every transient one, a resource
manager fails to reload it -- so when TPM2_Sign refuses a kept primary, the
primary is made again and the whole derivation is run once more.  Whatever it
answers the second time is the answer.  Without a resource manager another
client could, after a clear, load an object at the very handle the kept
primary had; the documentation names this (docs/derived.md).

Errors follow the RFC: a TPM refusal is ``EPERM``, a TPM out of object memory
``ENOMEM``, a malformed TPM2_Sign answer ``EFAULT`` (all as
:func:`keyring_types.tpm.errors.tpm_error` maps them); where the RFC says
``EPERM`` for every other code, a busy TPM stays ``EAGAIN``, a TPM in failure
mode or a broken transport ``EIO``, and no TPM ``ENODEV``, the meanings the
shared TPM module gives them.
"""

from __future__ import annotations

import atexit
import errno
import os
import threading
import weakref
from typing import ClassVar

from keyring_types.derive.base import DeriveRoot
from keyring_types.derive.kdf import kdf108_ctr_into
from keyring_types.derive.pcr_policy import PcrSelection, gated_template, policy_pcr_digest
from keyring_types.errors import error
from keyring_types.tpm.commands import TPM_RH_OWNER, create_primary, flush_context, hash_with_ticket, sign_hmac_into
from keyring_types.tpm.connection import TpmConnection, configured_tcti, tcti_reachable

__all__ = ["PRIMARY_TEMPLATE", "Tpm2Root"]

#: The RFC's TPM2B_PUBLIC (size 0x16): keyedHash, SHA-256, 0x00050072, no policy, HMAC-SHA256, unique "kernel".
PRIMARY_TEMPLATE = bytes.fromhex("0016" "0008" "000b" "00050072" "0000" "0005" "000b" "0006") + b"kernel"

_roots: weakref.WeakSet[Tpm2Root] = weakref.WeakSet()


def _close_all() -> None:
    # A TPM without a resource manager keeps a transient object after its
    # process exits (swtpm has three slots): flush ours on the way out.
    for root in list(_roots):
        try:
            root.close()
        except OSError:
            pass


atexit.register(_close_all)


class Tpm2Root(DeriveRoot):
    """Derive with the TPM reached through ``tcti`` (default ``$KEYRING_TYPES_TPM2_TCTI``)."""

    name: ClassVar[str] = "tpm2"

    def __init__(self, tcti: str | None = None) -> None:
        """Nothing is opened until the first derivation."""
        self._conn = TpmConnection(tcti)
        self._primary: int | None = None
        self._pid = os.getpid()
        self._lock = threading.RLock()
        _roots.add(self)

    @classmethod
    def available(cls) -> bool:
        """Whether a TPM answers at the configured TCTI (no command sent)."""
        return tcti_reachable(configured_tcti())

    @property
    def connection(self) -> TpmConnection:
        """The connection derivations use."""
        return self._conn

    def _after_fork(self) -> None:
        # The child must not share the parent's socket, nor flush the parent's primary.
        if self._pid != os.getpid():
            self._conn = TpmConnection(self._conn.tcti)
            self._primary = None
            self._pid = os.getpid()

    def _primary_handle(self) -> int:
        if self._primary is None:
            self._primary = create_primary(
                self._conn, TPM_RH_OWNER, b"", PRIMARY_TEMPLATE, "create the derived-key primary"
            )
        return self._primary

    def prf_into(self, message: bytes, out: memoryview) -> None:
        """One block: TPM2_Hash of ``message`` for the owner hierarchy, then TPM2_Sign with the ticket."""
        with self._lock:
            self._after_fork()
            self._prf_once(message, out)

    def _prf_once(self, message: bytes, out: memoryview) -> None:
        conn = self._conn
        digest, ticket = hash_with_ticket(conn, message, TPM_RH_OWNER, "hash the derivation input")
        sign_hmac_into(conn, self._primary_handle(), digest, ticket, out, "sign with the derived-key primary")

    def derive_into(self, info: bytes, out: memoryview, *, pcrs: PcrSelection | None = None) -> None:
        """All blocks under the connection's lock; once more with a new primary if a kept one failed.

        With ``pcrs``, the PCR-gated primary (:mod:`keyring_types.derive.pcr_policy`)
        is made for this derivation and flushed after it.  Errors as the module
        docstring says; ``EIO`` when the TPM does not return every selected PCR
        (a bank it has not allocated); ``EPERM`` when the PCRs change between
        reading them and the policy session.
        """
        if pcrs is not None:
            self._derive_gated(info, out, pcrs)
            return
        with self._lock, self._conn.lock:
            self._after_fork()
            kept = self._primary is not None
            try:
                kdf108_ctr_into(self._prf_once, info, out)
            except OSError as exc:
                if not kept or exc.errno == errno.EFAULT:
                    raise
                # The owner hierarchy was cleared, the TPM restarted, or the resource
                # manager lost the object: the handle is stale.  Make the primary again.
                self._forget_primary()
                kdf108_ctr_into(self._prf_once, info, out)

    def _derive_gated(self, info: bytes, out: memoryview, pcrs: PcrSelection) -> None:
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE
        from tpm2_pytss.types import TPM2B_DIGEST, TPMT_SYM_DEF

        with self._lock, self._conn.lock:
            self._after_fork()
            conn = self._conn
            esapi = conn.esapi
            _, _, digests = conn.call(esapi.pcr_read, "read the PCRs of pcrs=", pcrs.text())
            values = [bytes(digests.digests[i]) for i in range(digests.count)]
            if len(values) != len(pcrs.indices):
                raise error(errno.EIO, f"the TPM returned {len(values)} of the {len(pcrs.indices)} PCRs of pcrs= (is the bank allocated?)")
            template = gated_template(policy_pcr_digest(pcrs, values))
            primary = create_primary(conn, TPM_RH_OWNER, b"", template, "create the PCR-gated derived-key primary")

            def prf_into(message: bytes, dst: memoryview) -> None:
                digest, ticket = hash_with_ticket(conn, message, TPM_RH_OWNER, "hash the derivation input")
                session = conn.call(
                    esapi.start_auth_session,
                    "start a policy session",
                    ESYS_TR.NONE,
                    ESYS_TR.NONE,
                    TPM2_SE.POLICY,
                    TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                    TPM2_ALG.SHA256,
                )
                signed = False
                try:
                    conn.call(esapi.policy_pcr, "run TPM2_PolicyPCR", session, TPM2B_DIGEST(), pcrs.text())
                    handle = int(esapi.tr_get_tpm_handle(session))
                    sign_hmac_into(conn, primary, digest, ticket, dst, "sign with the PCR-gated primary", session=handle)
                    signed = True
                finally:
                    # After a successful TPM2_Sign the TPM ended the session; otherwise it is still loaded.
                    if signed:
                        esapi.tr_close(session)
                    else:
                        try:
                            esapi.flush_context(session)
                        except Exception:  # noqa: BLE001, S110  (the session went with a broken transport)
                            pass

            try:
                kdf108_ctr_into(prf_into, info, out)
            finally:
                try:
                    flush_context(conn, primary, "flush the PCR-gated primary")
                except OSError:
                    pass

    def _forget_primary(self) -> None:
        handle, self._primary = self._primary, None
        # A closed or broken connection is not reopened just to flush: behind a resource
        # manager the object went with the connection, and a TPM that went away took it too.
        if handle is not None and self._conn.is_open and not self._conn._broken:
            try:
                flush_context(self._conn, handle, "flush the stale derived-key primary")
            except OSError:
                pass  # already gone with the hierarchy or the TPM's restart

    def close(self) -> None:
        """Flush the primary (in the process that made it) and close the connection."""
        with self._lock:
            if self._pid != os.getpid():
                self._primary = None
                return
            try:
                self._forget_primary()
            finally:
                self._conn.close()

