"""``dh_compute`` on both keyspaces against published known answers (tests/vectors/dh_compute.json).

The kernel here is built without CONFIG_KEY_DH_OPERATIONS: there the test
requires the kernel's own answer, EOPNOTSUPP, and that ``capabilities()`` does
not claim ``dh_compute``.  A kernel that has it is held to the same vectors.
"""

from __future__ import annotations

import errno

import pytest
from conftest import errno_of
from vector_data import load_vectors

import keyring_types as kt

VECTORS = load_vectors("dh_compute")


def _load(space: kt.KeyspaceAPI, vector: dict[str, str]) -> tuple[kt.Key, kt.Key, kt.Key]:
    keys = tuple(
        space.add_key("user", f"dh:{part}", bytes.fromhex(vector[part]), "@s") for part in ("private", "prime", "base")
    )
    return keys  # type: ignore[return-value]


def _kdf(vector: dict[str, object]) -> kt.DhKdf | None:
    spec = vector.get("kdf")
    if spec is None:
        return None
    assert isinstance(spec, dict)
    return kt.DhKdf(spec["hashname"], spec["length"], bytes.fromhex(spec["otherinfo"]))


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_dh_compute_known_answers(space: kt.KeyspaceAPI, vector: dict[str, str]) -> None:
    private, prime, base = _load(space, vector)
    if "dh_compute" not in space.capabilities():
        assert isinstance(space, kt.KernelKeyspace), "the in-process keyspace implements dh_compute"
        assert errno_of(space.dh_compute, private, prime, base, _kdf(vector)) == errno.EOPNOTSUPP
        return
    assert space.dh_compute(private, prime, base, _kdf(vector)).hex() == vector["expected"]


def test_in_process_keyspace_claims_dh_compute() -> None:
    assert "dh_compute" in kt.Keyspace().capabilities()


def _ltp(space: kt.KeyspaceAPI) -> tuple[kt.Key, kt.Key, kt.Key]:
    return _load(space, next(v for v in VECTORS if v["name"] == "ltp-ffdhe2048-shared"))


def _errno_or_unsupported(space: kt.KeyspaceAPI, expected: int, *args: object) -> None:
    want = expected if "dh_compute" in space.capabilities() else errno.EOPNOTSUPP
    assert errno_of(space.dh_compute, *args) == want


def test_dh_inputs_must_be_readable_user_keys(space: kt.KeyspaceAPI) -> None:
    """LTP keyctl28's cases: a missing prime is ENOKEY, a keyring as prime EOPNOTSUPP."""
    private, prime, base = _ltp(space)
    _errno_or_unsupported(space, errno.ENOKEY, private, 0x7FFFFFFF, base)
    _errno_or_unsupported(space, errno.EOPNOTSUPP, private, "@s", base)
    # A logon key is not readable (its mask has no READ), so the lookup fails first.
    logon = space.add_key("logon", "dh:prime", bytes.fromhex(VECTORS[0]["prime"]), "@s")
    _errno_or_unsupported(space, errno.ENOKEY, private, logon, base)
    # Any lookup failure is reported as ENOKEY, a revoked key too.
    prime.revoke()
    _errno_or_unsupported(space, errno.ENOKEY, private, prime, base)


def test_dh_key_without_read_permission_is_enokey(space: kt.KeyspaceAPI) -> None:
    private, prime, base = _ltp(space)
    private.set_perm(kt.KEY_POS_VIEW | kt.KEY_POS_SEARCH | kt.KEY_USR_VIEW)
    _errno_or_unsupported(space, errno.ENOKEY, private, prime, base)


def test_dh_kdf_limits(space: kt.KeyspaceAPI) -> None:
    """LTP keyctl28's KDF cases: output over 1024 and otherinfo over 64 bytes, an unknown hash."""
    private, prime, base = _ltp(space)
    _errno_or_unsupported(space, errno.EMSGSIZE, private, prime, base, kt.DhKdf("sha256", 1025, b"info"))
    _errno_or_unsupported(space, errno.EMSGSIZE, private, prime, base, kt.DhKdf("sha256", 32, b"i" * 65))
    _errno_or_unsupported(space, errno.ENOENT, private, prime, base, kt.DhKdf("sha9000", 32, b"info"))


def test_dh_kdf_checks_come_before_the_keys(space: kt.KeyspaceAPI) -> None:
    private, _prime, base = _ltp(space)
    _errno_or_unsupported(space, errno.EMSGSIZE, private, 0x7FFFFFFF, base, kt.DhKdf("sha256", 2000))


def test_dh_short_prime_and_long_private_key_are_einval(space: kt.KeyspaceAPI) -> None:
    private, prime, base = _ltp(space)
    short = space.add_key("user", "dh:short", b"\xff" * 191, "@s")  # 1528 bits: under crypto/dh.c's 1536
    _errno_or_unsupported(space, errno.EINVAL, private, short, base)
    too_long = space.add_key("user", "dh:long", b"\x01" * 257, "@s")
    _errno_or_unsupported(space, errno.EINVAL, too_long, prime, base)
    _errno_or_unsupported(space, errno.EINVAL, private, prime, too_long)


def test_dh_kdf_output_is_cut_to_the_length_asked(space: kt.KeyspaceAPI) -> None:
    if "dh_compute" not in space.capabilities():
        pytest.skip("this keyspace has no dh_compute (checked to answer EOPNOTSUPP above)")
    vector = next(v for v in VECTORS if v["name"] == "keyutils-nist-sha256-kdf")
    private, prime, base = _load(space, vector)
    oi = bytes.fromhex(vector["kdf"]["otherinfo"])  # type: ignore[index]
    long = space.dh_compute(private, prime, base, kt.DhKdf("sha256", 100, oi))
    assert len(long) == 100 and long[:16].hex() == vector["expected"]
    assert space.dh_compute(private, prime, base, kt.DhKdf("sha256", 0, oi)) == b""


def test_dh_kdf_must_be_a_dhkdf(space: kt.KeyspaceAPI) -> None:
    private, prime, base = _ltp(space)
    assert errno_of(space.dh_compute, private, prime, base, ("sha256", 16, b"")) == errno.EINVAL
    assert errno_of(space.dh_compute, private, prime, base, kt.DhKdf(None, 16)) == errno.EFAULT  # type: ignore[arg-type]
    assert errno_of(space.dh_compute, private, prime, base, kt.DhKdf("sha256", -1)) == errno.EINVAL
    assert errno_of(space.dh_compute, private, prime, base, kt.DhKdf("sha256", 2**63)) == errno.EINVAL
    _errno_or_unsupported(space, errno.EMSGSIZE, private, prime, base, kt.DhKdf("sha256", 2**40))


def test_kernel_dh_huge_kdf_output_is_refused_without_allocating_it(need_kernel_keyring: None) -> None:
    kk = kt.KernelKeyspace(new_session=True)
    private, prime, base = _ltp(kk)
    expected = errno.EMSGSIZE if "dh_compute" in kk.capabilities() else errno.EOPNOTSUPP
    assert errno_of(kk.dh_compute, private, prime, base, kt.DhKdf("sha256", 2**62)) == expected
