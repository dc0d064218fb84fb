"""Finding asymmetric keys by key id: ``id:``, ``ex:`` and ``dn:`` descriptions in search and
request_key (``asymmetric_key_match_preparse``), the same on both keyspaces."""

from __future__ import annotations

import errno

from asym_certs import ca_cert, leaf_cert
from conftest import errno_of
from cryptography import x509

import keyring_types as kt


def test_key_id_searches(space: kt.KeyspaceAPI) -> None:
    der = ca_cert()
    c = x509.load_der_x509_certificate(der)
    skid = c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    subject = c.subject.public_bytes()[2:].hex()  # the Name's contents, without its header
    cert_id = f"{c.serial_number:02x}{c.issuer.public_bytes()[2:].hex()}"
    k = space.add_key("asymmetric", None, der, "@s")
    space.add_key("asymmetric", None, leaf_cert(), "@s")
    space.add_key("user", f"id:{skid[-8:]}", b"a user key named like a search", "@s")

    found = [
        f"id:{skid[-8:]}",  # the tail of a key id
        f"id:{skid}",
        f"id:{skid[-8:].upper()}",
        f"id:{cert_id[-6:]}",  # the tail of serial + issuer
        f"ex:{skid}",
        f"ex:{cert_id}",
        f"dn:{subject}",
        k.description,  # an ordinary description still matches as it is
    ]
    for d in found:
        assert space.session.search("asymmetric", d) == k, d
        assert space.request_key("asymmetric", d) == k, d
    for d in (f"ex:{skid[-8:]}", f"id:{skid[:8]}", f"dn:{subject[2:]}", f"ID:{skid}"):
        assert errno_of(space.session.search, "asymmetric", d) == errno.ENOKEY, d
        assert errno_of(space.request_key, "asymmetric", d) == errno.ENOKEY, d
    for d in ("id:", "id:abc", "id:zz", "id: a", "ex:0", "dn:"):
        assert errno_of(space.session.search, "asymmetric", d) == errno.EINVAL, d
        assert errno_of(space.request_key, "asymmetric", d) == errno.EINVAL, d
    # The type's own match comes before the ENOTDIR of searching a non-keyring.
    assert errno_of(kt.Keyring(space, k.serial).search, "asymmetric", "id:abc") == errno.EINVAL
    assert errno_of(kt.Keyring(space, k.serial).search, "asymmetric", "id:ab") == errno.ENOTDIR
