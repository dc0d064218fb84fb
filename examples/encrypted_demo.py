#!/usr/bin/env python3
"""Encrypted keys: make one, export it, load it back, re-wrap it, and (where the
kernel has the ``encrypted`` type) move it between this library and the kernel.

Run: ``python examples/encrypted_demo.py`` (``make demo`` runs it too).
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keyring_types as kt
from keyring_types.types.encrypted import ecryptfs_auth_token


def short(blob: bytes, keep: int = 60) -> str:
    text = blob.decode()
    return text if len(text) <= keep else f"{text[:keep]}… ({len(blob)} bytes)"


def in_process() -> None:
    print("== encrypted keys in an in-process Keyspace")
    ks = kt.Keyspace()
    ks.add_key("user", "kmk", os.urandom(32), "@s")  # the master key
    evm = ks.add_key("encrypted", "evm", "new default user:kmk 32", "@s")
    blob = evm.read()
    print("new  ->", short(blob))
    print("describe ->", evm.describe())

    # The blob is all that needs storing: load it back as another key.
    copy = ks.add_key("encrypted", "evm-copy", b"load " + blob, "@s")
    with evm.secret() as a, copy.secret() as b:
        print("load -> same 32 secret bytes:", bytes(a) == bytes(b))

    # Re-wrap under another master: the IV and the data stay, the blob changes.
    ks.add_key("user", "kmk2", os.urandom(48), "@s")
    copy.update("update user:kmk2")
    print("update user:kmk2 ->", short(copy.read()))

    # A flipped bit anywhere in IV, ciphertext or MAC is refused, and nothing is made.
    head, hexpart = blob.rsplit(b" ", 1)
    bad = head + b" " + hexpart[:40] + (b"0" if hexpart[40:41] != b"0" else b"1") + hexpart[41:]
    try:
        ks.add_key("encrypted", "evm-bad", b"load " + bad, "@s")
    except OSError as exc:
        print("tampered load ->", errno.errorcode[exc.errno or 0])

    # eCryptfs: a 16-hex-digit description; the 64-byte key goes to eCryptfs inside an auth token.
    ecr = ks.add_key("encrypted", "1000100010001000", "new ecryptfs user:kmk 64", "@s")
    tok = ecryptfs_auth_token(ecr)
    with ecr.secret() as mv:
        print(f"ecryptfs -> {short(ecr.read(), 40)}; {len(mv)}-byte key, {len(tok)}-byte auth token")
    tok.wipe()

    # The master is needed on every read.
    ks.request_key("user", "kmk").revoke()
    try:
        evm.read()
    except OSError as exc:
        print("read after revoking the master ->", errno.errorcode[exc.errno or 0])


def with_kernel() -> None:
    print("== the same blob in the kernel")
    try:
        kk = kt.KernelKeyspace(new_session=True)
        master = os.urandom(32)
        kk.add_key("user", "kmk", master, "@s")
        theirs = kk.add_key("encrypted", "evm", "new user:kmk 32", "@s")
    except OSError as exc:
        print("kernel keyring or its encrypted type unavailable here:", exc)
        return
    ks = kt.Keyspace()
    ks.add_key("user", "kmk", master, "@s")
    blob = theirs.read()
    ours = ks.add_key("encrypted", "evm", b"load " + blob, "@s")
    print("kernel blob loaded here, re-exported byte for byte:", ours.read() == blob)
    made_here = ks.add_key("encrypted", "evm2", "new enc32 user:kmk 32", "@s").read()
    back = kk.add_key("encrypted", "evm2", b"load " + made_here, "@s")
    print("our blob loaded by the kernel, re-exported byte for byte:", back.read() == made_here)


def main() -> None:
    in_process()
    with_kernel()


if __name__ == "__main__":
    main()
