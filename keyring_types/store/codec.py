"""Payloads as bytes and back: how a key type's payload object is written into a store row.

A key type keeps whatever object it likes in ``key.payload``; the store needs
bytes.  A type may say how itself (``store_encode(key) -> bytes`` and
``store_decode(key, data) -> payload``); every other payload is written
structurally: ``None``, ``bool``, ``int``, ``str``, ``bytes``,
:class:`~keyring_types.secret.SecretBuffer` (its plaintext, which only ever
reaches the disk inside the row's AEAD seal), tuples, lists, frozensets, dicts,
16-byte cffi arrays (the encrypted type's IV) and ``attrs`` instances of those.
Decoding rebuilds an ``attrs`` class only from a ``keyring_types`` module or
the key type's own module, so a row can name no arbitrary callable; the rows
are authenticated anyway (see :mod:`keyring_types.store.seal`).

The encoding is tag, then a 4-byte big-endian length, then the body, nested.
"""

from __future__ import annotations

import errno
import importlib
import struct
from typing import Any

from keyring_types.errors import error
from keyring_types.secret import SecretBuffer

__all__ = ["decode_payload", "encode_payload"]

_LEN = struct.Struct(">I")
_CFFI_MODULE = "_cffi_backend"


def encode_payload(obj: object) -> bytearray:
    """The encoding of ``obj``, in one bytearray the caller wipes; ``EOPNOTSUPP`` for a value the store cannot write.

    The pieces are collected first (a SecretBuffer's plaintext as a view of its own
    memory) and copied once into a bytearray of the exact size: growing the
    bytearray piece by piece would move it, leaving copies of a secret in freed
    memory that nobody wipes.
    """
    if type(obj) is SecretBuffer:
        # The common payload (user, logon, ...), written straight into its buffer.
        mv = obj.view()
        try:
            n = len(mv)
            plain = bytearray(5 + n)
            plain[0] = 0x53  # b"S"
            _LEN.pack_into(plain, 1, n)
            plain[5:] = mv
            return plain
        finally:
            mv.release()
    parts: list[bytes | memoryview] = []
    views: list[memoryview] = []
    try:
        _encode(obj, parts, views)
        out = bytearray(sum(len(part) for part in parts))
        pos = 0
        for part in parts:
            end = pos + len(part)
            out[pos:end] = part
            pos = end
        return out
    finally:
        for mv in views:
            mv.release()


def _encode(obj: object, out: list[bytes | memoryview], views: list[memoryview]) -> None:
    if obj is None:
        out.append(b"N")
    elif obj is True:
        out.append(b"T")
    elif obj is False:
        out.append(b"F")
    elif type(obj) is SecretBuffer:
        mv = obj.view()
        views.append(mv)
        out.append(b"S" + _LEN.pack(len(mv)))
        out.append(mv)
    elif isinstance(obj, bytes):
        out.append(b"b" + _LEN.pack(len(obj)))
        out.append(obj)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8", "surrogatepass")
        out.append(b"s" + _LEN.pack(len(raw)) + raw)
    elif isinstance(obj, int):
        raw = int(obj).to_bytes(max(1, (int(obj).bit_length() + 8) // 8), "big", signed=True)
        out.append(b"i" + _LEN.pack(len(raw)) + raw)
    elif isinstance(obj, (tuple, list, frozenset)):
        tag = b"t" if isinstance(obj, tuple) else b"l" if isinstance(obj, list) else b"f"
        out.append(tag + _LEN.pack(len(obj)))
        for item in obj:
            _encode(item, out, views)
    elif isinstance(obj, dict):
        out.append(b"d" + _LEN.pack(len(obj)))
        for k, v in obj.items():
            _encode(k, out, views)
            _encode(v, out, views)
    elif getattr(type(obj), "__attrs_attrs__", None) is not None:
        # An attrs class, read through ``__attrs_attrs__`` (what attrs.fields returns):
        # the store loads this module on every command, and importing attrs is about
        # a fifth of a one-shot ktctl command's start-up (core/immutable.py).
        cls: Any = type(obj)
        fields = cls.__attrs_attrs__
        out.append(b"A")
        _encode(cls.__module__, out, views)
        _encode(cls.__qualname__, out, views)
        out.append(_LEN.pack(len(fields)))
        for f in fields:
            _encode(f.name, out, views)
            _encode(getattr(obj, f.name), out, views)
    elif type(obj).__module__ == _CFFI_MODULE:
        from keyring_types.bindings._secmem import ffi

        raw = bytes(ffi.buffer(obj))
        out.append(b"b" + _LEN.pack(len(raw)) + raw)
    else:
        raise error(errno.EOPNOTSUPP, f"the store cannot write a payload holding a {type(obj).__name__}")


def decode_payload(data: bytes | bytearray | memoryview, allowed_module: str) -> Any:
    """The object :func:`encode_payload` wrote; ``EBADMSG`` if ``data`` is not such an encoding."""
    try:
        obj, end = _decode(memoryview(data), 0, allowed_module)
    except (IndexError, struct.error, UnicodeDecodeError, TypeError, ValueError) as exc:
        raise error(errno.EBADMSG, f"a stored payload does not decode ({type(exc).__name__})") from None
    if end != len(data):
        raise error(errno.EBADMSG, "a stored payload has trailing bytes")
    return obj


def _decode(mv: memoryview, pos: int, allowed: str) -> tuple[Any, int]:
    tag = mv[pos : pos + 1].tobytes()
    pos += 1
    if tag == b"N":
        return None, pos
    if tag == b"T":
        return True, pos
    if tag == b"F":
        return False, pos
    if tag == b"A":
        module, pos = _decode(mv, pos, allowed)
        qualname, pos = _decode(mv, pos, allowed)
        (n,) = _LEN.unpack_from(mv, pos)
        pos += 4
        values: dict[str, Any] = {}
        for _ in range(n):
            name, pos = _decode(mv, pos, allowed)
            values[name], pos = _decode(mv, pos, allowed)
        return _build(module, qualname, values, allowed), pos
    (n,) = _LEN.unpack_from(mv, pos)
    pos += 4
    if tag in (b"t", b"l", b"f"):
        items = []
        for _ in range(n):
            item, pos = _decode(mv, pos, allowed)
            items.append(item)
        return (tuple(items) if tag == b"t" else items if tag == b"l" else frozenset(items)), pos
    if tag == b"d":
        d: dict[Any, Any] = {}
        for _ in range(n):
            k, pos = _decode(mv, pos, allowed)
            d[k], pos = _decode(mv, pos, allowed)
        return d, pos
    body = mv[pos : pos + n]
    if len(body) != n:
        raise ValueError("truncated")
    pos += n
    if tag == b"S":
        return SecretBuffer.from_bytes(body), pos
    if tag == b"b":
        return body.tobytes(), pos
    if tag == b"s":
        return str(body, "utf-8", "surrogatepass"), pos
    if tag == b"i":
        return int.from_bytes(body, "big", signed=True), pos
    raise ValueError(f"unknown tag {tag!r}")


def _build(module: str, qualname: str, values: dict[str, Any], allowed: str) -> Any:
    import attrs  # here, not at the top: see encode_payload

    if not (module == allowed or module == "keyring_types" or module.startswith("keyring_types.")):
        raise error(errno.EBADMSG, f"a stored payload names a class outside keyring_types ({module})")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and attrs.has(obj)):
        raise error(errno.EBADMSG, f"a stored payload names {module}.{qualname}, which is not an attrs class")
    init_args = {}
    later = {}
    for f in attrs.fields(obj):
        if f.name not in values:
            continue
        if f.init:
            init_args[f.alias] = values[f.name]
        else:
            later[f.name] = values[f.name]
    inst = obj(**init_args)
    for name, value in later.items():
        object.__setattr__(inst, name, value)
    return inst
