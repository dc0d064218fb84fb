#!/usr/bin/env python3
"""The main walk-through (``make demo``): the key types on the embedded default
store (an in-process Keyspace) and trust source, then the same calls on the
real kernel keyring.

Each key type's own demo lives beside this file and is run from here.

Run: ``python examples/demo.py`` (what ``make demo`` runs).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import keyring_types as kt  # noqa: E402


def show(label: str, fn) -> None:  # type: ignore[no-untyped-def]
    """Run ``fn`` and print its result, or the errno it raised, the way keyctl would."""
    try:
        print(f"  {label:<44} -> {fn()!r}")
    except kt.KeyringError as exc:
        print(f"  {label:<44} -> {exc}")
    except OSError as exc:
        print(f"  {label:<44} -> [{errno.errorcode.get(exc.errno or 0, exc.errno)}] {exc.strerror}")


def walk(ks: kt.KeyspaceAPI, title: str) -> None:
    print(f"== {title}")
    k = ks.add_key("user", "demo:db", b"s3cret", "@s")
    show("add_key user demo:db @s", lambda: k.serial > 0)
    show("read", k.read)
    show("describe", k.describe)
    show("add_key again (updates in place)", lambda: ks.add_key("user", "demo:db", b"new", "@s") == k)
    show("read", k.read)
    show("update 4097 bytes (one page max)", lambda: k.update(b"x" * 4097))

    lk = ks.add_key("logon", "demo:pw", b"hunter2", "@s")
    show("logon read (never readable)", lk.read)
    show("logon without a prefix", lambda: ks.add_key("logon", "nocolon", b"x", "@s"))

    ring = ks.add_key("keyring", "demo-ring", None, "@s")
    ring.link(k)
    show("keyring keys()", lambda: [key.description for key in ring.keys()])
    show("search from @s (descends)", lambda: ks.session.search("user", "demo:db").serial == k.serial)
    show("link a keyring into itself", lambda: ring.link(ring))

    u = ks.add_key("user", "demo:in-user-ring", b"x", "@u")
    show("request_key of a key only in @u", lambda: ks.request_key("user", "demo:in-user-ring"))
    ks.session.link(ks.user_keyring)
    show("after linking @u into @s", lambda: ks.request_key("user", "demo:in-user-ring") == u)
    ks.session.unlink(ks.user_keyring)
    ks.user_keyring.unlink(u)

    k.set_perm(0)
    show("perm 0: even root cannot read", k.read)
    show("revoke the logon key", lk.revoke)
    show("read it now", lk.read)
    ring.clear()
    ring.invalidate()
    print()


def main() -> None:
    walk(kt.Keyspace(), "user, logon and keyring keys in an in-process Keyspace")
    try:
        kernel = kt.KernelKeyspace(new_session=True)
    except OSError as exc:
        print(f"== the kernel keyring is not reachable here ({exc.strerror}); skipping the kernel walk\n")
    else:
        walk(kernel, "the same calls on the real kernel keyring (a fresh session)")
    # The per-type walks are their own programs (each runnable alone); a failure stops the demo.
    for name in ("encrypted_demo.py", "trusted_demo.py", "devices_demo.py"):
        subprocess.run([sys.executable, str(HERE / name)], check=True)
        print()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
