"""Trusted and encrypted keys, as the kernel's EVM/IMA setup uses them.

1. A ``trusted`` key: 32 random bytes sealed by the default trust source
   (a TPM when one is reachable, else the host key in the state directory).
   ``read()`` gives the sealed blob — that is what you store on disk.
2. An ``encrypted`` key whose master is that trusted key (``trusted:kmk``).
3. "After a reboot": a fresh keyspace loads both blobs back and gets the same key.

Run: ``python examples/trusted_demo.py [source]`` (source: tpm2, tee, caam, host).
``KEYRING_TYPES_HOME`` chooses the state directory; ``KEYRING_TYPES_TPM2_TCTI`` the TPM.
With ``tpm2`` (the default where a TPM is reachable) the TPM needs a storage
primary at 0x81000001: docs/tpm2.md, "Starting swtpm", makes one on swtpm.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keyring_types as kt
from keyring_types.trust.registry import available_sources, default_source_name


def main(argv: list[str]) -> int:
    source = argv[1] if len(argv) > 1 else default_source_name()
    # The TPM needs a parent key; the kernel's convention is the SRK at 0x81000001.
    extra = " keyhandle=0x81000001" if source in ("tpm", "tpm2") else ""
    print(f"trust sources available here: {', '.join(available_sources())}; using: {source}")

    ks = kt.Keyspace()
    kmk = ks.add_key("trusted", "kmk", f"new 32 source={source}{extra}", "@s")
    kmk_blob = kmk.read().decode()
    print(f"trusted key {kmk.serial}: {kmk.describe()}")
    print(f"  sealed blob ({len(kmk_blob) // 2} bytes): {kmk_blob[:48]}...")

    evm = ks.add_key("encrypted", "evm", "new default trusted:kmk 32", "@s")
    evm_blob = evm.read().decode()
    print(f"encrypted key {evm.serial}: {evm.describe()}")
    print(f"  blob: {evm_blob[:60]}...")
    with evm.secret() as mv:
        original = bytes(mv)

    # A new keyspace stands for the next boot: only the two blobs survive.
    ks2 = kt.Keyspace()
    ks2.add_key("trusted", "kmk", f"load {kmk_blob} source={source}{extra}", "@s")
    evm2 = ks2.add_key("encrypted", "evm", f"load {evm_blob}", "@s")
    with evm2.secret() as mv:
        same = bytes(mv) == original
    print(f"reloaded from blobs: encrypted key {'matches' if same else 'DIFFERS'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
