"""A forked child of a process with a store-backed Keyspace uses the store on its own connection.

Secret memory reads as zeros in a forked child, so everything secret the parent
held (the host key its trust source cached, the store key, stored payloads) must
be loaded again from disk by the child, not used as inherited.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types.secret import SecretBuffer
from keyring_types.trust import registry
from keyring_types.trust.base import TrustedOptions

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _in_child(fn: object) -> int:
    """Run ``fn`` in a forked child; its exit code (0: it returned True)."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            code = 0 if fn() else 1  # type: ignore[operator]
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_host_source_used_before_fork_unseals_in_the_child(store: Path) -> None:
    source = registry.get_trust_source("host")
    secret = SecretBuffer.from_bytes(b"k" * 32)
    blob = source.seal(secret, TrustedOptions())  # caches the host key in this process

    def child() -> bool:
        return source.unseal(blob, TrustedOptions()).secret == b"k" * 32

    assert _in_child(child) == 0


def test_store_keyspace_keeps_working_in_a_forked_child(store: Path) -> None:
    ks = kt.Keyspace(store=store)
    ks.session.link(ks.user_keyring)
    k = ks.add_key("user", "before-fork", b"parent's", "@u")

    def child() -> bool:
        ok = ks.key(k.serial).read() == b"parent's"
        ks.add_key("user", "from-child", b"child's", "@u")
        return ok

    assert _in_child(child) == 0
    assert ks.request_key("user", "from-child").read() == b"child's"
    assert ks.key(k.serial).read() == b"parent's"
    assert ks.store is not None and ks.store.integrity_check() == "ok"
