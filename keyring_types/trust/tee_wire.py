"""The OP-TEE trusted-keys protocol on the wire: TA constants, GP codes and socket framing.

Shared by the client (:mod:`keyring_types.trust.tee`) and the emulated TEE
(:mod:`keyring_types.trust.tee_emulator`), so neither reaches into the other.

The TA is the kernel's (``trusted_tee.c``) peer, OP-TEE's ``ta/trusted_keys``:
UUID ``f04a0fe7-1f5d-4b9b-abf7-619b85b4ce8c``, three commands with four GP
parameters each, blobs ``0x00 | IV (16) | GCM tag (16) | ciphertext``.

The socket framing spoken with the emulated TEE (all little endian)::

    frame    := u32 length | body                       (length <= MAX_FRAME)
    request  := u32 op | op-specific fields | params
      OPEN   (1): uuid[16] | u32 login | u32 num_params | params
      INVOKE (2): u32 session | u32 func | u32 num_params | params
      CLOSE  (3): u32 session
    response := u32 ret | u32 ret_origin | u32 session | u32 num_params | params
    param    := tee_ioctl_param {u64 attr, a, b, c}; for memrefs b is the size, and
                input content (requests) / output content (successful responses)
                follows the parameter header.
"""

from __future__ import annotations

import socket
import struct
import uuid

__all__ = [
    "MAX_FRAME",
    "OP_CLOSE",
    "OP_INVOKE",
    "OP_OPEN",
    "RESP_HEAD",
    "RESULT_NAMES",
    "SEAL_OUTPUT_SIZE",
    "TA_CMD_GET_RANDOM",
    "TA_CMD_SEAL",
    "TA_CMD_UNSEAL",
    "TA_MAX_BUF_SIZE",
    "TA_TRUSTED_KEYS_UUID",
    "TEE_BLOB_OVERHEAD",
    "TEE_IV_SIZE",
    "TEE_TAG_SIZE",
    "U32",
    "UNSEAL_OUTPUT_SIZE",
    "WIRE_PARAM",
    "recv_exact",
    "recv_into_exact",
]

# -- the trusted-keys TA (OP-TEE ta/trusted_keys) ----------------------------------
TA_TRUSTED_KEYS_UUID = uuid.UUID("f04a0fe7-1f5d-4b9b-abf7-619b85b4ce8c")
TA_CMD_GET_RANDOM = 0
TA_CMD_SEAL = 1
TA_CMD_UNSEAL = 2
TEE_IV_SIZE = 16
TEE_TAG_SIZE = 16
#: reserved byte + IV + tag.
TEE_BLOB_OVERHEAD = 1 + TEE_IV_SIZE + TEE_TAG_SIZE
#: The TA refuses seal/unseal buffers larger than this (its MAX_BUF_SIZE).
TA_MAX_BUF_SIZE = 512
#: What the kernel offers for outputs: MAX_BLOB_SIZE and MAX_KEY_SIZE + 1.
SEAL_OUTPUT_SIZE = 512
UNSEAL_OUTPUT_SIZE = 129

# -- GP / uapi constants (include/uapi/linux/tee.h, GP TEE Client API) ------------
ATTR_NONE = 0
ATTR_VALUE_INPUT = 1
ATTR_VALUE_OUTPUT = 2
ATTR_VALUE_INOUT = 3
ATTR_MEMREF_INPUT = 5
ATTR_MEMREF_OUTPUT = 6
ATTR_MEMREF_INOUT = 7
MEMREF_ATTRS = (ATTR_MEMREF_INPUT, ATTR_MEMREF_OUTPUT, ATTR_MEMREF_INOUT)
LOGIN_PUBLIC = 0
LOGIN_USER = 1
LOGIN_REE_KERNEL = 0x80000000
NUM_PARAMS = 4

TEE_SUCCESS = 0x00000000
TEE_ERROR_GENERIC = 0xFFFF0000
TEE_ERROR_ACCESS_DENIED = 0xFFFF0001
TEE_ERROR_BAD_FORMAT = 0xFFFF0005
TEE_ERROR_BAD_PARAMETERS = 0xFFFF0006
TEE_ERROR_BAD_STATE = 0xFFFF0007
TEE_ERROR_ITEM_NOT_FOUND = 0xFFFF0008
TEE_ERROR_NOT_SUPPORTED = 0xFFFF000A
TEE_ERROR_OUT_OF_MEMORY = 0xFFFF000C
TEE_ERROR_COMMUNICATION = 0xFFFF000E
TEE_ERROR_SECURITY = 0xFFFF000F
TEE_ERROR_SHORT_BUFFER = 0xFFFF0010
TEE_ERROR_MAC_INVALID = 0xFFFF3071
TEE_ORIGIN_API = 1
TEE_ORIGIN_COMMS = 2
TEE_ORIGIN_TEE = 3
TEE_ORIGIN_TRUSTED_APP = 4

RESULT_NAMES = {
    TEE_SUCCESS: "TEE_SUCCESS",
    TEE_ERROR_GENERIC: "TEE_ERROR_GENERIC",
    TEE_ERROR_ACCESS_DENIED: "TEE_ERROR_ACCESS_DENIED",
    TEE_ERROR_BAD_FORMAT: "TEE_ERROR_BAD_FORMAT",
    TEE_ERROR_BAD_PARAMETERS: "TEE_ERROR_BAD_PARAMETERS",
    TEE_ERROR_BAD_STATE: "TEE_ERROR_BAD_STATE",
    TEE_ERROR_ITEM_NOT_FOUND: "TEE_ERROR_ITEM_NOT_FOUND",
    TEE_ERROR_NOT_SUPPORTED: "TEE_ERROR_NOT_SUPPORTED",
    TEE_ERROR_OUT_OF_MEMORY: "TEE_ERROR_OUT_OF_MEMORY",
    TEE_ERROR_COMMUNICATION: "TEE_ERROR_COMMUNICATION",
    TEE_ERROR_SECURITY: "TEE_ERROR_SECURITY",
    TEE_ERROR_SHORT_BUFFER: "TEE_ERROR_SHORT_BUFFER",
    TEE_ERROR_MAC_INVALID: "TEE_ERROR_MAC_INVALID",
}

# -- socket framing (see the module docstring) --------------------------------------
OP_OPEN, OP_INVOKE, OP_CLOSE = 1, 2, 3
MAX_FRAME = 1 << 16
U32 = struct.Struct("<I")
RESP_HEAD = struct.Struct("<IIII")
WIRE_PARAM = struct.Struct("<QQQQ")


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes; ``ConnectionError`` if the peer hangs up first."""
    buf = bytearray(n)
    recv_into_exact(sock, memoryview(buf))
    return bytes(buf)


def recv_into_exact(sock: socket.socket, mv: memoryview) -> None:
    """Fill ``mv`` from ``sock`` (lets a secret land directly in secret memory)."""
    done = 0
    while done < len(mv):
        n = sock.recv_into(mv[done:])
        if n == 0:
            raise ConnectionError("TEE connection closed mid-message")
        done += n
