"""``ktctl`` on the store: keys persist across commands, sessions reach child processes, and ``trusted sources``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from asym_certs import ca_cert, leaf_cert

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), e.get("PYTHONPATH")) if p)
    e["KEYRING_TYPES_HOME"] = str(home)
    e["KEYRING_TYPES_STORE"] = str(tmp_path / "keys.db")
    e.pop("KTCTL_BACKEND", None)
    e.pop("KTCTL_SESSION", None)
    e.pop("KEYRING_TYPES_TPM2_TCTI", None)
    e["KEYRING_TYPES_TPM2_TCTI"] = "swtpm:host=127.0.0.1,port=9"  # no TPM: the store key is sealed by the host key
    return e


def ktctl(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "keyring_types", *args], env=env, input=stdin, capture_output=True, timeout=120, check=False
    )


def test_keys_in_the_user_keyring_outlive_the_command(env: dict[str, str]) -> None:
    added = ktctl(env, "padd", "user", "app:db", "@u", stdin=b"s3cret")
    assert added.returncode == 0, added.stderr
    serial = int(added.stdout)
    # A later command, another process: found through /proc/keys' view (@u is not searched from an anonymous session).
    assert ktctl(env, "print", "%user:app:db").stdout == b"s3cret\n"
    assert ktctl(env, "pipe", str(serial)).stdout == b"s3cret"
    uid, gid = os.geteuid(), os.getegid()
    assert ktctl(env, "rdescribe", str(serial)).stdout == f"user;{uid};{gid};3f010000;app:db\n".encode()
    assert ktctl(env, "rlist", "@u").stdout == f"{serial}\n".encode()
    # What an anonymous session holds ends with the command that made it.
    tmp = ktctl(env, "add", "user", "scratch", "x", "@s")
    gone = ktctl(env, "describe", tmp.stdout.decode().strip())
    assert (gone.returncode, gone.stderr) == (1, b"keyctl_describe_alloc: Required key not available\n")


def test_a_named_session_reaches_the_commands_below_it(env: dict[str, str]) -> None:
    ktctl_cmd = f"{sys.executable} -m keyring_types"
    script = (
        f"k=$({ktctl_cmd} add user tok t0k @s) && {ktctl_cmd} print $k && {ktctl_cmd} rdescribe @s && "
        f"{ktctl_cmd} request user tok >/dev/null && echo found"
    )
    run = ktctl(env, "session", "build-42", "sh", "-c", script)
    assert run.returncode == 0, run.stderr
    joined = run.stderr.decode().splitlines()[0]
    assert joined.startswith("Joined session keyring: ")
    serial = int(joined.rsplit(" ", 1)[1])
    uid, gid = os.geteuid(), os.getegid()
    assert run.stdout.decode().splitlines() == ["t0k", f"keyring;{uid};{gid};3f130000;build-42", "found"]
    # The session keyring is stored; its key is linked from it.
    listing = ktctl(env, "list", str(serial))
    assert b"user: tok" in listing.stdout, listing.stderr


def test_new_session_on_the_store_fails_honestly(env: dict[str, str]) -> None:
    run = ktctl(env, "new_session")
    assert (run.returncode, run.stderr) == (1, b"keyctl_session_to_parent: Operation not supported\n")


def test_trusted_sources(env: dict[str, str]) -> None:
    run = ktctl(env, "trusted", "sources", "--json")
    assert run.returncode == 0, run.stderr
    rows = {row["name"]: row for row in json.loads(run.stdout)}
    assert {"tpm2", "tee", "caam", "host"} <= set(rows)
    assert rows["caam"]["kind"] == "emulated" and rows["tee"]["kind"] == "emulated"
    assert rows["host"]["kind"] == "software" and rows["host"]["available"] is True
    assert rows["tpm2"]["available"] is False  # the TCTI names a closed port
    assert rows["tsm"]["kind"] == "hardware"  # a built-in, not a plugin: an SEV-SNP guest's firmware
    emulated = ktctl({**env, "KEYRING_TYPES_TSM_FIRMWARE": "emulated"}, "trusted", "sources", "--json")
    assert {row["name"]: row["kind"] for row in json.loads(emulated.stdout)}["tsm"] == "emulated"
    assert [name for name, row in rows.items() if row["default"]] == ["host"]
    text = ktctl(env, "trusted", "sources")
    assert b"* host" in text.stdout
    assert ktctl(env, "trusted").returncode == 2
    assert ktctl(env, "trusted", "sources", "--help").returncode == 0


def test_global_options_reach_a_family(env: dict[str, str], tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    run = ktctl(env, "--store", str(other), "trusted", "sources", "--json")
    assert run.returncode == 0, run.stderr
    # The option chose the store for keyctl verbs too: a key added there is in that file only.
    added = ktctl(env, "--store", str(other), "add", "user", "only-there", "x", "@u")
    assert added.returncode == 0, added.stderr
    assert other.exists()
    assert ktctl(env, "--store", str(other), "rlist", "@u").stdout.strip() == added.stdout.strip()
    assert ktctl(env, "rlist", "@u").stdout.strip() == b""
    bad = ktctl(env, "--store")
    assert (bad.returncode, bad.stderr) == (2, b"ktctl: --store needs a path\n")


def test_add_derived_through_ktctl(env: dict[str, str]) -> None:
    # Issue 17's `ktctl add derived`: the same program (this interpreter) and length give the same key.
    env = {**env, "KEYRING_TYPES_DERIVE_ROOT": "host"}
    first = ktctl(env, "add", "derived", "app", "32 path", "@u")
    assert first.returncode == 0, first.stderr
    key = ktctl(env, "pipe", first.stdout.decode().strip())
    assert key.returncode == 0 and len(key.stdout) == 32
    again = ktctl(env, "add", "derived", "app2", "32 path", "@u")
    assert ktctl(env, "pipe", again.stdout.decode().strip()).stdout == key.stdout
    bad = ktctl(env, "add", "derived", "app3", "0 path", "@u")
    assert (bad.returncode, bad.stderr) == (1, b"add_key: Invalid argument\n")


def test_a_restriction_outlives_the_command_that_made_it(env: dict[str, str]) -> None:
    ca = ktctl(env, "padd", "asymmetric", "", "@u", stdin=ca_cert())
    assert ca.returncode == 0, ca.stderr
    ca_serial = ca.stdout.decode().strip()
    ring = ktctl(env, "newring", "signed", "@u").stdout.decode().strip()
    locked = ktctl(env, "newring", "locked", "@u").stdout.decode().strip()
    assert ktctl(env, "restrict_keyring", ring, "asymmetric", f"key_or_keyring:{ca_serial}").returncode == 0
    assert ktctl(env, "restrict_keyring", locked).returncode == 0
    assert ktctl(env, "unlink", ca_serial, "@u").returncode == 0  # held by the restriction alone now
    # Each line below is a new process reading the restrictions back from the store.
    again = ktctl(env, "restrict_keyring", ring)
    assert (again.returncode, again.stderr) == (1, b"keyctl_restrict_keyring: File exists\n")
    refused = ktctl(env, "add", "user", "x", "y", locked)
    assert (refused.returncode, refused.stderr) == (1, b"add_key: Operation not permitted\n")
    user = ktctl(env, "add", "user", "u", "v", "@u").stdout.decode().strip()
    linked = ktctl(env, "link", user, locked)
    assert (linked.returncode, linked.stderr) == (1, b"keyctl_link: Operation not permitted\n")
    wrong_type = ktctl(env, "padd", "user", "u", ring, stdin=b"v")
    assert (wrong_type.returncode, wrong_type.stderr) == (1, b"add_key: Operation not supported\n")
    stranger = ktctl(env, "padd", "asymmetric", "", ring, stdin=leaf_cert("l2", "ca2"))
    assert (stranger.returncode, stranger.stderr) == (1, b"add_key: Required key not available\n")
    signed = ktctl(env, "padd", "asymmetric", "", ring, stdin=leaf_cert())
    assert signed.returncode == 0, signed.stderr
    assert ktctl(env, "rlist", ring).stdout.decode().split() == [signed.stdout.decode().strip()]
