"""Encoding a payload for the store leaves no copy of its secret in freed memory.

Regression found in review: ``encode_payload`` grew one bytearray piece by
piece, and every time it moved, the old block, holding whatever secret bytes
had been written so far, went back to the allocator unwiped.  The encoding is
now copied once into a bytearray of the exact size, which the caller wipes.
The test encodes a payload whose secret is followed by more fields (so a
growing buffer would have moved after taking the secret), wipes the result and
the secret, and scans the process's memory (tests/memscan.py).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import keyring_types as kt
from keyring_types.secret import SecretBuffer
from keyring_types.store.codec import decode_payload, encode_payload

ROOT = Path(kt.__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from memscan import Needle
    from keyring_types.secret import SecretBuffer
    from keyring_types.store.codec import encode_payload

    n = Needle(48)
    secret = SecretBuffer.from_bytes(n.secret)
    n.secret[:] = bytes(len(n.secret))
    # Fields after the secret, big enough that a growing buffer moves more than once.
    payload = {"key": secret, "format": "default", "pad": ["x" * 300, b"y" * 3000, 7]}
    plain = encode_payload(payload)
    plain[:] = bytes(len(plain))
    secret.wipe()
    print("\\n".join(n.leftovers()) or "clean")
    """
)


def test_an_encoded_payload_leaves_no_copy_of_its_secret() -> None:
    r = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "tests")], cwd=ROOT, capture_output=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode().split("\n")[:-1]
    assert out == ["clean"], f"copies of the secret left in memory at {out}"


def test_the_encoding_round_trips_and_is_exactly_sized() -> None:
    secret = SecretBuffer.from_bytes(b"s" * 40)
    payload = {"key": secret, "n": -5, "t": (True, False, None), "b": b"\x00\xff", "f": frozenset({1})}
    plain = encode_payload(payload)
    again = decode_payload(plain, "keyring_types.types.user")
    assert again["n"] == -5 and again["t"] == (True, False, None) and again["b"] == b"\x00\xff" and again["f"] == frozenset({1})
    with again["key"].view() as mv:
        assert bytes(mv) == b"s" * 40
    assert encode_payload(None) == bytearray(b"N")
    lone = encode_payload(SecretBuffer.from_bytes(b"abc"))  # the common payload, written directly
    assert lone == bytearray(b"S\x00\x00\x00\x03abc")
    with decode_payload(lone, "keyring_types.types.user").view() as mv:
        assert bytes(mv) == b"abc"
