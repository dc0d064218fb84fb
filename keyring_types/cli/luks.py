"""``ktctl luks``: LUKS2 headers whose volume key is a library key, through cryptsetup.

``format DEVICE --passphrase-file FILE``: the volume key comes on standard
input (e.g. ``ktctl pipe %user:vk | ktctl luks format ...``), the passphrase of
keyslot 0 from ``FILE`` (``/dev/fd/N`` or a process substitution does as well);
both are read into secret memory and reach cryptsetup through pipes only.
``token-add DEVICE DESCRIPTION``: a ``luks2-keyring`` token naming the kernel
``user`` key that holds the keyslot's passphrase; ``load-passphrase
DESCRIPTION`` puts that key into the kernel keyring from standard input.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from keyring_types.cli.family import fail, run_verb

PROG = "ktctl luks"
#: The largest volume key cryptsetup takes (--key-size 4096 bits).
_VOLUME_KEY_MAX = 512
#: cryptsetup's default key-file size limit (8 MiB).
_PASSPHRASE_MAX = 8 << 20


def _format(args: argparse.Namespace) -> int:
    from keyring_types.cli.secret_input import read_secret
    from keyring_types.integrations import luks

    try:
        fd = os.open(args.passphrase_file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        print(f"{PROG} format: cannot open the passphrase file: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        with (
            read_secret(sys.stdin.fileno(), _VOLUME_KEY_MAX, "volume key on standard input") as volume_key,
            read_secret(fd, _PASSPHRASE_MAX, "passphrase file") as passphrase,
        ):
            luks.format(
                args.device,
                volume_key,
                passphrase,
                cipher=args.cipher,
                pbkdf=args.pbkdf,
                iterations=args.iterations,
            )
    except OSError as exc:
        return fail(PROG, "format", exc)
    finally:
        os.close(fd)
    return 0


def _token_add(args: argparse.Namespace) -> int:
    from keyring_types.integrations import luks

    try:
        luks.add_keyring_token(args.device, args.description, args.key_slot, token_id=args.token_id)
    except OSError as exc:
        return fail(PROG, "token-add", exc)
    return 0


def _load_passphrase(args: argparse.Namespace) -> int:
    from keyring_types.cli.secret_input import read_secret
    from keyring_types.integrations import luks

    try:
        with read_secret(sys.stdin.fileno(), _PASSPHRASE_MAX, "passphrase on standard input") as passphrase:
            key = luks.load_passphrase(args.description, passphrase, args.keyring)
    except OSError as exc:
        return fail(PROG, "load-passphrase", exc)
    print(key.serial)
    return 0


def _parser() -> argparse.ArgumentParser:
    from keyring_types.integrations.luks import PBKDFS

    parser = argparse.ArgumentParser(prog=PROG, description="LUKS2 volumes keyed by library keys (through cryptsetup).")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("format", help="write a LUKS2 header; volume key on stdin (destroys what DEVICE holds)")
    p.add_argument("device")
    p.add_argument("--passphrase-file", required=True, metavar="FILE", help="keyslot 0's passphrase (the whole file)")
    p.add_argument("--cipher", help="a cryptsetup cipher (default: cryptsetup's, aes-xts-plain64)")
    p.add_argument("--pbkdf", choices=PBKDFS)
    p.add_argument("--iterations", type=int, help="--pbkdf-force-iterations (cheap values are for tests)")
    p.set_defaults(run=_format)

    p = verbs.add_parser("token-add", help="add a luks2-keyring token naming a kernel user key")
    p.add_argument("device")
    p.add_argument("description", help="the user key's description")
    p.add_argument("--key-slot", type=int, default=0)
    p.add_argument("--token-id", type=int)
    p.set_defaults(run=_token_add)

    p = verbs.add_parser("load-passphrase", help="put a passphrase (stdin) into the kernel keyring as a user key")
    p.add_argument("description")
    p.add_argument("--keyring", default="@s", help="where to link it (@s, @u, or a serial); default @s")
    p.set_defaults(run=_load_passphrase)
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``ktctl luks VERB ...``; 0 ok, 1 failed, 2 usage."""
    return run_verb(_parser(), argv)
