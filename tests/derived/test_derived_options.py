"""This library's non-RFC options: the rotation mixin, the exe-only binding, the script binding."""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from derived_tools import counter_mode, info

import keyring_types as kt
from keyring_types.derive.host import SEED_FILE
from keyring_types.types.derived import DerivedRequest, parse_request

pytest_plugins = ("derived_fixtures",)

REPO = Path(__file__).resolve().parents[2]
SITE = next((REPO / ".venv" / "lib").glob("python3*/site-packages"), None)


def piece(label: bytes, data: bytes) -> bytes:
    """A non-RFC info piece, written out here from the documentation (docs/derived.md)."""
    return label + b"\x00" + struct.pack("<I", len(data)) + data


def host_key(seed: bytes, length: int, data: bytes) -> bytes:
    import hmac

    return counter_mode(lambda m: hmac.new(seed, hashlib.sha256(m).digest(), "sha256").digest(), length, data)


def add(payload: str | bytes) -> bytes:
    return kt.Keyspace().add_key("derived", "app", payload, "@s").read()


@pytest.mark.parametrize(
    ("payload", "request_"),
    [
        (b"32 path", DerivedRequest(32, b"path")),
        (b"32 path mix=v1", DerivedRequest(32, b"path", mix=b"v1")),
        (b"32 path mix=a b\tc ", DerivedRequest(32, b"path", mix=b"a b\tc ")),  # the rest, verbatim
        (b"32 csum uid=none", DerivedRequest(32, b"csum", no_uid=True)),
        (b"32 path bind=script uid=none mix=x=y", DerivedRequest(32, b"path", no_uid=True, script=True, mix=b"x=y")),
        (b"32 path\tuid=none", DerivedRequest(32, b"path", no_uid=True)),
    ],
)
def test_options_parse(payload: bytes, request_: DerivedRequest) -> None:
    assert parse_request(payload) == request_


@pytest.mark.parametrize(
    "payload",
    [b"32 path mix=", b"32 path uid=none uid=none", b"32 path uid=0", b"32 path bind=exe", b"32 path v1",
     b"32 path  uid=none", b"32 path uid=none ", b"32 mix=v1", b"32 path mix"],
)  # fmt: skip
def test_bad_options_are_einval(payload: bytes) -> None:
    with pytest.raises(OSError) as exc:
        parse_request(payload)
    assert exc.value.errno == errno.EINVAL


def test_rotation_mixin(host_home: Path) -> None:
    plain, v1, v2 = add("32 path"), add("32 path mix=v1"), add("32 path mix=v2")
    assert len({plain, v1, v2}) == 3
    seed = (host_home / SEED_FILE).read_bytes()
    exe = os.readlink(b"/proc/self/exe")
    assert v1 == host_key(seed, 32, info(32, os.geteuid(), b"path", exe) + piece(b"mix", b"v1"))
    assert plain == host_key(seed, 32, info(32, os.geteuid(), b"path", exe))  # no option: the RFC's key


def test_rotation_mixin_on_the_tpm_equals_tpm2_tools(tpm_env: Any) -> None:
    exe = os.readlink(b"/proc/self/exe")
    data = info(40, os.geteuid(), b"path", exe) + piece(b"mix", b"2026 rotation")
    expected = counter_mode(tpm_env.tools.prf, 40, data)
    assert add("40 path mix=2026 rotation") == expected


def test_exe_only_binding_mixes_no_uid(host_home: Path) -> None:
    seed_key = add("32 path uid=none")
    seed = (host_home / SEED_FILE).read_bytes()
    exe = os.readlink(b"/proc/self/exe")
    assert seed_key == host_key(seed, 32, info(32, 0xFFFFFFFF, b"path", exe))
    assert seed_key != add("32 path")


CHILD = textwrap.dedent(
    """
    import os, sys
    import keyring_types as kt
    payload = os.environ["PAYLOAD"]
    if os.environ.get("AS_UID"):
        kt.Keyspace().add_key("derived", "warm-up", payload, "@s")  # imports all before the stdlib is out of reach
        uid = int(os.environ["AS_UID"])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    print(kt.Keyspace().add_key("derived", "app", payload, "@s").read().hex())
    """
)


def run(args: list[str], payload: str, env_extra: dict[str, str]) -> bytes:
    env = dict(os.environ, PAYLOAD=payload, PYTHONDONTWRITEBYTECODE="1", **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(SITE)])
    p = subprocess.run([sys.executable, *args], env=env, capture_output=True, timeout=60, cwd="/")
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-800:]
    return bytes.fromhex(p.stdout.decode().strip().splitlines()[-1])


def test_exe_only_binding_is_the_same_for_every_uid(tpm_env: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a child as uid 1000")
    env = {"KEYRING_TYPES_TPM2_TCTI": tpm_env.tcti, "KEYRING_TYPES_DERIVE_ROOT": "tpm2"}
    root_key = run(["-c", CHILD], "32 path uid=none", env)
    user_key = run(["-c", CHILD], "32 path uid=none", {**env, "AS_UID": "1000"})
    assert root_key == user_key
    assert run(["-c", CHILD], "32 path", env) != run(["-c", CHILD], "32 path", {**env, "AS_UID": "1000"})


def test_script_binding_tells_two_scripts_apart(host_home: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text(CHILD)
    b.write_text(CHILD)
    env = {"KEYRING_TYPES_HOME": str(host_home), "KEYRING_TYPES_DERIVE_ROOT": "host"}
    assert run([str(a)], "32 path", env) == run([str(b)], "32 path", env)  # both are the Python binary
    key_a = run([str(a)], "32 path bind=script", env)
    key_b = run([str(b)], "32 path bind=script", env)
    assert key_a != key_b
    assert run([str(a)], "32 path bind=script", env) == key_a
    seed = (host_home / SEED_FILE).read_bytes()
    exe = os.fsencode(os.path.realpath(sys.executable))
    expected = info(32, os.geteuid(), b"path", exe) + piece(b"script", os.fsencode(str(a.resolve())))
    assert key_a == host_key(seed, 32, expected)


def test_script_binding_with_csum_measures_the_script(host_home: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text(CHILD)
    b.write_text(CHILD + "\n# another program\n")
    env = {
        "KEYRING_TYPES_HOME": str(host_home),
        "KEYRING_TYPES_DERIVE_ROOT": "host",
        "KEYRING_TYPES_IMA_MEASUREMENTS": str(tmp_path / "absent"),
        "KEYRING_TYPES_DERIVE_SELF_MEASURE": "1",
    }
    key_a = run([str(a)], "32 csum bind=script", env)
    assert key_a != run([str(b)], "32 csum bind=script", env)
    seed = (host_home / SEED_FILE).read_bytes()
    with open(os.path.realpath(sys.executable), "rb") as f:
        exe_digest = hashlib.file_digest(f, "sha256").digest()
    script_digest = hashlib.sha256(a.read_bytes()).digest()
    expected = info(32, os.geteuid(), b"csum", exe_digest) + piece(b"script", script_digest)
    assert key_a == host_key(seed, 32, expected)


def test_script_binding_without_a_script_is_eopnotsupp(host_home: Path) -> None:
    env = {"KEYRING_TYPES_HOME": str(host_home), "KEYRING_TYPES_DERIVE_ROOT": "host", "PAYLOAD": "32 path bind=script"}
    p = subprocess.run(
        [sys.executable, "-c", "import os, keyring_types as kt\n"
         "try:\n kt.Keyspace().add_key('derived', 'a', os.environ['PAYLOAD'], '@s')\n"
         "except OSError as e:\n print(e.errno)"],
        env=dict(os.environ, **env, PYTHONPATH=os.pathsep.join([str(REPO), str(SITE)])),
        capture_output=True, timeout=60, cwd="/",
    )  # fmt: skip
    assert p.stdout.decode().strip() == str(errno.EOPNOTSUPP), p.stderr.decode()[-500:]


# -- pcrs=: a primary gated by PolicyPCR ------------------------------------------------------------


def _tools_gated_key(tools: Any, length: int, data: bytes, workdir: Path) -> tuple[Path, bytes]:
    """The gated derivation with tpm2-tools: trial PolicyPCR, the primary, a policy session per block."""
    before = tools.transient_handles()
    pol, ctx = workdir / "pol.dig", workdir / "gated.ctx"
    tools.run("tpm2_createpolicy", "--policy-pcr", "-l", "sha256:16", "-L", str(pol))
    tools.run(
        "tpm2_createprimary", "-C", "o", "-G", "hmac", "-g", "sha256", "-L", str(pol),
        "-a", "fixedtpm|fixedparent|sensitivedataorigin|restricted|sign", "-u", "-", "-c", str(ctx),
        stdin=b"kernel",
    )  # fmt: skip
    tools.flush_ours(before)

    def prf(message: bytes) -> bytes:
        return _tools_gated_sign(tools, ctx, message, workdir)

    return ctx, counter_mode(prf, length, data)


def _tools_gated_sign(tools: Any, ctx: Path, message: bytes, workdir: Path) -> bytes:
    before = tools.transient_handles()
    msg, dig, ticket, sig, sess = (workdir / n for n in ("gmsg", "gdig", "gticket", "gsig", "session.ctx"))
    msg.write_bytes(message)
    tools.run("tpm2_hash", "-C", "o", "-g", "sha256", "-o", str(dig), "-t", str(ticket), str(msg))
    tools.run("tpm2_startauthsession", "--policy-session", "-S", str(sess))
    try:
        tools.run("tpm2_policypcr", "-S", str(sess), "-l", "sha256:16")
        tools.run(
            "tpm2_sign", "-c", str(ctx), "-p", f"session:{sess}", "-g", "sha256", "-s", "hmac", "-d",
            "-t", str(ticket), "-f", "plain", "-o", str(sig), str(dig),
        )  # fmt: skip
    finally:
        tools.run("tpm2_flushcontext", "-s")
        tools.flush_ours(before)
    return sig.read_bytes()


def test_pcr_gated_key_equals_tpm2_tools_and_follows_the_pcrs(tpm_env: Any, tmp_path: Path) -> None:
    tools = tpm_env.tools
    exe = os.readlink(b"/proc/self/exe")
    data = info(40, os.geteuid(), b"path", exe)
    gated = add("40 path pcrs=sha256:16")
    ctx, expected = _tools_gated_key(tools, 40, data, tmp_path)
    assert gated == expected
    assert gated != add("40 path")  # another primary: another key
    assert add("40 path pcrs=sha256:16") == gated
    tools.run("tpm2_pcrextend", "16:sha256=" + "11" * 32)
    moved = add("40 path pcrs=sha256:16")
    assert moved != gated
    # The old primary exists for anyone to make, but the TPM will not sign with it in this state.
    with pytest.raises(RuntimeError, match="tpm2_sign failed"):
        _tools_gated_sign(tools, ctx, b"\x00\x00\x00\x01" + data, tmp_path)
    tools.run("tpm2_pcrreset", "16")
    assert add("40 path pcrs=sha256:16") == gated  # the same platform state, the same key


def test_pcrs_needs_a_tpm(host_home: Path) -> None:
    with pytest.raises(OSError) as exc:
        add("32 path pcrs=sha256:16")
    assert exc.value.errno == errno.EOPNOTSUPP
    assert not (host_home / SEED_FILE).exists()


@pytest.mark.parametrize(
    "option", [b"pcrs=", b"pcrs=sha256", b"pcrs=md5:1", b"pcrs=sha256:24", b"pcrs=sha256:1,1", b"pcrs=sha256:",
               b"pcrs=sha256:0,1,2,3,4,5,6,7,8", b"pcrs=sha256:-1", b"pcrs=sha256:1 pcrs=sha256:2"],
)  # fmt: skip
def test_bad_pcrs_are_einval(option: bytes) -> None:
    with pytest.raises(OSError) as exc:
        parse_request(b"32 path " + option)
    assert exc.value.errno == errno.EINVAL


def test_pcrs_parse() -> None:
    req = parse_request(b"32 csum pcrs=sha256:7,0 uid=none")
    assert req.pcrs is not None and req.pcrs.text() == "sha256:0,7" and req.no_uid
