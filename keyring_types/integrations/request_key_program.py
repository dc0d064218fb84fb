"""The program ``/sbin/request-key`` runs to let a Python handler build a kernel key.

A rule in ``/etc/request-key.d/<name>.conf`` names it, a handler and the key::

    create  user  app:*  *  /usr/local/bin/kt-request-key  mypkg.handlers:build  %k

where ``kt-request-key`` is this package's console script (or any executable that runs
``python -m keyring_types.integrations.request_key_program`` with the right Python:
``/sbin/request-key`` clears the environment).
The handler is the same callable one registers for in-process keyspaces with
:func:`keyring_types.register_request_key_handler`: it gets an
:class:`~keyring_types.core.request_key_handlers.UpcallRequest` whose keyspace is
a :class:`~keyring_types.KernelKeyspace` holding the authority over the key
(``/sbin/request-key`` assumed it; credentials pass through ``exec``).

Arguments: ``<module:function | file.py:function> <key serial>``, then optionally
``%u %g %T %P %S`` (the requester's uid, gid and keyrings) for the request's
fields.  Exit status 0 when the handler returned, 1 when it raised or the key
could not be looked at, 2 for bad usage; the kernel itself decides the outcome
by whether the key was built.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import cast

from keyring_types.constants import KEY_SPEC_REQKEY_AUTH_KEY, KEY_SPEC_REQUESTOR_KEYRING
from keyring_types.core.handle import Key
from keyring_types.core.request_key_handlers import Handler, UpcallRequest

__all__ = ["load_handler", "main", "request_for", "run"]

_USAGE = "usage: request_key_program <module:function | file.py:function> <key serial> [uid gid T P S]"


def load_handler(ref: str) -> Handler:
    """The callable ``ref`` names: ``package.module:function`` or ``/path/file.py:function``.

    ``ValueError`` if ``ref`` has no ``:`` or names something that is not callable.
    """
    where, sep, name = ref.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"handler reference {ref!r} is not module:function or file.py:function")
    if where.endswith(".py"):
        path = Path(where)
        spec = importlib.util.spec_from_file_location(f"_kt_request_key_handler_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot load handler file {where!r}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    handler = getattr(module, name, None)
    if not callable(handler):
        raise ValueError(f"{ref!r} is not a callable")
    return cast(Handler, handler)


def request_for(serial: int, extra: list[int] | None = None) -> UpcallRequest:
    """The request for kernel key ``serial``, as seen from inside its upcall.

    Raises what the key and ``@a`` lookups raise (``ENOKEY``, ``EACCES``) when
    not run with the authority over ``serial``.
    """
    from keyring_types.integrations.kernel_keyspace import KernelKeyspace

    ks = KernelKeyspace()
    # /sbin/request-key assumed the authority already; assuming it again is harmless
    # and lets the program run by hand from inside another handler too.
    ks.assume_authority(serial)
    type_name, _uid, _gid, _perm, description = ks.sys_describe(serial).split(";", 4)
    callout = ks.sys_read(KEY_SPEC_REQKEY_AUTH_KEY)
    dest = ks.keyring(KEY_SPEC_REQUESTOR_KEYRING)
    uid, gid, thread_ring, process_ring, session_ring = (extra or []) + [0] * (5 - len(extra or []))
    return UpcallRequest(
        keyspace=ks,
        key=Key(ks, serial, type_name, description),
        callout_info=callout,
        dest=dest,
        uid=uid,
        gid=gid,
        thread_keyring=thread_ring,
        process_keyring=process_ring,
        session_keyring=session_ring,
    )


def main(argv: list[str]) -> int:
    """Run the handler ``argv[0]`` names for the key ``argv[1]``."""
    if len(argv) not in (2, 7):
        print(_USAGE, file=sys.stderr)
        return 2
    try:
        serial = int(argv[1])
        extra = [int(a) for a in argv[2:]]
    except ValueError:
        print(_USAGE, file=sys.stderr)
        return 2
    try:
        handler = load_handler(argv[0])
        request = request_for(serial, extra)
        handler(request)
    except Exception as exc:  # noqa: BLE001 -- reported like any request-key program's failure
        print(f"request_key_program: key {argv[1]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """The ``kt-request-key`` console script: :func:`main` on the command line, as the exit status."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    run()
