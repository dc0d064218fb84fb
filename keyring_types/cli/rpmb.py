"""``ktctl rpmb``: an RPMB partition from the command line.

``DEVICE`` is ``/dev/mmcblkNrpmb``, an NVMe controller ``/dev/nvmeN`` or the socket
of a running emulator (``ktctl rpmb emulate``).  The key comes from
``--key-file PATH`` (32 bytes; ``-`` is standard input, read into secret memory)
or ``--key-id SERIAL`` (a kernel key whose payload the caller may read; a
``logon`` key cannot be and says so).

Verbs: ``version``, ``caps``, ``program-key`` (needs ``--confirm``), ``counter``,
``write``, ``read``, ``submit`` (pre-signed frames in, response frames out),
``vendor`` (relay one signed vendor command packet to the emulated flash),
``emulate`` (an emulated device in the foreground), ``harness-env`` (the
``LD_PRELOAD`` environment for unmodified programs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from keyring_types.cli.family import fail, run_verb

PROG = "ktctl rpmb"


@contextlib.contextmanager
def _key(args: argparse.Namespace) -> Iterator[Any]:
    """The MAC key the options name, for the duration of the verb."""
    if args.key_id is not None:
        import keyring_types as kt

        yield kt.KernelKeyspace().key(args.key_id)
        return
    from keyring_types.cli.secret_input import read_secret

    if args.key_file == "-":
        with read_secret(0, 32, "RPMB key") as mv:
            yield mv
        return
    fd = os.open(args.key_file, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with read_secret(fd, 32, "RPMB key") as mv:
            yield mv
    finally:
        os.close(fd)


def _open(args: argparse.Namespace, readonly: bool = False) -> Any:
    from keyring_types.rpmb.device import RpmbDevice

    return RpmbDevice.open(args.device, readonly=readonly, timeout=args.timeout)


def _read_input(path: str | None) -> bytes:
    if path in (None, "-"):
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def _write_output(path: str | None, data: bytes) -> None:
    if path in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        with open(path, "wb") as f:
            f.write(data)


def _run(args: argparse.Namespace) -> int:
    verb = args.verb
    try:
        if verb == "harness-env":
            from keyring_types.rpmb.harness import harness_env

            for name, value in harness_env(args.socket, args.device).items():
                print(f"{name}={value}")
            return 0
        if verb == "emulate":
            from keyring_types.rpmb.emulator import run_from_args

            return run_from_args(args)
        if verb in ("version", "caps"):
            with _open(args, readonly=True) as dev:
                value = dev.version() if verb == "version" else dev.capabilities()
            import attrs

            fields = attrs.asdict(value)
            if args.json:
                print(json.dumps(fields))
            else:
                for k, v in fields.items():
                    print(f"{k}: {v}")
            return 0
        if (getattr(args, "key_file", None) == "-") and verb in ("write", "submit") and args.data in (None, "-"):
            print(f"{PROG} {verb}: the key and the data cannot both come from standard input", file=sys.stderr)
            return 2
        if verb == "program-key":
            if not args.confirm:
                print(f"{PROG} program-key: programming an RPMB key is irreversible: add --confirm", file=sys.stderr)
                return 1
            with _key(args) as key, _open(args) as dev:
                dev.program_key(key, confirm=True)
            return 0
        if verb == "counter":
            with _key(args) as key, _open(args, readonly=True) as dev:
                value = dev.counter(key)
            print(json.dumps({"counter": value}) if args.json else value)
            return 0
        if verb == "write":
            data = _read_input(args.data)
            with _key(args) as key, _open(args) as dev:
                counter = dev.write_blocks(args.address, data, key)
            print(json.dumps({"counter": counter}) if args.json else counter)
            return 0
        if verb == "read":
            with _key(args) as key, _open(args, readonly=True) as dev:
                data = dev.read_blocks(args.address, args.count, key)
            _write_output(args.out, data)
            return 0
        if verb == "vendor":
            from keyring_types.rpmb.transport import EmulatorTransport
            from keyring_types.rpmb.vendor import VendorRelay

            packet = _read_input(args.data)
            t = EmulatorTransport(args.device, readonly=args.readonly, timeout=args.timeout)
            try:
                resp = VendorRelay(t, writable=not args.readonly, audit=args.audit).relay(packet)
            finally:
                t.close()
            _write_output(args.out, resp)
            return 0
        if verb == "submit":
            frames = _read_input(args.data)
            with _open(args, readonly=args.readonly) as dev:
                resp = dev.submit(frames, response_frames=args.response_frames)
            _write_output(args.out, resp)
            return 0
    except OSError as exc:
        return fail(PROG, verb, exc)
    raise AssertionError(verb)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Talk to an RPMB partition (eMMC, NVMe, or the emulated one).")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    parser.set_defaults(run=_run)

    def device(p: argparse.ArgumentParser) -> None:
        p.add_argument("device", help="/dev/mmcblkNrpmb, /dev/nvmeN, or an emulator's socket")
        p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an emulator's answer")

    def key(p: argparse.ArgumentParser) -> None:
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--key-file", metavar="PATH", help="the 32-byte key (- for standard input)")
        g.add_argument("--key-id", type=int, metavar="SERIAL", help="a kernel key holding the 32-byte key")

    p = verbs.add_parser("version", help="client API version, transport, device revision")
    device(p)
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p = verbs.add_parser("caps", help="device type, capacity, largest write and read")
    device(p)
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p = verbs.add_parser("program-key", help="program the authentication key (once in the device's life)")
    device(p)
    key(p)
    p.add_argument("--confirm", action="store_true", help="confirm: this cannot be undone or repeated")
    p = verbs.add_parser("counter", help="print the write counter (response MAC checked)")
    device(p)
    key(p)
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p = verbs.add_parser("write", help="authenticated write of whole 256-byte blocks; prints the new counter")
    device(p)
    p.add_argument("address", type=int, help="first block (256-byte units)")
    key(p)
    p.add_argument("--data", metavar="PATH", help="the data (default: standard input)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p = verbs.add_parser("read", help="authenticated read; the data goes to standard output")
    device(p)
    p.add_argument("address", type=int, help="first block (256-byte units)")
    p.add_argument("count", type=int, help="number of blocks")
    key(p)
    p.add_argument("--out", metavar="PATH", help="write the data here instead of standard output")
    p = verbs.add_parser("submit", help="relay pre-signed request frames; response frames to standard output")
    device(p)
    p.add_argument("--data", metavar="PATH", help="the request frames (default: standard input)")
    p.add_argument("--response-frames", type=int, default=None, help="frames to read back for a data read")
    p.add_argument("--readonly", action="store_true", help="open the device read-only (write-class requests refused)")
    p.add_argument("--out", metavar="PATH", help="write the response frames here instead of standard output")
    p = verbs.add_parser("vendor", help="relay one signed vendor command packet (our own command set); response to stdout")
    device(p)
    p.add_argument("--audit", required=True, metavar="PATH", help="append one JSON audit record per command here")
    p.add_argument("--data", metavar="PATH", help="the signed packet (default: standard input)")
    p.add_argument("--readonly", action="store_true", help="read-only open: write-class commands are refused")
    p.add_argument("--out", metavar="PATH", help="write the response here instead of standard output")
    p = verbs.add_parser("emulate", help="run an emulated eMMC RPMB partition in the foreground")
    from keyring_types.rpmb.emulator_options import add_arguments

    add_arguments(p)
    p = verbs.add_parser("harness-env", help="print the LD_PRELOAD environment for unmodified programs")
    p.add_argument("--socket", required=True, help="the emulator's socket")
    p.add_argument("--device", required=True, help="the device path the program will open")
    return parser


def main(argv: Sequence[str]) -> int:
    """``ktctl rpmb VERB ...``; exit status 0, 1 (the call failed) or 2 (usage)."""
    return run_verb(_parser(), argv)
