"""Regression found in review: the SEV-SNP firmware's derived key (SNP_GET_DERIVED_KEY) and
the AES key the ``tsm`` trust source makes from it stay in secret memory: the emulated
firmware and ``/dev/sev-guest`` hand back a SecretBuffer, and nothing on the way to the AEAD
leaves a ``bytes`` copy behind.  The emulated keys are the same as before."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import hmac
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from keyring_types.attest import sevguest
from keyring_types.attest.providers import EmulatedSevSnp
from keyring_types.secret import SecretBuffer

ROOT = Path(__file__).resolve().parents[2]


def _reference(chip: bytes, g: EmulatedSevSnp, req: sevguest.DerivedKeyRequest) -> bytes:
    """The emulated KDF as first published (Python's hmac), to prove the keys did not change."""
    c = g.config
    key_sel = req.key_sel if req.key_sel != "default" else c.signing_key
    root = hmac.new(chip, f"emulated-sev-snp {req.root} root {key_sel}".encode(), hashlib.sha384).digest()
    if req.root == "vmrk":
        root = hmac.new(root, c.measurement + c.host_data, hashlib.sha384).digest()
    mixed = [req.pack(), struct.pack("<I", req.vmpl)]
    for bit, value in (
        (sevguest.FIELDS["policy"], struct.pack("<Q", c.policy)),
        (sevguest.FIELDS["image_id"], c.image_id),
        (sevguest.FIELDS["family_id"], c.family_id),
        (sevguest.FIELDS["measurement"], c.measurement),
        (sevguest.FIELDS["guest_svn"], struct.pack("<I", req.guest_svn)),
        (sevguest.FIELDS["tcb"], struct.pack("<Q", req.tcb_version)),
        (sevguest.FIELDS["launch_mit_vector"], bytes(8)),
    ):
        if req.fields & bit:
            mixed.append(value)
    return hmac.new(root, b"".join(mixed), hashlib.sha384).digest()[:32]


@pytest.mark.parametrize("root", ["vcek", "vmrk"])
@pytest.mark.parametrize("fields", ["measurement,policy,guest_svn,tcb", "none", "image_id,family_id,launch_mit_vector"])
def test_the_emulated_derived_key_is_a_secret_buffer_with_the_same_value(tmp_path: Path, root: str, fields: str) -> None:
    g = EmulatedSevSnp(tmp_path / "guest", measurement=bytes(range(48)), guest_svn=3)
    svn, tcb = g.current_versions()
    req = sevguest.DerivedKeyRequest(fields=sevguest.parse_fields(fields), root=root, guest_svn=svn, tcb_version=tcb, vmpl=1)
    key = g.derived_key(req)
    assert isinstance(key, SecretBuffer)
    chip = (tmp_path / "guest" / "chip.secret").read_bytes()
    with key._reading() as mv:
        assert bytes(mv) == _reference(chip, g, req)
    key.wipe()


def test_sev_guest_device_returns_the_key_in_secret_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    buffers: list[Any] = []
    real_buffer = ctypes.create_string_buffer

    def keep(*args: Any) -> Any:
        buf = real_buffer(*args)
        buffers.append(buf)  # kept alive, to look at after the call
        return buf

    def fake_ioctl(fd: int, nr: int, arg: bytearray, mutate: bool) -> int:
        assert nr == sevguest.SNP_GET_DERIVED_KEY
        _, _, resp_addr, _ = struct.unpack("<B7xQQQ", bytes(arg))
        ctypes.memmove(resp_addr + 0x20, b"\x42" * 32, 32)  # STATUS 0, the key at 0x20
        return 0

    node = tmp_path / "sev-guest"
    node.write_bytes(b"")
    monkeypatch.setattr(sevguest.fcntl, "ioctl", fake_ioctl)
    monkeypatch.setattr(ctypes, "create_string_buffer", keep)
    key = sevguest.SevGuestDevice(str(node)).derived_key(sevguest.DerivedKeyRequest(fields=0))
    monkeypatch.undo()
    assert isinstance(key, SecretBuffer)
    assert key == b"\x42" * 32
    # The firmware's response buffer is zeroed once the key is out of it.
    assert buffers and all(b"\x42" * 32 not in bytes(b) for b in buffers)
    key.wipe()


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from memscan import Needle
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from keyring_types.attest import sevguest
    from keyring_types.attest.providers import EmulatedSevSnp
    from keyring_types.secret import SecretBuffer
    from keyring_types.trust.base import TrustedOptions
    from keyring_types.trust.tsm import DEFAULT_FIELDS, TsmSource

    fw = EmulatedSevSnp(sys.argv[2], measurement=bytes(range(48)))
    svn, tcb = fw.current_versions()
    req = sevguest.DerivedKeyRequest(fields=sevguest.parse_fields(DEFAULT_FIELDS), guest_svn=svn, tcb_version=tcb)
    derived = fw.derived_key(req)
    dv = memoryview(derived.view() if isinstance(derived, SecretBuffer) else derived)
    key_needle = Needle(copy_of=dv)
    aes_needle = Needle(32)
    HKDF(hashes.SHA256(), 32, None, b"keyring_types tsm seal v1\\0" + bytes([0])).derive_into(dv, memoryview(aes_needle._map)[:32])
    aes_needle.needle = memoryview(aes_needle._map)[:32]
    dv.release()
    if isinstance(derived, SecretBuffer):
        derived.wipe()

    source = TsmSource(fw)
    secret = SecretBuffer(32)
    blob = source.seal(secret, TrustedOptions())
    source.unseal(blob, TrustedOptions()).secret.wipe()
    del source
    for what, n in (("derived", key_needle), ("aes", aes_needle)):
        for place in n.leftovers():
            print(what, place)
    print("done")
    """
)


def test_sealing_leaves_no_derived_or_aes_key_behind(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "tests"), str(tmp_path / "guest")],
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                       capture_output=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode().splitlines()
    assert out == ["done"], f"key copies left in memory: {out[:-1]}"


def test_hmac_sha384_into() -> None:
    from conftest import errno_of

    from keyring_types.hmac import hmac_sha384_into

    out = bytearray(50)
    hmac_sha384_into(b"k" * 100, b"message", out)  # a key longer than the block is hashed first
    assert bytes(out[:48]) == hmac.new(b"k" * 100, b"message", hashlib.sha384).digest() and out[48:] == bytes(2)
    assert errno_of(hmac_sha384_into, b"k", b"m", bytearray(47)) == errno.EINVAL
    assert errno_of(hmac_sha384_into, b"k", b"m", bytes(48)) == errno.EINVAL  # read-only


def test_a_forked_child_derives_the_same_key(tmp_path: Path) -> None:
    g = EmulatedSevSnp(tmp_path / "guest")
    req = sevguest.DerivedKeyRequest(fields=sevguest.parse_fields("measurement"))
    key = g.derived_key(req)  # the chip secret is now cached in secret memory: zeros in a child
    expected = key.tobytes()  # a plain copy, which a child inherits as it is
    key.wipe()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, whatever happens
        code = 1
        try:
            os.close(r)
            os.write(w, b"same" if g.derived_key(req) == expected else b"diff")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        got = os.read(r, 4)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    assert status == 0 and got == b"same"
