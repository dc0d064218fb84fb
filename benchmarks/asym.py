#!/usr/bin/env python3
"""``asymmetric`` keys through the public path, against the kernel's keyctl and ``cryptography``.

Measured in the same run, each as calls per second:

* ``pkey_verify("enc=pkcs1 hash=sha256")`` on an in-process key, against the same call on a
  kernel key (``KEYCTL_PKEY_VERIFY``) and against ``cryptography``'s RSA verify;
* ``pkey_sign`` on an in-process PKCS#8 key against ``cryptography``'s sign (the kernel here
  cannot load private keys);
* ``add_key("asymmetric", <certificate>)`` + ``invalidate`` in process against the kernel.

Goal: the in-process verify and add cost at most 3x the kernel's (a Python RSA public
operation against the kernel's C), the blinded sign at most 3x ``cryptography``'s.

Usage: python benchmarks/asym.py [--seconds 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from cryptography.x509.oid import NameOID

import keyring_types as kt

GOAL = 3.0


def rate(fn: Callable[[], object], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(10):
            fn()
        n += 10
        now = time.perf_counter()
        if now - start >= seconds:
            return n / (now - start)


def best(fn: Callable[[], object], seconds: float, rounds: int) -> float:
    return max(rate(fn, seconds / rounds) for _ in range(rounds))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    when = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    der = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(1).not_valid_before(when).not_valid_after(when.replace(year=2044))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    )
    p8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    info = "enc=pkcs1 hash=sha256"
    digest = hashlib.sha256(b"benchmark").digest()
    sig = key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))

    ks = kt.Keyspace()
    kk = kt.KernelKeyspace(new_session=True)
    mine = ks.add_key("asymmetric", None, der, "@s")
    private = ks.add_key("asymmetric", "p", p8, "@s")
    theirs = kk.add_key("asymmetric", None, der, "@s")
    pub = key.public_key()

    def add_cycle(space: kt.KeyspaceAPI) -> Callable[[], object]:
        return lambda: space.add_key("asymmetric", "b", der, "@s").invalidate()

    rows = [
        ("pkey_verify", lambda: mine.pkey_verify(info, digest, sig), "kernel", lambda: theirs.pkey_verify(info, digest, sig)),
        ("pkey_verify", lambda: mine.pkey_verify(info, digest, sig), "cryptography",
         lambda: pub.verify(sig, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))),
        ("pkey_sign", lambda: private.pkey_sign(info, digest), "cryptography",
         lambda: key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))),
        ("add+invalidate", add_cycle(ks), "kernel", add_cycle(kk)),
    ]
    ok = True
    for name, ours, peer_name, peer in rows:
        a = best(ours, args.seconds, args.rounds)
        b = best(peer, args.seconds, args.rounds)
        ratio = b / a
        ok &= ratio <= GOAL
        print(f"{name:15s} ours {a:9.0f}/s  {peer_name:12s} {b:9.0f}/s  cost ratio {ratio:5.2f}  (goal <= {GOAL})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
