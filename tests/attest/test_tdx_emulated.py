"""The emulated TDX guest: its quotes verify through tdx.verify with its own roots only; its
PCS-format collateral is checked (signatures, CRLs, validity, TCB statuses); RTMR extends show
up in the next quote and in the replayed log of the extends; it fills ``tsm`` keys."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import keyring_types as kt
from keyring_types.attest import eventlog, register_tsm_provider, tdx, unregister_tsm_provider
from keyring_types.attest.providers import EmulatedTdx

MRTD = hashlib.sha384(b"td image").digest()


@pytest.fixture
def guest(tmp_path: Path) -> EmulatedTdx:
    return EmulatedTdx(tmp_path / "state", mrtd=MRTD)


def test_quotes_verify_with_the_emulated_root_only(guest: EmulatedTdx) -> None:
    blob = guest.quote(b"\x07" * 64)
    q = tdx.verify(blob, roots=guest.root_pem())
    assert (q.version, q.mrtd, q.report_data, q.rtmrs) == (4, MRTD, b"\x07" * 64, (bytes(48),) * 4)
    with pytest.raises(OSError) as e:
        tdx.verify(blob)  # Intel's root
    assert e.value.errno == errno.EKEYREJECTED and "root" in str(e.value)
    other = EmulatedTdx(guest.state_dir.parent / "other")
    with pytest.raises(OSError) as e:
        tdx.verify(blob, roots=other.root_pem())
    assert e.value.errno == errno.EKEYREJECTED
    # Named as what it is.
    from cryptography import x509

    for cert in x509.load_pem_x509_certificates(tdx.parse_quote(blob).pck_chain):
        assert "Emulated" in cert.subject.rfc4514_string()
    assert guest.name == "emulated-tdx"


def test_state_is_private_and_reused(guest: EmulatedTdx) -> None:
    root = guest.root_pem()
    st = os.stat(guest.state_dir / "pki.secret")
    assert stat.S_IMODE(st.st_mode) == 0o400
    assert EmulatedTdx(guest.state_dir).root_pem() == root


def test_extends_change_the_next_quote_and_replay_from_the_log(guest: EmulatedTdx) -> None:
    d1, d2 = hashlib.sha384(b"one").digest(), hashlib.sha384(b"two").digest()
    new = guest.extend(1, d1, b"event one")
    assert new == hashlib.sha384(bytes(48) + d1).digest()
    guest.extend(1, d2)
    guest.extend(3, d1)
    q = tdx.verify(guest.quote(bytes(64)), roots=guest.root_pem())
    assert q.rtmrs[1] == hashlib.sha384(new + d2).digest()
    assert q.rtmrs[3] == new and q.rtmrs[0] == q.rtmrs[2] == bytes(48)
    log = guest.event_log()
    assert eventlog.rtmrs_of(eventlog.replay(log)) == q.rtmrs
    explained = eventlog.check_quote(log, q)
    assert [len(x.events) for x in explained] == [0, 2, 0, 1]
    assert explained[1].events[0].data == b"event one"
    # Another instance on the same state directory sees the same registers.
    assert EmulatedTdx(guest.state_dir).rtmrs() == q.rtmrs


@pytest.mark.parametrize(("index", "digest"), [(4, bytes(48)), (-1, bytes(48)), (0, bytes(47)), (0, bytes(49)), (0, bytes(32))])
def test_extend_refuses_bad_index_or_size(guest: EmulatedTdx, index: int, digest: bytes) -> None:
    with pytest.raises(OSError) as e:
        guest.extend(index, digest)
    assert e.value.errno == errno.EINVAL
    assert guest.rtmrs() == (bytes(48),) * 4


def test_report_data_must_be_64_bytes(guest: EmulatedTdx) -> None:
    for call in (lambda: guest.quote(bytes(32)), lambda: guest.report(bytes(65)), lambda: guest.report(bytes(64), 1)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EINVAL
    assert tdx.verify(guest.report(b"\x03" * 64), roots=guest.root_pem()).report_data == b"\x03" * 64


def test_collateral_gives_tcb_statuses(guest: EmulatedTdx) -> None:
    blob = guest.quote(bytes(64))
    q = tdx.verify(blob, roots=guest.root_pem(), collateral=guest.collateral())
    assert q.tcb is not None and (q.tcb.tcb_status, q.tcb.qe_tcb_status) == ("UpToDate", "UpToDate")
    assert q.tcb.tcb_evaluation_data_number == 17
    q = tdx.verify(blob, roots=guest.root_pem(), collateral=guest.collateral(tcb_status="OutOfDate", qe_tcb_status="Revoked"))
    assert q.tcb is not None and (q.tcb.tcb_status, q.tcb.qe_tcb_status) == ("OutOfDate", "Revoked")  # reported, not enforced
    with pytest.raises(OSError) as e:
        tdx.verify(blob, roots=guest.root_pem(), collateral=guest.collateral(tcb_status="OutOfDate"),
                   policy=tdx.Policy(accepted_tcb_statuses=["UpToDate", "SWHardeningNeeded"]))  # fmt: skip
    assert e.value.errno == errno.EKEYREJECTED and "platform TCB status" in str(e.value)
    with pytest.raises(OSError) as e:
        tdx.verify(blob, roots=guest.root_pem(), policy=tdx.Policy(accepted_tcb_statuses=["UpToDate"]))
    assert e.value.errno == errno.EKEYREJECTED


def test_a_revoked_pck_certificate_is_refused(guest: EmulatedTdx) -> None:
    with pytest.raises(OSError) as e:
        tdx.verify(guest.quote(bytes(64)), roots=guest.root_pem(), collateral=guest.collateral(revoked=True))
    assert e.value.errno == errno.EKEYREJECTED and "revoked" in str(e.value)


def test_collateral_outside_its_validity_is_expired(guest: EmulatedTdx) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=40)
    with pytest.raises(OSError) as e:
        tdx.verify(guest.quote(bytes(64)), at=later, roots=guest.root_pem(), collateral=guest.collateral(days=30))
    assert e.value.errno == errno.EKEYEXPIRED


def flip_json(body: bytes, member: str) -> bytes:
    """The body with one value inside the signed member changed (still valid JSON)."""
    doc = json.loads(body)
    doc[member]["tcbEvaluationDataNumber"] += 1
    signed = json.dumps(doc[member], separators=(",", ":")).encode()
    return b'{"' + member.encode() + b'":' + signed + b',"signature":"' + doc["signature"].encode() + b'"}'


def test_changed_or_foreign_collateral_is_refused(guest: EmulatedTdx) -> None:
    blob = guest.quote(bytes(64))
    col = guest.collateral()
    assert col.tcb_info is not None and col.qe_identity is not None
    cases = {
        "tcb info changed": attrs.evolve(col, tcb_info=flip_json(col.tcb_info, "tcbInfo")),
        "qe identity changed": attrs.evolve(col, qe_identity=flip_json(col.qe_identity, "enclaveIdentity")),
    }
    other = EmulatedTdx(guest.state_dir.parent / "other").collateral()
    cases["another platform's PCK CRL"] = attrs.evolve(col, pck_crl=other.pck_crl)
    cases["another root's CRL"] = attrs.evolve(col, root_crl=other.root_crl)
    cases["another root's TCB info"] = attrs.evolve(col, tcb_info=other.tcb_info, tcb_info_issuer_chain=other.tcb_info_issuer_chain)
    for name, c in cases.items():
        with pytest.raises(OSError) as e:
            tdx.verify(blob, roots=guest.root_pem(), collateral=c)
        assert e.value.errno == errno.EKEYREJECTED, name
    # Every sampled bit of the signed TCB info member is covered by its signature.
    body = col.tcb_info
    start = body.index(b":") + 1
    for i in range(start, body.index(b',"signature"'), 97):
        b = bytearray(body)
        b[i] ^= 0x01
        with pytest.raises(OSError) as e:
            tdx.verify(blob, roots=guest.root_pem(), collateral=attrs.evolve(col, tcb_info=bytes(b)))
        assert e.value.errno in (errno.EBADMSG, errno.EKEYREJECTED)


@pytest.fixture
def provider(guest: EmulatedTdx) -> Iterator[EmulatedTdx]:
    register_tsm_provider(guest)
    yield guest
    unregister_tsm_provider(guest)


def test_tsm_keys_hold_verifiable_quotes(provider: EmulatedTdx) -> None:
    nonce, user = b"\x11" * 16, b"\x22" * 32
    key = kt.Keyspace().add_key("tsm", "att", f"auth {user.hex()} nonce={nonce.hex()}", "@s")
    _pub, desc, blob = key.read().split(b" ")
    assert desc == b"emulated-tdx"
    q = tdx.verify(bytes.fromhex(blob.decode()), roots=provider.root_pem(), policy=tdx.Policy(nonce=nonce, user_data=user, mrtd=MRTD))
    assert q.report_data == hashlib.sha512(nonce + user).digest()


@pytest.mark.parametrize("payload", ["auth " + "ab" * 32, "auth " + "ab" * 64 + " privlevel=1"])
def test_tsm_requests_tdx_refuses(provider: EmulatedTdx, payload: str) -> None:
    with pytest.raises(OSError) as e:
        kt.Keyspace().add_key("tsm", "att", payload, "@s")
    assert e.value.errno == errno.EINVAL


def test_the_provider_resolves_by_name() -> None:
    from keyring_types.attest import TSM_PROVIDERS

    assert TSM_PROVIDERS.knows("emulated-tdx")
