"""keyctl's verbs (keyutils 1.6.3), with its argument syntax, output and exit codes.

``ktctl [--kernel | --store PATH] <verb> <args...>``. Exit status 0 on success;
1 when the call failed, with ``<function>: <strerror>`` on stderr exactly as
keyctl prints it (keyutils' test suite matches those lines); 2 for a usage
error, after keyctl's ``Format:`` text. A verb may be abbreviated to any
unique prefix (``ktctl rdesc @s``); keyctl 1.6.3's own matcher accepts only
whole names, so every keyctl command line means the same here.

Key arguments are keyctl's: a number (``strtoul``, so hex and octal too), one
of ``@t @p @s @u @us @g @a``, ``%type:description`` or ``%:keyring-name``.
Each verb is one function; imports happen inside it, so a one-shot command
loads only what it uses.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from keyring_types.cli.keyctl_args import Exit, grab_stdin, hex2bin, int32, strtoul, u32
from keyring_types.cli.keyctl_output import Output

if TYPE_CHECKING:
    from keyring_types.cli.backend import Backend
    from keyring_types.core.api import KeyspaceAPI

__all__ = ["COMMANDS", "main", "run"]

KEY_SPEC_IDS = {"@t": -1, "@p": -2, "@s": -3, "@u": -4, "@us": -5, "@g": -6, "@a": -7}

VERSION = "keyctl from keyutils-1.6.3 (ktctl, keyring_types {version})"

EKEYEXPIRED, EKEYREVOKED, EKEYREJECTED = 127, 128, 129


class Ctx:
    """One command: its arguments, the (lazily opened) backend and the buffered stdout."""

    def __init__(self, argv: list[str], backend: Backend) -> None:
        self.argv = argv
        self.backend = backend
        self.out = Output()

    @property
    def ks(self) -> KeyspaceAPI:
        return self.backend.ks

    def print(self, text: str | bytes) -> None:
        self.out.write(text)


Verb = Callable[[Ctx], None]


# -- failure and usage ---------------------------------------------------------


def fail(func: str, exc: OSError) -> NoReturn:
    """keyctl's ``error(func)``: perror's ``func: strerror`` and exit status 1."""
    sys.stderr.write(f"{func}: {_strerror(exc)}\n")
    raise Exit(1)


def _strerror(exc: OSError) -> str:
    if exc.errno is None:
        return str(exc)
    return os.strerror(exc.errno)


def usage_error(message: str) -> NoReturn:
    sys.stderr.write(message + "\n")
    raise Exit(2)


def format_help(legend_only: bool = False) -> NoReturn:
    """keyctl's ``format()``: every command's synopsis on stderr, status 2."""
    lines = [] if legend_only else ["Format:", *(f"  keyctl {name} {synopsis}" for name, synopsis, _ in COMMANDS)]
    lines += [
        "",
        "Key/keyring ID:",
        "  <nnn>   numeric keyring ID",
        "  @t      thread keyring",
        "  @p      process keyring",
        "  @s      session keyring",
        "  @u      user keyring",
        "  @us     user default session keyring",
        "  @g      group keyring",
        "  @a      assumed request_key authorisation key",
        "",
        '<type> can be "user" for a user-defined keyring',
        'If you do this, prefix the description with "<subtype>:"',
    ]
    sys.stderr.write("\n".join(lines) + "\n")
    raise Exit(2)


# -- argument helpers ------------------------------------------------------------


def key_id(ctx: Ctx, arg: str) -> int:
    """keyctl's ``get_key_id``: a special name, ``%type:desc``, or a number."""
    if arg.startswith("@"):
        special = KEY_SPEC_IDS.get(arg)
        if special is None:
            usage_error(f"Unknown special key: '{arg}'")
        return special
    if arg.startswith("%"):
        spec = arg[1:]
        if spec.startswith(":"):
            type_name, desc = "keyring", spec[1:]
        elif ":" in spec:
            type_name, desc = spec.split(":", 1)
        else:
            usage_error("Incorrect key-by-name spec")
        if not desc:
            usage_error("Incorrect key-by-name spec")
        found = find_key_by_type_and_desc(ctx, type_name, desc)
        if found is None:
            sys.stderr.write(f"Can't find '{type_name}:{desc}'\n")
            raise Exit(1)
        return found
    value, rest = strtoul(arg)
    if rest:
        usage_error(f"Unparsable key: '{arg}'")
    return int32(value)


def find_key_by_type_and_desc(ctx: Ctx, type_name: str, desc: str) -> int | None:
    """libkeyutils' lookup: ``request_key`` first, then the ``/proc/keys`` view.

    The second pass finds keys the caller can see but not search for (a keyring
    named ``.builtin_trusted_keys``, a key in another user's keyring).
    """
    try:
        return ctx.ks.sys_request_key(type_name, desc, None, 0)
    except OSError as exc:
        if exc.errno == errno.ENOMEM:
            return None
    try:
        lines = ctx.backend.proc_keys()
    except OSError:
        return None
    for line in lines:
        fields = line.split(None, 8)
        if len(fields) < 9 or fields[7] != type_name:
            continue
        shown = fields[8]
        if not shown.startswith(desc) or shown[len(desc) : len(desc) + 1] not in ("", ":", " "):
            continue
        try:
            serial = int(fields[0], 16)
            raw = ctx.ks.sys_describe(int32(serial))
        except (ValueError, OSError):
            continue
        # /proc/keys appends type-specific text after the description: compare the real one.
        if raw.rsplit(";", 1)[-1] == desc:
            return int32(serial)
    return None


def data_arg(arg: str, as_hex: bool) -> bytes:
    data = os.fsencode(arg)
    return hex2bin(data) if as_hex and data else data


def stdin_data(as_hex: bool) -> bytes:
    data = grab_stdin()
    return hex2bin(data) if as_hex and data else data


def take_flag(args: list[str], flag: str) -> bool:
    """keyctl's ``if (argc > 1 && strcmp(argv[1], flag) == 0)``: one leading flag."""
    if len(args) > 1 and args[1] == flag:
        del args[1]
        return True
    return False


def number(arg: str, what: str, base: int = 0) -> int:
    """``strtoul`` with keyctl's "Unparsable <what>: '<arg>'" usage error."""
    value, rest = strtoul(arg, base)
    if rest:
        usage_error(f"Unparsable {what}: '{arg}'")
    return value


def key_handle(ctx: Ctx, serial: int) -> object:
    """A handle on ``serial`` without a system call (a describe would change the errno)."""
    from keyring_types.core.handle import Keyring

    return Keyring(ctx.ks, serial)


def _missing(ctx: Ctx, what: str) -> OSError:
    """EOPNOTSUPP for an operation this keyspace does not provide (yet)."""
    from keyring_types.errors import error

    return error(errno.EOPNOTSUPP, f"{what} is not available on the {ctx.backend.name} backend")


def _call(ctx: Ctx, obj: object, method: str, *args: object, **kwargs: object) -> object:
    fn = getattr(obj, method, None)
    if fn is None:
        raise _missing(ctx, method)
    return fn(*args, **kwargs)


# -- the verbs -----------------------------------------------------------------


def v_version(ctx: Ctx) -> None:
    import keyring_types

    ctx.print(VERSION.format(version=keyring_types.__version__) + "\n")


def v_id(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) != 2:
        format_help()
    key = key_id(ctx, a[1])
    try:
        serial = ctx.ks.sys_get_keyring_id(key, False)
    except OSError as exc:
        fail("keyctl_get_keyring_ID", exc)
    ctx.print(f"{serial}\n")


def v_show(ctx: Ctx) -> None:
    from keyring_types.cli.keyctl_tree import dump_key_tree

    a = ctx.argv
    hex_ids = take_flag(a, "-x")
    if len(a) > 2:
        format_help()
    keyring = key_id(ctx, a[1]) if len(a) == 2 else KEY_SPEC_IDS["@s"]
    dump_key_tree(ctx, keyring, "Keyring" if len(a) == 2 else "Session Keyring", hex_ids)


def _add(ctx: Ctx, type_name: str, desc: str, data: bytes | None, dest: int) -> None:
    try:
        serial = ctx.ks.sys_add_key(type_name, desc, data, dest)
    except OSError as exc:
        fail("add_key", exc)
    ctx.print(f"{serial}\n")


def v_add(ctx: Ctx) -> None:
    a = ctx.argv
    as_hex = take_flag(a, "-x")
    if len(a) != 5:
        format_help()
    data = data_arg(a[3], as_hex)
    _add(ctx, a[1], a[2], data, key_id(ctx, a[4]))


def v_padd(ctx: Ctx) -> None:
    a = ctx.argv
    as_hex = take_flag(a, "-x")
    if len(a) != 4:
        format_help()
    data = stdin_data(as_hex)
    _add(ctx, a[1], a[2], data, key_id(ctx, a[3]))


def _request(ctx: Ctx, type_name: str, desc: str, callout: bytes | None, dest_arg: str | None) -> None:
    dest = key_id(ctx, dest_arg) if dest_arg is not None else 0
    if callout is not None and not ctx.backend.is_kernel:
        _follow_request_key_conf()
    try:
        serial = ctx.ks.sys_request_key(type_name, desc, callout, dest)
    except OSError as exc:
        fail("request_key", exc)
    ctx.print(f"{serial}\n")


def v_request(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) not in (3, 4):
        format_help()
    _request(ctx, a[1], a[2], None, a[3] if len(a) == 4 else None)


def v_request2(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) not in (4, 5):
        format_help()
    _request(ctx, a[1], a[2], os.fsencode(a[3]), a[4] if len(a) == 5 else None)


def v_prequest2(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) not in (3, 4):
        format_help()
    # The callout is a C string: it ends at the first NUL read from stdin.
    callout = grab_stdin().split(b"\0", 1)[0]
    _request(ctx, a[1], a[2], callout, a[3] if len(a) == 4 else None)


def _follow_request_key_conf() -> None:
    """Have keys requested with callout info built as /sbin/request-key builds them for the kernel.

    On the store the upcall starts in this process: request-key.conf's rules are
    followed, ``keyctl instantiate/negate/reject`` commands act on this keyspace,
    ``|program`` rules' output becomes the payload, and a rule that runs another
    program runs it with ``keyctl`` on its PATH being ``ktctl`` on this store, in
    the handler's stored session and holding the authority over the key, while
    this process waits (see :mod:`keyring_types.core.request_key_conf`).
    """
    from keyring_types.core.request_key_conf import RequestKeyConfig
    from keyring_types.core.request_key_handlers import register_request_key_handler

    try:
        register_request_key_handler("*", "*", RequestKeyConfig())
    except OSError as exc:
        if exc.errno != errno.EEXIST:  # a program embedding the verbs registered its own
            raise


def _update(ctx: Ctx, key: int, data: bytes) -> None:
    try:
        ctx.ks.sys_update(key, data)
    except OSError as exc:
        fail("keyctl_update", exc)


def v_update(ctx: Ctx) -> None:
    a = ctx.argv
    as_hex = take_flag(a, "-x")
    if len(a) != 3:
        format_help()
    data = data_arg(a[2], as_hex)
    _update(ctx, key_id(ctx, a[1]), data)


def v_pupdate(ctx: Ctx) -> None:
    a = ctx.argv
    as_hex = take_flag(a, "-x")
    if len(a) != 2:
        format_help()
    key = key_id(ctx, a[1])
    _update(ctx, key, stdin_data(as_hex))


def v_newring(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) != 3:
        format_help()
    _add(ctx, "keyring", a[1], None, key_id(ctx, a[2]))


def _one_key_op(ctx: Ctx, func: str, op: Callable[[int], None]) -> None:
    a = ctx.argv
    if len(a) != 2:
        format_help()
    key = key_id(ctx, a[1])
    try:
        op(key)
    except OSError as exc:
        fail(func, exc)


def v_revoke(ctx: Ctx) -> None:
    _one_key_op(ctx, "keyctl_revoke", lambda k: ctx.ks.sys_revoke(k))


def v_clear(ctx: Ctx) -> None:
    _one_key_op(ctx, "keyctl_clear", lambda k: ctx.ks.sys_clear(k))


def v_invalidate(ctx: Ctx) -> None:
    _one_key_op(ctx, "keyctl_invalidate", lambda k: ctx.ks.sys_invalidate(k))


def v_link(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) != 3:
        format_help()
    key = key_id(ctx, a[1])
    ring = key_id(ctx, a[2])
    try:
        ctx.ks.sys_link(key, ring)
    except OSError as exc:
        fail("keyctl_link", exc)


def v_unlink(ctx: Ctx) -> None:
    from keyring_types.cli.keyctl_tree import recursive_session_key_scan

    a = ctx.argv
    if len(a) not in (2, 3):
        format_help()
    key = key_id(ctx, a[1])
    if len(a) == 3:
        ring = key_id(ctx, a[2])
        try:
            ctx.ks.sys_unlink(key, ring)
        except OSError as exc:
            fail("keyctl_unlink", exc)
        return

    def unlink_here(parent: int, serial: int, raw: str | None, err: int) -> int:
        return _unlinked(ctx, serial, parent) if serial == key else 0

    count = recursive_session_key_scan(ctx, unlink_here)
    ctx.print(f"{count} links removed\n")


def _unlinked(ctx: Ctx, key: int, parent: int) -> int:
    try:
        ctx.ks.sys_unlink(key, parent)
    except OSError:
        return 0
    return 1


def v_search(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) not in (4, 5):
        format_help()
    ring = key_id(ctx, a[1])
    dest = key_id(ctx, a[4]) if len(a) == 5 else 0
    try:
        serial = ctx.ks.sys_search(ring, a[2], a[3], dest)
    except OSError as exc:
        fail("keyctl_search", exc)
    ctx.print(f"{serial}\n")


def _read(ctx: Ctx) -> bytes:
    a = ctx.argv
    if len(a) != 2:
        format_help()
    key = key_id(ctx, a[1])
    try:
        return ctx.ks.sys_read(key)
    except OSError as exc:
        fail("keyctl_read_alloc", exc)


def v_read(ctx: Ctx) -> None:
    from keyring_types.cli.keyctl_output import hexdump

    data = _read(ctx)
    if not data:
        ctx.print("No data in key\n")
        return
    ctx.print(f"{len(data)} bytes of data in key:\n" + hexdump(data))


def v_pipe(ctx: Ctx) -> None:
    ctx.print(_read(ctx))


def v_print(ctx: Ctx) -> None:
    data = _read(ctx)
    if all(0x20 <= b < 0x7F for b in data):
        ctx.print(data + b"\n")
    else:
        ctx.print(":hex:" + data.hex() + "\n")


def _ring_serials(ctx: Ctx, func: str = "keyctl_read_alloc") -> list[int]:
    import struct

    a = ctx.argv
    if len(a) != 2:
        format_help()
    ring = key_id(ctx, a[1])
    try:
        raw = ctx.ks.sys_read(ring)
    except OSError as exc:
        fail(func, exc)
    return list(struct.unpack(f"={len(raw) // 4}i", raw[: len(raw) // 4 * 4]))


def v_list(ctx: Ctx) -> None:
    from keyring_types.cli.keyctl_output import Creds, parse_description, pretty_mask

    serials = _ring_serials(ctx)
    if not serials:
        ctx.print("keyring is empty\n")
        return
    ctx.print("1 key in keyring:\n" if len(serials) == 1 else f"{len(serials)} keys in keyring:\n")
    creds = Creds()
    for serial in serials:
        try:
            raw = ctx.ks.sys_describe(serial)
        except OSError as exc:
            ctx.print(f"{serial:9d}: key inaccessible ({_strerror(exc)})\n")
            continue
        parsed = parse_description(raw)
        if parsed is None:
            _unparsable(ctx, serial)
        type_name, uid, gid, perm, desc = parsed
        mask = pretty_mask(perm, uid, gid, creds)
        ctx.print(f"{serial:9d}: {mask} {uid:5d} {gid:5d} {type_name}: {desc}\n")


def _unparsable(ctx: Ctx, serial: int) -> NoReturn:
    sys.stderr.write(f"Unparsable description obtained for key {serial}\n")
    raise Exit(3)


def v_rlist(ctx: Ctx) -> None:
    serials = _ring_serials(ctx)
    ctx.print(" ".join(str(s) for s in serials) + "\n")


def _describe(ctx: Ctx, func: str) -> tuple[int, str]:
    key = key_id(ctx, ctx.argv[1])
    try:
        return key, ctx.ks.sys_describe(key)
    except OSError as exc:
        fail(func, exc)


def v_describe(ctx: Ctx) -> None:
    from keyring_types.cli.keyctl_output import parse_description, perm_string

    if len(ctx.argv) != 2:
        format_help()
    key, raw = _describe(ctx, "keyctl_describe_alloc")
    parsed = parse_description(raw)
    if parsed is None:
        _unparsable(ctx, key)
    type_name, uid, gid, perm, desc = parsed
    ctx.print(f"{key:9d}: {perm_string(perm)} {uid:5d} {gid:5d} {type_name}: {desc}\n")


def v_rdescribe(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) not in (2, 3) or (len(a) == 3 and not a[2]):
        format_help()
    _key, raw = _describe(ctx, "keyctl_describe")
    if len(a) == 3:
        raw = raw.replace(";", a[2][0])
    ctx.print(raw + "\n")


def _chown(ctx: Ctx, which: str) -> None:
    a = ctx.argv
    if len(a) != 3:
        format_help()
    key = key_id(ctx, a[1])
    value = u32(number(a[2], which))
    owner = -1 if value == 0xFFFFFFFF else value
    uid, gid = (owner, -1) if which == "uid" else (-1, owner)
    try:
        ctx.ks.sys_chown(key, uid, gid)
    except OSError as exc:
        fail("keyctl_chown", exc)


def v_chown(ctx: Ctx) -> None:
    _chown(ctx, "uid")


def v_chgrp(ctx: Ctx) -> None:
    _chown(ctx, "gid")


def v_setperm(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) != 3:
        format_help()
    key = key_id(ctx, a[1])
    perm = u32(number(a[2], "permissions"))
    try:
        ctx.ks.sys_setperm(key, perm)
    except OSError as exc:
        fail("keyctl_setperm", exc)


def v_session(ctx: Ctx) -> None:
    args = ctx.argv[1:]
    name: str | None = None
    if args:
        name = None if args[0] == "-" else args[0]
        args = args[1:]
    try:
        serial = ctx.backend.join_session(name)
    except OSError as exc:
        fail("keyctl_join_session_keyring", exc)
    sys.stderr.write(f"Joined session keyring: {serial}\n")
    if not args:
        shell = os.environ.get("SHELL") or "/bin/sh"
        args = [shell]
    _exec(ctx, args)


def _exec(ctx: Ctx, args: list[str]) -> NoReturn:
    ctx.out.flush_to(1)
    sys.stdout.flush()
    try:
        os.execvp(args[0], args)  # noqa: S606 - keyctl session runs the given program
    except OSError as exc:
        fail(args[0], exc)


def _timeout_arg(arg: str) -> int:
    return u32(number(arg, "timeout", 10))


def v_timeout(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) != 3:
        format_help()
    key = key_id(ctx, a[1])
    timeout = _timeout_arg(a[2])
    try:
        ctx.ks.sys_set_timeout(key, timeout)
    except OSError as exc:
        fail("keyctl_set_timeout", exc)


def v_security(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) != 2:
        format_help()
    key = key_id(ctx, a[1])
    try:
        label = _call(ctx, key_handle(ctx, key), "get_security")
    except OSError as exc:
        fail("keyctl_getsecurity", exc)
    ctx.print(f"{label}\n")


def v_new_session(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) not in (1, 2):
        format_help()
    name = a[1] if len(a) == 2 else None
    try:
        ctx.ks.sys_join_session_keyring(name)
    except OSError as exc:
        fail("keyctl_join_session_keyring", exc)
    try:
        if not ctx.backend.is_kernel:
            from keyring_types.errors import error

            # A store session reaches a child through the environment; a running
            # parent's environment is out of reach, so it cannot be given one.
            raise error(errno.EOPNOTSUPP, "the store backend cannot change the parent process's session")
        _call(ctx, ctx.ks, "session_to_parent")
    except OSError as exc:
        fail("keyctl_session_to_parent", exc)
    try:
        serial = ctx.ks.sys_get_keyring_id(KEY_SPEC_IDS["@s"], False)
    except OSError as exc:
        fail("keyctl_get_keyring_ID", exc)
    ctx.print(f"{serial}\n")


def _instantiate(ctx: Ctx, key: int, data: bytes, dest: int) -> None:
    try:
        _call(ctx, ctx.ks, "instantiate", key, data, dest)
    except OSError as exc:
        fail("keyctl_instantiate", exc)


def v_instantiate(ctx: Ctx) -> None:
    a = ctx.argv
    as_hex = take_flag(a, "-x")
    if len(a) != 4:
        format_help()
    key = key_id(ctx, a[1])
    dest = key_id(ctx, a[3])
    _instantiate(ctx, key, data_arg(a[2], as_hex), dest)


def v_pinstantiate(ctx: Ctx) -> None:
    a = ctx.argv
    as_hex = take_flag(a, "-x")
    if len(a) != 3:
        format_help()
    key = key_id(ctx, a[1])
    dest = key_id(ctx, a[2])
    _instantiate(ctx, key, stdin_data(as_hex), dest)


def v_negate(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) != 4:
        format_help()
    key = key_id(ctx, a[1])
    timeout = _timeout_arg(a[2])
    dest = key_id(ctx, a[3])
    try:
        _call(ctx, ctx.ks, "negate", key, timeout, dest)
    except OSError as exc:
        fail("keyctl_negate", exc)


_REJECT_NAMES = {"rejected": EKEYREJECTED, "revoked": EKEYREVOKED, "expired": EKEYEXPIRED}


def v_reject(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) != 5:
        format_help()
    key = key_id(ctx, a[1])
    timeout = _timeout_arg(a[2])
    code = _REJECT_NAMES.get(a[3])
    if code is None:
        code = u32(number(a[3], "error", 10))
    dest = key_id(ctx, a[4])
    try:
        _call(ctx, ctx.ks, "reject", key, timeout, code, dest)
    except OSError as exc:
        fail("keyctl_negate", exc)  # keyctl 1.6.3 names the negate call here


def v_reap(ctx: Ctx) -> None:
    from keyring_types.cli.keyctl_tree import recursive_session_key_scan

    a = ctx.argv
    verbose = take_flag(a, "-v")
    if len(a) != 1:
        format_help()

    def reap(parent: int, serial: int, raw: str | None, err: int) -> int:
        # Unreadable for a reason other than permission: dead, so unlink it.
        if raw is not None or err == errno.EACCES:
            return 0
        if verbose:
            ctx.print(f"Reap {serial}")
        try:
            ctx.ks.sys_unlink(serial, parent)
        except OSError as exc:
            if verbose:
                ctx.print(f"... failed {_strerror(exc)}\n")
            return 0
        if verbose:
            ctx.print("\n")
        return 1

    count = recursive_session_key_scan(ctx, reap)
    ctx.print(f"{count} keys reaped\n")


def v_purge(ctx: Ctx) -> None:
    from keyring_types.cli.keyctl_tree import recursive_session_key_scan

    args = ctx.argv[1:]
    search = prefix = nocase = False
    while args and args[0].startswith("-"):
        flag = args[0][1:2]
        if flag == "s":
            search = True
        elif flag == "p":
            prefix = True
        elif flag == "i":
            nocase = True
        else:
            format_help()
        args = args[1:]
    if not args:
        format_help()
    type_name = args[0]
    desc = args[1] if len(args) > 1 else None

    def by_type(parent: int, serial: int, raw: str | None, err: int) -> int:
        if parent == 0 or raw is None or ";" not in raw:
            return 0
        if raw.split(";", 1)[0] != type_name:
            return 0
        return _unlinked(ctx, serial, parent)

    def literal(parent: int, serial: int, raw: str | None, err: int) -> int:
        assert desc is not None
        if parent == 0 or raw is None or ";" not in raw:
            return 0
        ktype, rest = raw.split(";", 1)
        if ktype != type_name or ";" not in rest:
            return 0
        kdesc = rest.rsplit(";", 1)[1]
        if prefix:
            candidate = kdesc[: len(desc)]
            if len(kdesc) < len(desc):
                return 0
        else:
            candidate = kdesc
            if len(kdesc) != len(desc):
                return 0
        if (candidate.lower() != desc.lower()) if nocase else (candidate != desc):
            return 0
        ctx.print(f"{ktype} '{kdesc}'\n")
        return _unlinked(ctx, serial, parent)

    def by_search(parent: int, serial: int, raw: str | None, err: int) -> int:
        assert desc is not None
        if raw is None or not raw.startswith("keyring;"):
            return 0
        count = 0
        while True:
            try:
                found = ctx.ks.sys_search(serial, type_name, desc, 0)
                ctx.ks.sys_unlink(found, serial)
            except OSError:
                return count
            count += 1

    scan: Callable[[int, int, str | None, int], int]
    if search:
        if len(args) != 2 or prefix or nocase:
            format_help()
        scan = by_search
    elif len(args) == 1:
        if prefix or nocase:
            format_help()
        scan = by_type
    elif len(args) == 2:
        scan = literal
    else:
        format_help()
    count = recursive_session_key_scan(ctx, scan)
    ctx.print(f"purged {count} keys\n")


def v_get_persistent(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) not in (2, 3):
        format_help()
    dest = key_id(ctx, a[1])
    uid = -1
    if len(a) == 3:
        value = u32(number(a[2], "uid"))
        uid = -1 if value == 0xFFFFFFFF else value
    try:
        ring = _call(ctx, ctx.ks, "get_persistent", uid, dest)
    except OSError as exc:
        fail("keyctl_get_persistent", exc)
    ctx.print(f"{int(ring)}\n")  # type: ignore[call-overload]


def _dh_print(ctx: Ctx, data: bytes) -> None:
    from keyring_types.cli.keyctl_output import hexdump

    ctx.print(f"{len(data)} bytes of data in result:\n" + (hexdump(data) if data else "00\n"))


def _dh_keys(ctx: Ctx) -> tuple[int, int, int]:
    a = ctx.argv
    return key_id(ctx, a[1]), key_id(ctx, a[2]), key_id(ctx, a[3])


def v_dh_compute(ctx: Ctx) -> None:
    if len(ctx.argv) != 4:
        format_help()
    priv, prime, base = _dh_keys(ctx)
    try:
        result = _call(ctx, ctx.ks, "dh_compute", priv, prime, base)
    except OSError as exc:
        fail("keyctl_dh_compute_alloc", exc)
    _dh_print(ctx, bytes(result))  # type: ignore[call-overload]


def _dh_kdf(ctx: Ctx, other_info: bytes | None) -> None:
    a = ctx.argv
    priv, prime, base = _dh_keys(ctx)
    length, _rest = strtoul(a[4], 10)
    if length == (1 << 64) - 1:
        fail("dh_compute: cannot convert generated length value", OSError(errno.ERANGE, os.strerror(errno.ERANGE)))
    try:
        kdf = _dh_kdf_params(a[5], other_info, length)
        result = _call(ctx, ctx.ks, "dh_compute", priv, prime, base, kdf=kdf)
    except OSError as exc:
        fail("keyctl_dh_compute_kdf", exc)
    _dh_print(ctx, bytes(result))  # type: ignore[call-overload]


def _dh_kdf_params(hash_name: str, other_info: bytes | None, length: int) -> object:
    """The KDF parameters object of ``ks.dh_compute`` (the hash, otherinfo and output length)."""
    from importlib import import_module

    make = getattr(import_module("keyring_types.core.dh"), "DhKdf")  # noqa: B009 - the Diffie-Hellman module's
    return make(hashname=hash_name, length=length, otherinfo=other_info or b"")


def v_dh_compute_kdf(ctx: Ctx) -> None:
    if len(ctx.argv) != 6:
        format_help()
    _dh_kdf(ctx, None)


def v_dh_compute_kdf_oi(ctx: Ctx) -> None:
    a = ctx.argv
    as_hex = take_flag(a, "-x")
    if len(a) != 6:
        format_help()
    _dh_kdf(ctx, stdin_data(as_hex))


def v_restrict_keyring(ctx: Ctx) -> None:
    a = ctx.argv
    if not 2 <= len(a) <= 4:
        format_help()
    ring = key_id(ctx, a[1])
    type_name = a[2] if len(a) > 2 else None
    restriction = a[3] if len(a) == 4 else None
    try:
        _call(ctx, key_handle(ctx, ring), "restrict", type_name, restriction)
    except OSError as exc:
        fail("keyctl_restrict_keyring", exc)


def _pkey_info(args: Sequence[str]) -> str:
    used = 0
    for arg in args:
        if "=" not in arg:
            usage_error("Option not in key=val form")
        if len(os.fsencode(arg)) + 1 > 4096 - 1 - used:
            usage_error("Too many info options")
        used += len(os.fsencode(arg)) + (1 if used else 0)
    return " ".join(args)


def _pkey_key(ctx: Ctx) -> int:
    a = ctx.argv
    key = key_id(ctx, a[1])
    if a[2] != "0":
        usage_error("Password passing is not yet supported")
    return key


def read_file(name: str) -> bytes:
    """keyctl's read_file: the whole file, perror(name) and status 1 on failure."""
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError as exc:
        fail(name, exc)


def v_pkey_query(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) < 3:
        format_help()
    info = _pkey_info(a[3:])
    key = _pkey_key(ctx)
    try:
        result = _call(ctx, key_handle(ctx, key), "pkey_query", info)
    except OSError as exc:
        fail("keyctl_pkey_query", exc)
    ctx.print(_pkey_query_text(result))


def _pkey_query_text(result: object) -> str:
    def field(name: str) -> object:
        if isinstance(result, dict):
            return result[name]
        return getattr(result, name)

    lines = [f"{name}={field(name)}" for name in ("key_size", "max_data_size", "max_sig_size", "max_enc_size", "max_dec_size")]
    for op in ("encrypt", "decrypt", "sign", "verify"):
        lines.append(f"{op}={'y' if _supports(field, op) else 'n'}")
    return "\n".join(lines) + "\n"


def _supports(field: Callable[[str], object], op: str) -> bool:
    try:
        ops = field("supported_ops")
    except (KeyError, AttributeError):
        return bool(field(op))
    if isinstance(ops, int):
        return bool(ops & {"encrypt": 1, "decrypt": 2, "sign": 4, "verify": 8}[op])
    return op in ops  # type: ignore[operator]


def _pkey_op(ctx: Ctx, method: str, func: str) -> None:
    a = ctx.argv
    if len(a) < 4:
        format_help()
    info = _pkey_info(a[4:])
    key = _pkey_key(ctx)
    data = read_file(a[3])
    handle = key_handle(ctx, key)
    try:
        # keyctl sizes its output buffer with a query first, so a bad key fails there.
        _call(ctx, handle, "pkey_query", info)
    except OSError as exc:
        fail("keyctl_pkey_query", exc)
    try:
        result = _call(ctx, handle, method, info, data)
    except OSError as exc:
        fail(func, exc)
    ctx.print(bytes(result))  # type: ignore[call-overload]


def v_pkey_encrypt(ctx: Ctx) -> None:
    _pkey_op(ctx, "pkey_encrypt", "keyctl_pkey_encrypt")


def v_pkey_decrypt(ctx: Ctx) -> None:
    _pkey_op(ctx, "pkey_decrypt", "keyctl_pkey_decrypt")


def v_pkey_sign(ctx: Ctx) -> None:
    _pkey_op(ctx, "pkey_sign", "keyctl_pkey_sign")


def v_pkey_verify(ctx: Ctx) -> None:
    a = ctx.argv
    if len(a) < 5:
        format_help()
    info = _pkey_info(a[5:])
    key = _pkey_key(ctx)
    data = read_file(a[3])
    sig = read_file(a[4])
    try:
        _call(ctx, key_handle(ctx, key), "pkey_verify", info, data, sig)
    except OSError as exc:
        fail("keyctl_pkey_verify", exc)


def v_move(ctx: Ctx) -> None:
    a = ctx.argv
    exclusive = True
    if len(a) > 4 and a[1] == "-f":
        exclusive = False
        del a[1]
    if len(a) != 4:
        format_help()
    key = key_id(ctx, a[1])
    src = key_id(ctx, a[2])
    dst = key_id(ctx, a[3])
    try:
        _call(ctx, ctx.ks, "move", key, src, dst, exclusive=exclusive)
    except OSError as exc:
        fail("keyctl_move", exc)


#: keyctl's capability names in the order ``supports`` lists them, with their (byte, bit).
CAPABILITIES: tuple[tuple[str, int, int], ...] = (
    ("capabilities", 0, 0x01),
    ("persistent_keyrings", 0, 0x02),
    ("dh_compute", 0, 0x04),
    ("public_key", 0, 0x08),
    ("big_key_type", 0, 0x10),
    ("key_invalidate", 0, 0x20),
    ("restrict_keyring", 0, 0x40),
    ("move_key", 0, 0x80),
    ("ns_keyring_name", 1, 0x01),
    ("ns_key_tag", 1, 0x02),
    ("notify", 1, 0x04),
)


def v_supports(ctx: Ctx) -> None:
    a = ctx.argv
    if not 1 <= len(a) <= 2:
        format_help()
    try:
        names = _call(ctx, ctx.ks, "capabilities")
    except OSError as exc:
        fail("keyctl_capabilities", exc)
    have = set(names)  # type: ignore[call-overload]
    if len(a) == 1:
        ctx.print("".join(f"have_{name}={int(name in have)}\n" for name, _i, _b in CAPABILITIES))
        return
    if a[1] == "--raw":
        raw = bytearray(2)
        for name, index, bit in CAPABILITIES:
            if name in have:
                raw[index] |= bit
        ctx.print(raw.hex() + "\n")
    for name, _i, _b in CAPABILITIES:
        if a[1] == name:
            raise Exit(0 if name in have else 1)
    raise Exit(3)


def v_watch(ctx: Ctx) -> None:
    """``watch``/``watch_*``: KEYCTL_WATCH_KEY, which no backend here has."""
    from keyring_types.cli.keyctl_watch import watch_verb

    watch_verb(ctx)


def v_test(ctx: Ctx) -> None:
    """``--test limits|limits2``: keyctl's probes of add_key's limits (keyutils' suite runs them)."""
    from keyring_types.cli.keyctl_testing import test_verb

    test_verb(ctx)


#: (name, synopsis, function) in keyctl 1.6.3's order; the synopses are keyctl's.
COMMANDS: tuple[tuple[str, str, Verb | None], ...] = (
    ("--version", "", v_version),
    ("add", "[-x] <type> <desc> <data> <keyring>", v_add),
    ("chgrp", "<key> <gid>", v_chgrp),
    ("chown", "<key> <uid>", v_chown),
    ("clear", "<keyring>", v_clear),
    ("describe", "<keyring>", v_describe),
    ("dh_compute", "<private> <prime> <base>", v_dh_compute),
    ("dh_compute_kdf", "<private> <prime> <base> <len> <hash_name>", v_dh_compute_kdf),
    ("dh_compute_kdf_oi", "[-x] <private> <prime> <base> <len> <hash_name>", v_dh_compute_kdf_oi),
    ("get_persistent", "<keyring> [<uid>]", v_get_persistent),
    ("id", "<key>", v_id),
    ("instantiate", "[-x] <key> <data> <keyring>", v_instantiate),
    ("invalidate", "<key>", v_invalidate),
    ("link", "<key> <keyring>", v_link),
    ("list", "<keyring>", v_list),
    ("move", "[-f] <key> <from_keyring> <to_keyring>", v_move),
    ("negate", "<key> <timeout> <keyring>", v_negate),
    ("new_session", "[<name>]", v_new_session),
    ("newring", "<name> <keyring>", v_newring),
    ("padd", "[-x] <type> <desc> <keyring>", v_padd),
    ("pinstantiate", "[-x] <key> <keyring>", v_pinstantiate),
    ("pipe", "<key>", v_pipe),
    ("pkey_query", "<key> <pass> [k=v]*", v_pkey_query),
    ("pkey_encrypt", "<key> <pass> <datafile> [k=v]*", v_pkey_encrypt),
    ("pkey_decrypt", "<key> <pass> <datafile> [k=v]*", v_pkey_decrypt),
    ("pkey_sign", "<key> <pass> <datafile> [k=v]*", v_pkey_sign),
    ("pkey_verify", "<key> <pass> <datafile> <sigfile> [k=v]*", v_pkey_verify),
    ("prequest2", "<type> <desc> [<dest_keyring>]", v_prequest2),
    ("print", "<key>", v_print),
    ("pupdate", "[-x] <key>", v_pupdate),
    ("purge", "<type>", v_purge),
    ("purge", "[-p] [-i] <type> <desc>", None),
    ("purge", "-s <type> <desc>", None),
    ("rdescribe", "<keyring> [sep]", v_rdescribe),
    ("read", "<key>", v_read),
    ("reap", "[-v]", v_reap),
    ("reject", "<key> <timeout> <error> <keyring>", v_reject),
    ("request", "<type> <desc> [<dest_keyring>]", v_request),
    ("request2", "<type> <desc> <info> [<dest_keyring>]", v_request2),
    ("restrict_keyring", "<keyring> [<type> [<restriction>]]", v_restrict_keyring),
    ("revoke", "<key>", v_revoke),
    ("rlist", "<keyring>", v_rlist),
    ("search", "<keyring> <type> <desc> [<dest_keyring>]", v_search),
    ("security", "<key>", v_security),
    ("session", "", v_session),
    ("session", "- [<prog> <arg1> <arg2> ...]", None),
    ("session", "<name> [<prog> <arg1> <arg2> ...]", None),
    ("setperm", "<key> <mask>", v_setperm),
    ("show", "[-x] [<keyring>]", v_show),
    ("supports", "[<cap> | --raw]", v_supports),
    ("timeout", "<key> <timeout>", v_timeout),
    ("unlink", "<key> [<keyring>]", v_unlink),
    ("update", "[-x] <key> <data>", v_update),
    ("watch", "[-f<filters>] <key>", v_watch),
    ("watch_add", "<fd> <key>", v_watch),
    ("watch_rm", "<fd> <key>", v_watch),
    ("watch_session", "[-f<filters>] [-n <name>] <notifylog> <gclog> <fd> <prog> [<arg1> <arg2> ...]", v_watch),
    ("watch_sync", "<fd>", v_watch),
    ("--test", "...", v_test),
)


def find_command(word: str) -> Verb:
    """The verb named ``word`` or by a unique prefix of it; usage error (status 2) otherwise."""
    for name, _synopsis, fn in COMMANDS:
        if fn is not None and name == word:
            return fn
    matches = {name: fn for name, _synopsis, fn in COMMANDS if fn is not None and name.startswith(word)}
    if not matches or not word:
        usage_error("Unknown command")
    if len(matches) > 1:
        usage_error("Ambiguous command")
    return next(iter(matches.values()))


GLOBAL_HELP = """\
usage: ktctl [--kernel | --store PATH] <verb> [args...]
       ktctl <family> ...     (families: {families})

keyctl's verbs (keyutils 1.6.3), on the persistent store (default) or, with
--kernel or KTCTL_BACKEND=kernel, on this process's kernel keyring.
'ktctl' with no verb lists every verb's arguments; 'ktctl <verb> --help' shows one.
"""


def _verb_help(word: str) -> None:
    lines = [f"usage: ktctl {name} {synopsis}".rstrip() for name, synopsis, _ in COMMANDS if name == word]
    sys.stdout.write("\n".join(lines) + "\n")


def run(argv: Sequence[str], backend: Backend | None = None) -> int:
    """Run one keyctl command line (the words after the global options); the exit status."""
    args = list(argv)
    if backend is None:
        backend, args = _global_options(args)
        if backend is None:
            return 2
    if not args:
        try:
            format_help()
        except Exit as done:
            return done.status
    ctx = Ctx(args, backend)
    try:
        verb = find_command(args[0])
        if len(args) == 2 and args[1] == "--help" and args[0] != "--version":
            full = next(name for name, _s, fn in COMMANDS if fn is verb)
            _verb_help(full)
            return 0
        verb(ctx)
        status = 0
    except Exit as done:
        status = done.status
    except OSError as exc:
        # Opening the backend failed (no store, a corrupt file): no keyctl function to name.
        sys.stderr.write(f"ktctl: {exc.strerror or exc}\n")
        status = 1
    ctx.out.flush_to(1)
    return status


def _global_options(args: list[str]) -> tuple[Backend | None, list[str]]:
    from keyring_types.cli.backend import Backend

    name: str | None = None
    store: str | None = None
    while args and args[0] in ("--kernel", "--store", "--help", "-h"):
        flag = args.pop(0)
        if flag in ("--help", "-h"):
            from keyring_types.cli.families import FAMILIES

            sys.stdout.write(GLOBAL_HELP.format(families=", ".join(FAMILIES)))
            raise SystemExit(0)
        if flag == "--kernel":
            name = "kernel"
        else:
            if not args:
                sys.stderr.write("ktctl: --store needs a path\n")
                return None, args
            name, store = "store", args.pop(0)
    try:
        return Backend(name, store), args
    except OSError as exc:
        sys.stderr.write(f"ktctl: {exc.strerror or exc}\n")
        return None, args


def main(argv: Sequence[str]) -> int:
    """``ktctl <verb> ...`` (called by the dispatcher with the words after ``ktctl``)."""
    return run(argv)
