"""The native P-256 verifier the TDX verifier uses agrees with cryptography's."""

from __future__ import annotations

import errno
import random

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from keyring_types.bindings.p256 import P256PublicKey


def raw_key_and_sig(msg: bytes) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]
    r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
    return point, r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_valid_and_changed_signatures() -> None:
    rng = random.Random(7)
    for n in (0, 1, 632, 5000):
        msg = rng.randbytes(n)
        point, sig = raw_key_and_sig(msg)
        key = P256PublicKey.from_point(point)
        assert key is not None and key.verify(sig, msg)
        for bit in rng.sample(range(512), 8):
            bad = bytearray(sig)
            bad[bit // 8] ^= 1 << (bit % 8)
            assert not key.verify(bytes(bad), msg)
        if msg:
            assert not key.verify(sig, msg[:-1] + bytes([msg[-1] ^ 1]))
    assert not key.verify(bytes(64), b"m") and not key.verify(b"\xff" * 64, b"m")


def test_points_off_the_curve_and_bad_sizes() -> None:
    point, _sig = raw_key_and_sig(b"x")
    assert P256PublicKey.from_point(bytes(64)) is None
    assert P256PublicKey.from_point(point[:63] + bytes([point[63] ^ 1])) is None
    for bad in (point[:63], point + b"\x00"):
        with pytest.raises(OSError) as e:
            P256PublicKey.from_point(bad)
        assert e.value.errno == errno.EINVAL
    key = P256PublicKey.from_point(point)
    assert key is not None
    with pytest.raises(OSError) as e:
        key.verify(bytes(63), b"x")
    assert e.value.errno == errno.EINVAL
