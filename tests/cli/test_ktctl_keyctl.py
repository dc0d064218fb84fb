"""``ktctl``'s keyctl verbs: byte-exact with /bin/keyctl on the kernel, and the same verbs on a Keyspace.

The comparison runs both programs in one fresh kernel session (``keyctl session
- sh script``), so they see the same keys and serials: every line of stdout,
stderr and the exit status must agree.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types.cli import keyctl_verbs
from keyring_types.cli.backend import Backend
from keyring_types.cli.keyctl_args import int32, strtoul
from keyring_types.cli.keyctl_output import hexdump

REPO = Path(__file__).resolve().parents[2]
KEYCTL = shutil.which("keyctl")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("KTCTL_SESSION", None)
    return env


def _ktctl(*args: str) -> str:
    return " ".join([shlex.quote(sys.executable), "-m", "keyring_types", "--kernel", *map(shlex.quote, args)])


# Commands run by both programs after the setup; $k/$r/$h/$e are keys made by the setup.
COMPARED: list[list[str]] = [
    ["show"],
    ["show", "-x"],
    ["show", "$r"],
    ["list", "@s"],
    ["list", "$r"],
    ["rlist", "@s"],
    ["rlist", "$e"],
    ["list", "$e"],
    ["describe", "$k"],
    ["describe", "@s"],
    ["rdescribe", "$k"],
    ["rdescribe", "$k", "@"],
    ["rdescribe", "$k", ""],
    ["read", "$k"],
    ["read", "$h"],
    ["read", "$e"],
    ["print", "$k"],
    ["print", "$h"],
    ["pipe", "$h"],
    ["id", "@s"],
    ["id", "%user:ktctl-a"],
    ["id", "%:ktctl-ring"],
    ["id", "%user:no-such-key"],
    ["id", "%user"],
    ["id", "%"],
    ["id", "@x"],
    ["id", "12abc"],
    ["id", "@t"],
    ["describe", "0"],
    ["describe", "0x7fffffff"],
    ["read", "99999999"],
    ["search", "@s", "user", "ktctl-a"],
    ["search", "@s", "user", "nope"],
    ["update", "$k", "new"],
    ["print", "$k"],
    ["update", "-x", "$k", "41 42 4"],
    ["update", "-x", "$k", "zz"],
    ["update", "-x", "$k", "414243"],
    ["print", "$k"],
    # A user key has no public-key operations (EOPNOTSUPP); asked here, while $k is
    # linked: once it is unlinked, whether the kernel still finds it depends on its GC.
    ["pkey_query", "$k", "0", "enc=pkcs1"],
    ["setperm", "$k", "0x3f3f0000"],
    ["setperm", "$k", "1x"],
    ["describe", "$k"],
    ["chown", "$k", "abc"],
    ["timeout", "$k", "x"],
    ["timeout", "$k", "1000"],
    ["add", "user"],
    ["add", "user", "", "x", "@s"],
    ["add", "nosuchtype", "d", "x", "@s"],
    ["newring", ".dot", "@s"],
    ["link", "$k", "$k"],
    ["unlink", "$k", "$e"],
    ["revoke", "$z"],
    ["describe", "$z"],
    ["read", "$z"],
    ["list", "@s"],
    ["unlink", "$k"],
    ["rlist", "@s"],
    ["purge", "user"],
    ["purge", "-p", "user", "ktctl-"],
    ["purge", "-i", "USER", "x"],
    ["purge", "-s", "user", "ktctl-h"],
    ["purge", "-x"],
    ["reap"],
    ["reap", "-v"],
    ["clear", "$r"],
    ["show"],
    ["invalidate", "$e"],
    ["describe", "$e"],
    ["supports"],
    ["supports", "move_key"],
    ["supports", "notify"],
    ["supports", "nosuch"],
    ["supports", "--raw"],
    ["pkey_query", "$a", "0", "enc=pkcs1", "hash=sha256"],
    ["pkey_query", "$a", "0"],
    ["pkey_query", "$a", "1"],
    ["pkey_query", "$a", "0", "nokeyval"],
    ["pkey_query", "$r", "0", "enc=pkcs1"],
    ["pkey_verify", "$a", "0", "$CERT.digest", "$CERT.sig", "enc=pkcs1", "hash=sha256"],
    ["pkey_verify", "$a", "0", "/nonexistent", "$CERT.sig"],
    ["pkey_sign", "$a", "0", "$CERT.digest", "enc=pkcs1", "hash=sha256"],
    ["restrict_keyring", "$e"],
    ["restrict_keyring", "$e"],
    ["add", "user", "x", "y", "$e"],
    ["watch"],
    ["watch", "-fz", "@s"],
    ["watch_add", "3", "@s"],
    ["nosuchverb"],
    [],
]

SETUP = """
k=$(keyctl add user ktctl-a hello @s)
h=$(keyctl add user ktctl-h "$(printf 'a\\tb')" @s)
z=$(keyctl add user ktctl-z zzz @s)
r=$(keyctl newring ktctl-ring @s)
e=$(keyctl newring ktctl-empty @s)
keyctl add user ktctl-in-ring inner $r >/dev/null
keyctl newring ktctl-sub $r >/dev/null
a=$(keyctl padd asymmetric '' @s < "$CERT")
head -c 32 /dev/zero > "$CERT.digest"
head -c 256 /dev/zero > "$CERT.sig"
"""


MAP = """
i=$(keyctl search $r user ktctl-in-ring)
echo "MAP s=$(keyctl id @s) k=$k h=$h z=$z r=$r e=$e a=$a in=$i sub=$(keyctl search $r keyring ktctl-sub)"
"""


def _run_in_session(prog: str, cert: Path) -> list[str]:
    """The blocks of output of COMPARED, run by ``prog``, with serials replaced by names."""
    import re

    assert KEYCTL is not None
    setup = (SETUP + MAP).replace("keyctl ", prog + " ")
    commands = "".join(
        f'echo "== {i}"; {prog} {" ".join(w if w.startswith("$") else shlex.quote(w) for w in cmd)} 2>&1; echo "rc=$?"\n'
        for i, cmd in enumerate(COMPARED)
    )
    proc = subprocess.run(
        [KEYCTL, "session", "-", "sh", "-c", setup + commands],
        env={**_env(), "CERT": str(cert)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    head, _, body = proc.stdout.partition("\n== ")
    names = dict(item.split("=", 1) for item in head.split("MAP ", 1)[1].split())
    for name, serial in sorted(names.items(), key=lambda kv: -len(kv[1])):
        number = int(serial)
        body = re.sub(rf"\b{number}\b", f"<{name}>", body)
        body = body.replace(f"0x{number:08x}", f"<{name}>")
    body = body.replace(str(cert), "<cert>")
    # %9d/%10d pad serials: a serial with fewer digits in one run is not a difference.
    body = re.sub(r" *<(\w+)>", r"<\1>", body)
    return ("== " + body).split("== ")[1:]


@pytest.mark.kernel
def test_kernel_backend_is_byte_exact_with_keyctl(need_kernel_keyring: None, tmp_path: Path) -> None:
    from conftest import require

    require(KEYCTL is not None, "keyctl (Debian package keyutils)")
    cert = tmp_path / "cert.der"
    cert.write_bytes(_certificate())
    # Each program in its own fresh session, stdout and stderr in one pipe as the suite's logs have them.
    real = _run_in_session("keyctl", cert)
    ours = _run_in_session(_ktctl(), cert)
    assert len(real) == len(COMPARED)
    mismatches = [(COMPARED[i], r, o) for i, (r, o) in enumerate(zip(real, ours, strict=True)) if r != o]
    shown = "\n".join(f"{cmd}:\nkeyctl:\n{r}\nktctl:\n{o}" for cmd, r, o in mismatches[:6])
    assert not mismatches, f"{[m[0] for m in mismatches]}\n{shown}"


def _certificate() -> bytes:
    """A self-signed RSA-2048 X.509 certificate (DER) the kernel's asymmetric type loads."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "ktctl"), x509.NameAttribute(x509.NameOID.COMMON_NAME, "test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2040, 1, 1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _store(ks: kt.Keyspace, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = keyctl_verbs.run(list(argv), Backend.on(ks))
    out, err = capsys.readouterr()
    return status, out, err


def test_verbs_on_a_keyspace(capfd: pytest.CaptureFixture[str]) -> None:
    ks = kt.Keyspace()
    status, out, _ = _store(ks, "add", "user", "app:db", "s3cret", "@s", capsys=capfd)
    assert status == 0
    serial = int(out)
    assert ks.key(serial).read() == b"s3cret"
    assert _store(ks, "print", str(serial), capsys=capfd) == (0, "s3cret\n", "")
    status, out, _ = _store(ks, "read", str(serial), capsys=capfd)
    assert out == "6 bytes of data in key:\n" + hexdump(b"s3cret")
    status, out, _ = _store(ks, "rdesc", str(serial), capsys=capfd)  # a unique prefix
    uid, gid = os.geteuid(), os.getegid()
    assert out == f"user;{uid};{gid};3f010000;app:db\n"
    status, out, _ = _store(ks, "id", "%user:app:db", capsys=capfd)
    assert (status, out) == (0, f"{serial}\n")
    status, out, _ = _store(ks, "newring", "inner", "@s", capsys=capfd)
    ring = int(out)
    assert _store(ks, "link", str(serial), str(ring), capsys=capfd)[0] == 0
    status, out, _ = _store(ks, "rlist", str(ring), capsys=capfd)
    assert out == f"{serial}\n"
    status, out, _ = _store(ks, "list", str(ring), capsys=capfd)
    assert out == f"1 key in keyring:\n{serial:9d}: --alswrv {uid:5d} {gid:5d} user: app:db\n"
    status, out, _ = _store(ks, "describe", str(serial), capsys=capfd)
    assert out == f"{serial:9d}: alswrv-----v------------ {uid:5d} {gid:5d} user: app:db\n"
    assert _store(ks, "revoke", str(serial), capsys=capfd)[0] == 0
    assert _store(ks, "print", str(serial), capsys=capfd) == (1, "", "keyctl_read_alloc: Key has been revoked\n")
    status, out, _err = _store(ks, "unlink", str(serial), capsys=capfd)
    assert (status, out) == (0, "2 links removed\n")


def test_usage_errors_and_prefixes(capfd: pytest.CaptureFixture[str]) -> None:
    ks = kt.Keyspace()
    status, _, err = _store(ks, "rea", capsys=capfd)  # read, reap: ambiguous
    assert (status, err) == (2, "Ambiguous command\n")
    status, _, err = _store(ks, "nosuch", capsys=capfd)
    assert (status, err) == (2, "Unknown command\n")
    status, _, err = _store(ks, "read", capsys=capfd)
    assert status == 2 and err.startswith("Format:\n  keyctl --version \n  keyctl add [-x]")
    status, _, err = _store(ks, "read", "@x", capsys=capfd)
    assert (status, err) == (2, "Unknown special key: '@x'\n")
    status, _, err = _store(ks, "read", "%nocolon", capsys=capfd)
    assert (status, err) == (2, "Incorrect key-by-name spec\n")
    status, out, _ = _store(ks, "read", "--help", capsys=capfd)
    assert (status, out) == (0, "usage: ktctl read <key>\n")
    assert keyctl_verbs.find_command("dh_compute") is keyctl_verbs.v_dh_compute  # exact beats prefix
    assert keyctl_verbs.find_command("watch") is keyctl_verbs.v_watch
    assert keyctl_verbs.find_command("inv") is keyctl_verbs.v_invalidate


def test_strtoul_is_c_strtoul() -> None:
    assert strtoul("0x1f") == (31, "")
    assert strtoul("017") == (15, "")
    assert strtoul("") == (0, "")
    assert strtoul("  -1") == ((1 << 64) - 1, "")
    assert int32(strtoul("-1")[0]) == -1
    assert int32(strtoul("4294967293")[0]) == -3
    assert strtoul("12abc") == (12, "abc")
    assert strtoul("0x") == (0, "x")
    assert strtoul("99999999999999999999999") == ((1 << 64) - 1, "")
    assert strtoul("08", 10) == (8, "")
    assert strtoul("08") == (0, "8")


def test_tree_walkers_on_a_keyspace(capfd: pytest.CaptureFixture[str]) -> None:
    ks = kt.Keyspace()
    ring = ks.add_key("keyring", "outer", None, "@s")
    inner = ks.add_key("keyring", "inner", None, ring)
    a = ks.add_key("user", "app:a", b"1", inner)
    b = ks.add_key("user", "App:B", b"2", "@s")
    ks.add_key("logon", "app:c", b"3", ring)
    status, out, _ = _store(ks, "show", capsys=capfd)
    # The drawing keyctl makes of this tree (checked against /bin/keyctl on the kernel).
    assert [line[34:] for line in out.splitlines()[1:]] == [
        "keyring: _ses",
        " \\_ keyring: outer",
        " |   \\_ keyring: inner",
        " |   |   \\_ user: app:a",
        " |   \\_ logon: app:c",
        " \\_ user: App:B",
    ]
    assert out.splitlines()[5].split()[1:4] == ["--alsw-v", str(os.geteuid()), str(os.getegid())]  # logon: no read
    status, out, _ = _store(ks, "purge", "-p", "-i", "user", "APP:", capsys=capfd)
    assert (status, sorted(out.splitlines())) == (0, sorted(["user 'app:a'", "user 'App:B'", "purged 2 keys"]))
    assert a not in inner.keys() and b not in ks.session.keys()
    c = ks.add_key("user", "dead", b"x", ring)
    c.revoke()
    status, out, _ = _store(ks, "reap", "-v", capsys=capfd)
    assert (status, out) == (0, f"Reap {c.serial}\n1 keys reaped\n")
