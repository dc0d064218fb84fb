"""Random certificate subjects, serials and extensions: the proposed description and the
``/proc/keys`` column agree between an in-process Keyspace and the kernel."""

from __future__ import annotations

import errno

import pytest
from asym_certs import cert, rsa_key
from conftest import kernel_keyring_reachable, require
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keyring_types as kt

_WORDS = st.sampled_from(["Example", "Example Org", "Example Organisation", "Exampl", "Org", "Signing key", "é", "x"])
_VALUE = st.lists(_WORDS, min_size=1, max_size=3).map(" ".join)
_ATTR = st.tuples(st.sampled_from([NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.EMAIL_ADDRESS,
                                   NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COUNTRY_NAME]), _VALUE)


def _name(attrs: list[tuple[x509.ObjectIdentifier, str]]) -> x509.Name:
    out = []
    for oid, value in attrs:
        if oid == NameOID.COUNTRY_NAME:
            value = "GB"  # a country is two letters
        out.append(x509.NameAttribute(oid, value))
    return x509.Name(out)


def _column(space: kt.KeyspaceAPI, serial: int) -> str:
    lines = space.proc_keys() if isinstance(space, kt.Keyspace) else open("/proc/keys").read().splitlines()
    (line,) = [ln for ln in lines if ln.startswith(f"{serial:08x} ")]
    return line[line.index("asymmetri") + 10 :]


@pytest.fixture(scope="module")
def kernel_ok() -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    subject=st.lists(_ATTR, min_size=0, max_size=4),
    issuer=st.lists(_ATTR, min_size=0, max_size=3),
    serial=st.one_of(st.integers(1, 2**31), st.integers(2**63, 2**159 - 1)),
    skid=st.booleans(),
    akid=st.booleans(),
    self_signed=st.booleans(),
    bits=st.sampled_from([1024, 2048]),
)
def test_descriptions_agree(
    kernel_ok: None,
    subject: list[tuple[x509.ObjectIdentifier, str]],
    issuer: list[tuple[x509.ObjectIdentifier, str]],
    serial: int,
    skid: bool,
    akid: bool,
    self_signed: bool,
    bits: int,
) -> None:
    key = rsa_key(f"names{bits}", bits)
    der = cert(
        key,
        _name(subject),
        issuer=None if self_signed else _name(issuer),
        issuer_key=None if self_signed else rsa_key("ca"),
        serial=serial,
        skid=skid,
        akid=akid,
    )
    got = []
    for space in (kt.Keyspace(), kt.KernelKeyspace(new_session=True)):
        try:
            k = space.add_key("asymmetric", None, der, "@s")
            got.append((k.describe(), _column(space, k.serial)))
        except OSError as exc:
            got.append((errno.errorcode[exc.errno or 0], ""))
    assert got[0] == got[1]
