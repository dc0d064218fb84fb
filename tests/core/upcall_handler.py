"""The request-key handler the upcall tests run on both sides.

In process it is registered with ``kt.register_request_key_handler``; on the
kernel ``/sbin/request-key`` runs it through
``keyring_types.integrations.request_key_program`` from a rule file the tests
install.  What it does is spelled in the callout info:

``inst:<data>``         instantiate with <data>, no extra link
``link:<data>``         instantiate and link into ``request.dest`` (by serial)
``linkspecial:<data>``  instantiate and link into "@s" (the requester's destination)
``iov:<a>,<b>,...``     instantiate_iov with the pieces
``neg:<t>``             negate for <t> seconds
``rej:<t>:<ERRNAME>``   reject with errno.<ERRNAME> for <t> seconds
``nothing``             return without building the key
``raise``               raise (a program exiting non-zero)
``probe``               instantiate with what the handler sees of its upcall
``slow:<data>``         wait half a second, then instantiate with <data> and a nonce
``nested:<desc>``       request user <desc> with "inst:inner", then instantiate with "outer"
``procview``            instantiate with the /proc/keys lines of the upcall's keys
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from keyring_types.core.request_key_handlers import UpcallRequest


def _errno_of(fn: object, *args: object) -> str:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "ok"


def handle(request: UpcallRequest) -> None:
    ks, key = request.keyspace, request.key
    verb, _sep, arg = request.callout_info.decode().partition(":")
    if verb == "inst":
        ks.instantiate(key, arg.encode(), 0)
    elif verb == "link":
        assert request.dest is not None
        ks.instantiate(key, arg.encode(), request.dest.serial)
    elif verb == "linkspecial":
        ks.instantiate(key, arg.encode(), "@s")
    elif verb == "iov":
        ks.instantiate_iov(key, [p.encode() for p in arg.split(",")], 0)
    elif verb == "neg":
        ks.negate(key, int(arg), 0)
    elif verb == "rej":
        timeout, _sep, name = arg.partition(":")
        ks.reject(key, int(timeout), getattr(errno, name), 0)
    elif verb == "nothing":
        return
    elif verb == "raise":
        raise RuntimeError("the handler refuses")
    elif verb == "probe":
        auth = ks.key("@a")
        type_name, _uid, _gid, perm, desc = auth.describe().split(";", 4)
        dest = ks.keyring(-8)
        facts = [
            f"auth={type_name};{perm};{desc == format(key.serial, 'x')}",
            f"callout={auth.read()!r}",
            f"dest={dest.serial == (request.dest.serial if request.dest else None)}",
            f"other-key={_errno_of(ks.instantiate, dest, b'x', 0)}",
            f"bad-error={_errno_of(ks.reject, key, 1, 0, 0)}",
            f"auth-self={_errno_of(ks.instantiate, auth, b'x', 0)}",
            f"dest-is-auth={_errno_of(ks.instantiate, key, b'x', '@a')}",
            f"search-auth={_errno_of(ks.session.search, '.request_key_auth', desc)}",
        ]
        ks.instantiate(key, ";".join(facts).encode(), 0)
        # The authority ended with the instantiation.
        facts_after = _errno_of(ks.instantiate, key, b"again", 0)
        assert facts_after == "EPERM", facts_after
    elif verb == "nested":
        # A handler asking for a key of its own: built by a second upcall, and put
        # where the original requester wanted its key.
        ks.request_key("user", arg, "inst:inner")
        ks.instantiate(key, b"outer", 0)
    elif verb == "procview":
        # How /proc/keys shows the key under construction, the authorisation key and
        # the handler's session keyring, with serials, pids and usage counts left out.
        lines = ks.proc_keys() if hasattr(ks, "proc_keys") else open("/proc/keys").read().splitlines()
        auth_serial = ks.key("@a").serial
        session = ks.keyring("@s")
        shown = []
        for serial in (key.serial, auth_serial, session.serial):
            cols = next(line for line in lines if line.startswith(f"{serial:08x} ")).split(None, 8)
            text = cols[8].replace(format(key.serial, "x"), "<k>").replace(str(key.serial), "<k>")
            text = " ".join(w for w in text.split() if not w.startswith("pid:"))
            shown.append(" ".join([cols[1], cols[3], cols[4], cols[7], text]))
        ks.instantiate(key, "\n".join(shown).encode(), 0)
    elif verb == "slow":
        time.sleep(0.5)
        ks.instantiate(key, f"{arg} {uuid.uuid4()}".encode(), 0)
    else:
        raise ValueError(f"unknown upcall test verb {verb!r}")


# -- installing a rule for the kernel's /sbin/request-key (used by the test modules) ----

RULE_DIR = Path("/etc/request-key.d")
REPO = Path(__file__).resolve().parents[2]


def write_program(directory: Path) -> Path:
    """An executable that runs request_key_program from this checkout (request-key clears the environment)."""
    prog = directory / "kt-request-key"
    prog.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from keyring_types.integrations.request_key_program import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    prog.chmod(0o755)
    return prog


def install_rules(lines: list[str]) -> Callable[[], None]:
    """Write ``lines`` to a new file in /etc/request-key.d; returns the function that removes it."""
    made_dir = not RULE_DIR.exists()
    RULE_DIR.mkdir(mode=0o755, exist_ok=True)
    path = RULE_DIR / f"kt-upcall-test-{os.getpid()}-{uuid.uuid4().hex[:8]}.conf"
    path.write_text("".join(line + "\n" for line in lines))

    def remove() -> None:
        path.unlink(missing_ok=True)
        if made_dir:
            with contextlib.suppress(OSError):
                RULE_DIR.rmdir()

    return remove
