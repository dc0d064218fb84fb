"""Request-key handlers: who builds a key that ``request_key`` with callout info asks for.

In the kernel ``/sbin/request-key`` picks a program from ``request-key.conf``; an
in-process :class:`~keyring_types.Keyspace` asks the handlers registered here.
A handler is any callable taking an :class:`UpcallRequest`; it runs with the
authority over the key already assumed and answers through the handler-side
calls of ``request.keyspace`` (``instantiate``, ``instantiate_iov``, ``negate``,
``reject``).  The same handler serves a :class:`~keyring_types.KernelKeyspace`
through :mod:`keyring_types.integrations.request_key_program`.

Patterns are request-key.conf's: one ``*`` anywhere matches any run of
characters, anything else matches itself.  Of several matching handlers the one
whose wildcards skip the fewest characters wins (type first, then description),
the earliest registered on a tie: /sbin/request-key's "best match" rule.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.core.api import KeyspaceAPI
    from keyring_types.core.handle import Key, Keyring

__all__ = [
    "Handler",
    "UpcallRequest",
    "find_request_key_handler",
    "pattern_match",
    "register_request_key_handler",
    "unregister_request_key_handler",
]


@attrs.frozen
class UpcallRequest:
    """One key to build: what a handler gets.

    ``keyspace`` is the handler's view (the authority over ``key`` assumed),
    ``key`` the key under construction there, ``callout_info`` what the
    requester passed, ``dest`` the requester's destination keyring (the kernel's
    ``KEY_SPEC_REQUESTOR_KEYRING``).  The rest are the values ``/sbin/request-key``
    gets on its command line: the operation and the requester's uid, gid and
    thread, process and session keyrings (0 for none).
    """

    keyspace: KeyspaceAPI
    key: Key
    callout_info: bytes
    dest: Keyring | None
    op: str = "create"
    uid: int = 0
    gid: int = 0
    thread_keyring: int = 0
    process_keyring: int = 0
    session_keyring: int = 0


Handler = Callable[[UpcallRequest], object]

_lock = threading.Lock()
_handlers: list[tuple[str, str, Handler]] = []


def pattern_match(pattern: str, datum: str) -> int | None:
    """How many characters of ``datum`` the ``*`` of ``pattern`` skips, or None if no match.

    request-key.conf's rule: without ``*`` the pattern must equal the datum; with
    one, the text before it must start the datum and the text after it end it.
    """
    star = pattern.find("*")
    if star < 0:
        return 0 if pattern == datum else None
    head, tail = pattern[:star], pattern[star + 1 :]
    if len(datum) < len(head) + len(tail):
        return None
    if not datum.startswith(head) or not datum.endswith(tail):
        return None
    return len(datum) - len(head) - len(tail)


def _check_pattern(pattern: object, what: str) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise error(errno.EINVAL, f"{what} pattern must be a non-empty str")
    if pattern.count("*") > 1:
        raise error(errno.EINVAL, f"{what} pattern {pattern!r} has more than one '*' (request-key.conf allows one)")
    if any(c.isspace() for c in pattern):
        raise error(errno.EINVAL, f"{what} pattern {pattern!r} contains white space")
    return pattern


def register_request_key_handler(type_name: str, description_glob: str, handler: Handler) -> Handler:
    """Have ``handler`` build the keys of ``type_name`` whose description matches ``description_glob``.

    Both patterns may hold one ``*``.  Applies to every in-process Keyspace.
    ``EEXIST`` if a handler is registered for exactly these patterns, ``EINVAL``
    for a pattern that is not text, is empty, has white space or two ``*``, or a
    handler that is not callable.  Returns ``handler``.
    """
    type_name = _check_pattern(type_name, "key type")
    description_glob = _check_pattern(description_glob, "description")
    if not callable(handler):
        raise error(errno.EINVAL, "a request-key handler must be callable")
    with _lock:
        if any(t == type_name and d == description_glob for t, d, _h in _handlers):
            raise error(errno.EEXIST, f"a request-key handler for {type_name} {description_glob!r} is registered")
        _handlers.append((type_name, description_glob, handler))
    return handler


def unregister_request_key_handler(type_name: str, description_glob: str) -> None:
    """Remove the handler registered for exactly these patterns; ``ENOENT`` if none is."""
    with _lock:
        for i, (t, d, _h) in enumerate(_handlers):
            if t == type_name and d == description_glob:
                del _handlers[i]
                return
    raise error(errno.ENOENT, f"no request-key handler is registered for {type_name} {description_glob!r}")


def find_request_key_handler(type_name: str, description: str) -> Handler | None:
    """The best-matching handler for a key, or None."""
    best: tuple[int, int] | None = None
    chosen: Handler | None = None
    with _lock:
        for t, d, h in _handlers:
            wt = pattern_match(t, type_name)
            if wt is None:
                continue
            wd = pattern_match(d, description)
            if wd is None:
                continue
            if best is None or (wt, wd) < best:
                best, chosen = (wt, wd), h
    return chosen
