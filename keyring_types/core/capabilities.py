"""``KEYCTL_CAPABILITIES``: the kernel's capability bytes and the names ``keyctl supports`` prints.

The kernel answers with bytes in which each bit says that a feature is built in
(include/uapi/linux/keyctl.h, ``KEYCTL_CAPS0_*`` and ``KEYCTL_CAPS1_*``); keyctl
prints them as ``have_<name>``.  The names here are those without ``have_``.

For the in-process keyspace the answer is derived from what the keyspace class
and the key-type registry actually provide (:data:`IMPLEMENTED_BY`): a feature
counts when the class defines the system call that carries it, or when the key
type it needs is registered.  An operation added later needs one line here, if
its feature has no entry yet.
"""

from __future__ import annotations

from collections.abc import Iterable

from keyring_types.core.keytype import registered_key_types

__all__ = ["CAPABILITY_BITS", "IMPLEMENTED_BY", "capabilities_from_bytes", "capability_bytes", "implemented"]

#: keyctl's name -> (byte, bit) in the KEYCTL_CAPABILITIES answer.
CAPABILITY_BITS: dict[str, tuple[int, int]] = {
    "capabilities": (0, 0x01),
    "persistent_keyrings": (0, 0x02),
    "dh_compute": (0, 0x04),
    "public_key": (0, 0x08),
    "big_key_type": (0, 0x10),
    "key_invalidate": (0, 0x20),
    "restrict_keyring": (0, 0x40),
    "move_key": (0, 0x80),
    "ns_keyring_name": (1, 0x01),
    "ns_key_tag": (1, 0x02),
    "notify": (1, 0x04),
}

#: capability -> what implements it in process: a ``sys_*`` method of the keyspace
#: class, or ``"type:<name>"`` for a key type that must be registered.  The two
#: namespace features (keyring names and key tags per user/network namespace) have
#: no entry: a Keyspace does not provide them.
IMPLEMENTED_BY: dict[str, str] = {
    "capabilities": "sys_capabilities",
    "persistent_keyrings": "sys_get_persistent",
    "dh_compute": "sys_dh_compute",
    "public_key": "type:asymmetric",
    "big_key_type": "type:big_key",
    "key_invalidate": "sys_invalidate",
    "restrict_keyring": "sys_restrict_keyring",
    "move_key": "sys_move",
    "notify": "sys_watch_key",
}


def capabilities_from_bytes(raw: bytes) -> frozenset[str]:
    """The names whose bits are set in a KEYCTL_CAPABILITIES answer (unknown bits are ignored)."""
    return frozenset(
        name for name, (index, bit) in CAPABILITY_BITS.items() if index < len(raw) and raw[index] & bit
    )


def capability_bytes(names: Iterable[str]) -> bytes:
    """The KEYCTL_CAPABILITIES bytes for a set of names (the inverse of :func:`capabilities_from_bytes`)."""
    out = bytearray(1 + max(index for index, _ in CAPABILITY_BITS.values()))
    for name in names:
        index, bit = CAPABILITY_BITS[name]
        out[index] |= bit
    return bytes(out)


def implemented(cls: type) -> frozenset[str]:
    """The capabilities the keyspace class ``cls`` implements, per :data:`IMPLEMENTED_BY`.

    A system call counts when ``cls`` has it and it is not an abstract placeholder.
    """
    types = set(registered_key_types())
    found = set()
    for name, what in IMPLEMENTED_BY.items():
        if what.startswith("type:"):
            if what[5:] in types:
                found.add(name)
            continue
        method = getattr(cls, what, None)
        if callable(method) and not getattr(method, "__isabstractmethod__", False):
            found.add(name)
    return frozenset(found)
