"""RPMB operation and result codes (spec ``rpmb.md`` sections 1.4 and 1.5).

Request codes are the values hosts put in the request/response field of a
request frame; a device answers with the request code shifted left by 8.  The
result field carries a 7-bit code plus bit 7, which flags an expired write
counter on top of any code.
"""

from __future__ import annotations

import errno
from enum import IntEnum

__all__ = [
    "RequestType",
    "ResponseType",
    "Result",
    "COUNTER_EXPIRED",
    "RESULT_CODE_MASK",
    "response_for",
    "result_code",
    "counter_expired",
    "result_errno",
    "result_name",
]

COUNTER_EXPIRED = 0x0080
RESULT_CODE_MASK = 0x007F


class RequestType(IntEnum):
    """Request codes (u16, big-endian in bytes 510-511)."""

    PROGRAM_KEY = 0x0001
    READ_COUNTER = 0x0002
    AUTH_WRITE = 0x0003
    AUTH_READ = 0x0004
    RESULT_READ = 0x0005
    CONFIG_WRITE = 0x0006  # eMMC 5.x secure write protect / NVMe DCB write
    CONFIG_READ = 0x0007


class ResponseType(IntEnum):
    """Response codes: the request code << 8.  Result read has none of its own:
    the device answers it with the response of the write it reports on."""

    PROGRAM_KEY = 0x0100
    READ_COUNTER = 0x0200
    AUTH_WRITE = 0x0300
    AUTH_READ = 0x0400
    CONFIG_WRITE = 0x0600
    CONFIG_READ = 0x0700


class Result(IntEnum):
    """Operation results (low 7 bits of the result field)."""

    OK = 0x00
    GENERAL_FAILURE = 0x01
    AUTH_FAILURE = 0x02
    COUNTER_FAILURE = 0x03
    ADDRESS_FAILURE = 0x04
    WRITE_FAILURE = 0x05
    READ_FAILURE = 0x06
    KEY_NOT_PROGRAMMED = 0x07
    # UFS secure write protect (NVMe reuses 0x08 for "invalid DCB").
    SWP_CONFIG_FAILURE = 0x08
    SWP_INVALID_PARAMETER = 0x09
    SWP_NOT_APPLICABLE = 0x0A


# Which errno a caller sees for a device result, chosen so that the errno
# alone says what to do next: ENOKEY -> program the key, EKEYREJECTED -> the
# key is wrong, ESTALE -> re-read the counter, EINVAL -> fix the address.
_ERRNO = {
    Result.OK: 0,
    Result.GENERAL_FAILURE: errno.EIO,
    Result.AUTH_FAILURE: errno.EKEYREJECTED,
    Result.COUNTER_FAILURE: errno.ESTALE,
    Result.ADDRESS_FAILURE: errno.EINVAL,
    Result.WRITE_FAILURE: errno.EIO,
    Result.READ_FAILURE: errno.EIO,
    Result.KEY_NOT_PROGRAMMED: errno.ENOKEY,
    Result.SWP_CONFIG_FAILURE: errno.EIO,
    Result.SWP_INVALID_PARAMETER: errno.EINVAL,
    Result.SWP_NOT_APPLICABLE: errno.EOPNOTSUPP,
}


def response_for(request: int) -> int:
    """The response code a device uses for ``request`` (``request << 8``)."""
    return (request & 0xFF) << 8


def result_code(result: int) -> int:
    """The operation result without the counter-expired flag."""
    return result & RESULT_CODE_MASK


def counter_expired(result: int) -> bool:
    """True when the device flags its write counter as expired (bit 7)."""
    return bool(result & COUNTER_EXPIRED)


def result_errno(result: int) -> int:
    """The errno for a device result (0 for OK); unknown codes map to EIO."""
    code: int = _ERRNO.get(result_code(result), errno.EIO)  # type: ignore[call-overload]
    return code


def result_name(result: int) -> str:
    """A readable name such as ``"AUTH_FAILURE"`` (``"0x2a"`` for unknown codes),
    with ``"+COUNTER_EXPIRED"`` when bit 7 is set."""
    code = result_code(result)
    try:
        name = Result(code).name
    except ValueError:
        name = f"{code:#04x}"
    return name + ("+COUNTER_EXPIRED" if counter_expired(result) else "")
