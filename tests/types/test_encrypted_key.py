"""The ``encrypted`` key type's grammar, lifecycle and errno table (spec kernel-keytypes.md §1.2, §1.9-§1.11).

Every test runs on the in-process ``Keyspace``; the ones that do not depend on
emulation-only switches also run, unchanged, on ``KernelKeyspace`` (marked
``kernel``), so the table is checked against this machine's kernel in the same run.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import kernel_keyring_reachable, require
from vector_data import load_vectors

import keyring_types as kt
from keyring_types.core.api import KeyspaceAPI
from keyring_types.core.handle import Key
from keyring_types.errors import KeyringError
from keyring_types.types import encrypted as enc
from keyring_types.types import encrypted_blob as eb

# The kernel-made vector 1 of tests/vectors/encrypted_blobs.json (spec 1.4).
_V1 = load_vectors("encrypted_blobs")[0]
MASTER = bytes.fromhex(_V1["master"])
V1_BLOB = f"{_V1['format']} {_V1['master_desc']} {_V1['datalen']} {_V1['blob_hex']}"
V1_PLAIN = _V1["plaintext"]
ECRYPTFS_DESC = "1000100010001000"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class Space:
    """One keyspace under test plus what differs between the emulation and the kernel."""

    def __init__(self, ks: KeyspaceAPI, kernel: bool, clock: FakeClock | None = None) -> None:
        self.ks = ks
        self.kernel = kernel
        self.clock = clock

    def expire(self, key: Key) -> None:
        key.set_timeout(1)
        if self.clock is not None:
            self.clock.t += 2
        else:
            time.sleep(1.2)


@pytest.fixture(params=["keyspace", pytest.param("kernel", marks=pytest.mark.kernel)])
def sp(request: pytest.FixtureRequest) -> Space:
    if request.param == "kernel":
        require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
        return Space(kt.KernelKeyspace(new_session=True), True)
    clock = FakeClock()
    return Space(kt.Keyspace(clock=clock), False, clock)


@pytest.fixture
def ks() -> kt.Keyspace:
    """The in-process keyspace alone (for emulation-only switches and internals)."""
    return kt.Keyspace()


def errno_of(fn: Callable[..., object], *args: object) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)
    assert isinstance(info.value, OSError) and info.value.errno is not None
    if not isinstance(info.value, KeyringError):
        pytest.fail(f"errors must come through keyring_types.errors.error, got {info.value!r}")
    return info.value.errno


def _no_trusted_master(sp: Space) -> int:
    """The errno for an absent ``trusted:`` master: EOPNOTSUPP where the trusted type
    does not exist (this kernel, built without trusted keys), ENOKEY where it does."""
    if sp.kernel or "trusted" not in kt.registered_key_types():
        return errno.EOPNOTSUPP
    return errno.ENOKEY


def add(sp: Space, payload: str | bytes, desc: str = "ek") -> Key:
    return sp.ks.add_key("encrypted", desc, payload, "@s")


def master(sp: Space, name: str = "kmk", data: bytes = MASTER) -> Key:
    return sp.ks.add_key("user", name, data, "@s")


def fields(blob: bytes) -> list[str]:
    return blob.decode().split(" ")


# -- creation: accepted spellings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "head"),
    [
        ("new user:kmk 32", "default user:kmk 32"),
        ("new default user:kmk 32", "default user:kmk 32"),
        ("new\tdefault\tuser:kmk\t32", "default user:kmk 32"),
        ("new user:kmk +32", "default user:kmk +32"),
        ("new user:kmk 032", "default user:kmk 032"),
        ("new user:kmk 32\n", "default user:kmk 32\n"),
        ("new enc32 user:kmk 32", "enc32 user:kmk 32"),
        ("new user:kmk 4096", "default user:kmk 4096"),
        ("new user:kmk 20", "default user:kmk 20"),
        (b"new user:kmk 32\x00ignored after the NUL", "default user:kmk 32"),
    ],
)
def test_new_accepted(sp: Space, payload: str | bytes, head: str) -> None:
    master(sp)
    k = add(sp, payload)
    blob = k.read()
    assert blob.decode().startswith(head + " ")
    n = int(head.split(" ")[2].strip().lstrip("+"))
    assert len(blob) == eb.export_len(*head.split(" "), n)  # type: ignore[call-arg]
    assert k.read() == blob  # same IV, same master: byte-identical re-reads
    assert k.describe() == f"encrypted;{os.geteuid()};{os.getegid()};3f010000;ek"


@pytest.mark.parametrize(
    "payload",
    [
        "create user:kmk 32",
        "NEW user:kmk 32",
        "new aes user:kmk 32",
        "new default",
        "new",
        "new user:kmk",
        "new  user:kmk 32",
        "new kmk 32",
        "new logon:kmk 32",
        "new user: 32",
        "new Default user:kmk 32",
        "new user:kmk 19",
        "new user:kmk 4097",
        "new user:kmk abc",
        "new user:kmk 0x20",
        "new user:kmk -32",
        "new user:kmk 32\n\n",
        "new enc32 user:kmk 33",
        "new enc32 user:kmk 20",
        "new user:kmk 32 ",
        "new user:kmk 32 " + "00" * 32,
        "update user:kmk",
        "load user:kmk 32",
        "",
    ],
)
def test_new_rejected(sp: Space, payload: str) -> None:
    master(sp)
    assert errno_of(add, sp, payload) == errno.EINVAL
    assert errno_of(sp.ks.request_key, "encrypted", "ek") == errno.ENOKEY  # nothing was made


def test_oversize_payload_rejected(sp: Space) -> None:
    assert errno_of(add, sp, "new user:kmk 32 " + "x" * 32767) == errno.EINVAL


@pytest.mark.parametrize("state", ["absent", "revoked", "trusted"])
def test_new_does_not_look_up_the_master(sp: Space, state: str) -> None:
    if state == "revoked":
        master(sp).revoke()
    name = "trusted:kmk" if state == "trusted" else "user:kmk"
    k = add(sp, f"new {name} 32")
    # ...but every read does.
    want = {"absent": errno.ENOKEY, "revoked": errno.EKEYREVOKED, "trusted": _no_trusted_master(sp)}[state]
    assert errno_of(k.read) == want


# -- ecryptfs ---------------------------------------------------------------------------------


def test_ecryptfs_new_and_load(sp: Space) -> None:
    master(sp)
    k = add(sp, "new ecryptfs user:kmk 64", ECRYPTFS_DESC)
    blob = k.read()
    assert fields(blob)[:3] == ["ecryptfs", "user:kmk", "64"]
    assert len(fields(blob)[3]) == eb.hex_blob_len(64)
    again = add(sp, b"load " + blob, "ABCDEFabcdef0123")
    assert again.read() == blob


@pytest.mark.parametrize("desc", ["100010001000100", "10001000100010001", "100010001000100g", "evm"])
def test_ecryptfs_description_rule(sp: Space, desc: str) -> None:
    master(sp)
    assert errno_of(add, sp, "new ecryptfs user:kmk 64", desc) == errno.EINVAL
    good = add(sp, "new ecryptfs user:kmk 64", ECRYPTFS_DESC).read()
    assert errno_of(add, sp, b"load " + good, desc) == errno.EINVAL


@pytest.mark.parametrize("n", ["32", "63", "65", "20"])
def test_ecryptfs_length_rule(sp: Space, n: str) -> None:
    assert errno_of(add, sp, f"new ecryptfs user:kmk {n}", ECRYPTFS_DESC) == errno.EINVAL


def test_ecryptfs_secret_and_auth_token(ks: kt.Keyspace) -> None:
    sp = Space(ks, False)
    master(sp)
    k = add(sp, "new ecryptfs user:kmk 64", ECRYPTFS_DESC)
    blob = k.read()
    with k.secret() as mv:
        key = bytes(mv)
    assert len(key) == 64
    tok = enc.ecryptfs_auth_token(k)
    try:
        raw = tok.tobytes()
    finally:
        tok.wipe()
    assert raw == eb.ecryptfs_auth_tok(ECRYPTFS_DESC, key).tobytes()
    assert len(raw) == eb.ECRYPTFS_AUTH_TOK_SIZE and raw[648:712] == key
    assert raw[712:729] == ECRYPTFS_DESC.encode() + b"\x00"
    # The key's own payload is that token (the kernel keeps the token as the payload),
    # whether the key was made by new or by load.
    assert ks._world.keys[k.serial].payload.data.tobytes() == raw
    loaded = add(sp, b"load " + blob, "abcdef0123456789")
    assert ks._world.keys[loaded.serial].payload.data.tobytes() == eb.ecryptfs_auth_tok("abcdef0123456789", key).tobytes()
    # Not an ecryptfs key, or not an encrypted key: EINVAL.
    assert errno_of(enc.ecryptfs_auth_token, add(sp, "new user:kmk 32", "ek32")) == errno.EINVAL
    assert errno_of(enc.ecryptfs_auth_token, sp.ks.request_key("user", "kmk")) == errno.EINVAL
    # The 64 bytes inside the token are what the blob decrypts to.
    sealed = eb.parse_hex_blob(fields(blob)[3].encode(), 64)
    plain = eb.unseal(MASTER, "ecryptfs", "user:kmk", "64", 64, sealed)
    assert plain.tobytes() == key
    plain.wipe()


# -- load ----------------------------------------------------------------------------------------


def test_load_known_vector(sp: Space) -> None:
    master(sp)
    k = add(sp, "load " + V1_BLOB)
    assert k.read().decode() == V1_BLOB


def test_load_known_vector_plaintext(ks: kt.Keyspace) -> None:
    sp = Space(ks, False)
    master(sp)
    k = add(sp, "load " + V1_BLOB)
    with k.secret() as mv:
        assert bytes(mv).hex() == V1_PLAIN


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.upper().replace("DEFAULT USER:KMK", "default user:kmk"),
        lambda b: b + " trailing junk",
        lambda b: b[: 20 + 32] + "zz" + b[20 + 34 :],
    ],
    ids=["uppercase-hex", "extra-token", "separator-unchecked"],
)
def test_load_lenient(sp: Space, mutate: Callable[[str], str]) -> None:
    master(sp)
    k = add(sp, "load " + mutate(V1_BLOB))
    assert k.read().decode() == V1_BLOB


def _flip(blob: str, at: int) -> str:
    head, hexpart = blob.rsplit(" ", 1)
    c = hexpart[at]
    return f"{head} {hexpart[:at]}{'0' if c != '0' else '1'}{hexpart[at + 1:]}"


@pytest.mark.parametrize(
    "payload",
    [
        _flip(V1_BLOB, 0),  # IV
        _flip(V1_BLOB, 40),  # ciphertext
        _flip(V1_BLOB, 161),  # HMAC
        V1_BLOB.replace(" 32 ", " 33 "),  # wrong length word -> hex length check
        V1_BLOB.replace(" 32 ", " +32 "),  # length word is MAC'd verbatim
        V1_BLOB.replace("default ", "enc32 "),  # format word is MAC'd
        V1_BLOB.replace("default ", ""),  # no format word: legacy MAC expected
        V1_BLOB[:-2],
        V1_BLOB[:-1] + "g",
        V1_BLOB + "\n",
        V1_BLOB.rsplit(" ", 1)[0],
    ],
    ids=["iv", "ct", "mac", "len33", "len+32", "fmt", "legacy", "short", "nonhex", "newline", "nohex"],
)
def test_load_rejected(sp: Space, payload: str) -> None:
    master(sp)
    assert errno_of(add, sp, "load " + payload) == errno.EINVAL
    assert errno_of(sp.ks.request_key, "encrypted", "ek") == errno.ENOKEY


def test_load_under_wrong_master(sp: Space) -> None:
    master(sp, data=bytes(range(1, 33)))
    assert errno_of(add, sp, "load " + V1_BLOB) == errno.EINVAL


def test_load_master_errors(sp: Space) -> None:
    assert errno_of(add, sp, "load " + V1_BLOB) == errno.ENOKEY
    m = master(sp)
    m.revoke()
    assert errno_of(add, sp, "load " + V1_BLOB) == errno.EKEYREVOKED
    sp.ks.session.unlink(m)
    m2 = master(sp)
    m2.set_perm(0x37010000)  # no SEARCH for possessor or owner
    assert errno_of(add, sp, "load " + V1_BLOB) == errno.EACCES
    trusted = V1_BLOB.replace("user:kmk", "trusted:kmk")
    assert errno_of(add, sp, "load " + trusted) == _no_trusted_master(sp)


def test_master_needs_no_read_permission(sp: Space) -> None:
    master(sp).set_perm(0x3d010000)  # spec 1.9: search/possession is enough
    k = add(sp, "load " + V1_BLOB)
    assert k.read().decode() == V1_BLOB


def test_logon_key_is_never_a_master(sp: Space) -> None:
    sp.ks.add_key("logon", "x:kmk", MASTER, "@s")
    k = add(sp, "new user:x:kmk 32")
    assert errno_of(k.read) == errno.ENOKEY
    assert errno_of(add, sp, "load " + V1_BLOB.replace("user:kmk", "user:x:kmk"), "ek2") == errno.ENOKEY


def test_legacy_blob_loads_and_reexports_as_default(sp: Space) -> None:
    master(sp)
    iv, data = os.urandom(16), os.urandom(32)
    ct = eb.encrypt(eb.derive_enc_key(MASTER), iv, data)
    mac = eb.compute_hmac(eb.derive_auth_key(MASTER), eb.datablob_header(None, "user:kmk", "32"), iv, ct)
    legacy = f"user:kmk 32 {iv.hex()}00{ct.hex()}{mac.hex()}"
    k = add(sp, "load " + legacy)
    out = k.read()
    expect = eb.export("default", "user:kmk", "32", eb.seal(MASTER, "default", "user:kmk", "32", iv, data))
    assert out == expect
    # A legacy MAC under an explicit format word is refused.
    assert errno_of(add, sp, "load default " + legacy, "ek2") == errno.EINVAL


def test_failed_load_leaves_no_quota_behind(ks: kt.Keyspace) -> None:
    sp = Space(ks, False)
    master(sp)
    before = (ks.quota().nkeys, ks.quota().qnbytes)
    assert errno_of(add, sp, "load " + _flip(V1_BLOB, 0)) == errno.EINVAL
    assert (ks.quota().nkeys, ks.quota().qnbytes) == before


# -- read ----------------------------------------------------------------------------------------


def test_read_master_errors(sp: Space) -> None:
    m = master(sp)
    k = add(sp, "new user:kmk 32")
    k.read()
    sp.ks.session.unlink(m)
    assert errno_of(k.read) == errno.ENOKEY
    m = master(sp)
    k.read()
    m.revoke()
    assert errno_of(k.read) == errno.EKEYREVOKED
    sp.ks.session.unlink(m)
    m = master(sp)
    k.read()
    sp.expire(m)
    assert errno_of(k.read) == errno.ENOKEY  # expired masters are skipped, not EKEYEXPIRED


def test_read_follows_master_updates(sp: Space) -> None:
    m = master(sp)
    k = add(sp, "load " + V1_BLOB)
    assert k.read().decode() == V1_BLOB
    m.update(bytes(range(1, 33)))
    other = k.read()
    assert other != V1_BLOB.encode()
    assert fields(other)[3][:34] == fields(V1_BLOB.encode())[3][:34]  # IV kept
    m.update(MASTER)
    assert k.read().decode() == V1_BLOB


def test_read_under_short_and_long_masters(sp: Space) -> None:
    for i, length in enumerate([1, 8, 22, 23, 24, 64, 300]):
        data = os.urandom(length)
        master(sp, f"m{i}", data)
        k = add(sp, f"new user:m{i} 33", f"ek{i}")
        blob = k.read()
        _f, mdesc, dstr, hexblob = fields(blob)
        plain = eb.unseal(data, "default", mdesc, dstr, 33, eb.parse_hex_blob(hexblob.encode(), 33))
        assert len(plain) == 33
        plain.wipe()


# -- update ---------------------------------------------------------------------------------------


def test_update_rewraps_keeping_iv_and_data(sp: Space) -> None:
    master(sp)
    master(sp, "other", b"another master key of any length")
    k = add(sp, "load " + V1_BLOB)
    k.update("update default user:other")
    blob = k.read()
    assert fields(blob)[:3] == ["default", "user:other", "32"]
    assert fields(blob)[3][:32] == V1_BLOB.split(" ")[3][:32]
    sealed = eb.parse_hex_blob(fields(blob)[3].encode(), 32)
    plain = eb.unseal(b"another master key of any length", "default", "user:other", "32", 32, sealed)
    assert plain.tobytes().hex() == V1_PLAIN
    plain.wipe()


def test_update_ignores_format_word_and_trailing_tokens(sp: Space) -> None:
    master(sp)
    master(sp, "other")
    k = add(sp, "new enc32 user:kmk 32")
    k.update("update ecryptfs user:other 64 junk")
    assert fields(k.read())[:3] == ["enc32", "user:other", "32"]


def test_update_to_absent_master_succeeds_then_reads_fail(sp: Space) -> None:
    master(sp)
    k = add(sp, "new user:kmk 32")
    k.update("update user:absent")
    assert errno_of(k.read) == errno.ENOKEY


@pytest.mark.parametrize(
    "payload",
    ["update trusted:kmk", "update user:", "update logon:kmk", "update", "new user:kmk 32", "load " + V1_BLOB, "", "upd user:kmk"],
)
def test_update_rejected(sp: Space, payload: str) -> None:
    master(sp)
    k = add(sp, "new user:kmk 32")
    before = k.read()
    assert errno_of(k.update, payload) == errno.EINVAL
    assert k.read() == before


def test_add_key_over_existing_is_an_update(sp: Space) -> None:
    master(sp)
    master(sp, "other")
    k = add(sp, "new user:kmk 32")
    assert errno_of(add, sp, "new user:kmk 32") == errno.EINVAL
    again = add(sp, "update user:other")
    assert again.serial == k.serial
    assert fields(k.read())[1] == "user:other"


# -- quota / proc --------------------------------------------------------------------------------


def test_quota_sizes(ks: kt.Keyspace) -> None:
    sp = Space(ks, False)
    master(sp)
    master(sp, "szm")
    add(sp, "new user:kmk 32", "evm")
    add(sp, "new ecryptfs user:szm 64", ECRYPTFS_DESC)
    lines = "\n".join(ks.proc_keys())
    assert "encrypted evm: 134" in lines  # spec 1.10 (as /proc/keys on the kernel)
    assert f"encrypted {ECRYPTFS_DESC}: 875" in lines


def test_quota_sizes_on_kernel() -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    kk = kt.KernelKeyspace(new_session=True)
    kk.add_key("user", "kmk", MASTER, "@s")
    k = kk.add_key("encrypted", "evm", "new user:kmk 32", "@s")
    with open("/proc/keys", encoding="utf-8", errors="surrogateescape") as f:
        line = next(line for line in f if line.startswith(f"{k.serial:08x} "))
    assert line.rstrip().endswith("encrypted evm: 134")


# -- emulation-only switches -------------------------------------------------------------------


@pytest.fixture
def user_plaintext() -> Iterator[None]:
    old = enc.set_user_decrypted_data(True)
    try:
        yield
    finally:
        enc.set_user_decrypted_data(old)


def test_user_supplied_plaintext_when_enabled(ks: kt.Keyspace, user_plaintext: None) -> None:
    sp = Space(ks, False)
    master(sp)
    k = add(sp, "new user:kmk 32 " + V1_PLAIN.upper())
    with k.secret() as mv:
        assert bytes(mv).hex() == V1_PLAIN
    blob = k.read()
    assert fields(blob)[3][:32] != fields(V1_BLOB.encode())[3][:32]  # the IV is still random
    for bad in ["new user:kmk 32 " + V1_PLAIN[:-2], "new user:kmk 32 " + V1_PLAIN[:-1] + "g", "new user:kmk 32 "]:
        assert errno_of(add, sp, bad, "ek2") == errno.EINVAL
    e = add(sp, "new ecryptfs user:kmk 64 " + "ab" * 64, ECRYPTFS_DESC)
    with e.secret() as mv:
        assert bytes(mv) == b"\xab" * 64


def test_trusted_master_unregistered_is_eopnotsupp(ks: kt.Keyspace) -> None:
    # Without a registered trusted type, trusted: masters fail as on a kernel built without them.
    sp = Space(ks, False)
    k = add(sp, "new trusted:kmk 32")
    trusted = kt.lookup_key_type("trusted") if "trusted" in kt.registered_key_types() else None
    if trusted is not None:
        kt.unregister_key_type("trusted")
    try:
        assert errno_of(k.read) == errno.EOPNOTSUPP
        assert errno_of(add, sp, "load " + V1_BLOB.replace("user:", "trusted:"), "ek2") == errno.EOPNOTSUPP
    finally:
        if trusted is not None:
            kt.register_key_type(type(trusted))


@pytest.fixture
def trusted_ks(tmp_path, monkeypatch: pytest.MonkeyPatch) -> kt.Keyspace:  # type: ignore[no-untyped-def]
    require("trusted" in kt.registered_key_types(), "the trusted key type")
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path))
    return kt.Keyspace()


def test_trusted_master(trusted_ks: kt.Keyspace) -> None:
    ks = trusted_ks
    t = ks.add_key("trusted", "tmk", "new 32 source=host", "@s")
    with t.secret() as mv:
        tkey = bytes(mv)
    for fmt, desc, n in [("default", "ek", 32), ("enc32", "e32", 32), ("ecryptfs", ECRYPTFS_DESC, 64)]:
        k = ks.add_key("encrypted", desc, f"new {fmt} trusted:tmk {n}", "@s")
        blob = k.read()
        _f, mdesc, dstr, hexblob = fields(blob)
        assert mdesc == "trusted:tmk"
        # The blob is wrapped under the trusted key's plaintext, exactly as under a user master.
        plain = eb.unseal(tkey, fmt, mdesc, dstr, n, eb.parse_hex_blob(hexblob.encode(), n))
        with k.secret() as mv:
            inner = bytes(mv)
        assert plain.tobytes() == inner
        plain.wipe()
        again = ks.add_key("encrypted", "100010001000100f" if fmt == "ecryptfs" else desc + "L", b"load " + blob, "@s")
        assert again.read() == blob
    # Prefix kinds cannot be mixed on update; revoked/absent trusted masters fail like user ones.
    k = ks.request_key("encrypted", "ek")
    assert errno_of(k.update, "update user:kmk") == errno.EINVAL
    k.update("update trusted:absent")
    assert errno_of(k.read) == errno.ENOKEY
    k.update("update trusted:tmk")
    k.read()
    t.revoke()
    assert errno_of(k.read) == errno.EKEYREVOKED


def test_secret_is_a_copy(ks: kt.Keyspace) -> None:
    sp = Space(ks, False)
    master(sp)
    k = add(sp, "load " + V1_BLOB)
    buf = ks.sys_secret(k.serial)
    buf.writable()[:] = bytes(32)
    buf.wipe()
    with k.secret() as mv:
        assert bytes(mv).hex() == V1_PLAIN
    assert "7b50ba" not in repr(ks.key(k.serial)) and "7b50ba" not in repr(ks._world.keys[k.serial].payload)


def test_new_data_and_iv_are_random(ks: kt.Keyspace) -> None:
    sp = Space(ks, False)
    master(sp)
    seen_data, seen_iv = set(), set()
    for i in range(8):
        k = add(sp, "new user:kmk 4096", f"r{i}")
        with k.secret() as mv:
            data = bytes(mv)
        assert len(data) == 4096 and data.count(0) < 100
        seen_data.add(data)
        seen_iv.add(fields(k.read())[3][:32])
    assert len(seen_data) == 8 and len(seen_iv) == 8


def test_quota_is_charged_and_enforced() -> None:
    # uid 4321 with room for one 4096-byte key (8264 quota bytes, spec 1.10) but not two.
    ks = kt.Keyspace(uid=4321, gid=4321, limits=kt.QuotaLimits(maxbytes=12000))
    sp = Space(ks, False)
    master(sp)
    base = ks.quota().qnbytes
    k = add(sp, "new user:kmk 4096", "big")
    size = enc.quota_size("default", "user:kmk", "4096", 4096)
    assert ks.quota().qnbytes - base == len("big") + 1 + size + 4  # + the link in @s
    before = ks.quota().qnbytes
    assert errno_of(add, sp, "new user:kmk 4096", "big2") == errno.EDQUOT
    assert errno_of(add, sp, "load " + k.read().decode(), "big3") == errno.EDQUOT
    assert ks.quota().qnbytes == before
    assert errno_of(sp.ks.request_key, "encrypted", "big2") == errno.ENOKEY
    # An update that lengthens the master name grows the charge by as much.
    master(sp, "k" * 20)
    k.update("update user:" + "k" * 20)
    # "user:kmk" -> "user:" + 20 k: 17 more bytes, plus the new user key itself.
    assert ks.quota().qnbytes - before == 17 + (len("k" * 20) + 1 + 32 + 4)
