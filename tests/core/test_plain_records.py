"""The core's records written as plain slotted classes (for ktctl's start-up).

They replaced attrs classes (docs/performance.md, "ktctl start-up"), so these
tests pin what callers relied on: value equality and hashing of the immutable
ones, immutability, keyword construction, validation, pickling, slots; and that
a one-shot ``ktctl`` command on the store that reads no payload never imports attrs.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types.core.cred import Cred
from keyring_types.core.quota import KeyUser, QuotaLimits
from keyring_types.core.record import KeyRecord
from keyring_types.core.restrict import KeyRestriction, restrict_link_reject
from keyring_types.core.search import EAGAIN, SearchContext
from keyring_types.core.watch import Notification

ROOT = Path(kt.__file__).resolve().parents[1]


def test_cred_is_a_value() -> None:
    a = Cred(1000, 100, [5, 6, 5])
    assert a == Cred(1000, 100, {6, 5}) and hash(a) == hash(Cred(1000, 100, (5, 6)))
    assert a != Cred(1000, 101, [5, 6]) and a != Cred(1000, 100)
    assert a.groups == frozenset({5, 6}) and Cred(0, 0).groups == frozenset()
    assert {a: 1}[Cred(1000, 100, [6, 5])] == 1
    assert pickle.loads(pickle.dumps(a)) == a
    assert repr(Cred(1, 2)) == "Cred(uid=1, gid=2, groups=frozenset())"
    with pytest.raises(AttributeError):
        a.uid = 0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del a.gid  # type: ignore[misc]
    for uid, gid in ((-1, 0), (0, -1)):
        with pytest.raises(ValueError, match="must be >= 0"):
            Cred(uid, gid)


def test_quota_limits_is_a_value_with_the_kernel_defaults() -> None:
    d = QuotaLimits()
    assert (d.maxkeys, d.maxbytes, d.root_maxkeys, d.root_maxbytes) == (
        kt.KEY_QUOTA_MAXKEYS, kt.KEY_QUOTA_MAXBYTES, kt.KEY_QUOTA_ROOT_MAXKEYS, kt.KEY_QUOTA_ROOT_MAXBYTES,
    )
    q = QuotaLimits(maxbytes=12)
    assert q == QuotaLimits(kt.KEY_QUOTA_MAXKEYS, 12) and hash(q) == hash(QuotaLimits(maxbytes=12)) and q != d
    assert q.for_uid(0) == (d.root_maxkeys, d.root_maxbytes) and q.for_uid(7) == (d.maxkeys, 12)
    assert pickle.loads(pickle.dumps(q)) == q
    assert "maxbytes=12" in repr(q)
    with pytest.raises(AttributeError):
        q.maxkeys = 1  # type: ignore[misc]


def test_key_user_resolves_its_limits_and_has_slots() -> None:
    u = KeyUser(0, QuotaLimits(root_maxkeys=3, root_maxbytes=4))
    assert (u.maxkeys, u.maxbytes, u.qnkeys, u.qnbytes, u.world) == (3, 4, 0, 0, None)
    u.charge_new_key(4)
    with pytest.raises(OSError) as e:
        u.charge_new_key(1)
    assert e.value.errno == 122  # EDQUOT
    with pytest.raises(AttributeError):
        u.other = 1  # type: ignore[attr-defined]


def test_key_record_defaults_and_identity() -> None:
    user = KeyUser(5, QuotaLimits())
    r = KeyRecord(7, kt.lookup_key_type("user"), "d", 5, 5, 0x3F010000, user)
    assert (r.payload, r.datalen, r.in_quota, r.instantiated, r.links, r.parents, r.index_key, r.upcall) == (
        None, 0, True, False, None, {}, ("", ""), 0,
    )
    other = KeyRecord(7, kt.lookup_key_type("user"), "d", 5, 5, 0x3F010000, user)
    assert r != other and r.parents is not other.parents  # identity equality, a dict each
    assert repr(r) == "<KeyRecord 7 user:'d'>"
    with pytest.raises(AttributeError):
        r.colour = "red"  # type: ignore[attr-defined]


def test_search_context_and_restriction() -> None:
    ctx = SearchContext(("user", "x"), Cred(0, 0), 5, possessed=True)
    assert (ctx.err, ctx.state_check, ctx.check_perm, ctx.possessed, ctx.iterate, ctx.match) == (EAGAIN, True, True, True, False, None)
    res = KeyRestriction(restrict_link_reject)
    assert res.key is None and res.keytype is None and "restrict_link_reject" in repr(res)
    with pytest.raises(AttributeError):
        res.key = None  # type: ignore[misc]


def test_notification_is_a_value() -> None:
    n = Notification(1, 2, 3, 4, 5, b"raw")
    assert n == Notification(1, 2, 3, 4, 5, b"raw") and hash(n) == hash(Notification(1, 2, 3, 4, 5, b"raw"))
    assert n != Notification(1, 2, 3, 4, 6, b"raw")
    assert pickle.loads(pickle.dumps(n)) == n
    assert repr(n).startswith("Notification(type=1, subtype=2, watch_id=3, key_id=4, aux=5")
    with pytest.raises(AttributeError):
        n.aux = 0  # type: ignore[misc]


def test_a_one_shot_ktctl_command_on_the_store_does_not_import_attrs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("KTCTL_BACKEND", "KTCTL_SESSION")}
    env.update(KEYRING_TYPES_HOME=str(home), KEYRING_TYPES_STORE=str(home / "keys.db"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    # The module list is printed at exit, after the verb ran (console_main exits the process).
    script = textwrap.dedent(
        """
        import atexit, json, sys
        atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules))))
        from keyring_types.cli import console_main
        console_main()
        """
    )

    def ktctl(*argv: str) -> list[str]:
        proc = subprocess.run([sys.executable, "-c", script, *argv], env=env, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        line = [x for x in proc.stdout.splitlines() if x.startswith("MODULES ")][-1]
        loaded: list[str] = json.loads(line[len("MODULES "):])
        return loaded

    ktctl("add", "user", "probe", "x", "@u")  # makes the store (@s, asked to create, would be a new anonymous session)
    # Verbs that touch no payload (reading one unseals the store key: trust source, crypto).
    for argv in (("rdescribe", "@s"), ("describe", "%user:probe"), ("show", "@s")):
        loaded = ktctl(*argv)
        assert "keyring_types.store.world" in loaded and "keyring_types.core.keyspace" in loaded
        assert [m for m in loaded if m in ("attr", "attrs") or m.startswith(("attr.", "attrs."))] == []
