"""The ``tpm2`` trust source on a real (software) TPM: swtpm, never a mock."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from vector_data import load_vector_file

from keyring_types.secret import SecretBuffer
from keyring_types.trust import tpm2_blob
from keyring_types.trust.base import TrustedOptions
from keyring_types.trust.tpm2 import Tpm2Source

pytestmark = pytest.mark.tpm

PARENT = 0x81000001


def opts(**kw: Any) -> TrustedOptions:
    kw.setdefault("keyhandle", PARENT)
    return TrustedOptions(given=frozenset(k for k in kw if k != "given"), **kw)


def secret(n: int, fill: int | None = None) -> SecretBuffer:
    data = bytes((fill if fill is not None else i * 7 + 3) & 0xFF for i in range(n))
    return SecretBuffer.from_bytes(data)


def handles(esapi: Any, first: int) -> list[int]:
    from tpm2_pytss.constants import TPM2_CAP

    _, cap = esapi.get_capability(TPM2_CAP.HANDLES, first, 64)
    return [int(cap.data.handles.handle[i]) for i in range(cap.data.handles.count)]


def assert_nothing_left(source: Tpm2Source) -> None:
    """No transient object and no session remains on the TPM."""
    assert source.transient_handles() == []
    assert handles(source.esapi, 0x02000000) == []  # loaded sessions (HMAC and policy)
    assert handles(source.esapi, 0x03000000) == []  # saved sessions


def raises(err: int, fn: Any, *args: Any) -> OSError:
    with pytest.raises(OSError) as exc:
        fn(*args)
    assert exc.value.errno == err, str(exc.value)
    return exc.value


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("size", [32, 33, 64, 128])
def test_seal_unseal_roundtrip(tpm2_source: Tpm2Source, size: int) -> None:
    key = secret(size)
    blob = tpm2_source.seal(key, opts())
    # The kernel's TPMKey pieces, tests/vectors/tpm2_tpmkey_der.json.
    der = load_vector_file("tpm2_tpmkey_der")
    parent = next(v["integer"] for v in der["vectors"] if v["parent"] == 0x81000001)
    assert blob[0] == 0x30 and blob[blob.index(b"\x06") :].startswith(bytes.fromhex(der["sealed_data_oid"] + der["empty_auth"]))
    assert bytes.fromhex(parent) in blob[:30]
    assert len(blob) <= tpm2_blob.MAX_BLOB_SIZE
    assert key.view().tobytes() not in blob
    out = tpm2_source.unseal(blob, TrustedOptions())
    try:
        assert out.secret == key.view()
        assert out.migratable is True
    finally:
        out.secret.wipe()
    assert_nothing_left(tpm2_source)


def test_two_seals_of_one_key_differ(tpm2_source: Tpm2Source) -> None:
    key = secret(32)
    assert tpm2_source.seal(key, opts()) != tpm2_source.seal(key, opts())


@pytest.mark.parametrize("size", [0, 31, 129])
def test_key_size_outside_32_128_is_einval(tpm2_source: Tpm2Source, size: int) -> None:
    raises(errno.EINVAL, tpm2_source.seal, secret(size), opts())


def test_keyhandle_is_required_to_seal(tpm2_source: Tpm2Source) -> None:
    raises(errno.EINVAL, tpm2_source.seal, secret(32), TrustedOptions())
    raises(errno.EINVAL, tpm2_source.seal, secret(32), opts(keyhandle=0))


def test_keyhandle_in_blob_wins_over_option(tpm2_source: Tpm2Source) -> None:
    blob = tpm2_source.seal(secret(32), opts())
    out = tpm2_source.unseal(blob, opts(keyhandle=0x81000099))
    out.secret.wipe()


def test_missing_parent_is_eperm(tpm2_source: Tpm2Source) -> None:
    raises(errno.EPERM, tpm2_source.seal, secret(32), opts(keyhandle=0x81000002))


# ---------------------------------------------------------------- auth


def test_wrong_keyauth_is_eperm(swtpm: Any) -> None:
    """A parent with a password: keyauth= must match (trailing zeros ignored, as the TPM does)."""
    from swtpm_util import create_primary_with_auth

    create_primary_with_auth(swtpm.tcti, 0x81000002, b"parent-secret")
    with Tpm2Source(swtpm.tcti) as source:
        good = b"parent-secret".ljust(20, b"\x00")
        blob = source.seal(secret(32), opts(keyhandle=0x81000002, keyauth=good))
        raises(errno.EPERM, source.seal, secret(32), opts(keyhandle=0x81000002))  # default: 20 zero bytes
        raises(errno.EPERM, source.unseal, blob, opts(keyauth=b"parent-secreT".ljust(20, b"\x00")))
        assert_nothing_left(source)
        out = source.unseal(blob, opts(keyauth=good))
        assert out.secret == secret(32).view()
        out.secret.wipe()
        assert_nothing_left(source)


def test_blobauth_password(tpm2_source: Tpm2Source) -> None:
    key = secret(48)
    blob = tpm2_source.seal(key, opts(blobauth=b"open sesame"))
    parsed = tpm2_blob.decode(blob)
    assert parsed.empty_auth is False and b"\xa0\x03\x01\x01" not in blob
    raises(errno.EPERM, tpm2_source.unseal, blob, TrustedOptions())
    raises(errno.EPERM, tpm2_source.unseal, blob, opts(blobauth=b"open sesamE"))
    assert_nothing_left(tpm2_source)
    out = tpm2_source.unseal(blob, opts(blobauth=b"open sesame"))
    assert out.secret == key.view()
    out.secret.wipe()


def test_blobauth_of_twenty_binary_bytes(tpm2_source: Tpm2Source) -> None:
    auth = bytes.fromhex("00112233445566778899aabbccddeeff01020304")
    blob = tpm2_source.seal(secret(32), opts(blobauth=auth))
    out = tpm2_source.unseal(blob, opts(blobauth=auth))
    out.secret.wipe()
    raises(errno.EINVAL, tpm2_source.seal, secret(32), opts(blobauth=b"x" * 21))


# ---------------------------------------------------------------- attributes, hash


@pytest.mark.parametrize(
    ("migratable", "policy", "attributes"),
    [(None, False, 0x40), (True, False, 0x40), (False, False, 0x52), (None, True, 0x00), (False, True, 0x12)],
)
def test_migratable_and_policy_set_object_attributes(
    tpm2_source: Tpm2Source, migratable: bool | None, policy: bool, attributes: int
) -> None:
    kw: dict[str, Any] = {"migratable": migratable}
    if policy:
        kw["policydigest"] = pcr_policy_digest(tpm2_source, [16])
    blob = tpm2_source.seal(secret(32), opts(**kw))
    parsed = tpm2_blob.decode(blob)
    assert parsed.object_attributes == attributes
    assert parsed.migratable is (migratable is not False)
    if not policy:
        out = tpm2_source.unseal(blob, TrustedOptions())
        assert out.migratable is (migratable is not False)
        out.secret.wipe()


@pytest.mark.parametrize(("name", "alg", "size"), [("sha1", 4, 20), ("sha256", 11, 32), ("sha384", 12, 48), ("sha512", 13, 64)])
def test_hash_sets_name_algorithm(tpm2_source: Tpm2Source, name: str, alg: int, size: int) -> None:
    blob = tpm2_source.seal(secret(32), opts(hash=name))
    public = tpm2_blob.decode(blob).public
    assert int.from_bytes(public[4:6], "big") == alg
    out = tpm2_source.unseal(blob, TrustedOptions())
    out.secret.wipe()
    # policydigest must be exactly the digest size of hash=
    raises(errno.EINVAL, tpm2_source.seal, secret(32), opts(hash=name, policydigest=b"\x01" * (size + 1)))


def test_hash_the_tpm_lacks_is_einval(tpm2_source: Tpm2Source) -> None:
    from tpm2_pytss.constants import TPM2_CAP

    _, cap = tpm2_source.esapi.get_capability(TPM2_CAP.ALGS, 0x0012, 1)
    algs = cap.data.algorithms
    has_sm3 = algs.count > 0 and int(algs.algProperties[0].alg) == 0x0012
    if has_sm3:
        out = tpm2_source.unseal(tpm2_source.seal(secret(32), opts(hash="sm3-256")), TrustedOptions())
        out.secret.wipe()
    else:
        # TPM2_RC_HASH from TPM2_Create maps to EINVAL (not EPERM), as in the kernel
        raises(errno.EINVAL, tpm2_source.seal, secret(32), opts(hash="sm3-256"))
    raises(errno.EINVAL, tpm2_source.seal, secret(32), opts(hash="md5"))


# ---------------------------------------------------------------- PCR policy


def pcr_policy_digest(source: Tpm2Source, pcrs: list[int], password: bool = False) -> bytes:
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE
    from tpm2_pytss.types import TPML_PCR_SELECTION, TPMT_SYM_DEF

    esapi = source.esapi
    trial = esapi.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
    )
    try:
        esapi.policy_pcr(trial, None, TPML_PCR_SELECTION.parse("sha256:" + ",".join(map(str, pcrs))))
        if password:
            esapi.policy_password(trial)
        return bytes(esapi.policy_get_digest(trial))
    finally:
        esapi.flush_context(trial)


def satisfied_policy_session(source: Tpm2Source, pcrs: list[int], password: bool = False) -> tuple[Any, int]:
    """Start a policy session, run PolicyPCR (+ PolicyPassword); return its ESYS_TR and TPM handle."""
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE
    from tpm2_pytss.types import TPML_PCR_SELECTION, TPMT_SYM_DEF

    esapi = source.esapi
    session = esapi.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
    )
    esapi.policy_pcr(session, None, TPML_PCR_SELECTION.parse("sha256:" + ",".join(map(str, pcrs))))
    if password:
        esapi.policy_password(session)
    return session, int(esapi.tr_get_tpm_handle(session))


def session_used(source: Tpm2Source, session: Any) -> None:
    """After a successful unseal the TPM has ended the session (continueSession clear): forget it locally."""
    assert int(source.esapi.tr_get_tpm_handle(session)) not in handles(source.esapi, 0x02000000)
    source.esapi.tr_close(session)


def session_refused(source: Tpm2Source, session: Any) -> None:
    """A refused authorisation leaves the caller's session loaded (as with the kernel); the caller flushes it."""
    assert int(source.esapi.tr_get_tpm_handle(session)) in handles(source.esapi, 0x02000000)
    source.esapi.flush_context(session)


def extend_pcr(source: Tpm2Source, pcr: int) -> None:
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
    from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

    source.esapi.pcr_extend(
        ESYS_TR.PCR0 + pcr, TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=b"\x42" * 32))])
    )


def test_pcr_policy_via_policyhandle(tpm2_source: Tpm2Source) -> None:
    key = secret(64)
    digest = pcr_policy_digest(tpm2_source, [16, 23])
    blob = tpm2_source.seal(key, opts(policydigest=digest))
    # no userWithAuth: a password alone cannot unseal
    raises(errno.EPERM, tpm2_source.unseal, blob, TrustedOptions())
    assert_nothing_left(tpm2_source)

    session, handle = satisfied_policy_session(tpm2_source, [16, 23])
    out = tpm2_source.unseal(blob, opts(policyhandle=handle))
    assert out.secret == key.view()
    out.secret.wipe()
    session_used(tpm2_source, session)
    assert_nothing_left(tpm2_source)  # object flushed, session ended by the TPM

    extend_pcr(tpm2_source, 23)
    session, handle = satisfied_policy_session(tpm2_source, [16, 23])
    raises(errno.EPERM, tpm2_source.unseal, blob, opts(policyhandle=handle))
    assert tpm2_source.transient_handles() == []
    session_refused(tpm2_source, session)
    assert_nothing_left(tpm2_source)


def test_pcr_and_password_policy(tpm2_source: Tpm2Source) -> None:
    """PolicyPCR + PolicyPassword: blobauth travels in the policy session, as the kernel sends it."""
    key = secret(32)
    blob = tpm2_source.seal(key, opts(policydigest=pcr_policy_digest(tpm2_source, [16], password=True), blobauth=b"pw"))
    session, handle = satisfied_policy_session(tpm2_source, [16], password=True)
    raises(errno.EPERM, tpm2_source.unseal, blob, opts(policyhandle=handle, blobauth=b"pW"))
    assert tpm2_source.transient_handles() == []
    session_refused(tpm2_source, session)
    session, handle = satisfied_policy_session(tpm2_source, [16], password=True)
    out = tpm2_source.unseal(blob, opts(policyhandle=handle, blobauth=b"pw"))
    assert out.secret == key.view()
    out.secret.wipe()
    session_used(tpm2_source, session)
    assert_nothing_left(tpm2_source)


def test_policyhandle_that_is_not_a_session_is_eperm(tpm2_source: Tpm2Source) -> None:
    blob = tpm2_source.seal(secret(32), opts(policydigest=pcr_policy_digest(tpm2_source, [16])))
    raises(errno.EPERM, tpm2_source.unseal, blob, opts(policyhandle=0x03000007))
    assert_nothing_left(tpm2_source)


# ---------------------------------------------------------------- tampering, binding


def test_every_single_bit_flip_is_rejected(tpm2_source: Tpm2Source) -> None:
    key = secret(32)
    blob = tpm2_source.seal(key, opts())
    accepted = []
    for i in range(len(blob)):
        for bit in range(8):
            flipped = bytearray(blob)
            flipped[i] ^= 1 << bit
            try:
                out = tpm2_source.unseal(bytes(flipped), opts())
            except OSError as exc:
                assert exc.errno in (errno.EPERM, errno.E2BIG, errno.EINVAL, errno.EFAULT), str(exc)
                continue
            out.secret.wipe()
            accepted.append((i, bit))
    assert accepted == []
    assert_nothing_left(tpm2_source)
    out = tpm2_source.unseal(blob, opts())  # the original still works
    assert out.secret == key.view()
    out.secret.wipe()


def test_blob_is_bound_to_its_tpm(tpm2_source: Tpm2Source) -> None:
    """Another TPM with a primary at the same handle refuses the blob."""
    from swtpm_util import create_primary, start_swtpm

    blob = tpm2_source.seal(secret(32), opts())
    other = start_swtpm()
    try:
        create_primary(other.tcti)
        with Tpm2Source(other.tcti) as stranger:
            raises(errno.EPERM, stranger.unseal, blob, opts())
            assert stranger.transient_handles() == []
    finally:
        other.stop()


def test_blob_is_bound_to_its_parent(tpm2_source: Tpm2Source, swtpm: Any) -> None:
    """Re-pointing the blob at a different parent on the same TPM is refused."""
    from swtpm_util import create_primary_with_auth

    # same seed, other template (a primary with the same template would be the same key)
    create_primary_with_auth(swtpm.tcti, 0x81000002, b"", alg="ecc256:aes256cfb")
    blob = tpm2_source.seal(secret(32), opts())
    moved = blob.replace(bytes.fromhex("02050081000001"), bytes.fromhex("02050081000002"))
    raises(errno.EPERM, tpm2_source.unseal, moved, opts())
    assert_nothing_left(tpm2_source)


# ---------------------------------------------------------------- old format, length checks


def create_raw(source: Tpm2Source, data: bytes, attributes: int = 0x40) -> tuple[bytes, bytes]:
    """TPM2_Create as a pre-5.13 kernel did; returns (TPM2B_PRIVATE, TPM2B_PUBLIC) bytes."""
    from tpm2_pytss.constants import TPM2_ALG
    from tpm2_pytss.types import (
        TPM2B_PUBLIC,
        TPM2B_SENSITIVE_CREATE,
        TPM2B_SENSITIVE_DATA,
        TPMS_SENSITIVE_CREATE,
        TPMT_PUBLIC,
    )

    esapi = source.esapi
    template = TPMT_PUBLIC(type=TPM2_ALG.KEYEDHASH, nameAlg=TPM2_ALG.SHA256, objectAttributes=attributes)
    template.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
    # ESAPI hands out one ESYS_TR per TPM handle: closing it would pull it from under the source
    parent = esapi.tr_from_tpmpublic(PARENT)
    priv, pub, *_ = esapi.create(
        parent,
        TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(data))),
        TPM2B_PUBLIC(publicArea=template),
    )
    return priv.marshal(), pub.marshal()


@pytest.mark.parametrize("flag", [0, 1])
def test_old_format_blob_loads_with_trailing_migratable_byte(tpm2_source: Tpm2Source, flag: int) -> None:
    key = bytes(range(40))
    priv, pub = create_raw(tpm2_source, key + bytes([flag]))
    old = priv + pub
    raises(errno.EINVAL, tpm2_source.unseal, old, TrustedOptions())  # old format needs keyhandle=
    out = tpm2_source.unseal(old, opts())
    assert out.secret == key
    assert out.migratable is bool(flag)
    out.secret.wipe()
    assert_nothing_left(tpm2_source)


def test_unsealed_length_outside_range_is_efault(tpm2_source: Tpm2Source) -> None:
    priv, pub = create_raw(tpm2_source, b"\x07" * 16)
    new_format = tpm2_blob.encode_tpmkey(PARENT, pub, priv, empty_auth=True)
    raises(errno.EFAULT, tpm2_source.unseal, new_format, TrustedOptions())
    assert tpm2_source.transient_handles() == []
    priv, pub = create_raw(tpm2_source, b"\x07" * 32)  # old format: 31-byte key + flag
    raises(errno.EFAULT, tpm2_source.unseal, priv + pub, opts())
    assert_nothing_left(tpm2_source)


def test_inconsistent_sizes_are_e2big(tpm2_source: Tpm2Source) -> None:
    raises(errno.E2BIG, tpm2_source.unseal, b"\x00\x10\x00", opts())
    raises(errno.E2BIG, tpm2_source.unseal, b"\x00" * 600, opts())


# ---------------------------------------------------------------- misc


def test_random_from_the_tpm(tpm2_source: Tpm2Source) -> None:
    a, b = tpm2_source.get_random(200), tpm2_source.get_random(200)
    assert len(a) == len(b) == 200 and a != b
    assert tpm2_source.get_random(0) == b""


def test_available_probes_the_tcti(swtpm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", swtpm.tcti)
    assert Tpm2Source.available() is True
    assert Tpm2Source().tcti == swtpm.tcti
    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", "device:/dev/keyring-types-no-such-tpm")
    assert Tpm2Source.available() is False
    raises(errno.ENODEV, Tpm2Source().get_random, 8)
    swtpm.stop()
    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", swtpm.tcti)
    assert Tpm2Source.available() is False


def test_one_context_reused_and_reopened_after_close(tpm2_source: Tpm2Source) -> None:
    first = tpm2_source.esapi
    tpm2_source.seal(secret(32), opts())
    assert tpm2_source.esapi is first
    tpm2_source.close()
    assert tpm2_source.esapi is not first
    out = tpm2_source.unseal(tpm2_source.seal(secret(32), opts()), TrustedOptions())
    out.secret.wipe()


def test_pcrlock_extends_the_pcr(tpm2_source: Tpm2Source) -> None:
    require(os.geteuid() == 0, "root (CAP_SYS_ADMIN for pcrlock=)")
    from tpm2_pytss.types import TPML_PCR_SELECTION

    def pcr16() -> bytes:
        _, _, values = tpm2_source.esapi.pcr_read(TPML_PCR_SELECTION.parse("sha256:16"))
        return bytes(values.digests[0])

    before = pcr16()
    blob = tpm2_source.seal(secret(32), opts(pcrlock=16))
    after_seal = pcr16()
    assert after_seal != before
    out = tpm2_source.unseal(blob, opts(pcrlock=16))
    out.secret.wipe()
    assert pcr16() != after_seal
    raises(errno.EINVAL, tpm2_source.seal, secret(32), opts(pcrlock=24))


def test_nothing_plaintext_on_disk(tpm2_source: Tpm2Source, swtpm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path))
    marker = b"PLAINTEXT-MARKER-" + bytes(range(15))
    key = SecretBuffer.from_bytes(marker)
    blob = tpm2_source.seal(key, opts())
    out = tpm2_source.unseal(blob, TrustedOptions())
    out.secret.wipe()
    assert marker not in blob and marker.hex().encode() not in blob.hex().encode()
    assert list(tmp_path.iterdir()) == []
    for path in Path(swtpm.state_dir).rglob("*"):
        if path.is_file():
            assert marker not in path.read_bytes()


@pytest.fixture
def _no_env_tcti(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("KEYRING_TYPES_TPM2_TCTI", raising=False)
    yield


def test_default_tcti_is_the_kernel_resource_manager(_no_env_tcti: None) -> None:
    assert Tpm2Source().tcti == "device:/dev/tpmrm0"


def test_parent_closed_by_a_context_sharer_is_looked_up_again(tpm2_source: Tpm2Source) -> None:
    blob = tpm2_source.seal(secret(32), opts())
    esapi = tpm2_source.esapi
    esapi.tr_close(esapi.tr_from_tpmpublic(PARENT))  # the same ESYS_TR the source cached
    out = tpm2_source.unseal(blob, TrustedOptions())
    out.secret.wipe()
    assert_nothing_left(tpm2_source)


def test_swtpm_launcher_retries_on_a_port_clash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture's launcher: a pair already taken by someone else is detected and another one used."""
    import shutil
    import socket

    import swtpm_util

    require(shutil.which("swtpm") is not None, "swtpm (Debian package swtpm)")
    held: list[socket.socket] = []
    try:
        while not held:  # find a pair we can hold: P and P+1 both free
            a, b = socket.socket(), socket.socket()
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                a.close()
                b.close()
                continue
            held = [a, b]
        for s in held:
            s.listen()  # accepts connections but never answers, unlike swtpm
        picks = iter([port])
        real = swtpm_util._free_port_pair
        monkeypatch.setattr(swtpm_util, "_free_port_pair", lambda host: next(picks, None) or real(host))
        sim = swtpm_util.start_swtpm()
        try:
            assert sim.port != port
            with Tpm2Source(sim.tcti) as source:
                assert len(source.get_random(8)) == 8
        finally:
            sim.stop()
    finally:
        for s in held:
            s.close()
    assert not sim.state_dir.exists()


def test_tpm_gone_mid_life_is_a_clean_error(tpm2_source: Tpm2Source, swtpm: Any) -> None:
    """The simulator dies: operations fail with EIO/ENODEV (never hang or crash), and keep failing cleanly."""
    blob = tpm2_source.seal(secret(32), opts())
    swtpm.stop()
    for _ in range(2):
        with pytest.raises(OSError) as exc:
            tpm2_source.seal(secret(32), opts())
        assert exc.value.errno in (errno.EIO, errno.ENODEV), str(exc.value)
        with pytest.raises(OSError) as exc:
            tpm2_source.unseal(blob, opts())
        assert exc.value.errno in (errno.EIO, errno.ENODEV), str(exc.value)
