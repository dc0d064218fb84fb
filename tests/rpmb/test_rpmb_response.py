"""``frames.Response``: the fields of the last frame from one unpack, frames and data on demand, read-only."""

from __future__ import annotations

import os

import pytest

from keyring_types.rpmb import frames as F

KEY = bytes(range(32))


def test_response_fields_frames_and_data() -> None:
    data = os.urandom(256 * 3)
    nonce = os.urandom(16)
    buf = F.read_response(KEY, data, nonce=nonce, address=5, result=0x80)
    r = F.check_read_response(KEY, buf, nonce=nonce, address=5, blocks=3)
    assert (r.req_resp, r.result, r.write_counter, r.address, r.block_count, r.nonce) == (0x0400, 0x80, 0, 5, 3, nonce)
    assert r.authenticated and r.expired
    assert r.data() == data
    assert [bytes(f.data) for f in r.frames] == [data[:256], data[256:512], data[512:]]
    assert r.raw is buf
    assert r == F.check_read_response(KEY, bytes(buf), nonce=nonce, address=5)
    assert "req_resp=0x0400" in repr(r) and "authenticated=True" in repr(r)
    with pytest.raises(AttributeError):
        r.address = 9  # type: ignore[misc]
    unauth = F.check_response(None, F.program_key_response(), expect=0x0100, authenticate=False)
    assert not unauth.authenticated and unauth.req_resp == 0x0100
