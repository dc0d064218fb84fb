"""Public-key operations on ``asymmetric`` keys with the kernel's rules and errno
(crypto/asymmetric_keys/public_key.c, crypto/rsa.c, rsa-pkcs1pad.c, rsassa-pkcs1.c).

RSA is done on the key's numbers so that every length and range check, and the
errno each gives, is the kernel's: ``enc=raw`` is the bare RSA primitive,
``enc=pkcs1`` is EME-PKCS1-v1_5 for encrypt/decrypt and EMSA-PKCS1-v1_5 (with the
DigestInfo prefix of ``hash=``, none without it) for sign/verify.  Private-key
operations are blinded.  ECDSA keys are recognised but, as on this project's
reference kernel (no ``CONFIG_CRYPTO_ECDSA``), have no algorithm (``ENOENT``).
"""

from __future__ import annotations

import errno
import hmac
import secrets

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from keyring_types.core.pkey import (
    KEYCTL_SUPPORTS_DECRYPT,
    KEYCTL_SUPPORTS_ENCRYPT,
    KEYCTL_SUPPORTS_SIGN,
    KEYCTL_SUPPORTS_VERIFY,
    PkeyParams,
    PkeyQuery,
)
from keyring_types.errors import error
from keyring_types.types.asymmetric_x509 import AsymmetricPayload, CertSignature

__all__ = ["HASH_PREFIXES", "eds_op", "query", "verify", "verify_cert_signature"]

#: The DigestInfo prefix of each hash rsassa-pkcs1 knows; the last byte is the digest length.
HASH_PREFIXES: dict[str, bytes] = {
    "md5": bytes.fromhex("3020300c06082a864886f70d020505000410"),
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "rmd160": bytes.fromhex("3021300906052b2403020105000414"),
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
    "sha3-256": bytes.fromhex("3031300d060960864801650304020805000420"),
    "sha3-384": bytes.fromhex("3041300d060960864801650304020905000430"),
    "sha3-512": bytes.fromhex("3051300d060960864801650304020a05000440"),
}
_ECDSA_HASHES = frozenset({"sha1", "sha224", "sha256", "sha384", "sha512", "sha3-256", "sha3-384", "sha3-512"})


def _determine(key: AsymmetricPayload, params: PkeyParams, op: str) -> tuple[bool, bytes | None]:
    """``software_key_determine_akcipher``: (is a signature scheme, DigestInfo prefix).

    ``EINVAL`` for an encoding or hash the algorithm lacks; ``ENOENT`` for ECDSA.
    """
    enc, hash_algo = params.encoding, params.hash_algo
    if key.pkey_algo == "rsa":
        if enc == "pkcs1":
            if op in ("encrypt", "decrypt"):
                return False, None
            if hash_algo is None:
                return True, b""
            prefix = HASH_PREFIXES.get(hash_algo)
            if prefix is None:
                raise error(errno.EINVAL, "pkcs1 signatures know no such hash= (md5, sha1, rmd160, sha224..sha512, sha3-256..512)")
            return True, prefix
        if enc != "raw":
            raise error(errno.EINVAL, "RSA keys take enc=raw or enc=pkcs1 only")
        if hash_algo is not None:
            raise error(errno.EINVAL, "enc=raw takes no hash=")
        return False, None
    if key.pkey_algo.startswith("ecdsa"):
        if enc not in ("x962", "p1363"):
            raise error(errno.EINVAL, "ECDSA keys take enc=x962 or enc=p1363 only")
        if hash_algo not in _ECDSA_HASHES:
            raise error(errno.EINVAL, "ECDSA needs hash= one of " + ", ".join(sorted(_ECDSA_HASHES)))
        raise error(errno.ENOENT, f"no ECDSA algorithm for {key.pkey_algo} here")
    raise error(errno.ENOPKG, f"unknown public key algorithm '{key.pkey_algo}'")


def _numbers(key: AsymmetricPayload) -> tuple[int, int, int]:
    """(n, e, modulus length in bytes)."""
    nums = key.public_key.public_numbers()
    return nums.n, nums.e, (nums.n.bit_length() + 7) // 8


def query(key: AsymmetricPayload, params: PkeyParams) -> PkeyQuery:
    """``software_key_query``: the sizes and operations under ``params`` (sizes of a signing setup)."""
    issig, _prefix = _determine(key, params, "sign")
    _n, _e, k = _numbers(key)
    private = key.private_key is not None
    if issig:
        ops = KEYCTL_SUPPORTS_VERIFY | (KEYCTL_SUPPORTS_SIGN if private else 0)
        ops |= KEYCTL_SUPPORTS_ENCRYPT | (KEYCTL_SUPPORTS_DECRYPT if private else 0)  # enc=pkcs1
        return PkeyQuery(ops, k * 8, k, k, k, k)
    ops = KEYCTL_SUPPORTS_ENCRYPT | (KEYCTL_SUPPORTS_DECRYPT if private else 0)
    return PkeyQuery(ops, k * 8, k, k, k, k)


def _check_payload(x: int, n: int) -> None:
    # rsa_check_payload: 1 < x < n - 1 (SP 800-56Br2 7.1.1), stricter than RFC 8017.
    if x <= 1 or x >= n - 1:
        raise error(errno.EINVAL, "RSA input out of range (must be 1 < x < n-1)")


def _public_op(key: AsymmetricPayload, x: int) -> int:
    n, e, _k = _numbers(key)
    _check_payload(x, n)
    return pow(x, e, n)


def _private_op(key: AsymmetricPayload, c: int) -> int:
    if key.private_key is None:
        raise error(errno.EINVAL, "this is a public key: the operation needs the private key")
    n, e, _k = _numbers(key)
    _check_payload(c, n)
    priv: rsa.RSAPrivateNumbers = key.private_key.private_numbers()
    # Blinded, so the time taken does not follow the secret exponent's bits for this c,
    # and by the CRT (two half-size exponentiations).
    while True:
        r = secrets.randbelow(n - 2) + 2
        try:
            r_inv = pow(r, -1, n)
            break
        except ValueError:
            continue
    blinded = c * pow(r, e, n) % n
    m1 = pow(blinded % priv.p, priv.dmp1, priv.p)
    m2 = pow(blinded % priv.q, priv.dmq1, priv.q)
    m = m2 + priv.q * ((priv.iqmp * (m1 - m2)) % priv.p)
    return (m * r_inv) % n


#: Hashes ``cryptography`` signs and verifies with the same DigestInfo prefixes: used for
#: speed where its answer is the same bytes (sign) or the same yes (verify) as the kernel's.
_FAST_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "md5": hashes.MD5,
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
    "sha3-256": hashes.SHA3_256,
    "sha3-384": hashes.SHA3_384,
    "sha3-512": hashes.SHA3_512,
}


def _fast_sign(key: AsymmetricPayload, hash_algo: str | None, digest: bytes) -> bytes | None:
    algo = _FAST_HASHES.get(hash_algo or "")
    if algo is None or key.private_key is None:
        return None
    try:
        sig: bytes = key.private_key.sign(digest, padding.PKCS1v15(), utils.Prehashed(algo()))
    except (UnsupportedAlgorithm, ValueError):
        return None
    return sig


def _fast_verify(key: AsymmetricPayload, hash_algo: str | None, digest: bytes, s: bytes) -> bool:
    """True if ``cryptography`` accepts the signature (then so does the kernel); False: undecided."""
    algo = _FAST_HASHES.get(hash_algo or "")
    if algo is None:
        return False
    try:
        key.public_key.verify(s, digest, padding.PKCS1v15(), utils.Prehashed(algo()))
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        return False
    return True


def eds_op(key: AsymmetricPayload, params: PkeyParams, op: str, data: bytes) -> bytes:
    """``software_key_eds_op``: encrypt, decrypt or sign ``data`` under ``params``."""
    issig, prefix = _determine(key, params, op)
    _n, _e, k = _numbers(key)
    if op == "sign":
        if not issig:
            raise error(errno.EINVAL, "signing needs enc=pkcs1")
        assert prefix is not None
        if prefix and len(data) != prefix[-1]:
            raise error(errno.EINVAL, f"the digest for this hash= is {prefix[-1]} bytes, not {len(data)}")
        if len(data) + len(prefix) > k - 11:
            raise error(errno.EOVERFLOW, "digest too long for this key")
        if key.private_key is None:
            raise error(errno.EINVAL, "this is a public key: signing needs the private key")
        fast = _fast_sign(key, params.hash_algo, data)
        if fast is not None:
            return fast
        em = b"\x01" + b"\xff" * (k - 3 - len(prefix) - len(data)) + b"\x00" + prefix + data
        return _private_op(key, int.from_bytes(em, "big")).to_bytes(k, "big")
    if issig:
        raise error(errno.EINVAL, f"enc=pkcs1 with hash= is for sign and verify, not {op}")
    if op == "encrypt":
        if params.encoding == "raw":
            return _public_op(key, int.from_bytes(data, "big")).to_bytes(k, "big")
        if len(data) > k - 11:
            raise error(errno.EOVERFLOW, f"at most {k - 11} bytes fit one pkcs1 block of this key")
        ps = bytearray()
        while len(ps) < k - 3 - len(data):
            ps += bytes(b for b in secrets.token_bytes(k) if b)
        em = b"\x02" + bytes(ps[: k - 3 - len(data)]) + b"\x00" + data
        return _public_op(key, int.from_bytes(em, "big")).to_bytes(k, "big")
    # decrypt
    if params.encoding == "raw":
        m = _private_op(key, int.from_bytes(data, "big"))
        return m.to_bytes((m.bit_length() + 7) // 8, "big")
    if len(data) != k:
        raise error(errno.EINVAL, f"a pkcs1 ciphertext for this key is {k} bytes, not {len(data)}")
    m = _private_op(key, int.from_bytes(data, "big"))
    out = m.to_bytes(k - 1, "big") if m.bit_length() <= (k - 1) * 8 else b""
    if not out or out[0] != 0x02:
        raise error(errno.EINVAL, "decryption failed: bad pkcs1 padding")
    sep = out.find(b"\x00", 1)
    if sep < 9:
        raise error(errno.EINVAL, "decryption failed: bad pkcs1 padding")
    return out[sep + 1 :]


def _rsassa_verify(key: AsymmetricPayload, prefix: bytes, digest: bytes, s: bytes) -> None:
    """``rsassa_pkcs1_verify``: EINVAL (lengths, range), EBADMSG (padding), EKEYREJECTED (digest)."""
    _n, _e, k = _numbers(key)
    if len(s) != k or (prefix and len(digest) != prefix[-1]):
        raise error(errno.EINVAL, "signature or digest has the wrong length for this key and hash")
    em = _public_op(key, int.from_bytes(s, "big")).to_bytes(k, "big")
    if em[0] != 0:
        raise error(errno.EINVAL, "signature does not decode to a padded block")
    body = em[1:]
    if body[0] != 0x01:
        raise error(errno.EBADMSG, "signature padding is not EMSA-PKCS1-v1_5")
    pos = 1
    while pos < len(body) and body[pos] == 0xFF:
        pos += 1
    if pos < 9 or pos == len(body) or body[pos] != 0:
        raise error(errno.EBADMSG, "signature padding is not EMSA-PKCS1-v1_5")
    pos += 1
    if len(prefix) > len(body) - pos or not hmac.compare_digest(body[pos : pos + len(prefix)], prefix):
        raise error(errno.EBADMSG, "signature is for another hash algorithm")
    pos += len(prefix)
    if len(digest) != len(body) - pos or not hmac.compare_digest(digest, body[pos:]):
        raise error(errno.EKEYREJECTED, "signature does not match the digest")


def verify(key: AsymmetricPayload, params: PkeyParams, digest: bytes, s: bytes) -> None:
    """``public_key_verify_signature`` for a keyctl request: ENOENT for enc=raw (no such signature scheme)."""
    issig, prefix = _determine(key, params, "verify")
    if not issig:
        raise error(errno.ENOENT, "enc=raw is not a signature scheme (use enc=pkcs1)")
    assert prefix is not None
    _n, _e, k = _numbers(key)
    if len(s) == k and _fast_verify(key, params.hash_algo, digest, s):
        return
    _rsassa_verify(key, prefix, digest, s)


def verify_cert_signature(key: AsymmetricPayload, sig: CertSignature) -> None:
    """``public_key_verify_signature`` for a certificate's signature made by ``key``.

    ``EKEYREJECTED`` when the algorithms differ or the signature is wrong.
    """
    if key.pkey_algo != sig.pkey_algo and not (key.pkey_algo.startswith("ecdsa-") and sig.pkey_algo == "ecdsa"):
        raise error(errno.EKEYREJECTED, "signature algorithm does not match the signing key")
    verify(key, PkeyParams(sig.encoding, sig.hash_algo), sig.digest, sig.s)
