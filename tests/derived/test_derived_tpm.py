"""The tpm2 root against tpm2-tools, the key type end to end on swtpm, and what changes a key."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from vector_data import load_vector_file

import keyring_types as kt
from keyring_types.derive import registry
from keyring_types.derive.kdf import kdf_info
from keyring_types.derive.tpm2 import PRIMARY_TEMPLATE, Tpm2Root
from keyring_types.secret import SecretBuffer

#: The fixtures (fresh_roots, tpm_env, host_home): this directory has no conftest of its own.
pytest_plugins = ("derived_fixtures",)

REPO = Path(__file__).resolve().parents[2]
SITE = next((REPO / ".venv" / "lib").glob("python3*/site-packages"), None)


def lib_derive(root: Tpm2Root, length: int, euid: int, label: bytes, value: bytes) -> bytes:
    out = SecretBuffer(length)
    root.derive_into(kdf_info(length, euid, label, value), out.writable())
    return out.tobytes()


def add_derived(payload: str) -> bytes:
    ks = kt.Keyspace()
    return ks.add_key("derived", "app", payload, "@s").read()


def own_exe() -> bytes:
    return os.readlink(b"/proc/self/exe")


# -- the library's bytes are tpm2-tools' bytes -------------------------------------------------


def test_the_template_is_the_one_tpm2_tools_makes(tpm_env: Any) -> None:
    tools = tpm_env.tools
    tools.prf(b"x")
    assert tools.template == PRIMARY_TEMPLATE[2:]  # the tools write TPMT_PUBLIC, without the size


@pytest.mark.parametrize("length", [1, 32, 33, 64, 1024])
def test_key_type_equals_tpm2_tools(tpm_env: Any, length: int) -> None:
    key = add_derived(f"{length} path")
    assert len(key) == length
    assert key == tpm_env.tools.derive(length, os.geteuid(), b"path", own_exe())


@pytest.mark.parametrize(
    ("euid", "value"),
    [
        (0, b"/usr/bin/keyctl"),
        (1, b"/usr/bin/keyctl"),
        (1000, b"/opt/bin/keyctl"),
        (65534, b"/usr/sbin/sshd (deleted)"),
        (4294967294, b"/" + b"d" * 900),
    ],
)
def test_root_equals_tpm2_tools_for_euids_and_paths(tpm_env: Any, euid: int, value: bytes) -> None:
    root = registry.get_root()
    assert isinstance(root, Tpm2Root)
    assert lib_derive(root, 33, euid, b"path", value) == tpm_env.tools.derive(33, euid, b"path", value)


def test_rfc_worked_example(tpm_env: Any) -> None:
    ex = load_vector_file("derived_keys")["rfc_example"]
    info = kdf_info(ex["length"], ex["euid"], ex["label"].encode(), ex["value"].encode())
    assert (b"\x00\x00\x00\x01" + info).hex() == ex["first_prf_input_hex"]
    root = registry.get_root()
    key = lib_derive(root, 32, 0, b"path", b"/usr/bin/keyctl")  # type: ignore[arg-type]
    assert key == tpm_env.tools.prf(bytes.fromhex(ex["first_prf_input_hex"]))


def test_csum_mode_equals_tpm2_tools(tpm_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digest = bytes(range(32))
    log = tmp_path / "ascii_runtime_measurements"
    log.write_bytes(b"10 " + b"1" * 40 + b" ima-ng sha256:" + digest.hex().encode() + b" " + own_exe() + b"\n")
    monkeypatch.setenv("KEYRING_TYPES_IMA_MEASUREMENTS", str(log))
    assert add_derived("48 csum") == tpm_env.tools.derive(48, os.geteuid(), b"csum", digest)


# -- who is asking, across processes --------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys
    if len(sys.argv) > 1 and sys.argv[1] == "delete":
        os.unlink(os.readlink("/proc/self/exe"))
    import keyring_types as kt
    if len(sys.argv) > 1 and sys.argv[1].isdigit():
        # One derivation as root first imports everything: this interpreter's stdlib is not
        # readable by the uid the child drops to.
        kt.Keyspace().add_key("derived", "warm-up", "32 path", "@s")
        os.setresgid(int(sys.argv[1]), int(sys.argv[1]), int(sys.argv[1]))
        os.setresuid(int(sys.argv[1]), int(sys.argv[1]), int(sys.argv[1]))
    ks = kt.Keyspace()
    print(os.readlink("/proc/self/exe"), ks.add_key("derived", "app", "32 path", "@s").read().hex())
    """
)


def run_child(exe: str, tcti: str, *args: str) -> tuple[bytes, bytes]:
    env = dict(os.environ)
    env.update(
        KEYRING_TYPES_TPM2_TCTI=tcti,
        KEYRING_TYPES_DERIVE_ROOT="tpm2",
        PYTHONPATH=os.pathsep.join([str(REPO), str(SITE)]),
        PYTHONDONTWRITEBYTECODE="1",
    )
    p = subprocess.run([exe, "-c", CHILD, *args], env=env, capture_output=True, timeout=60, cwd="/")
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-800:]
    path, _, key = p.stdout.strip().rpartition(b" ")
    return path, bytes.fromhex(key.decode())


@pytest.fixture
def two_pythons(tmp_path: Path) -> tuple[str, str]:
    real = os.path.realpath(sys.executable)
    pair = []
    for name in ("pyA", "pyB"):
        d = tmp_path / name
        d.mkdir()
        shutil.copy2(real, d / "python")
        pair.append(str(d / "python"))
    return pair[0], pair[1]


def test_two_executables_get_two_keys_and_one_gets_the_same_key_twice(tpm_env: Any, two_pythons: tuple[str, str]) -> None:
    a, b = two_pythons
    path_a, key_a = run_child(a, tpm_env.tcti)
    path_b, key_b = run_child(b, tpm_env.tcti)
    assert (path_a, path_b) == (a.encode(), b.encode())
    assert key_a != key_b
    assert run_child(a, tpm_env.tcti)[1] == key_a
    assert key_a == tpm_env.tools.derive(32, os.geteuid(), b"path", a.encode())


def test_the_euid_is_the_processes_not_the_keyspaces(tpm_env: Any, two_pythons: tuple[str, str]) -> None:
    require(os.geteuid() == 0, "root (to run a child as uid 1000)")
    a = two_pythons[0]
    os.chmod(Path(a).parent, 0o755)
    os.chmod(Path(a).parent.parent, 0o755)
    path, key = run_child(a, tpm_env.tcti, "1000")
    assert key == tpm_env.tools.derive(32, 1000, b"path", path)
    assert key != run_child(a, tpm_env.tcti)[1]
    # An in-process Keyspace claiming uid 1000 still gets its process's (root's) key.
    ks = kt.Keyspace().as_user(1000, 1000)
    claimed = ks.add_key("derived", "app", "32 path", "@s").read()
    assert claimed == add_derived("32 path")


def test_a_deleted_executable_is_mixed_with_the_kernels_suffix(tpm_env: Any, two_pythons: tuple[str, str]) -> None:
    a = two_pythons[0]
    path, key = run_child(a, tpm_env.tcti, "delete")
    assert path == a.encode() + b" (deleted)"
    assert key == tpm_env.tools.derive(32, os.geteuid(), b"path", path)


# -- what changes a key, and what does not ----------------------------------------------------


def _start_swtpm_on(state_dir: Path, port: int) -> subprocess.Popen[bytes]:
    from swtpm_util import _ctrl_answers, _port_accepts

    proc = subprocess.Popen(
        [
            "swtpm", "socket", "--tpm2",
            "--server", f"type=tcp,bindaddr=127.0.0.1,port={port}",
            "--ctrl", f"type=tcp,bindaddr=127.0.0.1,port={port + 1}",
            "--tpmstate", f"dir={state_dir}", "--flags", "not-need-init,startup-clear",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(500):
        if _port_accepts("127.0.0.1", port) and _ctrl_answers("127.0.0.1", port + 1):
            return proc
        if proc.poll() is not None:
            break
        import time

        time.sleep(0.01)
    proc.kill()
    raise RuntimeError("swtpm did not come back")


def test_the_same_key_after_swtpm_restarts(tpm_env: Any) -> None:
    before = add_derived("32 path")
    root = registry.get_root()
    other = lib_derive(root, 64, 7, b"path", b"/usr/bin/keyctl")  # type: ignore[arg-type]
    # Restart the simulator on its state (same ports): the kept primary is gone with the restart.
    sim = tpm_env.sim
    sim.process.terminate()
    sim.process.wait(timeout=10)
    sim.process = _start_swtpm_on(sim.state_dir, sim.port)
    assert add_derived("32 path") == before
    assert lib_derive(root, 64, 7, b"path", b"/usr/bin/keyctl") == other  # type: ignore[arg-type]


def test_tpm2_clear_changes_every_key_at_once(tpm_env: Any) -> None:
    root = registry.get_root()
    old_a = add_derived("32 path")
    old_b = lib_derive(root, 40, 1000, b"csum", bytes(32))  # type: ignore[arg-type]
    tpm_env.tools.run("tpm2_clear")
    tpm_env.tools.forget_primary()
    # The same process, the same root instance: the very next derivation has the new seed.
    new_a = add_derived("32 path")
    new_b = lib_derive(root, 40, 1000, b"csum", bytes(32))  # type: ignore[arg-type]
    assert new_a != old_a and new_b != old_b
    assert new_a == tpm_env.tools.derive(32, os.geteuid(), b"path", own_exe())
    assert new_b == tpm_env.tools.derive(40, 1000, b"csum", bytes(32))


def test_a_fork_child_derives_the_same_key(tpm_env: Any) -> None:
    parent = add_derived("32 path")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(w, add_derived("32 path"))
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    assert got == parent
    assert add_derived("32 path") == parent  # the parent's connection and primary still work


# -- the RFC's errno --------------------------------------------------------------------------


def test_a_message_the_tpm_refuses_is_eperm(tpm_env: Any) -> None:
    root = registry.get_root()
    with pytest.raises(OSError) as exc:
        lib_derive(root, 32, 0, b"path", b"/" + b"x" * 1100)  # type: ignore[arg-type]
    assert exc.value.errno == errno.EPERM


def test_no_object_slot_is_enomem(tpm_env: Any) -> None:
    tools = tpm_env.tools
    for _ in range(3):  # swtpm's three transient slots, filled by primaries the tools leave loaded
        tools.run("tpm2_createprimary", "-C", "o", "-G", "ecc256", "-c", str(tools.dir / "fill.ctx"))
    try:
        with pytest.raises(OSError) as exc:
            add_derived("32 path")
        assert exc.value.errno == errno.ENOMEM
    finally:
        for handle in tools.transient_handles():
            tools.run("tpm2_flushcontext", hex(handle))


def test_an_unreachable_tpm_is_enodev(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tpm2_pytss")
    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", "swtpm:host=127.0.0.1,port=1")
    monkeypatch.setenv("KEYRING_TYPES_DERIVE_ROOT", "tpm2")
    with pytest.raises(OSError) as exc:
        add_derived("32 path")
    assert exc.value.errno in (errno.ENODEV, errno.EIO)
