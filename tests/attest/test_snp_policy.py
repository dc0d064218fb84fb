"""keyring_types.attest.snp.Policy: each check accepts the report that meets it and refuses the one that does not."""

from __future__ import annotations

import errno

import pytest
import snp_testchain as tc
from cryptography.hazmat.primitives.asymmetric import ec

from keyring_types.attest import snp


@pytest.fixture(scope="module")
def chain() -> tc.Chain:
    return tc.make_chain("Milan")


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def cert(chain: tc.Chain, key: ec.EllipticCurvePrivateKey) -> bytes:
    return chain.endorsement(key)


def check(chain: tc.Chain, cert: bytes, blob: bytes, policy: snp.Policy) -> snp.SnpReport:
    return snp.verify(blob, cert=cert, chain=chain.pem, at=tc.INSIDE, policy=policy)


def refused(chain: tc.Chain, cert: bytes, blob: bytes, policy: snp.Policy, field: str) -> None:
    with pytest.raises(OSError) as e:
        check(chain, cert, blob, policy)
    assert e.value.errno == errno.EKEYREJECTED
    assert str(e.value).startswith("[EKEYREJECTED] policy: ") and field in str(e.value)


M = bytes(range(48))
H = bytes(range(100, 132))
F = b"F" * 16
I_ = b"I" * 16
LOW = tc.tcb_bytes("Milan", bl=1)

# (report fields, policy that accepts, policy that refuses, field named in the refusal)
CASES = [
    ({"measurement": M}, {"measurement": M}, {"measurement": bytes(48)}, "MEASUREMENT"),
    ({"host_data": H}, {"host_data": H}, {"host_data": bytes(32)}, "HOST_DATA"),
    ({"report_data": b"r" * 64}, {"report_data": b"r" * 64}, {"report_data": b"s" * 64}, "REPORT_DATA"),
    ({"report_data": tc.nonce_binding(b"n0")}, {"nonce": b"n0"}, {"nonce": b"n1"}, "REPORT_DATA"),
    (
        {"report_data": tc.nonce_binding(b"n0", b"u")},
        {"nonce": b"n0", "user_data": b"u"},
        {"nonce": b"n0", "user_data": b"v"},
        "REPORT_DATA",
    ),
    ({"family_id": F}, {"family_id": F}, {"family_id": I_}, "FAMILY_ID"),
    ({"image_id": I_}, {"image_id": I_}, {"image_id": F}, "IMAGE_ID"),
    ({"vmpl": 2}, {"vmpl": 2}, {"vmpl": 0}, "VMPL"),
    ({"guest_svn": 7}, {"minimum_guest_svn": 7}, {"minimum_guest_svn": 8}, "GUEST_SVN"),
    ({}, {"minimum_tcb": snp.Tcb(bl=2, snp=5, ucode=0x44)}, {"minimum_tcb": snp.Tcb(bl=2, snp=6, ucode=0x44)}, "CURRENT_TCB snp"),
    ({"current_tcb": LOW}, {"minimum_tcb": snp.Tcb(bl=1)}, {"minimum_tcb": snp.Tcb(bl=2)}, "CURRENT_TCB bl"),
    ({"committed_tcb": LOW}, {"minimum_tcb": snp.Tcb(bl=1)}, {"minimum_tcb": snp.Tcb(bl=2)}, "COMMITTED_TCB bl"),
    ({"launch_tcb": LOW}, {"minimum_launch_tcb": snp.Tcb(bl=1)}, {"minimum_launch_tcb": snp.Tcb(bl=2)}, "LAUNCH_TCB bl"),
    ({"policy": 0x30000 | 1 << 19}, {"debug_allowed": True}, {}, "debug"),
    ({"policy": 0x30000 | 1 << 18}, {"migrate_ma_allowed": True}, {}, "migration agent"),
    ({"platform_info": 0b100101}, {"platform_info_required": 0b100100}, {"platform_info_required": 0b10}, "lacks required"),
    ({"platform_info": 0b100101}, {"platform_info_forbidden": 0b10}, {"platform_info_forbidden": 0b1}, "forbidden"),
]


@pytest.mark.parametrize(("fields", "accept", "refuse", "field"), CASES, ids=[c[3] for c in CASES])
def test_policy_accepts_and_refuses(
    chain: tc.Chain,
    cert: bytes,
    key: ec.EllipticCurvePrivateKey,
    fields: dict[str, object],
    accept: dict[str, object],
    refuse: dict[str, object],
    field: str,
) -> None:
    blob = tc.report(key, **fields)  # type: ignore[arg-type]
    check(chain, cert, blob, snp.Policy(**accept))  # type: ignore[arg-type]
    refused(chain, cert, blob, snp.Policy(**refuse), field)  # type: ignore[arg-type]


def test_empty_policy_accepts_a_plain_report(chain: tc.Chain, cert: bytes, key: ec.EllipticCurvePrivateKey) -> None:
    check(chain, cert, tc.report(key), snp.Policy())


def test_policy_on_the_real_milan_report() -> None:
    from test_snp_real import data

    blob, cert = data("sev-snp/attestation.bin"), data("sev-snp/vcek.testcer")
    r = snp.parse_report(blob)
    good = snp.Policy(
        measurement=r.measurement,
        report_data=bytes([1, 2, 3, 4, 5]) + bytes(59),
        vmpl=0,
        minimum_tcb=snp.Tcb(bl=2, snp=5, ucode=0x44),
        debug_allowed=True,  # this test report's guest policy (0xB0000) allows debugging
        platform_info_required=1,
    )
    snp.verify(blob, cert=cert, policy=good)
    with pytest.raises(OSError) as e:
        snp.verify(blob, cert=cert, policy=snp.Policy())
    assert e.value.errno == errno.EKEYREJECTED and "debug" in str(e.value)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"measurement": bytes(47)}, "measurement"),
        ({"host_data": bytes(33)}, "host_data"),
        ({"report_data": bytes(63)}, "report_data"),
        ({"family_id": bytes(15)}, "family_id"),
        ({"image_id": bytes(17)}, "image_id"),
        ({"nonce": b"n", "report_data": bytes(64)}, "not both"),
        ({"user_data": b"u"}, "only used with nonce"),
        ({"platform_info_required": 1, "platform_info_forbidden": 1}, "both required and forbidden"),
        ({"vmpl": -1}, "vmpl"),
        ({"minimum_guest_svn": 1 << 32}, "minimum_guest_svn"),
    ],
)
def test_policy_construction_errors_are_einval(kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(OSError) as e:
        snp.Policy(**kwargs)  # type: ignore[arg-type]
    assert e.value.errno == errno.EINVAL and word in str(e.value)


def test_policy_messages_never_carry_values(chain: tc.Chain, cert: bytes, key: ec.EllipticCurvePrivateKey) -> None:
    secret = b"\xaa" * 64
    blob = tc.report(key, report_data=secret)
    with pytest.raises(OSError) as e:
        check(chain, cert, blob, snp.Policy(report_data=b"\xbb" * 64))
    assert "aa" not in str(e.value).lower().replace("report_data", "") and "bb" not in str(e.value).lower()
