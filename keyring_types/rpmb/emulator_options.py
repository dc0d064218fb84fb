"""The emulated RPMB device's options, light enough for ``ktctl rpmb`` to build its parser
without loading the emulator (see :mod:`keyring_types.rpmb.emulator`)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["CHECK_ORDERS", "ECHO_MODES", "add_arguments"]

#: Write checks in the order each reference applies them (spec 1.10).  "key" and
#: "blocks" come first in both; rpmb_sim checks expiry before the block count and
#: reports a transfer running past the end as a write failure after the MAC.
CHECK_ORDERS = {
    "virtio": ("key", "blocks", "expired", "address", "mac", "counter"),
    "rpmb-sim": ("key", "expired", "blocks", "address-start", "mac", "counter", "address-end"),
}
ECHO_MODES = ("count", "zero", "host-endian")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The emulator's options (shared with ``ktctl rpmb emulate``)."""
    ap.add_argument("--socket", required=True, type=Path, help="Unix socket to listen on (created 0600)")
    ap.add_argument("--state", required=True, type=Path, help="state directory (created 0700): key, data, counter")
    ap.add_argument("--size-mult", type=int, default=2, help="RPMB_SIZE_MULT: capacity in 128 KiB units (1..128, default 2)")
    ap.add_argument("--max-write-blocks", type=int, default=32,
                    help="largest authenticated write in 256-byte blocks (even, 2..510; REL_WR_SEC_C x 2; default 32)")
    ap.add_argument("--max-read-blocks", type=int, default=0, help="largest authenticated read (0 = no limit but the transport's)")
    ap.add_argument("--rekey-result", choices=("general", "write"), default="general",
                    help="result for programming a key twice: general failure 0x01 (real eMMC) or write failure 0x05")
    ap.add_argument("--counter", choices=("per-write", "per-block"), default="per-write",
                    help="advance the write counter once per write (JEDEC) or once per block (OP-TEE's emulator)")
    ap.add_argument("--block-count-echo", choices=ECHO_MODES, default="count",
                    help="block count in write/read responses: N, 0, or N in host byte order (OP-TEE's emulator)")
    ap.add_argument("--check-order", choices=tuple(CHECK_ORDERS), default="virtio", help="order of the write checks")
    ap.add_argument("--crash-at", default=None, help=argparse.SUPPRESS)
