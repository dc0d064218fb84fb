"""The AMD chains embedded in keyring_types/attest/amd_roots are the published ones, as their README says."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import pytest
from cryptography import x509
from test_snp_real import TESTDATA, data

from keyring_types.attest import snp

ROOTS = resources.files("keyring_types.attest").joinpath("amd_roots")
README = ROOTS.joinpath("README.md").read_text()
LISTED = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+\.pem)$", README, re.MULTILINE))


def test_readme_lists_every_embedded_chain() -> None:
    embedded = {p.name for p in ROOTS.iterdir() if p.name.endswith(".pem")}
    assert embedded == set(LISTED) == set(snp._AMD_CHAINS.values())
    assert "Apache License" in ROOTS.joinpath("LICENSE").read_text()


@pytest.mark.parametrize("name", sorted(LISTED))
def test_embedded_chain_matches_readme_and_published_copy(name: str) -> None:
    blob = ROOTS.joinpath(name).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == LISTED[name]
    assert blob == data(f"amd-roots/{name}"), f"differs from {TESTDATA}/amd-roots/{name}"
    ask, ark = x509.load_pem_x509_certificates(blob)
    ask_cn = ask.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert snp._AMD_CHAINS[str(ask_cn)] == name  # the issuer name picks this very file
    assert ark.subject == ark.issuer == ask.issuer
