"""Asymmetric keys in a persistent Keyspace (``Keyspace(store=...)``): written as the blob
they came from (sealed at rest like every payload) and parsed again when read back."""

from __future__ import annotations

import hashlib
from pathlib import Path

from asym_certs import ca_cert, pkcs8, rsa_key

import keyring_types as kt


def _open(path: Path) -> kt.Keyspace:
    ks = kt.Keyspace(store=path)
    ks.session.link(ks.user_keyring)
    return ks


def test_certificate_and_private_key_survive_the_process(store: Path) -> None:
    ks = _open(store)
    cert = ks.add_key("asymmetric", None, ca_cert(), "@u")
    private = ks.add_key("asymmetric", "ca private", pkcs8(rsa_key("ca")), "@u")
    described = (cert.describe(), private.describe())
    procs = sorted(line[9:] for line in ks.proc_keys() if "asymmetri" in line)
    assert ks.store is not None
    ks.store.close()

    again = _open(store)
    c2, p2 = again.key(cert.serial), again.key(private.serial)
    assert (c2.describe(), p2.describe()) == described
    assert sorted(line[9:] for line in again.proc_keys() if "asymmetri" in line) == procs
    d = hashlib.sha256(b"kept").digest()
    c2.pkey_verify("enc=pkcs1 hash=sha256", d, p2.pkey_sign("enc=pkcs1 hash=sha256", d))
    assert p2.pkey_query("enc=pkcs1").ops == {"encrypt", "decrypt", "sign", "verify"}
    # The private key is never in the file in the clear.
    assert pkcs8(rsa_key("ca"))[40:80] not in store.read_bytes()
