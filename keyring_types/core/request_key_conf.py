"""A request-key handler that follows ``request-key.conf`` as ``/sbin/request-key`` does.

:class:`RequestKeyConfig` reads ``/etc/request-key.d/*.conf`` and
``/etc/request-key.conf`` (or the files given), picks the best line for the key
(request-key.conf(5): op, type, description and callout patterns, each with at
most one ``*``; the line whose wildcards skip the fewest characters wins, column
by column from the left, the first read on a tie), expands the macros of its
command (``%o %k %t %d %c %u %g %T %P %S``, ``%%`` and ``%{type:description}``)
and runs it:

* ``|program args``: the program gets the callout info on stdin; what it writes
  to stdout (at most 32768 bytes) becomes the payload if it exits 0; otherwise
  the best ``negate`` line runs instead (once).
* ``program args``: run with the expanded arguments.  A program cannot reach an
  in-process keyspace, so ``keyctl`` (by its name) is not executed but done
  here, against the keyspace of the request: its ``instantiate``,
  ``pinstantiate``, ``negate`` and ``reject`` verbs, as the stock rules use them.
  Any other program runs as a real process; only what it does to the keyspace
  counts, which for an in-process keyspace is nothing, so the key ends negative.
  For a store-backed keyspace the program can act on it: ``keyctl`` on its
  ``PATH`` is ``ktctl`` on that store, in the handler's session (stored for the
  upcall's length) and holding the authority over the key, so a program that
  calls ``keyctl instantiate``/``negate``/``reject`` builds it while the
  requester waits, as under the kernel.

Rule files (and their directory) must be writable by no one but root or this
user: ``EACCES`` otherwise, as they name programs to run.

Register it like any handler: ``kt.register_request_key_handler("*", "*", RequestKeyConfig())``.
"""

from __future__ import annotations

import errno
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs

from keyring_types.core.request_key_handlers import UpcallRequest, pattern_match
from keyring_types.errors import error

__all__ = ["PIPE_PAYLOAD_MAX", "RequestKeyConfig", "Rule"]

#: request-key's buffer for a piped program's output.
PIPE_PAYLOAD_MAX = 32768
#: request-key's line buffer (4096 + newline + NUL).
_LINE_MAX = 4096
#: The environment the kernel gives /sbin/request-key, and it its programs.
_ENV = {"HOME": "/", "PATH": "/sbin:/bin:/usr/sbin:/usr/bin"}
_REJECT_NAMES = {"rejected": errno.EKEYREJECTED, "expired": errno.EKEYEXPIRED, "revoked": errno.EKEYREVOKED}


@attrs.frozen
class Rule:
    """One matching line: where it is, its command, and how far its wildcards reached."""

    path: str
    line: int
    command: str
    wildness: tuple[int, int, int, int]


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


@attrs.define
class RequestKeyConfig:
    """The request-key.conf handler; ``conf`` and ``confdir`` say which files to read.

    ``timeout`` bounds each program's run (seconds).
    """

    conf: Path = attrs.field(default=Path("/etc/request-key.conf"), converter=Path)
    confdir: Path | None = attrs.field(default=Path("/etc/request-key.d"), converter=_optional_path)
    timeout: float = 30.0

    # -- finding the line -----------------------------------------------------------
    def files(self) -> list[Path]:
        """The files read, in order: ``confdir/*.conf`` (sorted, no dot files), then ``conf``."""
        found: list[Path] = []
        if self.confdir is not None:
            try:
                names = sorted(os.listdir(self.confdir))
            except FileNotFoundError:
                names = []
            for name in names:
                path = self.confdir / name
                if not name.startswith(".") and name.endswith(".conf") and len(name) >= 5 and path.is_file():
                    found.append(path)
        found.append(self.conf)
        return found

    def lookup(self, op: str, type_name: str, description: str, callout: str) -> Rule | None:
        """The best line for these values, or None.  ``EINVAL`` (file:line) for a malformed line."""
        best: Rule | None = None
        datums = (op, type_name, description, callout)
        for path in self.files():
            try:
                text = _trusted_text(path)
            except FileNotFoundError:
                continue
            for number, raw in enumerate(text.splitlines(), 1):
                if len(raw) >= _LINE_MAX:
                    raise error(errno.EINVAL, f"{path}:{number}: line too long")
                if not raw or raw[0] == "#" or raw[0].isspace():
                    continue
                fields = raw.split(None, 4)
                if len(fields) < 5:
                    raise error(errno.EINVAL, f"{path}:{number}: syntax error (want op type description callout program)")
                wild: list[int] = []
                for pattern, datum in zip(fields[:4], datums, strict=True):
                    skipped = pattern_match(pattern, datum)
                    if skipped is None:
                        break
                    wild.append(skipped)
                else:
                    rule = Rule(str(path), number, fields[4], (wild[0], wild[1], wild[2], wild[3]))
                    if best is None or rule.wildness < best.wildness:
                        best = rule
        return best

    # -- running it ---------------------------------------------------------------------
    def __call__(self, request: UpcallRequest) -> None:
        """Build ``request.key`` by the best ``create`` line; raises if none matches or it fails."""
        self.run(request, "create", recurse=True)

    def run(self, request: UpcallRequest, op: str, recurse: bool = False) -> None:
        """Run the best line for ``op``; ``ENOKEY`` if there is none, ``EINVAL`` for a bad line."""
        key = request.key
        callout = request.callout_info.decode("utf-8", "surrogateescape")
        rule = self.lookup(op, key.type, key.description, callout)
        if rule is None:
            raise error(errno.ENOKEY, f"no request-key.conf line for {op} {key.type} {key.description!r}")
        pipe = rule.command.startswith("|")
        words = (rule.command[1:] if pipe else rule.command).split()
        if not words or "/" not in words[0]:
            raise error(errno.EINVAL, f"{rule.path}:{rule.line}: the program needs a full path")
        prog = words[0]
        argv = [prog.rsplit("/", 1)[1]] + [self._expand(w, request, op, rule) for w in words[1:]]
        if argv[0] == "keyctl" and not pipe:
            _keyctl(request, argv[1:], rule)
            return
        with _program_env(request) as env:
            if pipe:
                self._pipe(request, prog, argv, rule, recurse, env)
            else:
                subprocess.run(argv, executable=prog, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=self.timeout, check=False)

    def _expand(self, word: str, request: UpcallRequest, op: str, rule: Rule) -> str:
        """One argument with its macro replaced (whole-argument macros only, as request-key)."""
        if not word.startswith("%"):
            return word
        name = word[1:]
        if not name:
            raise error(errno.EINVAL, f"{rule.path}:{rule.line}: missing macro name")
        if name.startswith("%"):
            return name
        key = request.key
        values = {
            "o": op,
            "k": str(key.serial),
            "t": key.type,
            "d": key.description,
            "c": request.callout_info.decode("utf-8", "surrogateescape"),
            "u": str(request.uid),
            "g": str(request.gid),
            "T": str(request.thread_keyring),
            "P": str(request.process_keyring),
            "S": str(request.session_keyring),
        }
        if len(name) == 1 and name in values:
            return values[name]
        if name.startswith("{"):
            return self._keysub(name, request, rule)
        raise error(errno.EINVAL, f"{rule.path}:{rule.line}: unsupported macro %{name}")

    def _keysub(self, name: str, request: UpcallRequest, rule: Rule) -> str:
        """``%{type:description}``: the printable payload of that key, found from the requester."""
        body = name[1:]
        type_name, sep, rest = body.partition(":")
        description, close, trailing = rest.partition("}")
        if not sep or not close:
            raise error(errno.EINVAL, f"{rule.path}:{rule.line}: malformed keysub macro")
        if trailing or not type_name or not description:
            raise error(errno.EINVAL, f"{rule.path}:{rule.line}: keysub macro needs type:description and nothing after")
        data = request.keyspace.request_key(type_name, description).read()
        if not all(0x20 <= b < 0x7F for b in data):
            raise error(errno.EINVAL, f"{rule.path}:{rule.line}: keysub key {type_name}:{description} is not printable")
        return data.decode("ascii")

    def _pipe(
        self, request: UpcallRequest, prog: str, argv: list[str], rule: Rule, recurse: bool, env: dict[str, str]
    ) -> None:
        proc = subprocess.run(argv, executable=prog, env=env, input=request.callout_info, capture_output=True,
                              timeout=self.timeout, check=False)
        if proc.returncode != 0:
            if not recurse:
                raise error(errno.ENOKEY, f"{rule.path}:{rule.line}: {prog} failed ({proc.returncode})")
            self.run(request, "negate")
            return
        if len(proc.stdout) > PIPE_PAYLOAD_MAX:
            raise error(errno.EINVAL, f"{rule.path}:{rule.line}: {prog} wrote more than {PIPE_PAYLOAD_MAX} bytes")
        request.keyspace.instantiate(request.key, proc.stdout, 0)


#: What the ``keyctl`` a store-backed request's program finds needs of this process's
#: environment to open the same store as the same library: the state directory
#: (and so the host key sealing the store key) is found from these.
_CARRIED = ("HOME", "XDG_STATE_HOME", "PYTHONPATH", "PYTHONPYCACHEPREFIX")


@contextmanager
def _program_env(request: UpcallRequest) -> Iterator[dict[str, str]]:
    """The environment a program runs in: the kernel's, and for a store a ``keyctl`` acting on it.

    ``keyctl`` is a script in a private directory put first on ``PATH`` (removed
    when the program returns): it runs ``ktctl`` on the request's store, in the
    handler's session keyring and holding the authority over the key, which
    is what the kernel's credentials give a program /sbin/request-key runs.
    """
    store = getattr(request.keyspace, "store", None)
    path = getattr(store, "path", None)
    if path is None:
        yield dict(_ENV)
        return
    from keyring_types.constants import KEY_SPEC_SESSION_KEYRING

    session = request.keyspace.sys_get_keyring_id(KEY_SPEC_SESSION_KEYRING, False)
    carried = {k: v for k, v in os.environ.items() if k in _CARRIED or k.startswith("KEYRING_TYPES_")}
    carried.update(KTCTL_BACKEND="store", KTCTL_SESSION=str(session), KTCTL_REQKEY_AUTH=str(request.key.serial))
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(carried.items()))
    script = (
        "#!/bin/sh\n"
        f"exec env {assignments} {shlex.quote(sys.executable)} -m keyring_types --store {shlex.quote(str(path))} \"$@\"\n"
    )
    with tempfile.TemporaryDirectory(prefix="kt-request-key-") as bindir:
        shim = Path(bindir) / "keyctl"
        shim.write_text(script)
        shim.chmod(0o700)
        yield dict(_ENV, PATH=f"{bindir}:{_ENV['PATH']}")


def _trusted_text(path: Path) -> str:
    """The rules in ``path``, if only root or this user could have written them.

    The lines name programs to run, so a file (or directory) that someone else may
    change is refused with ``EACCES``; FileNotFoundError if absent.
    """
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        for what, mode, uid in ((path, st.st_mode, st.st_uid), (path.parent, *_dir_owner(path.parent))):
            if uid not in (0, os.geteuid()) or mode & 0o022:
                raise error(
                    errno.EACCES,
                    f"{what} may be changed by others (owner uid {uid}, mode {mode & 0o7777:o}): its rules are not run",
                )
        return f.read().decode("utf-8", "surrogateescape")


def _dir_owner(directory: Path) -> tuple[int, int]:
    st = os.stat(directory)
    # A sticky directory (/tmp) lets others add files but not replace ours.
    mode = st.st_mode & ~0o022 if st.st_mode & 0o1000 else st.st_mode
    return mode, st.st_uid


def _keyring_arg(word: str) -> int | str:
    return word if word.startswith("@") else int(word, 0)


def _keyctl(request: UpcallRequest, args: Sequence[str], rule: Rule) -> None:
    """keyctl's handler-side verbs, done on the request's keyspace (EINVAL for others or bad arguments)."""
    ks = request.keyspace
    verb, rest = (args[0], list(args[1:])) if args else ("", [])
    try:
        if verb == "negate" and len(rest) == 3:
            ks.negate(_keyring_arg(rest[0]), int(rest[1]), _keyring_arg(rest[2]))
        elif verb == "reject" and len(rest) == 4:
            err = _REJECT_NAMES.get(rest[2])
            ks.reject(_keyring_arg(rest[0]), int(rest[1]), int(rest[2]) if err is None else err,
                      _keyring_arg(rest[3]))
        elif verb == "instantiate" and len(rest) == 3:
            ks.instantiate(_keyring_arg(rest[0]), rest[1].encode(), _keyring_arg(rest[2]))
        elif verb == "pinstantiate" and len(rest) == 2:
            # request-key's programs have /dev/null on stdin: an empty payload.
            ks.instantiate(_keyring_arg(rest[0]), None, _keyring_arg(rest[1]))
        else:
            raise error(errno.EINVAL, f"{rule.path}:{rule.line}: keyctl {verb} is not a handler-side verb done in process")
    except ValueError:
        raise error(errno.EINVAL, f"{rule.path}:{rule.line}: keyctl {verb}: bad number in its arguments") from None
