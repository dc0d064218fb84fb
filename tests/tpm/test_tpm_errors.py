"""TPM return codes: decoded, mapped to an errno that points the right way, and the fix named.

Unit cases on the decoder, then the real codes from swtpm through the ``tpm2`` source.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

from keyring_types.secret import SecretBuffer
from keyring_types.tpm.errors import decode_rc, tpm_error
from keyring_types.trust.base import TrustedOptions
from keyring_types.trust.tpm2 import Tpm2Source

PARENT = 0x81000001


def opts(**kw: Any) -> TrustedOptions:
    kw.setdefault("keyhandle", PARENT)
    return TrustedOptions(given=frozenset(k for k in kw if k != "given"), **kw)


def secret32() -> SecretBuffer:
    return SecretBuffer.from_bytes(bytes(range(32)))


# ---------------------------------------------------------------- the decoder


@pytest.mark.parametrize(
    ("rc", "err", "name", "words"),
    [
        (0x902, errno.ENOMEM, "TPM_RC_OBJECT_MEMORY", ["out of memory for object contexts", "resource manager", "flush"]),
        (0x903, errno.ENOMEM, "TPM_RC_SESSION_MEMORY", ["resource manager"]),
        (0x98E, errno.EPERM, "TPM_RC_AUTH_FAIL", ["session 1", "wrong password"]),
        (0x9A2, errno.EPERM, "TPM_RC_BAD_AUTH", ["session 1", "wrong password"]),
        (0x921, errno.EPERM, "TPM_RC_LOCKOUT", ["dictionary-attack lockout", "clear-lockout"]),
        (0x18B, errno.EPERM, "TPM_RC_HANDLE", ["handle 1", "tpm2_evictcontrol"]),
        (0x99D, errno.EPERM, "TPM_RC_POLICY_FAIL", ["session 1", "policy"]),
        (0x128, errno.EPERM, "TPM_RC_PCR_CHANGED", ["PCR"]),
        (0x1C4, errno.EPERM, "TPM_RC_VALUE", ["parameter 1"]),
        (0x1DF, errno.EPERM, "TPM_RC_INTEGRITY", ["parameter 1", "another TPM"]),
        (0x922, errno.EAGAIN, "TPM_RC_RETRY", ["busy"]),
        (0x101, errno.EIO, "TPM_RC_FAILURE", ["failure mode"]),
        (0x100, errno.EIO, "TPM_RC_INITIALIZE", ["tpm2_startup"]),
        (0xB0902, errno.ENOMEM, "TPM_RC_OBJECT_MEMORY", ["resource manager"]),  # relayed by a resource manager
    ],
)
def test_codes_decoded_with_errno_and_fix(rc: int, err: int, name: str, words: list[str]) -> None:
    exc = tpm_error(rc, "unseal the key")
    assert exc.errno == err
    text = str(exc)
    assert name in text and f"{rc:#x}" in text and "unseal the key" in text
    for word in words:
        assert word in text, text
    assert "rc 0x" not in text


def test_hash_on_seal_is_einval_elsewhere_eperm() -> None:
    assert tpm_error(0x2C3, "seal the key", seal=True).errno == errno.EINVAL  # TPM_RC_HASH, parameter 2
    assert tpm_error(0x2C3, "load the sealed object").errno == errno.EPERM


def test_tss_layers() -> None:
    tcti = tpm_error(0xA000A, "seal the key")
    assert tcti.errno == errno.EIO and "tcti" in str(tcti) and "IO failure" in str(tcti)
    esys = tpm_error(0x70018, "seal the key")
    assert esys.errno == errno.EPERM and "esapi" in str(esys)


def test_decode_rc_fields() -> None:
    d = decode_rc(0x98E)
    assert (d.layer, d.value, d.name, d.where, d.is_tpm) == (0, 0x8E, "TPM_RC_AUTH_FAIL", "session 1", True)
    d = decode_rc(0x911)  # TPM_RC_REFERENCE_H1
    assert (d.value, d.where) == (0x910, "handle 2")
    d = decode_rc(0x1C4)  # TPM_RC_VALUE, parameter 1
    assert (d.value, d.where) == (0x84, "parameter 1")


# ---------------------------------------------------------------- real codes from swtpm


def fill_object_slots(source: Tpm2Source) -> list[Any]:
    """Load primaries until the TPM (no resource manager in front) has no free object slot."""
    from tpm2_pytss import TSS2_Exception
    from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT
    from tpm2_pytss.types import TPM2B_PUBLIC

    esapi = source.esapi
    template = TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=TPMA_OBJECT.DEFAULT_TPM2_TOOLS_CREATEPRIMARY_ATTRS)
    loaded = []
    for _ in range(64):
        try:
            handle, *_ = esapi.create_primary(None, template, ESYS_TR.OWNER)
        except TSS2_Exception as exc:
            assert int(exc.rc) & 0xFFF == 0x902
            return loaded
        loaded.append(handle)
    raise AssertionError("the TPM never ran out of object memory")


def test_out_of_object_memory_is_enomem_naming_the_fix(tpm2_source: Tpm2Source) -> None:
    """Regression: TPM_RC_OBJECT_MEMORY was EPERM "TPM refused ... (rc 0x902)"."""
    blob = tpm2_source.seal(secret32(), opts())
    loaded = fill_object_slots(tpm2_source)
    for fn, arg in ((tpm2_source.unseal, blob), (tpm2_source.seal, secret32())):
        with pytest.raises(OSError) as exc:
            fn(arg, opts())  # type: ignore[operator]
        assert exc.value.errno == errno.ENOMEM, str(exc.value)
        assert "TPM_RC_OBJECT_MEMORY" in str(exc.value) and "resource manager" in str(exc.value)
    for handle in loaded:
        tpm2_source.esapi.flush_context(handle)
    out = tpm2_source.unseal(blob, opts())
    out.secret.wipe()
    assert tpm2_source.transient_handles() == []


def test_wrong_blobauth_names_the_code_and_never_the_password(tpm2_source: Tpm2Source) -> None:
    blob = tpm2_source.seal(secret32(), opts(blobauth=b"correct horse"))
    with pytest.raises(OSError) as exc:
        tpm2_source.unseal(blob, opts(blobauth=b"battery staple"))
    text = str(exc.value)
    assert exc.value.errno == errno.EPERM
    assert "TPM_RC_AUTH_FAIL" in text or "TPM_RC_BAD_AUTH" in text, text
    assert "wrong password" in text
    for leaked in ("correct horse", "battery staple", b"battery staple".hex(), b"correct horse".hex()):
        assert leaked not in text


def test_missing_parent_is_eperm_naming_the_handle_fix(tpm2_source: Tpm2Source) -> None:
    with pytest.raises(OSError) as exc:
        tpm2_source.seal(secret32(), opts(keyhandle=0x81000002))
    assert exc.value.errno == errno.EPERM  # the kernel's answer to a missing parent
    assert "TPM_RC_HANDLE" in str(exc.value) and "tpm2_evictcontrol" in str(exc.value)


def test_dictionary_attack_lockout_is_eperm_with_the_hint(tpm2_source: Tpm2Source) -> None:
    """Wrong passwords on a DA-protected object until the TPM locks out: the message says so and how to clear it."""
    esapi = tpm2_source.esapi
    esapi.dictionary_attack_parameters(2, 600, 600)
    blob = tpm2_source.seal(secret32(), opts(blobauth=b"pw"))
    seen = []
    for _ in range(4):
        with pytest.raises(OSError) as exc:
            tpm2_source.unseal(blob, opts(blobauth=b"wrong"))
        assert exc.value.errno == errno.EPERM
        seen.append(str(exc.value))
    assert any("TPM_RC_AUTH_FAIL" in s for s in seen), seen
    assert "TPM_RC_LOCKOUT" in seen[-1] and "dictionary-attack lockout" in seen[-1], seen[-1]
    assert tpm2_source.transient_handles() == []
    esapi.dictionary_attack_lock_reset()
    out = tpm2_source.unseal(blob, opts(blobauth=b"pw"))
    out.secret.wipe()


def test_policy_refusal_names_the_policy(tpm2_source: Tpm2Source) -> None:
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE
    from tpm2_pytss.types import TPML_PCR_SELECTION, TPMT_SYM_DEF

    esapi = tpm2_source.esapi
    sym = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)
    trial = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL, sym, TPM2_ALG.SHA256)
    esapi.policy_pcr(trial, None, TPML_PCR_SELECTION.parse("sha256:16"))
    digest = bytes(esapi.policy_get_digest(trial))
    esapi.flush_context(trial)
    blob = tpm2_source.seal(secret32(), opts(policydigest=digest))
    session = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, sym, TPM2_ALG.SHA256)
    esapi.policy_pcr(session, None, TPML_PCR_SELECTION.parse("sha256:17"))  # not the sealed policy
    with pytest.raises(OSError) as exc:
        tpm2_source.unseal(blob, opts(policyhandle=int(esapi.tr_get_tpm_handle(session))))
    assert exc.value.errno == errno.EPERM
    assert "TPM_RC_POLICY_FAIL" in str(exc.value) and "policy" in str(exc.value)
    esapi.flush_context(session)
    # Without a policy session the object's missing userWithAuth is named.
    with pytest.raises(OSError) as exc:
        tpm2_source.unseal(blob, opts())
    assert exc.value.errno == errno.EPERM
    assert "TPM_RC_AUTH_UNAVAILABLE" in str(exc.value) and "policyhandle=" in str(exc.value)
