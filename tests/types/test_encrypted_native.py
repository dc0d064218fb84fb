"""The native one-shot path (``_native/encrypted.c``) against the pure-Python reference.

Random inputs for every format, every master length 1..300, odd and extreme data
lengths: seal, export and unseal must agree with ``encrypted_blob``'s reference
functions byte for byte; tampering must be refused without writing plaintext.
Also the key type's behaviour that the native path changed: a loaded blob's pad is
dropped (a read re-encrypts with a zero pad, as the kernel does), a ``user`` master
is read in place, and the one parse cache gives what a fresh parse gives without
holding secrets.  The wrapper (``keyring_types.bindings.encrypted``) checks every
length against its buffer, so no argument reaches C out of bounds.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Iterator

import attrs
import pytest
from conftest import kernel_keyring_reachable, require
from keyring_types.bindings._encrypted import ffi
from vector_data import load_vectors

import keyring_types as kt
from keyring_types.bindings import encrypted as nb
from keyring_types.secret import SecretBuffer
from keyring_types.types import encrypted as enc
from keyring_types.types import encrypted_blob as eb

# (format word, data lengths to draw from); ecryptfs and enc32 have one legal length.
FORMAT_LENGTHS = {
    "default": [20, 21, 31, 32, 33, 47, 48, 64, 100, 255, 1000, 4095, 4096],
    "enc32": [32],
    "ecryptfs": [64],
}
MASTER_DESCS = ["user:kmk", "trusted:kmk", "user:a-much-longer-master-name.with.dots", "user:\u00e9t\u00e9"]


def _datalen_words(n: int, rng: random.Random) -> str:
    # The length word is MAC'd verbatim, so the native header must carry it as typed.
    return rng.choice([str(n), f"+{n}", f"0{n}", f"{n}\n"])


def _native_unseal(master: bytes, header: bytes, sealed: eb.Sealed, n: int) -> bytes:
    out = SecretBuffer(n)
    try:
        nb.unseal_into(master, header, sealed.iv, sealed.ciphertext, sealed.mac, out, n)
        return out.tobytes()
    finally:
        out.wipe()


def _reference_unseal(master: bytes, fmt: str | None, mdesc: str, dstr: str, n: int, sealed: eb.Sealed) -> bytes:
    buf = eb.unseal(master, fmt, mdesc, dstr, n, sealed)
    try:
        return buf.tobytes()
    finally:
        buf.wipe()


@pytest.fixture(params=["aes-ni", "evp"])
def aes_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test on each AES-256-CBC path of the native code: AES-NI and libcrypto's EVP."""
    was = nb.set_aesni(1 if request.param == "aes-ni" else 0)
    try:
        if request.param == "aes-ni" and not nb.set_aesni(-1):
            pytest.skip("this CPU has no AES-NI, so only the EVP path runs")
        yield request.param
    finally:
        nb.set_aesni(was)


@pytest.mark.parametrize("fmt", sorted(FORMAT_LENGTHS))
@pytest.mark.usefixtures("aes_path")
def test_native_matches_reference_for_every_master_length(fmt: str) -> None:
    rng = random.Random(f"native-{fmt}")
    for mlen in range(1, 301):
        master = rng.randbytes(mlen)
        n = rng.choice(FORMAT_LENGTHS[fmt])
        mdesc = rng.choice(MASTER_DESCS)
        dstr = _datalen_words(n, rng)
        iv = rng.randbytes(eb.IV_SIZE)
        data = rng.randbytes(n)

        ref = eb.seal(master, fmt, mdesc, dstr, iv, data)
        header = eb.datablob_header(fmt, mdesc, dstr)
        assert eb.Sealed(iv, *nb.seal(master, header, iv, data)) == ref, (mlen, n)

        exported = nb.seal_export(master, header, iv, data, n)
        assert exported == eb.export(fmt, mdesc, dstr, ref), (mlen, n)
        assert len(exported) == eb.export_len(fmt, mdesc, dstr, n)

        assert _native_unseal(master, header, ref, n) == data == _reference_unseal(master, fmt, mdesc, dstr, n, ref)


@pytest.mark.usefixtures("aes_path")
def test_native_legacy_header_matches_reference() -> None:
    # A format-less (legacy) blob MACs the header without the format row.
    rng = random.Random("legacy")
    for mlen in (1, 9, 23, 24, 32, 300):
        master, iv, data = rng.randbytes(mlen), rng.randbytes(16), rng.randbytes(37)
        ct = eb.encrypt(eb.derive_enc_key(master), iv, data)
        legacy = eb.datablob_header(None, "user:kmk", "37")
        sealed = eb.Sealed(iv, ct, eb.compute_hmac(eb.derive_auth_key(master), legacy, iv, ct))
        assert _native_unseal(master, legacy, sealed, 37) == data
        assert _reference_unseal(master, None, "user:kmk", "37", 37, sealed) == data
        with pytest.raises(OSError) as info:  # the same MAC under the new-style header is wrong
            _native_unseal(master, eb.datablob_header("default", "user:kmk", "37"), sealed, 37)
        assert info.value.errno == errno.EINVAL


@pytest.mark.usefixtures("aes_path")
@pytest.mark.parametrize("v", load_vectors("encrypted_blobs"), ids=lambda v: v["id"])
def test_native_known_answer_vector(v: dict[str, str]) -> None:
    # The known answers of tests/vectors/encrypted_blobs.json (vector 1 is kernel-made).
    master, iv, plain = bytes.fromhex(v["master"]), bytes.fromhex(v["iv"]), bytes.fromhex(v["plaintext"])
    fmt, desc, datalen = v["format"], v["master_desc"], v["datalen"]
    header = eb.datablob_header(fmt, desc, datalen)
    assert nb.seal_export(master, header, iv, plain, len(plain)) == f"{fmt} {desc} {datalen} {v['blob_hex']}".encode()
    sealed = eb.Sealed(iv, bytes.fromhex(v["ciphertext"]), bytes.fromhex(v["mac"]))
    assert _native_unseal(master, header, sealed, len(plain)) == plain


@pytest.mark.usefixtures("aes_path")
def test_native_refuses_every_tampered_byte_and_writes_nothing() -> None:
    rng = random.Random("tamper")
    master, iv, data = rng.randbytes(32), rng.randbytes(16), rng.randbytes(33)
    header = eb.datablob_header("default", "user:kmk", "33")
    good = eb.seal(master, "default", "user:kmk", "33", iv, data)
    fields = {"iv": good.iv, "ciphertext": good.ciphertext, "mac": good.mac}
    out = SecretBuffer(33)
    try:
        for name, value in fields.items():
            for i in range(len(value)):
                bad = bytearray(value)
                bad[i] ^= 1 << rng.randrange(8)
                parts = dict(fields, **{name: bytes(bad)})
                with pytest.raises(OSError) as info:
                    nb.unseal_into(master, header, parts["iv"], parts["ciphertext"], parts["mac"], out, 33)
                assert info.value.errno == errno.EINVAL
                assert out.tobytes() == bytes(33), f"plaintext written for a bad {name}"
        for wrong in (master[:-1], master + b"\x00", bytes(32)):
            with pytest.raises(OSError):
                nb.unseal_into(wrong, header, good.iv, good.ciphertext, good.mac, out, 33)
            assert out.tobytes() == bytes(33)
    finally:
        out.wipe()


@pytest.mark.usefixtures("aes_path")
def test_native_unseal_joined_matches_and_refuses_like_the_separate_form() -> None:
    rng = random.Random("joined")
    for n in (20, 32, 33, 64, 4096):
        master, iv, data = rng.randbytes(rng.randrange(1, 80)), rng.randbytes(16), rng.randbytes(n)
        header = eb.datablob_header("default", "user:kmk", str(n))
        good = eb.seal(master, "default", "user:kmk", str(n), iv, data)
        joined = good.ciphertext + good.mac
        out = SecretBuffer(n)
        try:
            nb.unseal_joined_into(master, header, iv, joined, out, n)
            assert out.tobytes() == data
            mv = out.writable()
            mv[:] = bytes(n)
            mv.release()
            for bad in (joined[:-1], joined + b"\x00", bytes([joined[0] ^ 0x80]) + joined[1:], joined[:-1] + bytes([joined[-1] ^ 1])):
                with pytest.raises(OSError) as info:
                    nb.unseal_joined_into(master, header, iv, bad, out, n)
                assert info.value.errno == errno.EINVAL
                assert out.tobytes() == bytes(n)
            with pytest.raises(OSError) as info:
                nb.unseal_joined_into(master, header, iv[:15], joined, out, n)
            assert info.value.errno == errno.EINVAL
        finally:
            out.wipe()


def test_native_size_checks() -> None:
    master, iv = os.urandom(32), os.urandom(16)
    header = eb.datablob_header("default", "user:kmk", "32")
    with pytest.raises(OSError) as info:
        nb.seal_export(master, header, iv[:15], bytes(32), 32)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError) as info:
        nb.seal_export(master, header, iv, bytes(4097), 4097)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError) as info:
        nb.unseal_into(master, header, iv, bytes(31), bytes(32), bytearray(32), 32)
    assert info.value.errno == errno.EINVAL


def test_native_random_fills_secret_memory() -> None:
    bufs = [SecretBuffer(64) for _ in range(4)]
    try:
        for b in bufs:
            nb.random_into(b, 64)
        values = {b.tobytes() for b in bufs}
        assert len(values) == 4 and bytes(64) not in values
    finally:
        for b in bufs:
            b.wipe()


def test_random_pool_hands_out_each_byte_once_across_refills() -> None:
    # 300 draws of 32 bytes span two refills of the 4 KiB buffer.
    out = bytearray(32)
    seen = set()
    for _ in range(300):
        iv = nb.new_material(out, 32)
        seen.add(nb.iv_bytes(iv))
        seen.add(bytes(out))
    assert len(seen) == 600 and bytes(16) not in seen and bytes(32) not in seen


def test_random_pool_gives_a_forked_child_other_bytes_than_its_parent() -> None:
    out = bytearray(32)
    nb.random_into(out, 32)  # the buffer is now full of bytes not yet handed out
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next draw
        try:
            nb.random_into(out, 32)
            os.write(write_end, bytes(out))
        finally:
            os._exit(0)
    os.close(write_end)
    child = b""
    while len(child) < 32:
        chunk = os.read(read_end, 32)
        if not chunk:
            break
        child += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    nb.random_into(out, 32)
    parent = bytes(out)
    assert len(child) == 32 and child != parent, "a forked child must not repeat its parent's random bytes"


# -- the key type over the native path ------------------------------------------------------


def _padded_blob(master: bytes, n: int, pad: bytes) -> tuple[bytes, bytes]:
    """A ``default`` blob whose plaintext pad (after ``n`` data bytes) is ``pad``, not zeros."""
    iv, data = os.urandom(16), os.urandom(n)
    ct = eb.encrypt(eb.derive_enc_key(master), iv, data + pad)
    header = eb.datablob_header("default", "user:kmk", str(n))
    mac = eb.compute_hmac(eb.derive_auth_key(master), header, iv, ct)
    return eb.export("default", "user:kmk", str(n), eb.Sealed(iv, ct, mac)), data


def test_loaded_pad_is_dropped_and_read_reencrypts_with_zero_pad() -> None:
    ks = kt.Keyspace()
    master = os.urandom(32)
    ks.add_key("user", "kmk", master, "@s")
    blob, data = _padded_blob(master, 20, b"\xaa" * 12)
    key = ks.add_key("encrypted", "padded", b"load " + blob, "@s")
    with key.secret() as mv:
        assert bytes(mv) == data
    out = key.read()
    assert out != blob  # the non-zero pad is not kept ...
    iv = blob.split()[3][:32]
    assert out == eb.export("default", "user:kmk", "20", eb.seal(master, "default", "user:kmk", "20", bytes.fromhex(iv.decode()), data))


def test_payload_iv_is_the_blobs_for_new_and_load() -> None:
    # A new key keeps its IV in the cffi array it was drawn into, a loaded key as
    # bytes; read() seals with either in place, and iv_bytes() gives the same bytes.
    ks = kt.Keyspace()
    ks.add_key("user", "kmk", os.urandom(32), "@s")
    made = ks.add_key("encrypted", "made", "new user:kmk 32", "@s")
    blob = made.read()
    loaded = ks.add_key("encrypted", "loaded", b"load " + blob, "@s")
    assert loaded.read() == blob
    for key in (made, loaded):
        payload = ks._world.keys[key.serial].payload
        iv = payload.iv_bytes()
        assert type(iv) is bytes and iv.hex().encode() == blob.split()[3][:32]
    assert isinstance(ks._world.keys[made.serial].payload.iv, ffi.CData)


def test_loaded_pad_matches_the_kernel() -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    here, kernel = kt.Keyspace(), kt.KernelKeyspace(new_session=True)
    master = os.urandom(32)
    for ks in (here, kernel):
        ks.add_key("user", "kmk", master, "@s")
    blob, _ = _padded_blob(master, 21, b"\x55" * 11)
    ours = here.add_key("encrypted", "padded", b"load " + blob, "@s").read()
    theirs = kernel.add_key("encrypted", "padded", b"load " + blob, "@s").read()
    assert ours == theirs


def test_master_is_read_in_place_and_follows_updates() -> None:
    ks = kt.Keyspace()
    m1, m2 = os.urandom(32), os.urandom(40)
    mk = ks.add_key("user", "kmk", m1, "@s")
    key = ks.add_key("encrypted", "ek", "new default user:kmk 32", "@s")
    blob1 = key.read()
    mk.update(m2)
    blob2 = key.read()
    assert blob1 != blob2
    with key.secret() as mv:
        data = bytes(mv)
    iv = bytes.fromhex(blob1.split()[3][:32].decode())
    for master, blob in ((m1, blob1), (m2, blob2)):
        assert blob == eb.export("default", "user:kmk", "32", eb.seal(master, "default", "user:kmk", "32", iv, data))
    # The master's own bytes are untouched by the borrow.
    assert mk.read() == m2
    mk.revoke()
    with pytest.raises(OSError) as info:
        key.read()
    assert info.value.errno == errno.EKEYREVOKED


def test_parse_cache_is_bounded_and_never_holds_plaintext() -> None:
    ks = kt.Keyspace()
    ks.add_key("user", "kmk", os.urandom(32), "@s")
    for i in range(enc._PARSE_CACHE_MAX + 20):
        # new never looks the master up, so any name makes a distinct, valid payload.
        ks.add_key("encrypted", f"k{i}", f"new default user:kmk{i} {20 + i % 100}", "@s")
    assert 0 < len(enc._parse_cache) <= enc._PARSE_CACHE_MAX
    assert all(c.plaintext_hex is None for c in enc._parse_cache.values())
    old = enc.set_user_decrypted_data(True)
    try:
        plain = os.urandom(20).hex().encode()
        payload = b"new default user:kmk 20 " + plain
        ks.add_key("encrypted", "plain", payload, "@s")
        assert all(plain not in k for k in enc._parse_cache)
    finally:
        enc.set_user_decrypted_data(old)
    # A cached parse is the same as a fresh one.
    p = b"new enc32 user:kmk 32"
    ks.add_key("encrypted", "e32", p, "@s")
    assert enc._parse_cache[p] == enc.parse_payload(p)
    assert enc._parse_cache[p].header == enc.parse_payload(p).header == b"enc32\x00user:kmk\x0032\x00"


def _preparsed(data: bytes) -> enc.EncryptedCommand:
    """What the type's ``preparse`` (the cache's one reader) yields, as one command:
    the blob put back when it came apart."""
    prep = enc.EncryptedKeyType().preparse(data)
    cmd = prep.payload
    return attrs.evolve(cmd, hex_blob=prep.data.decode("utf-8", "surrogateescape")) if prep.data else cmd


def _outcome(fn, data: bytes):  # type: ignore[no-untyped-def]
    try:
        cmd = fn(data)
    except OSError as exc:
        return ("error", exc.errno, str(exc))
    return ("ok", cmd, cmd.header)


def _check_cache_invariant() -> None:
    # Every entry is what a fresh parse of its key gives.
    for key, cmd in list(enc._parse_cache.items()):
        fresh = enc.parse_payload(key)
        assert cmd == fresh and cmd.header == fresh.header and cmd.quota == fresh.quota, key


def test_cached_parses_equal_a_fresh_parse_on_random_payloads() -> None:
    # The cache (whole new payloads, load heads) must give exactly what
    # parse_payload gives, errors included, on well-formed and malformed input.
    rng = random.Random("parse-fuzz")
    blob = (os.urandom(16).hex() + "00" + os.urandom(64).hex()).encode()
    pools = [
        [b"load", b"new", b"update", b"loa", b"LOAD"],
        [b"default", b"enc32", b"ecryptfs", b"user:kmk", b"trusted:t", b"", b"user:"],
        [b"user:kmk", b"trusted:t", b"user:", b"32", b"", b"kmk"],
        [b"32", b"+32", b"032", b"20", b"64", b"4097", b"-1", b"", b"32\n", b"x", b"0" * 4400 + b"32", b"9" * 4400],
        [blob, blob.upper(), blob[:-2], b"", b"zz" + blob[2:], b"32", b"\xc3\xa9" + blob[2:]],
        [b"", blob, b"extra"],
    ]
    seps = [b" "] * 12 + [b"  ", b"\t"]
    old = enc.set_user_decrypted_data(False)
    try:
        for _ in range(3000):
            if rng.random() < 0.5:
                # Mostly well-formed: "load [FORMAT] MASTER LEN BLOB [more]".
                parts = [b"load"] + ([rng.choice(pools[1][:3])] if rng.random() < 0.7 else [])
                parts += [rng.choice(pools[2][:2]), rng.choice(pools[3]), rng.choice(pools[4])]
                parts += [rng.choice(pools[5])] if rng.random() < 0.2 else []
            else:
                parts = [rng.choice(pools[i]) for i in range(rng.randrange(1, 7))]
            data = parts[0]
            for part in parts[1:]:
                data += rng.choice(seps) + part
            if rng.random() < 0.05:
                data += b"\x00" + rng.choice(pools[4])
            if rng.random() < 0.05:
                data += b" "
            fresh = _outcome(enc.parse_payload, data)
            enc.parse_cache_clear()
            assert _outcome(_preparsed, data) == fresh, data  # cache empty: fills it
            assert _outcome(_preparsed, data) == fresh, data  # reads it
            # The same head seen before in a clean payload (no NUL, no tab) must not
            # make the cache take a payload the full parser cuts differently.
            clean = data.split(b"\x00")[0].replace(b"\t", b" ")
            _outcome(_preparsed, clean)
            _outcome(_preparsed, data[: data.rfind(b" ")].replace(b"\t", b" ") + b" " + blob)
            assert _outcome(_preparsed, data) == fresh, data
            _check_cache_invariant()
    finally:
        enc.set_user_decrypted_data(old)
        enc.parse_cache_clear()


def test_cache_hit_on_a_load_head_with_an_empty_blob_is_the_fresh_parse() -> None:
    # The head "load default user:kmk 32 " is itself a payload (empty blob): a hit
    # on it must still fail the way a fresh parse of it fails, at instantiate.
    ks = kt.Keyspace()
    master = os.urandom(32)
    ks.add_key("user", "kmk", master, "@s")
    blob = ks.add_key("encrypted", "a", "new default user:kmk 32", "@s").read()
    enc.parse_cache_clear()
    ks.add_key("encrypted", "b", b"load " + blob, "@s")
    head = b"load " + blob[: blob.rfind(b" ") + 1]
    assert head in enc._parse_cache
    for n, data in enumerate((head, head + b"zz", head[:-1])):
        with pytest.raises(OSError) as info:
            ks.add_key("encrypted", "c", data, "@s")
        assert info.value.errno == errno.EINVAL
        enc.parse_cache_clear()
        with pytest.raises(OSError) as fresh:
            ks.add_key("encrypted", "c", data, "@s")
        assert (fresh.value.errno, str(fresh.value)) == (info.value.errno, str(info.value))
        ks.add_key("encrypted", f"refill{n}", b"load " + blob, "@s")  # the head is cached again


# -- the bindings wrapper: every length checked against its buffer ---------------------------


def test_wrapper_refuses_lengths_beyond_the_buffer() -> None:
    # Before the wrapper, native_random_into / native_export took a pointer and a
    # length on trust: a length past the buffer made C write or read out of bounds.
    master, iv = os.urandom(32), os.urandom(16)
    header = eb.datablob_header("default", "user:kmk", "4096")
    small = SecretBuffer(8)
    try:
        cases = [
            lambda: nb.random_into(small, 64),
            lambda: nb.random_into(bytearray(8), 9),
            lambda: nb.random_into(bytearray(8), 4, offset=5),
            lambda: nb.random_into(bytearray(8), -1),
            lambda: nb.random_into(b"read-only", 4),
            lambda: nb.random_into(small.address, 8),  # a raw pointer has no length to check
            lambda: nb.new_material(bytearray(8), 32),
            lambda: nb.seal_export(master, header, iv, bytes(10), 4096),
            lambda: nb.seal_export(master, header, iv, small, 32),
            lambda: nb.seal_export(master, header, iv, SecretBuffer(64), 32, offset=40),
            lambda: nb.seal_export(small.address, header, iv, bytes(32), 32),
            lambda: nb.unseal_joined_into(master, header, iv, bytes(64), bytearray(8), 32),
            lambda: nb.unseal_joined_into(master, header, iv, bytes(64), small, 32),
            lambda: nb.unseal_into(master, header, iv, bytes(32), bytes(32), bytearray(16), 32),
            lambda: nb.new_ecryptfs_token(bytes(10), b"0123456789abcdef"),
            lambda: nb.new_ecryptfs_token(eb.AUTH_TOK_TEMPLATE, b"0123"),
            lambda: nb.iv_bytes(b"short"),
            lambda: nb.seal_export(master, header, 16, bytes(32), 32),
            lambda: nb.seal(master, header, iv, 32),
        ]
        for i, case in enumerate(cases):
            with pytest.raises(OSError) as info:
                case()
            assert info.value.errno == errno.EINVAL, i
        assert small.tobytes() == bytes(8)
    finally:
        small.wipe()
    wiped = SecretBuffer(32)
    wiped.wipe()
    with pytest.raises(OSError) as info:
        nb.seal_export(wiped, header, iv, bytes(32), 32)
    assert info.value.errno == errno.EKEYREVOKED


def test_key_type_modules_do_not_touch_cffi() -> None:
    # The key-type layer goes through the wrapper; only it owns ffi/lib.
    import inspect
    import re

    for module in (enc, eb):
        source = inspect.getsource(module)
        assert "_encrypted import" not in source and not re.search(r"\b_?n?(ffi|lib)\.", source), module.__name__
