"""No copy of a sealed key, unsealed data or TPM password stays in this process's memory.

Regression: tpm2-tss kept the plaintext of the last TPM2_Unseal in its command
buffer and a copy of TPM2_Create's sensitive input (key and blobauth) in its
ESAPI context, and the parent and object passwords in its object records and in
freed tpm2-pytss structures, all in ordinary heap memory (seen in a core dump).
The test scans every writable mapping of the process for the secret, as a core
dump would show it.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from keyring_types.secret import SecretBuffer
from keyring_types.trust.base import TrustedOptions
from keyring_types.trust.tpm2 import Tpm2Source

pytestmark = pytest.mark.tpm

PARENT = 0x81000001
_BYTES_HEADER = sys.getsizeof(b"") - 1  # offset of a bytes object's data from id()

_libc = ctypes.CDLL(None, use_errno=True)
_libc.memmem.restype = ctypes.c_void_p
_libc.memmem.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]


def copies_in_memory(needle: bytes) -> list[str]:
    """Where ``needle`` occurs in the process's writable memory, apart from ``needle`` itself.

    memmem over the mappings in place: reading them into Python objects would
    itself leave copies behind.
    """
    own = id(needle) + _BYTES_HEADER
    hits: list[str] = []
    maps = Path("/proc/self/maps").read_text().splitlines()
    for line in maps:
        fields = line.split()
        if not fields[1].startswith("rw"):
            continue
        name = fields[5] if len(fields) > 5 else ""
        if name.startswith(("/dev/", "[vvar", "[vsyscall")):
            continue
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        pos = lo
        while pos < hi:
            found = _libc.memmem(pos, hi - pos, own, len(needle))
            if not found:
                break
            if found != own:
                hits.append(f"{found:#x} in {name or 'anonymous'} {fields[0]}")
            pos = found + 1
    return hits


def opts(**kw: Any) -> TrustedOptions:
    kw.setdefault("keyhandle", PARENT)
    return TrustedOptions(given=frozenset(k for k in kw if k != "given"), **kw)


def test_sealed_and_unsealed_key_leave_no_copy(tpm2_source: Tpm2Source) -> None:
    key = os.urandom(64)
    tpm2_source.get_random(8)  # open the connection first: nothing of the key is in it yet
    secret = SecretBuffer.from_bytes(key)
    blob = tpm2_source.seal(secret, opts())
    secret.wipe()
    gc.collect()
    assert copies_in_memory(key) == [], "after seal"
    out = tpm2_source.unseal(blob, TrustedOptions())
    assert out.secret == key
    out.secret.wipe()
    gc.collect()
    assert copies_in_memory(key) == [], "after unseal"


def test_policy_unseal_leaves_no_copy(tpm2_source: Tpm2Source) -> None:
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE
    from tpm2_pytss.types import TPML_PCR_SELECTION, TPMT_SYM_DEF

    esapi = tpm2_source.esapi
    sym = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)
    trial = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL, sym, TPM2_ALG.SHA256)
    esapi.policy_pcr(trial, None, TPML_PCR_SELECTION.parse("sha256:16"))
    esapi.policy_password(trial)
    digest = bytes(esapi.policy_get_digest(trial))
    esapi.flush_context(trial)
    key, auth = os.urandom(32), os.urandom(20)
    secret = SecretBuffer.from_bytes(key)
    blob = tpm2_source.seal(secret, opts(policydigest=digest, blobauth=auth))
    secret.wipe()
    session = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, sym, TPM2_ALG.SHA256)
    esapi.policy_pcr(session, None, TPML_PCR_SELECTION.parse("sha256:16"))
    esapi.policy_password(session)
    out = tpm2_source.unseal(blob, opts(policyhandle=int(esapi.tr_get_tpm_handle(session)), blobauth=auth))
    esapi.tr_close(session)  # the TPM ended it
    assert out.secret == key
    out.secret.wipe()
    gc.collect()
    assert copies_in_memory(key) == []
    assert copies_in_memory(auth) == []


def test_passwords_leave_no_copy(swtpm: Any) -> None:
    """keyauth (the parent's password) and blobauth, right or wrong, are not kept after the operation."""
    keyauth = os.urandom(20)
    blobauth = os.urandom(20)
    wrong = os.urandom(20)
    # The parent is made in another process: tpm2-pytss' own structures would leave copies here.
    tests = str(Path(__file__).resolve().parents[1])
    subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import sys; sys.path.insert(0, sys.argv[1]); from swtpm_util import create_primary_with_auth as c;"
                "c(sys.argv[2], 0x81000002, bytes.fromhex(sys.argv[3]))"
            ),
            tests,
            swtpm.tcti,
            keyauth.hex(),
        ],
        check=True,
    )
    with Tpm2Source(swtpm.tcti) as source:
        secret = SecretBuffer.from_bytes(os.urandom(32))
        blob = source.seal(secret, opts(keyhandle=0x81000002, keyauth=keyauth, blobauth=blobauth))
        secret.wipe()
        with pytest.raises(OSError) as exc:
            source.unseal(blob, opts(keyauth=keyauth, blobauth=wrong))
        assert exc.value.errno == errno.EPERM
        del exc
        out = source.unseal(blob, opts(keyauth=keyauth, blobauth=blobauth))
        out.secret.wipe()
        gc.collect()
        for name, value in (("keyauth", keyauth), ("blobauth", blobauth), ("wrong blobauth", wrong)):
            assert copies_in_memory(value) == [], name
        # Nor does the source keep any reference to them.
        assert not any(v is keyauth or v == keyauth for v in _reachable_values(source))


def _reachable_values(obj: object, depth: int = 3) -> list[object]:
    found: list[object] = []
    todo = [(obj, 0)]
    while todo:
        o, d = todo.pop()
        found.append(o)
        if d >= depth:
            continue
        children: list[object] = []
        if isinstance(o, dict):
            children = list(o.keys()) + list(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            children = list(o)
        elif hasattr(o, "__dict__"):
            children = list(vars(o).values())
        todo.extend((c, d + 1) for c in children)
    return found


def test_random_into_secret_memory_leaves_no_copy(tpm2_source: Tpm2Source) -> None:
    """get_random_into fills secret memory; nothing of the random key stays behind (ESAPI kept the last response)."""
    buf = SecretBuffer(48)
    tpm2_source.get_random_into(buf.writable())
    needle = buf.tobytes()  # the one copy the scan is allowed to find
    assert needle != bytes(48)
    buf.wipe()
    gc.collect()
    assert copies_in_memory(needle) == []
    assert len(tpm2_source.get_random(100)) == 100 and tpm2_source.get_random(0) == b""
