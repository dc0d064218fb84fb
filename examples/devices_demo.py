#!/usr/bin/env python3
"""Keys bound to devices and to a confidential guest, all on emulated hardware.

* an RPMB partition (the emulated eMMC, in its own process): a key programmed
  once from a library key bound to ``rpmb``, an authenticated write and read;
* a ``tsm`` attestation key from the emulated SEV-SNP guest, with a verifier's
  nonce, checked by the same verifier that accepts AMD's reports;
* a ``derived`` key (the host root here; the TPM's owner hierarchy where there
  is one), and keys bound to one use refusing every other.

Run: ``python examples/devices_demo.py`` (``make demo`` runs it too).
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keyring_types as kt
from keyring_types.attest import register_tsm_provider, snp, unregister_tsm_provider
from keyring_types.attest.providers import EmulatedSevSnp
from keyring_types.integrations import fscrypt
from keyring_types.rpmb import RpmbDevice
from keyring_types.rpmb.emulator import spawn_emulator


def rpmb(ks: kt.Keyspace, work: Path) -> None:
    print("== RPMB on the emulated eMMC (its own process)")
    sock, state = work / "rpmb.sock", work / "rpmb-state"
    emulator = spawn_emulator(sock, state)
    try:
        key = ks.add_key("user", "rpmb:auth", os.urandom(32), "@s", usage="rpmb")
        with RpmbDevice.open(sock) as dev:
            print("capabilities ->", dev.capabilities())
            dev.program_key(key, confirm=True)       # once in the device's life
            try:
                dev.program_key(key, confirm=True)
            except OSError as exc:
                print("program the key again ->", errno.errorcode[exc.errno or 0])
            dev.write_blocks(0, b"boot counter: 7".ljust(256, b"\0"), key)
            print("counter after one write ->", dev.counter(key))
            print("read back ->", dev.read_blocks(0, 1, key)[:15])
            try:
                dev.read_blocks(0, 1, os.urandom(32))  # another key: the response MAC does not match
            except OSError as exc:
                print("read with the wrong key ->", errno.errorcode[exc.errno or 0])
    finally:
        emulator.terminate()
        emulator.wait()


def attestation(ks: kt.Keyspace) -> None:
    print("== a tsm key from the emulated SEV-SNP guest")
    guest = EmulatedSevSnp()
    register_tsm_provider(guest)
    try:
        nonce = os.urandom(32)  # the remote verifier's challenge
        key = ks.add_key("tsm", "attest", f"auth {b'tls-key-hash'.hex()} nonce={nonce.hex()}", "@s")
        _pub, desc, blob_hex = key.read().split(b" ")
        report = snp.verify(bytes.fromhex(blob_hex.decode()), cert=guest.vcek_der(), chain=guest.chain_pem(),
                            policy=snp.Policy(nonce=nonce, user_data=b"tls-key-hash"))
        print(f"{desc.decode()} report v{report.version}, signed by the {report.signing_key}: verified, nonce bound")
        try:
            snp.verify(bytes.fromhex(blob_hex.decode()), cert=guest.vcek_der())  # AMD's roots
        except OSError as exc:
            print("the same report against AMD's roots ->", errno.errorcode[exc.errno or 0])
    finally:
        unregister_tsm_provider(guest)


def derived_and_bound(ks: kt.Keyspace) -> None:
    print("== a derived key, and keys bound to one use")
    d = ks.add_key("derived", "app", "32 path", "@s")
    again = kt.Keyspace().add_key("derived", "app", "32 path", "@s")
    print("same program, same length -> same key:", d.read() == again.read())
    disk = ks.add_key("user", "fs:home", os.urandom(64), "@s", usage="fscrypt")
    with disk.secret(consumer="fscrypt") as raw:
        print("fscrypt identifier ->", fscrypt.identifier(raw).hex())
    for label, attempt in (("read()", disk.read), ("secret() as luks", lambda: disk.secret(consumer="luks").__enter__())):
        try:
            attempt()
        except OSError as exc:
            print(f"{label} of a key bound to fscrypt ->", errno.errorcode[exc.errno or 0])


def main() -> None:
    os.environ.setdefault("KEYRING_TYPES_DERIVE_ROOT", "host")
    # Under the state directory when one is set, so whoever cleans that up finds the emulator too.
    with tempfile.TemporaryDirectory(prefix="kt-demo-", dir=os.environ.get("KEYRING_TYPES_HOME")) as tmp:
        ks = kt.Keyspace()
        rpmb(ks, Path(tmp))
        print()
        attestation(ks)
        print()
        derived_and_bound(ks)


if __name__ == "__main__":
    main()
