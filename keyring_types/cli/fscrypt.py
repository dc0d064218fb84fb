"""``ktctl fscrypt``: fscryptctl's operations, fed from library keys.

Verbs (fscryptctl's, with hyphens): ``identifier``, ``add-key``,
``set-policy``, ``get-policy``, ``status``, ``remove-key``.  A key comes, as
with fscryptctl, as raw bytes on standard input (read into secret memory), or
by ``--key-id`` as the serial of a kernel ``fscrypt-provisioning`` key, which
the kernel reads itself.  Identifiers are 32 hex digits.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from keyring_types.cli.family import fail, run_verb

PROG = "ktctl fscrypt"
#: The largest raw key (FSCRYPT_MAX_KEY_SIZE); the size check itself is the library's.
_STDIN_MAX = 64


def _stdin_key() -> AbstractContextManager[memoryview]:
    """The raw key on standard input, read straight into secret memory."""
    from keyring_types.cli.secret_input import read_secret

    return read_secret(sys.stdin.fileno(), _STDIN_MAX, "raw key on standard input")


def _identifier_arg(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a key identifier is 32 hex digits") from None
    if len(value) != 16:
        raise argparse.ArgumentTypeError("a key identifier is 32 hex digits")
    return value


def _identifier(args: argparse.Namespace) -> int:
    from keyring_types.integrations import fscrypt

    try:
        with _stdin_key() as raw:
            value = fscrypt.descriptor(raw) if args.v1 else fscrypt.identifier(raw)
    except OSError as exc:
        return fail(PROG, "identifier", exc)
    print(value.hex())
    return 0


def _add_key(args: argparse.Namespace) -> int:
    from keyring_types.integrations import fscrypt

    try:
        if args.key_id is not None:
            ident = fscrypt.add_key(args.mountpoint, args.key_id)
        else:
            with _stdin_key() as raw:
                ident = fscrypt.add_raw_key(args.mountpoint, raw)
    except OSError as exc:
        return fail(PROG, "add-key", exc)
    print(ident.hex())
    return 0


def _set_policy(args: argparse.Namespace) -> int:
    from keyring_types.integrations import fscrypt

    try:
        fscrypt.set_policy(args.directory, args.identifier, args.contents, args.filenames, args.padding)
    except OSError as exc:
        return fail(PROG, "set-policy", exc)
    return 0


def _get_policy(args: argparse.Namespace) -> int:
    from keyring_types.integrations import fscrypt

    try:
        policy = fscrypt.get_policy(args.path)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            print(f"{PROG} get-policy: {args.path} is not encrypted", file=sys.stderr)
            return 1
        return fail(PROG, "get-policy", exc)
    fields: dict[str, Any] = {
        "version": policy.version,
        "key": policy.key.hex(),
        "contents": policy.contents,
        "filenames": policy.filenames,
        "padding": policy.padding,
        "flags": policy.flags,
    }
    if args.json:
        print(json.dumps(fields))
        return 0
    label = "Master key identifier" if policy.version == 2 else "Master key descriptor"
    print(f"Encryption policy for {args.path}:")
    print(f"\tPolicy version: {policy.version}")
    print(f"\t{label}: {fields['key']}")
    print(f"\tContents encryption mode: {policy.contents}")
    print(f"\tFilenames encryption mode: {policy.filenames}")
    print(f"\tFilename padding: {policy.padding}")
    print(f"\tFlags: {policy.flags:#04x}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from keyring_types.integrations import fscrypt

    try:
        st = fscrypt.key_status(args.mountpoint, args.identifier)
    except OSError as exc:
        return fail(PROG, "status", exc)
    if args.json:
        print(json.dumps({"status": st.status, "added_by_self": st.added_by_self, "user_count": st.user_count}))
    elif st.status == "present":
        self_note = ", added_by_self" if st.added_by_self else ""
        print(f"Present (user_count={st.user_count}{self_note})")
    else:
        print(st.status.capitalize())
    return 0


def _remove_key(args: argparse.Namespace) -> int:
    from keyring_types.integrations import fscrypt

    try:
        result = fscrypt.remove_key(args.mountpoint, args.identifier, all_users=args.all_users)
    except OSError as exc:
        return fail(PROG, "remove-key", exc)
    if result.files_busy:
        print("warning: files using this key are still in use; the key is incompletely removed", file=sys.stderr)
    if result.other_users:
        print("warning: other users still have this key added; only this user's claim was removed", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    from keyring_types.integrations.fscrypt import MODES

    parser = argparse.ArgumentParser(prog=PROG, description="Hand keys to Linux filesystem encryption (v2 policies).")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("identifier", help="the v2 key identifier of a raw key on stdin")
    p.add_argument("--v1", action="store_true", help="print the v1 key descriptor instead")
    p.set_defaults(run=_identifier)

    p = verbs.add_parser("add-key", help="add a key to a filesystem; prints its identifier")
    p.add_argument("mountpoint")
    p.add_argument("--key-id", type=int, metavar="SERIAL", help="a kernel fscrypt-provisioning key instead of stdin")
    p.set_defaults(run=_add_key)

    p = verbs.add_parser("set-policy", help="set a v2 policy on an empty directory")
    p.add_argument("identifier", type=_identifier_arg)
    p.add_argument("directory")
    p.add_argument("--contents", default="AES-256-XTS", choices=sorted(MODES))
    p.add_argument("--filenames", default="AES-256-CTS", choices=sorted(MODES))
    p.add_argument("--padding", type=int, default=32, choices=(4, 8, 16, 32))
    p.set_defaults(run=_set_policy)

    p = verbs.add_parser("get-policy", help="show the policy of a file or directory")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_get_policy)

    p = verbs.add_parser("status", help="whether a key is present on a filesystem")
    p.add_argument("identifier", type=_identifier_arg)
    p.add_argument("mountpoint")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_status)

    p = verbs.add_parser("remove-key", help="remove this user's claim to a key (or all users')")
    p.add_argument("identifier", type=_identifier_arg)
    p.add_argument("mountpoint")
    p.add_argument("--all-users", action="store_true", help="remove every user's claim (root)")
    p.set_defaults(run=_remove_key)
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``ktctl fscrypt VERB ...``; 0 ok, 1 failed, 2 usage."""
    return run_verb(_parser(), argv)
