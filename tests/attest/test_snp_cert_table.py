"""keyring_types.attest.snp.parse_cert_table: the GHCB certificate table of an extended report."""

from __future__ import annotations

import errno
import struct
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from test_snp_real import data

from keyring_types.attest import snp

VCEK = "63da758d-e664-4564-adc5-f4b93be8accd"
ASK = "4ab7b379-bbac-4fe4-a02f-05aef327c782"
ARK = "c0b406a4-a803-4952-9743-3fb6014cd0ae"
OTHER = "ecae0c0f-9502-43b1-afa2-0ae2e0d565b6"


def table(entries: list[tuple[str, bytes]], *, terminate: bool = True) -> bytes:
    """Entries, the all-zero terminator, then the certificates in order."""
    header = 24 * (len(entries) + (1 if terminate else 0))
    out, body = b"", b""
    for guid, blob in entries:
        out += struct.pack("<16sII", uuid.UUID(guid).bytes, header + len(body), len(blob))
        body += blob
    if terminate:
        out += bytes(24)
    return out + body


def milan_certs() -> tuple[bytes, bytes, bytes]:
    ask, ark = x509.load_pem_x509_certificates(data("sev-snp/milan.testcer"))
    return data("sev-snp/vcek.testcer"), ask.public_bytes(Encoding.DER), ark.public_bytes(Encoding.DER)


def test_table_feeds_verify() -> None:
    vcek, ask, ark = milan_certs()
    t = snp.parse_cert_table(table([(ARK, ark), (ASK, ask), (VCEK, vcek), (OTHER, b"extra")]) + bytes(100))
    assert (t.vcek, t.ask, t.ark, t.vlek) == (vcek, ask, ark, None)
    assert t.other == ((OTHER, b"extra"),)
    assert t.vcek is not None
    r = snp.verify(data("sev-snp/attestation.bin"), cert=t.vcek)  # AMD's roots, not the table's
    assert r.product == "Milan"


def test_empty_table() -> None:
    assert snp.parse_cert_table(bytes(24)) == snp.CertTable()


@pytest.mark.parametrize(
    ("blob", "words"),
    [
        (b"", "no terminating"),
        (bytes(23), "no terminating"),
        (table([(VCEK, b"x" * 10)], terminate=False), "no terminating"),
        (table([(VCEK, b"x" * 10)])[:-1], "outside the table"),
        (table([(VCEK, b"x"), (VCEK, b"y")]), "appears twice"),
        (struct.pack("<16sII", uuid.UUID(VCEK).bytes, 0, 24) + bytes(24), "outside the table"),
    ],
)
def test_malformed_tables_are_ebadmsg(blob: bytes, words: str) -> None:
    with pytest.raises(OSError) as e:
        snp.parse_cert_table(blob)
    assert e.value.errno == errno.EBADMSG and words in str(e.value)
