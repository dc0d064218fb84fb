"""fscrypt on a real ext4 (``mkfs.ext4 -O encrypt`` on a loop device).

The filesystem is made once for the module in a private directory and always
unmounted and detached at the end.  Each test uses its own directory and its own
random keys, and removes the keys it added.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import errno_of, kernel_keyring_reachable, require
from loopfs import make_fs as _make_fs
from loopfs import open_dir as _open_dir
from loopfs import require_loop_fs as _require_loop_fs

import keyring_types as kt
from keyring_types.integrations import fscrypt

pytestmark = [pytest.mark.root, pytest.mark.kernel]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fs() -> Iterator[Path]:
    _require_loop_fs()
    with _open_dir() as base:
        yield from _make_fs(base, "enc", ["-O", "encrypt"])


@pytest.fixture
def plain_fs(tmp_path: Path) -> Iterator[Path]:
    _require_loop_fs()
    yield from _make_fs(tmp_path, "plain", [])


@pytest.fixture
def workdir(fs: Path, request: pytest.FixtureRequest) -> Path:
    name: str = request.node.name
    d = fs / name.replace("[", "_").replace("]", "")
    d.mkdir()
    return d


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")


def user_key(raw: bytes | None = None) -> kt.Key:
    return kt.Keyspace().add_key("user", "fs:test", raw or os.urandom(64), "@s")


# -- identifiers and policies ---------------------------------------------------------


def test_kernel_identifier_equals_offline(fs: Path, workdir: Path) -> None:
    raw = os.urandom(32)
    ident = fscrypt.add_key(fs, user_key(raw))
    try:
        assert ident == fscrypt.identifier(raw)
        st = fscrypt.key_status(fs, ident)
        assert (st.status, st.added_by_self, st.user_count) == ("present", True, 1)
        fscrypt.set_policy(workdir, ident, padding=16)
        pol = fscrypt.get_policy(workdir)
        assert (pol.version, pol.contents, pol.filenames, pol.padding, pol.identifier) == (
            2,
            "AES-256-XTS",
            "AES-256-CTS",
            16,
            ident,
        )
        (workdir / "f").write_text("x")
        assert fscrypt.get_policy(workdir / "f") == pol  # files inherit the directory's policy
    finally:
        fscrypt.remove_key(fs, ident)
    assert fscrypt.key_status(fs, ident).status == "absent"


def test_xfstests_raw_key_gives_its_identifier_from_the_kernel(fs: Path) -> None:
    raw = bytes(range(1, 65))
    ident = fscrypt.add_key(fs, user_key(raw))
    fscrypt.remove_key(fs, ident)
    assert ident.hex() == "69b2f6edeee720cce0577937eb8a6751"


# -- end to end: trusted / encrypted key -> directory, key removed, new process --------

MAKE = """
import sys, keyring_types as kt
from keyring_types.integrations import fscrypt
ks = kt.Keyspace()
kmk = ks.add_key("trusted", "kmk", "new 32", "@s")
key = kmk if sys.argv[2] == "trusted" else ks.add_key("encrypted", "fs", "new default trusted:kmk 64", "@s")
ident = fscrypt.add_key(sys.argv[1], key)
fscrypt.set_policy(sys.argv[3], ident)
print(ident.hex(), kmk.read().decode(), key.read().decode(), sep="\\n")
"""

RELOAD = """
import sys, keyring_types as kt
from keyring_types.integrations import fscrypt
ks = kt.Keyspace()
kmk = ks.add_key("trusted", "kmk", "load " + sys.argv[3], "@s")
key = kmk if sys.argv[2] == "trusted" else ks.add_key("encrypted", "fs", "load " + sys.argv[4], "@s")
print(fscrypt.add_key(sys.argv[1], key).hex())
"""


def _python(script: str, env: dict[str, str], *args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.parametrize("kind", ["trusted", "encrypted"])
def test_trusted_key_to_directory_and_back_in_a_new_process(fs: Path, workdir: Path, tmp_path: Path, kind: str) -> None:
    home = tmp_path / "home"
    env = dict(os.environ)
    env.update(
        KEYRING_TYPES_HOME=str(home),
        KEYRING_TYPES_TRUST_SOURCE="host",
        KEYRING_TYPES_TPM2_TCTI="device:/nonexistent/tpmrm9",
    )
    ident_hex, kmk_blob, key_blob = _python(MAKE, env, str(fs), kind, str(workdir))
    ident = bytes.fromhex(ident_hex)
    names = {f"secret-{i}.txt": f"contents {i}\n" for i in range(3)}
    for name, text in names.items():
        (workdir / name).write_text(text)
    (workdir / "sub").mkdir()

    status = fscrypt.remove_key(fs, ident)
    assert not status.files_busy and not status.other_users
    drop_caches()
    listed = set(os.listdir(workdir))
    assert len(listed) == len(names) + 1 and not listed & {*names, "sub"}  # ciphertext names only
    some = workdir / sorted(listed)[0]
    with pytest.raises(OSError) as info:
        some.read_bytes()
    assert info.value.errno in (errno.ENOKEY, errno.EISDIR)
    assert fscrypt.key_status(fs, ident).status == "absent"

    # A new process with the same state directory loads the same sealed key.
    [again] = _python(RELOAD, env, str(fs), kind, kmk_blob, key_blob)
    try:
        assert again == ident_hex
        assert set(os.listdir(workdir)) == {*names, "sub"}
        for name, text in names.items():
            assert (workdir / name).read_text() == text
    finally:
        fscrypt.remove_key(fs, ident)


# -- the key_id route: a kernel fscrypt-provisioning key ------------------------------


@pytest.fixture
def kk() -> kt.KernelKeyspace:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
    return kt.KernelKeyspace(new_session=True)


def test_provisioning_key_by_key_id(fs: Path, workdir: Path, kk: kt.KernelKeyspace) -> None:
    raw = os.urandom(64)
    payload = fscrypt.provisioning_payload(raw)
    try:
        pk = kk.add_key("fscrypt-provisioning", "fscrypt:test", payload.view(), "@s")
    finally:
        payload.wipe()
    ident = fscrypt.add_key(fs, pk)
    try:
        assert ident == fscrypt.identifier(raw)
        fscrypt.set_policy(workdir, ident)
        (workdir / "a").write_text("by key_id")
        fscrypt.remove_key(fs, ident)
        drop_caches()
        assert os.listdir(workdir) != ["a"]
        # the plaintext route with the same raw key unlocks the same files
        assert fscrypt.add_key(fs, user_key(raw)) == ident
        assert (workdir / "a").read_text() == "by key_id"
        # a serial works as well as the handle
        assert fscrypt.add_key(fs, pk.serial) == ident
    finally:
        fscrypt.remove_key(fs, ident)


def test_key_id_of_a_wrong_key_is_ekeyrejected(fs: Path, kk: kt.KernelKeyspace) -> None:
    u = kk.add_key("user", "fscrypt:user", os.urandom(32), "@s")
    assert errno_of(fscrypt.add_key, fs, u.serial) == errno.EKEYREJECTED
    v1 = kk.add_key("fscrypt-provisioning", "fscrypt:v1", b"\x01\0\0\0\0\0\0\0" + os.urandom(32), "@s")
    assert errno_of(fscrypt.add_key, fs, v1) == errno.EKEYREJECTED
    # the in-process type refuses the same v1 payload the same way
    ks = kt.Keyspace()
    mine = ks.add_key("fscrypt-provisioning", "fscrypt:v1", b"\x01\0\0\0\0\0\0\0" + os.urandom(32), "@s")
    assert errno_of(fscrypt.add_key, fs, mine) == errno.EKEYREJECTED
    # a key_id that names no key at all
    assert errno_of(fscrypt.add_key, fs, 0x7FFFFFF0) == errno.ENOKEY


def test_in_process_provisioning_key_gives_the_same_identifier(fs: Path) -> None:
    raw = os.urandom(48)
    payload = fscrypt.provisioning_payload(raw)
    try:
        pk = kt.Keyspace().add_key("fscrypt-provisioning", "fscrypt:p", payload.view(), "@s")
    finally:
        payload.wipe()
    ident = fscrypt.add_key(fs, pk)
    fscrypt.remove_key(fs, ident)
    assert ident == fscrypt.identifier(raw)


def test_kernel_logon_key_has_no_plaintext_for_us(fs: Path, kk: kt.KernelKeyspace) -> None:
    logon = kk.add_key("logon", "fscrypt:logon", os.urandom(32), "@s")
    assert errno_of(fscrypt.add_key, fs, logon) == errno.EOPNOTSUPP
    # by key_id the kernel itself refuses it: not an fscrypt-provisioning key
    assert errno_of(fscrypt.add_key, fs, logon.serial) == errno.EKEYREJECTED


# -- errno cases ------------------------------------------------------------------------


def test_policy_errors(fs: Path, workdir: Path) -> None:
    ident = fscrypt.add_key(fs, user_key())
    try:
        assert errno_of(fscrypt.get_policy, workdir) == errno.ENODATA  # not encrypted yet
        (workdir / "f").write_text("x")
        assert errno_of(fscrypt.set_policy, workdir, ident) == errno.ENOTEMPTY
        assert errno_of(fscrypt.set_policy, workdir / "f", ident) == errno.ENOTDIR
        (workdir / "f").unlink()
        fscrypt.set_policy(workdir, ident)
        fscrypt.set_policy(workdir, ident)  # the same policy again is fine
        other = fscrypt.identifier(os.urandom(32))
        assert errno_of(fscrypt.set_policy, workdir, other) == errno.EEXIST
        # the kernel refuses a mode pair it does not support
        d2 = workdir.parent / (workdir.name + "-pair")
        d2.mkdir()
        assert errno_of(fscrypt.set_policy, d2, ident, contents="AES-256-CTS", filenames="AES-256-XTS") == errno.EINVAL
    finally:
        fscrypt.remove_key(fs, ident)


def test_remove_and_status_of_an_absent_key(fs: Path) -> None:
    ident = fscrypt.identifier(os.urandom(32))
    assert fscrypt.key_status(fs, ident).status == "absent"
    assert errno_of(fscrypt.remove_key, fs, ident) == errno.ENOKEY
    assert errno_of(fscrypt.remove_key, fs, ident, all_users=True) == errno.ENOKEY


def _as_nobody(fn: object, *args: object) -> int:
    """Run ``fn(*args)`` in a child as uid/gid 65534; its errno (0 on success)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            fn(*args)  # type: ignore[operator]
        except OSError as e:
            code = e.errno or 255
        except BaseException:
            code = 254
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_unprivileged_errnos(fs: Path, workdir: Path) -> None:
    raw = os.urandom(32)
    ident = fscrypt.add_key(fs, user_key(raw))
    try:
        os.chmod(workdir, 0o777)
        mine = workdir / "nobody"
        mine.mkdir()
        os.chown(mine, 65534, 65534)
        # nobody has not added the key (and has no CAP_FOWNER): ENOKEY
        assert _as_nobody(fscrypt.set_policy, mine, ident) == errno.ENOKEY
        # removing for all users needs CAP_SYS_ADMIN: EACCES
        assert _as_nobody(fscrypt.remove_key, fs, ident, True) == errno.EACCES
        # removing one's own claim that one never made: ENOKEY
        assert _as_nobody(fscrypt.remove_key, fs, ident) == errno.ENOKEY
        # status as nobody: present, but not added by nobody
        assert _as_nobody(_expect_status, fs, ident, "present", False) == 0
    finally:
        fscrypt.remove_key(fs, ident, all_users=True)


def _add_raw(fs: Path, raw: bytes, ident: bytes) -> None:
    if fscrypt.add_key(fs, user_key(raw)) != ident:
        raise OSError(errno.EBADMSG, "another identifier")


def _expect_status(fs: Path, ident: bytes, status: str, by_self: bool) -> None:
    st = fscrypt.key_status(fs, ident)
    if (st.status, st.added_by_self) != (status, by_self):
        raise OSError(errno.EBADMSG, f"unexpected {st}")


def test_other_users_claim_keeps_the_key(fs: Path) -> None:
    raw = os.urandom(32)
    ident = fscrypt.add_key(fs, user_key(raw))
    try:
        # the child makes its own key handle: a forked child's inherited secrets read zeros
        assert _as_nobody(_add_raw, fs, raw, ident) == 0
        st = fscrypt.key_status(fs, ident)
        assert (st.status, st.user_count) == ("present", 2)
        removed = fscrypt.remove_key(fs, ident)
        assert removed.other_users and not removed.files_busy
        assert fscrypt.key_status(fs, ident).status == "present"
    finally:
        fscrypt.remove_key(fs, ident, all_users=True)
    assert fscrypt.key_status(fs, ident).status == "absent"


def test_busy_files_leave_the_key_incompletely_removed(fs: Path, workdir: Path) -> None:
    ident = fscrypt.add_key(fs, user_key())
    fscrypt.set_policy(workdir, ident)
    with open(workdir / "open", "w") as f:
        f.write("held open")
        f.flush()
        removed = fscrypt.remove_key(fs, ident)
        assert removed.files_busy
        assert fscrypt.key_status(fs, ident).status == "incompletely removed"
    assert not fscrypt.remove_key(fs, ident).files_busy  # retried once the file is closed
    assert fscrypt.key_status(fs, ident).status == "absent"


def test_filesystem_without_encryption_is_eopnotsupp(plain_fs: Path) -> None:
    assert errno_of(fscrypt.add_key, plain_fs, user_key()) == errno.EOPNOTSUPP
    assert errno_of(fscrypt.set_policy, plain_fs, bytes(16)) == errno.EOPNOTSUPP
    assert errno_of(fscrypt.key_status, plain_fs, bytes(16)) == errno.EOPNOTSUPP


def test_identifier_mismatch_removes_the_key_again(fs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As google/fscrypt does: if the kernel's identifier is not the expected one, the
    # key added under it is removed again.  Simulated by a wrong offline derivation.
    raw = os.urandom(32)
    real = fscrypt.identifier(raw)
    monkeypatch.setattr(fscrypt, "identifier", lambda _raw: bytes(16))
    assert errno_of(fscrypt.add_key, fs, user_key(raw)) == errno.EBADMSG
    assert fscrypt.key_status(fs, real).status == "absent"
