"""``KernelKeyspace``: the public keyspace API on the real kernel keyring.

Every ``sys_*`` method is one real system call (``add_key``, ``request_key``,
``keyctl``) through :mod:`keyring_types.integrations.kernel_syscalls`; the
kernel decides everything and its errno comes back unchanged.  This is the
reference the in-process :class:`~keyring_types.Keyspace` is tested against, so
nothing here corrects what the kernel does.

``as_user(uid, gid, groups)`` runs each call in a forked child that drops to
those credentials first: the kernel keeps credentials per task, so that is the
only way to act as another user without disturbing this process, and a child
inherits the session keyring, which is what makes it a view of the same keys.
"""

from __future__ import annotations

import builtins
import errno
import os
import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from keyring_types.constants import KEY_SPEC_SESSION_KEYRING, KEY_SPEC_USER_KEYRING
from keyring_types.core.api import KeyspaceAPI
from keyring_types.core.syscall_args import check_creds
from keyring_types.errors import KeyringError, error
from keyring_types.integrations import kernel_syscalls as sc
from keyring_types.integrations.kernel_asym import KernelAsymCalls
from keyring_types.secret import SecretBuffer

if TYPE_CHECKING:
    from keyring_types.core.dh import DhKdf

__all__ = ["KernelKeyspace"]

T = TypeVar("T")


@attrs.frozen
class _Creds:
    """The credentials an ``as_user`` child switches to."""

    uid: int
    gid: int
    groups: tuple[int, ...]

    def __str__(self) -> str:
        return f"uid {self.uid}, gid {self.gid}, groups {list(self.groups)}"


class KernelKeyspace(KernelAsymCalls, KeyspaceAPI):
    """The keyspace API on this machine's kernel keyring.

    ``new_session=True`` first makes the calling thread join a fresh anonymous
    session keyring (``keyctl new_session``), so ``@s`` starts empty.  Like the
    kernel, that changes the credentials of the calling thread only.
    """

    __slots__ = ("_creds",)

    def __init__(self, new_session: bool = False) -> None:
        """Raises what ``KEYCTL_JOIN_SESSION_KEYRING`` raises (``EDQUOT``, ``ENOMEM``)."""
        self._creds: _Creds | None = None
        if new_session:
            sc.keyctl_join_session_keyring(None)

    @classmethod
    def _view(cls, creds: _Creds) -> KernelKeyspace:
        view = cls.__new__(cls)
        view._creds = creds
        return view

    def __repr__(self) -> str:
        who = "this process" if self._creds is None else str(self._creds)
        return f"<KernelKeyspace as {who}>"

    # -- credentials ----------------------------------------------------------
    def as_user(self, uid: int, gid: int, groups: tuple[int, ...] | list[int] = ()) -> KernelKeyspace:
        """A view whose every call runs in a child with these uid/gid/groups.

        The child inherits this thread's session keyring (so it may possess the
        keys linked there) but, as fork(2) gives it, no thread or process keyring;
        each call is a new child, so a thread/process keyring it creates, or a
        session it joins, ends with that call.  A secret read in the child reaches
        the parent through a pipe straight into a SecretBuffer.  Switching needs
        CAP_SETUID/CAP_SETGID: without them each call raises ``EPERM``.  Forking
        is not safe while other threads hold locks, so use views from one thread.

        ``EINVAL`` for an id outside 0..2**32-2 (what setresuid/setgroups take; -1
        would mean "unchanged") or ``groups`` that is not a sequence of such ids.
        """
        return KernelKeyspace._view(_Creds(*check_creds(uid, gid, groups)))

    def same_world(self, other: KeyspaceAPI) -> bool:
        """True for any other view of the kernel keyring."""
        return isinstance(other, KernelKeyspace)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._creds is None:
            return fn(*args)
        return _run_as(self._creds, fn, args)

    # -- the system calls -----------------------------------------------------
    def sys_add_key(
        self, type_name: str, description: str | None, payload: bytes | None, ringid: int, *, usage: str | None = None
    ) -> int:
        """``add_key(2)``; errno as :func:`kernel_syscalls.add_key`.

        ``EOPNOTSUPP`` for ``usage``: the kernel keyring cannot bind a key to one use.
        """
        if usage is not None:
            raise error(errno.EOPNOTSUPP, "the kernel keyring cannot bind a key to one use (usage=)")
        return self._call(sc.add_key, type_name, description, payload, ringid)

    def sys_request_key(self, type_name: str, description: str, callout: bytes | None, destringid: int) -> int:
        """``request_key(2)``; ``ENOKEY`` says so when the key sits in an unlinked ``@u``."""
        return self._call(_request_key_hinted, type_name, description, callout, destringid)

    def sys_get_keyring_id(self, keyid: int, create: bool) -> int:
        """``KEYCTL_GET_KEYRING_ID``; ``ENOKEY``, ``EINVAL`` (e.g. ``@g``)."""
        return self._call(sc.keyctl_get_keyring_id, keyid, create)

    def sys_join_session_keyring(self, name: str | None) -> int:
        """``KEYCTL_JOIN_SESSION_KEYRING`` (``None``: new anonymous); ``EPERM`` for '.' names.

        The serial of the session keyring now in force, also when it already was
        (the kernel returns 0 then).  On an ``as_user`` view the child joins, so
        the change dies with it.
        """
        return self._call(_join_session, name)

    def sys_update(self, keyid: int, payload: bytes) -> None:
        """``KEYCTL_UPDATE``; ``EINVAL``, ``EOPNOTSUPP``, ``EACCES``, ``EKEYREVOKED``, ``EKEYEXPIRED``."""
        self._call(sc.keyctl_update, keyid, payload)

    def sys_revoke(self, keyid: int) -> None:
        """``KEYCTL_REVOKE``; ``EACCES``, ``EKEYREVOKED``, ``ENOKEY``."""
        self._call(sc.keyctl_revoke, keyid)

    def sys_chown(self, keyid: int, uid: int, gid: int) -> None:
        """``KEYCTL_CHOWN``; ``EACCES``, ``EDQUOT``, ``ENOKEY``."""
        self._call(sc.keyctl_chown, keyid, uid, gid)

    def sys_setperm(self, keyid: int, perm: int) -> None:
        """``KEYCTL_SETPERM``; ``EINVAL`` (bad bits), ``EACCES``, ``ENOKEY``."""
        self._call(sc.keyctl_setperm, keyid, perm)

    def sys_describe(self, keyid: int) -> str:
        """``KEYCTL_DESCRIBE`` without the trailing NUL; ``EACCES``, ``EKEYREVOKED``, ``ENOKEY``."""
        return self._call(sc.keyctl_describe, keyid)

    def sys_clear(self, ringid: int) -> None:
        """``KEYCTL_CLEAR``; ``ENOTDIR``, ``EACCES``, ``ENOKEY``."""
        self._call(sc.keyctl_clear, ringid)

    def sys_link(self, keyid: int, ringid: int) -> None:
        """``KEYCTL_LINK``; ``EDEADLK``, ``ENOTDIR``, ``EACCES``, ``EDQUOT``, ``ENOKEY``."""
        self._call(sc.keyctl_link, keyid, ringid)

    def sys_unlink(self, keyid: int, ringid: int) -> None:
        """``KEYCTL_UNLINK``; ``ENOENT``, ``ENOTDIR``, ``EACCES``, ``ENOKEY``."""
        self._call(sc.keyctl_unlink, keyid, ringid)

    def sys_search(self, ringid: int, type_name: str, description: str, destringid: int) -> int:
        """``KEYCTL_SEARCH``; ``ENOKEY`` says so when the key sits in an unlinked ``@u``."""
        return self._call(_search_hinted, ringid, type_name, description, destringid)

    def sys_read(self, keyid: int) -> bytes:
        """``KEYCTL_READ``, retried until the buffer fits; ``EACCES``, ``EOPNOTSUPP``, ``EKEYREVOKED``."""
        return self._call(sc.keyctl_read, keyid)

    def sys_set_timeout(self, keyid: int, timeout: int) -> None:
        """``KEYCTL_SET_TIMEOUT``; ``EACCES``, ``EKEYREVOKED``, ``ENOKEY``."""
        self._call(sc.keyctl_set_timeout, keyid, timeout)

    def sys_invalidate(self, keyid: int) -> None:
        """``KEYCTL_INVALIDATE``; ``EACCES`` (no SEARCH), ``ENOKEY``."""
        self._call(sc.keyctl_invalidate, keyid)

    # -- the request-key handler's side (run inside a /sbin/request-key program) --
    def sys_instantiate(self, keyid: int, payload: bytes | None, ringid: int) -> None:
        """``KEYCTL_INSTANTIATE``; ``EPERM`` outside an upcall, ``EBUSY``, ``EINVAL``, ``EACCES``."""
        self._call(sc.keyctl_instantiate, keyid, payload, ringid)

    def sys_instantiate_iov(self, keyid: int, parts: list[bytes], ringid: int) -> None:
        """``KEYCTL_INSTANTIATE_IOV``; as :meth:`sys_instantiate`."""
        self._call(sc.keyctl_instantiate_iov, keyid, parts, ringid)

    def sys_negate(self, keyid: int, timeout: int, ringid: int) -> None:
        """``KEYCTL_NEGATE``; ``EPERM`` outside an upcall, ``EBUSY``."""
        self._call(sc.keyctl_negate, keyid, timeout, ringid)

    def sys_reject(self, keyid: int, timeout: int, err: int, ringid: int) -> None:
        """``KEYCTL_REJECT``; ``EINVAL`` (bad error number), ``EPERM`` outside an upcall, ``EBUSY``."""
        self._call(sc.keyctl_reject, keyid, timeout, err, ringid)

    def sys_assume_authority(self, keyid: int) -> int:
        """``KEYCTL_ASSUME_AUTHORITY``; ``ENOKEY``, ``EKEYREVOKED``, ``EINVAL``.

        Changes the calling thread's credentials, as the kernel does.
        """
        return self._call(sc.keyctl_assume_authority, keyid)

    def sys_set_reqkey_keyring(self, which: int) -> int:
        """``KEYCTL_SET_REQKEY_KEYRING`` for the calling thread; ``EINVAL``."""
        return self._call(sc.keyctl_set_reqkey_keyring, which)

    def sys_get_persistent(self, uid: int, destringid: int) -> int:
        """``KEYCTL_GET_PERSISTENT``; ``EPERM``, ``ENOTDIR``, ``EACCES``, ``EDQUOT``."""
        return self._call(sc.keyctl_get_persistent, uid, destringid)

    def sys_move(self, keyid: int, from_ringid: int, to_ringid: int, flags: int) -> None:
        """``KEYCTL_MOVE``; ``EEXIST``, ``ENOENT``, ``EDEADLK``, ``EACCES``, ``EDQUOT``, ``EINVAL``."""
        self._call(sc.keyctl_move, keyid, from_ringid, to_ringid, flags)

    def sys_session_to_parent(self) -> None:
        """``KEYCTL_SESSION_TO_PARENT``: this process's parent (for an ``as_user`` view: this
        process) gets the session keyring when it next returns to user space; ``EPERM``."""
        self._call(sc.keyctl_session_to_parent)

    def sys_get_security(self, keyid: int) -> str:
        """``KEYCTL_GET_SECURITY``; ``ENOKEY`` also without VIEW, ``EKEYREVOKED``."""
        return self._call(sc.keyctl_get_security, keyid)

    def sys_capabilities(self) -> frozenset[str]:
        """``KEYCTL_CAPABILITIES``, decoded into the names ``keyctl supports`` prints."""
        from keyring_types.core.capabilities import capabilities_from_bytes

        return capabilities_from_bytes(self._call(sc.keyctl_capabilities))

    def sys_watch_key(self, keyid: int, queue: object, watch_id: int) -> None:
        """``KEYCTL_WATCH_KEY`` with ``queue`` a notification pipe's fd; ``EOPNOTSUPP`` from a
        kernel without CONFIG_KEY_NOTIFICATIONS, whatever the arguments."""
        # An in-process WatchQueue is no kernel pipe: the kernel gets an fd it rejects.
        fd = queue if isinstance(queue, int) and not isinstance(queue, bool) else -1
        self._call(sc.keyctl_watch_key, keyid, fd, watch_id)

    def sys_dh_compute(self, private: int, prime: int, base: int, kdf: DhKdf | None) -> bytes:
        """``KEYCTL_DH_COMPUTE``; ``EOPNOTSUPP`` from a kernel built without it."""
        spec = None if kdf is None else (kdf.hashname, kdf.length, kdf.otherinfo)
        return self._call(sc.keyctl_dh_compute, private, prime, base, spec)

    @property
    def persistent_keyring_expiry(self) -> int:
        """``/proc/sys/kernel/keys/persistent_keyring_expiry`` (seconds); setting it needs root."""
        with open(_PERSISTENT_EXPIRY_SYSCTL) as f:
            return int(f.read())

    @persistent_keyring_expiry.setter
    def persistent_keyring_expiry(self, seconds: int) -> None:
        if type(seconds) is not int or not 0 <= seconds <= 0xFFFFFFFF:
            raise error(errno.EINVAL, "persistent_keyring_expiry must be 0..2**32-1 seconds")
        with open(_PERSISTENT_EXPIRY_SYSCTL, "w") as f:
            f.write(f"{seconds}\n")

    def sys_secret(self, keyid: int, consumer: str | None = None) -> SecretBuffer:
        """``KEYCTL_READ`` straight into a new SecretBuffer (the caller wipes it).

        Kernel keys are never bound to a use, so any ``consumer`` may have them.

        The kernel gives user space no other way to the plaintext, so this has the
        errno of ``read``: ``EOPNOTSUPP`` for logon keys, ``EACCES``, ``EKEYREVOKED``;
        and ``EOPNOTSUPP`` for encrypted and trusted keys, whose plaintext stays in the
        kernel (their read() is the blob).
        """
        type_name = self._sealed_type(keyid)
        if type_name is not None:
            raise error(
                errno.EOPNOTSUPP,
                f"key {keyid} is a kernel '{type_name}' key: the kernel never hands its plaintext to "
                "user space (read() gives the blob)",
            )
        return self._call(sc.keyctl_read_secret, keyid)

    def _sealed_type(self, keyid: int) -> str | None:
        """The type name if ``keyid`` is a sealed type whose read() is a blob, not the secret."""
        try:
            type_name = self.sys_describe(keyid).split(";", 1)[0]
        except OSError:
            return None  # let the read itself report why
        return type_name if type_name in _SEALED_TYPES else None


#: The sysctl behind ``KernelKeyspace.persistent_keyring_expiry``.
_PERSISTENT_EXPIRY_SYSCTL = "/proc/sys/kernel/keys/persistent_keyring_expiry"

#: Kernel key types whose KEYCTL_READ returns a sealed blob rather than the key material.
_SEALED_TYPES = frozenset({"encrypted", "trusted"})


def _join_session(name: str | None) -> int:
    serial = sc.keyctl_join_session_keyring(name)
    if serial == 0:
        # Joining the keyring that already is the session returns 0 (keyctl.c
        # join_session_keyring): the serial is that of the unchanged @s.
        serial = sc.keyctl_get_keyring_id(KEY_SPEC_SESSION_KEYRING, False)
    return serial


# -- "errors a user can act on": a key that sits in an unreachable @u ---------


def _user_keyring_hint(type_name: str, description: str) -> str | None:
    """Explain an ENOKEY caused by ``@u`` not being linked into ``@s``, or None."""
    try:
        # A special id counts as possessed (lookup_user_key), so this search sees
        # keys that carry only possessor SEARCH, as the default masks do.
        sc.keyctl_search(KEY_SPEC_USER_KEYRING, type_name, description, 0)
    except KeyringError as exc:
        if exc.errno != errno.EACCES:  # EACCES: one is there, just not searchable
            return None
    try:
        user_ring = sc.keyctl_get_keyring_id(KEY_SPEC_USER_KEYRING, False)
        raw = sc.keyctl_read(KEY_SPEC_SESSION_KEYRING)
    except KeyringError:
        return None
    linked = struct.unpack(f"={len(raw) // 4}i", raw)
    if user_ring in linked:
        return None
    return (
        f"a {type_name!r} key {description!r} exists in your user keyring @u ({user_ring}), "
        "but @u is not linked into your session keyring @s, so searches do not reach it; "
        "link it with `keyctl link @u @s` or `ks.session.link(ks.user_keyring)`"
    )


def _with_hint(exc: KeyringError, type_name: str, description: str) -> KeyringError:
    if exc.errno != errno.ENOKEY:
        return exc
    hint = _user_keyring_hint(type_name, description)
    if hint is None:
        return exc
    return error(errno.ENOKEY, f"{exc.strerror}; {hint}")


def _search_hinted(ringid: int, type_name: str, description: str, destringid: int) -> int:
    try:
        return sc.keyctl_search(ringid, type_name, description, destringid)
    except KeyringError as exc:
        raise _with_hint(exc, type_name, description) from None


def _request_key_hinted(type_name: str, description: str, callout: bytes | None, destringid: int) -> int:
    try:
        return sc.request_key(type_name, description, callout, destringid)
    except KeyringError as exc:
        raise _with_hint(exc, type_name, description) from None


# -- running one call in a child with other credentials ------------------------
#
# Reply framing on the pipe: header (tag, errno, body length), then the body.
_HEADER = struct.Struct("=BiQ")
_NONE, _INT, _STR, _BYTES, _ERROR, _SECRET, _EXC = range(7)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _child(creds: _Creds, fn: Callable[..., Any], args: tuple[Any, ...], fd: int) -> None:
    try:
        try:
            # Order matters: groups and gid can only be changed while still uid 0.
            os.setgroups(list(creds.groups))
            os.setresgid(creds.gid, creds.gid, creds.gid)
            os.setresuid(creds.uid, creds.uid, creds.uid)
        except OSError as exc:
            err = exc.errno or errno.EPERM
            raise error(err, f"as_user({creds}): cannot switch credentials: {os.strerror(err)}") from None
        result = fn(*args)
    except KeyringError as exc:
        body = str(exc.strerror).encode("utf-8", "surrogateescape")
        _write_all(fd, _HEADER.pack(_ERROR, exc.errno or 0, len(body)) + body)
        return
    except Exception as exc:  # noqa: BLE001 -- any other exception is re-raised in the parent
        body = f"{type(exc).__name__}\0{exc}".encode("utf-8", "surrogateescape")
        _write_all(fd, _HEADER.pack(_EXC, 0, len(body)) + body)
        return
    if isinstance(result, SecretBuffer):
        try:
            _write_all(fd, _HEADER.pack(_SECRET, 0, len(result)))
            view = result.view()
            try:
                _write_all(fd, view)
            finally:
                view.release()
        finally:
            result.wipe()
        return
    if result is None:
        tag, body = _NONE, b""
    elif isinstance(result, int):
        tag, body = _INT, str(result).encode()
    elif isinstance(result, str):
        tag, body = _STR, result.encode("utf-8", "surrogateescape")
    else:
        tag, body = _BYTES, bytes(result)
    _write_all(fd, _HEADER.pack(tag, 0, len(body)) + body)


def _read_exact_into(fd: int, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    return got


def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = _read_exact_into(fd, view)
    view.release()
    return bytes(buf[:got])


def _run_as(creds: _Creds, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's code, never run atexit hooks
        status = 0
        try:
            os.close(rfd)
            _child(creds, fn, args, wfd)
        except BaseException:  # noqa: BLE001 -- the child must reach os._exit whatever happens
            status = 1
        finally:
            os._exit(status)
    os.close(wfd)
    try:
        return _receive(creds, rfd)  # type: ignore[no-any-return]
    finally:
        os.close(rfd)
        os.waitpid(pid, 0)


def _receive(creds: _Creds, fd: int) -> Any:
    head = _read_exact(fd, _HEADER.size)
    if len(head) != _HEADER.size:
        raise error(errno.EIO, f"as_user({creds}): the child exited without a reply")
    tag, err, length = _HEADER.unpack(head)
    if tag == _SECRET:
        buf = SecretBuffer(length)
        view = buf.writable()
        try:
            got = _read_exact_into(fd, view)
        finally:
            view.release()
        if got != length:
            buf.wipe()
            raise error(errno.EIO, f"as_user({creds}): the child's reply was cut short")
        return buf
    body = _read_exact(fd, length)
    if len(body) != length:
        raise error(errno.EIO, f"as_user({creds}): the child's reply was cut short")
    if tag == _NONE:
        return None
    if tag == _INT:
        return int(body)
    if tag == _STR:
        return body.decode("utf-8", "surrogateescape")
    if tag == _BYTES:
        return body
    if tag == _ERROR:
        raise error(err, body.decode("utf-8", "surrogateescape"))
    name, _sep, message = body.decode("utf-8", "surrogateescape").partition("\0")
    exc_type = getattr(builtins, name, None)
    if isinstance(exc_type, type) and issubclass(exc_type, Exception):
        raise exc_type(message)
    raise RuntimeError(f"as_user({creds}) child raised {name}: {message}")
