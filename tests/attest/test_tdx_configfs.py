"""The emulated configfs-tsm tree as a TDX guest shows it (``--tdx``): ConfigfsTsm and the
``tsm`` key get TDX quotes through the mount, verifiable with the emulated TDX root only."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from configfs_mount import mounted

import keyring_types as kt
from keyring_types.attest import register_tsm_provider, tdx, unregister_tsm_provider
from keyring_types.attest.configfs import ConfigfsTsm
from keyring_types.attest.providers import EmulatedTdx


def test_a_tdx_guest_tree_answers_with_quotes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    guest = EmulatedTdx(state)
    with mounted(state, "--tdx") as m:
        entry = m.path / "r"
        entry.mkdir()
        assert sorted(os.listdir(entry)) == ["generation", "inblob", "outblob", "provider"]  # tdx_guest hides the rest
        assert (entry / "provider").read_text() == "tdx_guest\n"
        entry.rmdir()
        user = os.urandom(64)
        got = ConfigfsTsm(m.path).get_report(user)
        assert got.provider == "tdx_guest" and got.auxblob is None
        q = tdx.verify(got.outblob, roots=guest.root_pem())
        assert q.report_data == user
        guest.extend(0, b"\x01" * 48)  # the tree's guest shares the state: its next quote shows the extend
        q2 = tdx.verify(ConfigfsTsm(m.path).get_report(user).outblob, roots=guest.root_pem())
        assert q2.rtmrs[0] == guest.rtmrs()[0] != bytes(48)
        p = ConfigfsTsm(m.path)
        register_tsm_provider(p)
        try:
            key = kt.Keyspace().add_key("tsm", "att", f"auth {user.hex()}", "@s")
            _, desc, blob = key.read().split(b" ")
            assert desc == b"configfs-tsm"
            assert tdx.verify(bytes.fromhex(blob.decode()), roots=guest.root_pem()).report_data == user
            with pytest.raises(OSError) as e:
                kt.Keyspace().add_key("tsm", "att", f"auth {user.hex()} privlevel=1", "@s")
            assert e.value.errno == errno.EINVAL  # no privlevel attribute on a TDX guest
        finally:
            unregister_tsm_provider(p)
