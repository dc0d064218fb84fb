"""LUKS2 through cryptsetup, with cryptsetup itself as the peer.

On a sparse image file (luksFormat, luksDump, token add and
``open --test-passphrase`` need no loop device and no device-mapper):
the volume key cryptsetup dumps is the library key's bytes; a luks2-keyring
token opens keyslot 0 with the library's ``user`` key in this process's
session keyring and fails as cryptsetup does with a logon key or a wrong
passphrase; errors carry cryptsetup's meaning as errno; the key and the
passphrase reach cryptsetup through pipes only.
"""

from __future__ import annotations

import builtins
import errno
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import kernel_keyring_reachable, require

import keyring_types as kt
from keyring_types.integrations import luks

# Cheap keyslots: the tests check hand-off, not the KDF.
CHEAP: dict[str, Any] = {"pbkdf": "pbkdf2", "iterations": 1000}
PASS = b"correct horse battery staple"


def cryptsetup() -> str:
    exe = shutil.which("cryptsetup") or shutil.which("cryptsetup", path="/usr/sbin:/sbin")
    require(exe is not None, "cryptsetup (Debian package cryptsetup-bin)")
    assert exe is not None
    return exe


def errno_of(fn: object, *args: object, **kwargs: object) -> OSError:
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    assert info.value.errno is not None and str(info.value)
    return info.value


def dump_volume_key(exe: str, image: Path, passphrase: bytes) -> tuple[int, bytes]:
    """(MK bits, volume key) from ``cryptsetup luksDump --dump-volume-key``, passphrase on stdin."""
    out = subprocess.run(
        [exe, "luksDump", "--dump-volume-key", "--batch-mode", "--key-file", "-", str(image)],
        input=passphrase,
        capture_output=True,
        check=True,
        env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "")},
    ).stdout.decode()
    bits = int(re.search(r"^MK bits:\s*(\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    dump = out.split("MK dump:", 1)[1]
    return bits, bytes.fromhex("".join(re.findall(r"\b[0-9a-f]{2}\b", dump)))


def opens(exe: str, image: Path, *extra: str) -> int:
    return subprocess.run([exe, "open", "--test-passphrase", *extra, str(image)], capture_output=True, check=False).returncode


@pytest.fixture
def image(tmp_path: Path) -> Path:
    img = tmp_path / "luks.img"
    with open(img, "wb") as f:
        f.truncate(32 << 20)  # sparse; a LUKS2 header takes 16 MiB
    return img


@pytest.fixture
def ks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> kt.Keyspace:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("KEYRING_TYPES_TRUST_SOURCE", "host")
    return kt.Keyspace()


@pytest.fixture
def kk() -> Iterator[kt.KernelKeyspace]:
    """A fresh session keyring for this process (cryptsetup, its child, searches it);
    the keys the test links there are invalidated afterwards."""
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    space = kt.KernelKeyspace(new_session=True)
    yield space
    session = space.handle(space.resolve("@s"))
    assert isinstance(session, kt.Keyring)
    for key in session.keys():
        try:
            key.invalidate()
        except OSError:
            pass  # already invalidated by the test


@pytest.mark.parametrize("size", [64, 32])
def test_dumped_volume_key_is_the_library_key(image: Path, ks: kt.Keyspace, size: int) -> None:
    exe = cryptsetup()
    vol = ks.add_key("trusted", "luks:vol", f"new {size}", "@s")
    luks.format(image, vol, PASS, **CHEAP)
    with vol.secret() as mv:
        expected = bytes(mv)
    assert dump_volume_key(exe, image, PASS) == (8 * size, expected)
    # the header keeps the volume key only wrapped in the keyslot
    assert expected not in image.read_bytes()


def test_format_with_cipher_and_a_kernel_user_key(image: Path, kk: kt.KernelKeyspace) -> None:
    exe = cryptsetup()
    raw = os.urandom(32)
    vol = kk.add_key("user", "luks:kvol", raw, "@s")
    luks.format(str(image), vol, bytearray(PASS), cipher="aes-cbc-essiv:sha256", **CHEAP)
    assert dump_volume_key(exe, image, PASS) == (256, raw)
    dump = subprocess.run([exe, "luksDump", str(image)], capture_output=True, check=True).stdout
    assert b"cbc-essiv:sha256" in dump


def test_keyring_token_opens_with_the_library_user_key(image: Path, ks: kt.Keyspace, kk: kt.KernelKeyspace) -> None:
    exe = cryptsetup()
    luks.format(image, ks.add_key("trusted", "luks:vol", "new 64", "@s"), PASS, **CHEAP)
    luks.add_keyring_token(image, "luks:pass")
    assert b"luks2-keyring" in subprocess.run([exe, "luksDump", str(image)], capture_output=True, check=True).stdout
    assert opens(exe, image, "--token-only") == 2  # no key yet: cryptsetup's "no permission or bad passphrase"

    user = luks.load_passphrase("luks:pass", PASS)
    assert (user.type, user.description) == ("user", "luks:pass")
    assert opens(exe, image, "--token-only") == 0
    user.invalidate()

    # the passphrase from a library key, without a bytes copy in between
    held = ks.add_key("user", "held", PASS, "@s")
    user = luks.load_passphrase("luks:pass", held, keyring="@s")
    assert opens(exe, image, "--token-only") == 0
    user.invalidate()

    # cryptsetup reads the token's key: a logon key (unreadable) does not open
    logon = kk.add_key("logon", "luks:pass", PASS, "@s")
    assert opens(exe, image, "--token-only") == 2
    logon.invalidate()

    wrong = luks.load_passphrase("luks:pass", b"not the passphrase")
    assert opens(exe, image, "--token-only") == 2
    wrong.invalidate()


def test_token_on_another_keyslot_and_token_id(image: Path, ks: kt.Keyspace, kk: kt.KernelKeyspace) -> None:
    exe = cryptsetup()
    luks.format(image, ks.add_key("trusted", "v", "new 64", "@s"), PASS, **CHEAP)
    luks.add_keyring_token(image, "luks:a", keyslot=0, token_id=5)
    dump = subprocess.run([exe, "luksDump", str(image)], capture_output=True, check=True).stdout.decode()
    assert re.search(r"^\s*5: luks2-keyring\s*\n\s*Key description: luks:a", dump, re.M)
    assert errno_of(luks.add_keyring_token, image, "luks:b", token_id=5).errno == errno.EINVAL  # taken
    key = luks.load_passphrase("luks:a", PASS)
    assert opens(exe, image, "--token-only", "--token-id", "5") == 0
    key.invalidate()


def test_errno_cases(image: Path, tmp_path: Path, ks: kt.Keyspace, kk: kt.KernelKeyspace) -> None:
    cryptsetup()
    vol = ks.add_key("trusted", "v", "new 64", "@s")
    missing = tmp_path / "no-such-image"
    assert errno_of(luks.format, missing, vol, PASS, **CHEAP).errno == errno.ENOENT
    assert errno_of(luks.add_keyring_token, missing, "d").errno == errno.ENOENT
    assert not missing.exists()

    # a 48-byte key: aes-xts takes 32 or 64 (cryptsetup exit 1)
    odd = ks.add_key("user", "odd", os.urandom(48), "@s")
    assert errno_of(luks.format, image, odd, PASS, **CHEAP).errno == errno.EINVAL
    # a key whose plaintext user space cannot have
    logon = kk.add_key("logon", "luks:vk", os.urandom(64), "@s")
    assert errno_of(luks.format, image, logon, PASS).errno == errno.EOPNOTSUPP
    ring = ks.add_key("keyring", "ring", None, "@s")  # a keyring has no plaintext to hand over
    assert errno_of(luks.format, image, ring, PASS).errno == errno.EOPNOTSUPP
    for bad in ({"pbkdf": "scrypt"}, {"iterations": 0}, {"iterations": True}, {"cipher": "aes xts"}):
        assert errno_of(luks.format, image, vol, PASS, **bad).errno == errno.EINVAL
    assert errno_of(luks.format, image, vol, b"").errno == errno.EINVAL
    assert errno_of(luks.format, image, vol, "text").errno == errno.EINVAL  # a str is not bytes
    assert errno_of(luks.format, "", vol, PASS).errno == errno.EINVAL

    # not (yet) a LUKS2 device, then bad slot/token numbers and an inactive keyslot
    assert errno_of(luks.add_keyring_token, image, "d").errno == errno.EINVAL
    luks.format(image, vol, PASS, **CHEAP)
    for kwargs in ({"keyslot": 32}, {"keyslot": -1}, {"keyslot": "0"}, {"token_id": 32}):
        assert errno_of(luks.add_keyring_token, image, "d", **kwargs).errno == errno.EINVAL
    assert errno_of(luks.add_keyring_token, image, "d", keyslot=3).errno == errno.EINVAL  # inactive
    assert errno_of(luks.add_keyring_token, image, "").errno == errno.EINVAL
    assert errno_of(luks.load_passphrase, "", PASS).errno == errno.EINVAL
    assert errno_of(luks.load_passphrase, "d", b"").errno == errno.EINVAL
    assert errno_of(luks.load_passphrase, "d", 42).errno == errno.EINVAL


def test_messages_never_carry_the_key_or_passphrase(image: Path, ks: kt.Keyspace) -> None:
    cryptsetup()
    secret_pass = b"pass-" + os.urandom(8).hex().encode()
    odd = ks.add_key("user", "odd", os.urandom(48), "@s")
    err = errno_of(luks.format, image, odd, secret_pass, **CHEAP)
    assert "luksFormat" in str(err) and str(image) in str(err)
    with odd.secret() as mv:
        for text in (str(err), repr(err.args)):
            assert secret_pass.decode() not in text
            assert bytes(mv).hex() not in text and bytes(mv).hex(" ") not in text


def test_stderr_holding_a_secret_is_dropped() -> None:
    passphrase = memoryview(b"hunter2")
    assert luks._stderr_text(b"Device x is busy.\n", [passphrase]) == ": Device x is busy."
    assert luks._stderr_text(b"echo hunter2 back", [passphrase]) == ""


_CHILD = """
import sys
import keyring_types as kt
from keyring_types.integrations import luks
key = kt.Keyspace().add_key("user", "vol", bytes.fromhex(sys.argv[2]), "@s")
luks.format(sys.argv[1], key, b"pw", pbkdf="pbkdf2", iterations=1000)
"""


def test_key_and_passphrase_go_through_pipes_only(image: Path, tmp_path: Path) -> None:
    """strace the library and cryptsetup: the secrets go into pipes that cryptsetup
    opens read-only as /dev/fd/N; nothing else is opened for writing or created
    but the image itself, and TMPDIR stays empty."""
    cryptsetup()
    strace = shutil.which("strace")
    require(strace is not None, "strace")
    assert strace is not None
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    log = tmp_path / "strace.log"
    raw = os.urandom(64)
    env = dict(os.environ, TMPDIR=str(tmpdir), KEYRING_TYPES_HOME=str(tmp_path / "state"))
    subprocess.run(
        [
            strace,
            "-f",
            "-qq",
            "-e",
            "trace=openat,open,creat,memfd_create,pipe,pipe2,rename,renameat2,link,linkat,mknodat",
            "-o",
            str(log),
            sys.executable,
            "-c",
            _CHILD,
            str(image),
            raw.hex(),
        ],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    assert list(tmpdir.iterdir()) == []
    pipe_reads: set[str] = set()
    fd_opens: list[tuple[str, str]] = []
    writable: set[str] = set()
    for line in log.read_text().splitlines():
        if m := re.search(r"pipe2?\(\[(\d+), (\d+)\]", line):
            pipe_reads.add(m.group(1))
        assert not re.search(r"\b(memfd_create|creat|rename|renameat2|link|linkat|mknodat)\(", line), line
        m = re.search(r'open(?:at)?\((?:AT_FDCWD, )?"([^"]*)", ([A-Z_|]+)[^=]*= (-?\d+)', line)
        if m is None or int(m.group(3)) < 0:
            continue
        path, flags = m.group(1), m.group(2)
        if path.startswith("/dev/fd/"):
            fd_opens.append((path.removeprefix("/dev/fd/"), flags))
        if "O_CREAT" in flags or "O_WRONLY" in flags or "O_RDWR" in flags:
            writable.add(path)
    # cryptsetup read the volume key and the passphrase from two of the library's pipes
    assert len(fd_opens) == 2 and all(fd in pipe_reads and flags == "O_RDONLY" for fd, flags in fd_opens)
    assert writable <= {str(image), image.name, "/dev/null", "/dev/mapper/control"} | {
        p
        for p in writable
        if p.startswith("/run/cryptsetup/")  # cryptsetup's lock files: no key in them
    }
    assert str(image) in writable
    exe = cryptsetup()
    assert dump_volume_key(exe, image, b"pw") == (512, raw)


def test_a_passphrase_longer_than_a_pipe_buffer(image: Path, ks: kt.Keyspace) -> None:
    """The pipe grows to hold the whole secret (the default holds 64 KiB) before cryptsetup starts."""
    exe = cryptsetup()
    long_pass = os.urandom(200 * 1024)  # under cryptsetup's 8 MiB key-file limit
    vol = ks.add_key("trusted", "v", "new 64", "@s")
    luks.format(image, vol, long_pass, **CHEAP)
    with vol.secret() as mv:
        assert dump_volume_key(exe, image, long_pass) == (512, bytes(mv))


def test_the_library_opens_no_file_for_the_secrets(image: Path, tmp_path: Path, ks: kt.Keyspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without strace: every file the library opens while formatting is recorded
    (only subprocess' /dev/null for cryptsetup's stdin), and TMPDIR stays empty."""
    exe = cryptsetup()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    opened: list[str] = []
    real_os_open, real_open = os.open, builtins.open

    def spy_os_open(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fsdecode(path))
        return real_os_open(path, *args, **kwargs)

    def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    vol = ks.add_key("trusted", "v", "new 64", "@s")
    with monkeypatch.context() as m:
        m.setattr(os, "open", spy_os_open)
        m.setattr(builtins, "open", spy_open)
        luks.format(image, vol, PASS, **CHEAP)
    assert set(opened) <= {os.devnull}
    assert list(tmpdir.iterdir()) == []
    with vol.secret() as mv:
        assert dump_volume_key(exe, image, PASS) == (512, bytes(mv))
