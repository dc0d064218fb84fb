"""Who is asking for a derived key: the caller's euid, its executable's path or its IMA measurement.

What the RFC's kernel code takes from ``current``, read here from ``/proc``:

* **euid** -- the kernel mixes the kernel-global uid (the euid as the initial
  user namespace sees it).  :func:`kernel_euid` maps ``geteuid()`` through
  ``/proc/self/uid_map``; inside a nested user namespace that map leads only
  to the parent namespace, which is then what is mixed.  The in-process
  :class:`~keyring_types.Keyspace`'s credentials (``Keyspace(uid=)``,
  ``as_user``) are simulated and prove nothing, so they are never mixed in: a
  process gets the keys of the uid it runs as, never of one it claims.
* **path** -- ``readlink("/proc/self/exe")`` is the same ``d_path`` of the
  executable that the kernel's ``file_path(mm->exe_file)`` gives: relative to
  the process's root and mount namespace, with `` (deleted)`` appended once the
  file is unlinked.  It is mixed as is, as the kernel would.
* **csum** -- the kernel mixes the digest IMA cached for the executable's
  inode.  User space reads IMA's measurement list instead (the last entry
  naming the executable's path, violations skipped), from
  ``$KEYRING_TYPES_IMA_MEASUREMENTS`` or IMA's ``ascii_runtime_measurements``.
  No measurement is ``EOPNOTSUPP``, as in the RFC.  Where no measurement list
  exists at all, ``KEYRING_TYPES_DERIVE_SELF_MEASURE=1`` lets the library
  measure the executable itself (SHA-256 of ``/proc/self/exe``, the running
  inode): the key is then the one IMA with ``ima_hash=sha256`` would give, but
  nothing outside the process vouches for the measurement.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sys
import threading

from keyring_types.errors import error
from keyring_types.imalog import last_file_digest

__all__ = [
    "ENV_IMA_LOG",
    "ENV_SELF_MEASURE",
    "IMA_LOGS",
    "exe_measurement",
    "exe_path",
    "ima_digest",
    "kernel_euid",
    "map_id",
    "script_measurement",
    "script_path",
]

ENV_IMA_LOG = "KEYRING_TYPES_IMA_MEASUREMENTS"
ENV_SELF_MEASURE = "KEYRING_TYPES_DERIVE_SELF_MEASURE"
#: Where IMA's list is (``ima`` is a link to ``integrity/ima`` on current kernels).
IMA_LOGS = (
    "/sys/kernel/security/ima/ascii_runtime_measurements",
    "/sys/kernel/security/integrity/ima/ascii_runtime_measurements",
)
_DELETED = b" (deleted)"
#: The initial user namespace's map (every id to itself).
_IDENTITY_MAP = "         0          0 4294967295\n"


def map_id(ident: int, id_map: str) -> int:
    """``ident`` mapped through a ``uid_map``'s lines (``inside outside count``).

    ``EINVAL`` when the map does not cover it (the kernel's overflow uid would
    mean no real identity).
    """
    for line in id_map.splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue
        inside, outside, count = (int(f) for f in fields)
        if inside <= ident < inside + count:
            return outside + (ident - inside)
    raise error(errno.EINVAL, f"uid {ident} has no mapping in this user namespace's uid_map")


#: user namespace (``/proc/self/ns/user``'s link text) -> its uid_map, once written.
_uid_maps: dict[bytes, str] = {}


def kernel_euid() -> int:
    """The effective uid as the kernel mixes it (see the module docstring); ``EINVAL`` if unmapped."""
    euid = os.geteuid()
    # A namespace's uid_map can be written once only: once it is, it is cached per namespace
    # (a process that unshares or setns gets another namespace, so another entry).
    try:
        ns = os.readlink(b"/proc/self/ns/user")
    except OSError:
        ns = b""
    id_map = _uid_maps.get(ns) if ns else None
    if id_map is None:
        try:
            with open("/proc/self/uid_map", encoding="ascii") as f:
                id_map = f.read()
        except FileNotFoundError:
            return euid  # no /proc or no user namespaces: the initial namespace
        if ns and id_map:
            _uid_maps[ns] = id_map
    if id_map == _IDENTITY_MAP:
        return euid
    return map_id(euid, id_map)


def exe_path() -> bytes:
    """The executable's path as the kernel's ``file_path`` gives it.

    ``EFAULT`` when the process has no executable (the RFC's errno) or ``/proc``
    is not mounted; ``ENAMETOOLONG`` and other errors of ``readlink`` as raised.
    """
    try:
        return os.readlink(b"/proc/self/exe")
    except FileNotFoundError:
        raise error(errno.EFAULT, "no executable file for this process (is /proc mounted?)") from None


def _ima_log() -> str | None:
    configured = os.environ.get(ENV_IMA_LOG)
    if configured:
        return configured
    for path in IMA_LOGS:
        if os.path.exists(path):
            return path
    return None


def ima_digest(log: bytes, path: bytes) -> bytes | None:
    """The digest of the last measurement of ``path`` in an ``ascii_runtime_measurements`` text.

    IMA writes a space in a name as ``_``, so ``path`` is compared the same way.
    Violation entries (all-zero digest) and entries of other templates
    (``ima-buf``) are skipped.  ``None`` when there is none; ``EINVAL`` when a
    matching line's digest is not hex.
    """
    return last_file_digest(log, path)


_measured_lock = threading.Lock()
#: (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) of a measured file -> its SHA-256.
_measured: dict[tuple[int, ...], bytes] = {}


def _self_measure(path: str | bytes) -> bytes:
    """SHA-256 of the file open at ``path``, cached while its stat holds."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with _measured_lock:
            cached = _measured.get(key)
        if cached is not None:
            return cached
        digest = hashlib.file_digest(f, "sha256").digest()
    with _measured_lock:
        _measured[key] = digest
    return digest


def _measurement(path: bytes, open_path: str | bytes, what: str) -> bytes:
    """IMA's last digest of ``path`` (or, opted in and without any IMA list, SHA-256 of ``open_path``)."""
    log_path = _ima_log()
    if log_path is None or not os.path.exists(log_path):
        if os.environ.get(ENV_SELF_MEASURE) == "1":
            return _self_measure(open_path)
        raise error(
            errno.EOPNOTSUPP,
            f"csum needs IMA's measurement of the {what}, and this system has no IMA measurement list "
            f"(set {ENV_SELF_MEASURE}=1 to have the library measure the {what} itself)",
        )
    if path.endswith(_DELETED):
        raise error(errno.EOPNOTSUPP, f"the {what} was deleted: its IMA measurement cannot be found by path")
    try:
        with open(log_path, "rb") as f:
            log = f.read()
    except OSError as exc:
        raise error(errno.EOPNOTSUPP, f"cannot read the IMA measurement list {log_path}: {exc.strerror}") from None
    digest = ima_digest(log, path)
    if digest is None:
        raise error(errno.EOPNOTSUPP, f"IMA has no measurement of this {what} (no matching 'measure' rule?)")
    return digest


def exe_measurement() -> bytes:
    """The executable's IMA digest, the value the ``csum`` mode mixes.

    ``EOPNOTSUPP`` when IMA has no measurement of it, when its list cannot be
    read, or when the executable was deleted (its measurement cannot be found
    by path any more) -- unless no list exists at all and
    ``KEYRING_TYPES_DERIVE_SELF_MEASURE=1`` asks for the library's own
    measurement (of ``/proc/self/exe``, the running inode).  ``EFAULT`` as
    :func:`exe_path`.
    """
    return _measurement(exe_path(), "/proc/self/exe", "executable")


def script_path() -> bytes:
    """The interpreter's main script (``__main__.__file__``), symbolic links resolved: ``bind=script``.

    The library runs in a Python interpreter, whose ``/proc/self/exe`` is the
    same for every script; this names the script.  ``EOPNOTSUPP`` when there is
    none (``python -c``, an interactive session, an embedding program).
    """
    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    if not isinstance(file, str) or not os.path.isfile(file):
        raise error(errno.EOPNOTSUPP, "bind=script needs a main script, and this interpreter runs none (python -c?)")
    return os.fsencode(os.path.realpath(file))


def script_measurement() -> bytes:
    """The main script's IMA digest (``bind=script`` with ``csum``); errors as :func:`exe_measurement`.

    IMA measures a script read by an interpreter only under a ``FILE_CHECK``
    rule; the opt-in self-measurement hashes the file at :func:`script_path`.
    """
    path = script_path()
    return _measurement(path, path, "script")
