"""Encrypted keys against this machine's kernel, both directions, every format.

* our blob loads in the kernel, which re-emits it byte for byte;
* the kernel's blob loads here and we re-emit it byte for byte;
* plaintext equality by a chain: decrypt the kernel's blob here -> re-seal here
  under master A (fresh IV) -> load into the kernel -> kernel ``update`` to master
  B -> decrypt the kernel's new blob here with B -> the same plaintext;
* tampered blobs (every byte, random bit flips) are rejected by both with the
  same errno, and neither side instantiates anything.
"""

from __future__ import annotations

import errno
import itertools
import os
import random

import pytest
from conftest import kernel_keyring_reachable, require

import keyring_types as kt
from keyring_types.errors import KeyringError
from keyring_types.types import encrypted_blob as eb

pytestmark = pytest.mark.kernel

# (format word, description, data length)
FORMATS = [
    ("default", "ek", "32"),
    ("default", "ek", "20"),
    ("default", "ek", "33"),
    ("default", "ek", "4096"),
    ("default", "ek", "+048"),
    ("enc32", "ek", "32"),
    ("ecryptfs", "0123456789abcdef", "64"),
]
FORMAT_IDS = [f"{f}-{n}" for f, _d, n in FORMATS]
MASTER_LENGTHS = [1, 8, 22, 23, 32, 64, 300]
_scratch = itertools.count()


class Pair:
    """The same master keys in an in-process Keyspace and in a fresh kernel session."""

    def __init__(self) -> None:
        self.here = kt.Keyspace()
        self.kernel = kt.KernelKeyspace(new_session=True)
        self.masters: dict[str, bytes] = {}

    def master(self, name: str, data: bytes) -> None:
        self.masters[name] = data
        self.here.add_key("user", name, data, "@s")
        self.kernel.add_key("user", name, data, "@s")


@pytest.fixture
def pair() -> Pair:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    p = Pair()
    p.master("A", os.urandom(32))
    p.master("B", os.urandom(45))
    return p


def errno_of(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    assert isinstance(info.value, KeyringError)
    assert info.value.errno is not None
    return info.value.errno


def decrypt_here(pair: Pair, blob: bytes, desc: str, master_name: str) -> bytes:
    """Decrypt ``blob`` with the in-process type: load it (under a fresh description), take the secret."""
    n = next(_scratch)
    scratch = f"{0xD0000000 + n:016x}" if len(desc) == 16 else f"scratch{n}"
    key = pair.here.add_key("encrypted", scratch, b"load " + blob, "@s")
    try:
        with key.secret() as mv:
            raw = bytes(mv)
    finally:
        key.invalidate()
    return raw


def _absent(space: kt.KeyspaceAPI, desc: str) -> bool:
    try:
        space.request_key("encrypted", desc)
    except OSError as exc:
        return exc.errno == errno.ENOKEY
    return False


# -- both directions ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "desc", "n"), FORMATS, ids=FORMAT_IDS)
def test_our_blob_loads_in_the_kernel(pair: Pair, fmt: str, desc: str, n: str) -> None:
    ours = pair.here.add_key("encrypted", desc, f"new {fmt} user:A {n}", "@s").read()
    theirs = pair.kernel.add_key("encrypted", desc, b"load " + ours, "@s")
    assert theirs.read() == ours


@pytest.mark.parametrize(("fmt", "desc", "n"), FORMATS, ids=FORMAT_IDS)
def test_kernel_blob_loads_here(pair: Pair, fmt: str, desc: str, n: str) -> None:
    theirs = pair.kernel.add_key("encrypted", desc, f"new {fmt} user:A {n}", "@s").read()
    ours = pair.here.add_key("encrypted", desc, b"load " + theirs, "@s")
    assert ours.read() == theirs


@pytest.mark.parametrize("length", MASTER_LENGTHS)
def test_both_directions_for_master_lengths(pair: Pair, length: int) -> None:
    pair.master("M", os.urandom(length))
    theirs = pair.kernel.add_key("encrypted", "k1", "new user:M 40", "@s").read()
    assert pair.here.add_key("encrypted", "k1", b"load " + theirs, "@s").read() == theirs
    ours = pair.here.add_key("encrypted", "k2", "new user:M 40", "@s").read()
    assert pair.kernel.add_key("encrypted", "k2", b"load " + ours, "@s").read() == ours


def test_legacy_blob_both_sides(pair: Pair) -> None:
    # A format-less blob (legacy HMAC) built here: both load it and re-emit the same new-style blob.
    iv, data = os.urandom(16), os.urandom(32)
    a = pair.masters["A"]
    ct = eb.encrypt(eb.derive_enc_key(a), iv, data)
    mac = eb.compute_hmac(eb.derive_auth_key(a), eb.datablob_header(None, "user:A", "32"), iv, ct)
    legacy = f"load user:A 32 {iv.hex()}00{ct.hex()}{mac.hex()}"
    k_here = pair.here.add_key("encrypted", "leg", legacy, "@s")
    k_kernel = pair.kernel.add_key("encrypted", "leg", legacy, "@s")
    assert k_here.read() == k_kernel.read()
    assert k_here.read().startswith(b"default user:A 32 ")


def test_length_word_verbatim_both_sides(pair: Pair) -> None:
    theirs = pair.kernel.add_key("encrypted", "nl", "new user:A 32\n", "@s").read()
    assert theirs.startswith(b"default user:A 32\n ")
    assert pair.here.add_key("encrypted", "nl", b"load " + theirs, "@s").read() == theirs


# -- the plaintext chain -------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "desc", "n"), FORMATS, ids=FORMAT_IDS)
def test_plaintext_chain(pair: Pair, fmt: str, desc: str, n: str) -> None:
    datalen = int(n.lstrip("+"))
    # 1. the kernel makes a key under A; decrypt its blob here.
    k1 = pair.kernel.add_key("encrypted", desc, f"new {fmt} user:A {n}", "@s")
    plain = decrypt_here(pair, k1.read(), desc, "A")
    assert len(plain) == datalen
    # 2. re-seal here under A with a fresh IV.
    iv = os.urandom(eb.IV_SIZE)
    sealed = eb.seal(pair.masters["A"], fmt, "user:A", n, iv, plain)
    ours = eb.export(fmt, "user:A", n, sealed)
    # 3. the kernel loads it (its own HMAC check), then 4. re-wraps it under B.
    k2 = pair.kernel.add_key("encrypted", desc + "2" if fmt != "ecryptfs" else "fedcba9876543210", b"load " + ours, "@s")
    assert k2.read() == ours
    k2.update("update user:B")
    rewrapped = k2.read()
    assert rewrapped.split(b" ")[:3] == [fmt.encode(), b"user:B", n.encode()]
    assert rewrapped.split(b" ")[3][:32] == iv.hex().encode()  # update keeps the IV
    # 5. decrypt the kernel's B-wrapped blob here: the same plaintext.
    assert decrypt_here(pair, rewrapped, desc, "B") == plain
    # ...and directly with the blob functions, as a cross-check of the type.
    hexblob = rewrapped.split(b" ")[3]
    direct = eb.unseal(pair.masters["B"], fmt, "user:B", n, datalen, eb.parse_hex_blob(hexblob, datalen))
    assert direct.tobytes() == plain
    direct.wipe()


def test_our_update_matches_the_kernels(pair: Pair) -> None:
    theirs = pair.kernel.add_key("encrypted", "u", "new user:A 32", "@s")
    ours = pair.here.add_key("encrypted", "u", b"load " + theirs.read(), "@s")
    theirs.update("update default user:B")
    ours.update("update default user:B")
    assert ours.read() == theirs.read()


# -- tampering ---------------------------------------------------------------------------------


def _other(desc: str) -> str:
    """A fresh description of the same kind: rejected loads go there, so that a
    successful one could not hide behind an existing key (and the kernel's
    asynchronous cleanup of invalidated keys does not matter)."""
    return "fedcba9876543210" if len(desc) == 16 else desc + "-t"


def _both_reject(pair: Pair, payload: bytes, desc: str) -> int:
    desc = _other(desc)
    e_kernel = errno_of(pair.kernel.add_key, "encrypted", desc, payload, "@s")
    e_here = errno_of(pair.here.add_key, "encrypted", desc, payload, "@s")
    assert e_kernel == e_here
    assert _absent(pair.kernel, desc) and _absent(pair.here, desc)
    return e_here


@pytest.mark.parametrize(("fmt", "desc", "n"), [FORMATS[0], FORMATS[5], FORMATS[6]], ids=["default", "enc32", "ecryptfs"])
def test_every_byte_flipped_is_rejected_by_both(pair: Pair, fmt: str, desc: str, n: str) -> None:
    blob = pair.kernel.add_key("encrypted", desc, f"new {fmt} user:A {n}", "@s").read()
    head, hexblob = blob.rsplit(b" ", 1)
    raw = bytes.fromhex(hexblob.decode())
    for i in range(len(raw)):
        if i == eb.IV_SIZE:
            continue  # the separator byte is not checked by either side (spec 1.2 #7)
        bad = bytearray(raw)
        bad[i] ^= 0xFF
        assert _both_reject(pair, b"load " + head + b" " + bad.hex().encode(), desc) == errno.EINVAL, i


def test_random_bit_flips_are_rejected_by_both(pair: Pair) -> None:
    rng = random.Random(0x5EED)
    for idx, (fmt, desc, n) in enumerate(FORMATS):
        if fmt != "ecryptfs":
            desc = f"{desc}{idx}"
        blob = pair.kernel.add_key("encrypted", desc, f"new {fmt} user:A {n}", "@s").read()
        head, hexblob = blob.rsplit(b" ", 1)
        raw = bytes.fromhex(hexblob.decode())
        for _ in range(25):
            bad = bytearray(raw)
            flips = rng.randint(1, 4)
            for _f in range(flips):
                i = rng.choice([j for j in range(len(raw)) if j != eb.IV_SIZE])
                bad[i] ^= 1 << rng.randrange(8)
            if bytes(bad) == raw:
                continue
            assert _both_reject(pair, b"load " + head + b" " + bad.hex().encode(), desc) == errno.EINVAL


def test_separator_tampering_is_accepted_by_both(pair: Pair) -> None:
    blob = pair.kernel.add_key("encrypted", "s", "new user:A 32", "@s").read()
    head, hexblob = blob.rsplit(b" ", 1)
    for sep in (b"ff", b"zz", b"G!"):
        bad = b"load " + head + b" " + hexblob[:32] + sep + hexblob[34:]
        assert pair.kernel.add_key("encrypted", "s" + sep.hex(), bad, "@s").read() == blob
        assert pair.here.add_key("encrypted", "s" + sep.hex(), bad, "@s").read() == blob


@pytest.mark.parametrize(
    "edit",
    [
        lambda h, x: (h.replace(b" 32", b" 33"), x),
        lambda h, x: (h.replace(b"user:A", b"user:B"), x),
        lambda h, x: (h.replace(b"default", b"enc32"), x),
        lambda h, x: (h.replace(b"default ", b""), x),
        lambda h, x: (h, x[:-2]),
        lambda h, x: (h, x + b"0"),
        lambda h, x: (h, x[:-1] + b"x"),
    ],
    ids=["length", "master", "format", "legacy", "short", "long", "nonhex"],
)
def test_header_and_length_tampering_rejected_by_both(pair: Pair, edit) -> None:  # type: ignore[no-untyped-def]
    blob = pair.kernel.add_key("encrypted", "h", "new user:A 32", "@s").read()
    head, hexblob = blob.rsplit(b" ", 1)
    h2, x2 = edit(head, hexblob)
    assert _both_reject(pair, b"load " + h2 + b" " + x2, "h") == errno.EINVAL


@pytest.mark.parametrize("state", ["absent", "revoked", "trusted"])
def test_master_errors_match(pair: Pair, state: str) -> None:
    blob = pair.kernel.add_key("encrypted", "m", "new user:A 32", "@s").read()
    if state == "absent":
        payload = b"load " + blob.replace(b"user:A", b"user:Z")
    elif state == "trusted":
        payload = b"load " + blob.replace(b"user:A", b"trusted:A")
        if "trusted" in kt.registered_key_types():
            # This kernel has no trusted keys (EOPNOTSUPP); here the type exists and
            # simply finds no trusted key "A".
            assert errno_of(pair.kernel.add_key, "encrypted", "m2", payload, "@s") == errno.EOPNOTSUPP
            assert errno_of(pair.here.add_key, "encrypted", "m2", payload, "@s") == errno.ENOKEY
            return
    else:
        for space in (pair.here, pair.kernel):
            space.request_key("user", "A").revoke()
        payload = b"load " + blob
    e = _both_reject(pair, payload, "m")
    assert e == {"absent": errno.ENOKEY, "revoked": errno.EKEYREVOKED, "trusted": errno.EOPNOTSUPP}[state]


# -- trusted masters ---------------------------------------------------------------------------


def _kernel_has_trusted_keys(kernel: kt.KernelKeyspace) -> bool:
    try:
        kernel.add_key("trusted", "probe", "new 32", "@s")
    except OSError as exc:
        return exc.errno != errno.ENODEV
    return True


@pytest.mark.parametrize(("fmt", "desc", "n"), [FORMATS[0], FORMATS[5], FORMATS[6]], ids=["default", "enc32", "ecryptfs"])
def test_trusted_master_chain(pair: Pair, tmp_path, monkeypatch: pytest.MonkeyPatch, fmt: str, desc: str, n: str) -> None:  # type: ignore[no-untyped-def]
    """A key wrapped under a trusted master here carries data the kernel can hold.

    This kernel has no trusted keys (``add_key("trusted")`` is ENODEV), so it
    cannot load a ``trusted:`` blob (EOPNOTSUPP, as ours without the type); the
    plaintext still goes through the chain via user masters A and B.
    """
    require("trusted" in kt.registered_key_types(), "the trusted key type")
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path))
    datalen = int(n)
    pair.here.add_key("trusted", "T", "new 32 source=host", "@s")
    ours = pair.here.add_key("encrypted", desc, f"new {fmt} trusted:T {n}", "@s")
    blob = ours.read()
    assert blob.startswith(f"{fmt} trusted:T {n} ".encode())
    with ours.secret() as mv:
        raw = bytes(mv)
    plain = raw
    if not _kernel_has_trusted_keys(pair.kernel):
        assert errno_of(pair.kernel.add_key, "encrypted", desc, b"load " + blob, "@s") == errno.EOPNOTSUPP
    # Re-seal under A, into the kernel, kernel update to B, back here.
    sealed = eb.seal(pair.masters["A"], fmt, "user:A", n, os.urandom(16), plain)
    k = pair.kernel.add_key("encrypted", desc, b"load " + eb.export(fmt, "user:A", n, sealed), "@s")
    k.update("update user:B")
    assert decrypt_here(pair, k.read(), desc, "B") == plain
    assert len(plain) == datalen


def test_read_is_what_keyctl_pipe_prints(pair: Pair) -> None:
    import shutil
    import subprocess

    keyctl = shutil.which("keyctl")
    require(keyctl is not None, "keyutils' keyctl")
    assert keyctl is not None
    theirs = pair.kernel.add_key("encrypted", "p", "new user:A +032", "@s")
    piped = subprocess.run([keyctl, "pipe", str(theirs.serial)], capture_output=True, check=True).stdout
    ours = pair.here.add_key("encrypted", "p", b"load " + piped, "@s")
    assert ours.read() == piped
    printed = subprocess.run([keyctl, "print", str(theirs.serial)], capture_output=True, check=True).stdout
    assert printed == ours.read() + b"\n"
