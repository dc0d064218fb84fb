"""keyctl's argument conventions: numbers as C's ``strtoul`` reads them, key ids, hex data.

keyctl 1.6.3 parses every number with ``strtoul`` and stores it in a 32-bit C
type, so ``ktctl`` does the same arithmetic: ``-1`` is ``0xffffffff``, an id of
``4294967295`` is ``-1`` (the thread keyring), an empty string is 0. Getting
this wrong would turn a command that fails with the kernel's errno into a usage
error, or the reverse, which keyutils' test suite checks.
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "Exit",
    "grab_stdin",
    "hex2bin",
    "int32",
    "strtoul",
    "u32",
]

_ULONG_MAX = (1 << 64) - 1
_SPACE = " \t\n\v\f\r"
_STDIN_MAX = 1024 * 1024


class Exit(Exception):
    """Leave the verb with this exit status (keyctl calls ``exit()`` from anywhere)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def strtoul(text: str, base: int = 0) -> tuple[int, str]:
    """``strtoul(text, &end, base)`` on an LP64 machine: ``(value, rest)``.

    Leading white space and one sign are taken; base 0 reads ``0x`` as hex and a
    leading ``0`` as octal; overflow gives ULONG_MAX; a minus sign negates modulo
    2**64. With no digits the value is 0 and ``rest`` is all of ``text``.
    """
    i = 0
    n = len(text)
    while i < n and text[i] in _SPACE:
        i += 1
    negative = False
    if i < n and text[i] in "+-":
        negative = text[i] == "-"
        i += 1
    if base == 0:
        if text[i : i + 2] in ("0x", "0X") and i + 2 < n and text[i + 2] in "0123456789abcdefABCDEF":
            base, i = 16, i + 2
        elif text[i : i + 1] == "0":
            base = 8
        else:
            base = 10
    elif base == 16 and text[i : i + 2] in ("0x", "0X") and i + 2 < n and text[i + 2] in "0123456789abcdefABCDEF":
        i += 2
    start = i
    value = 0
    while i < n:
        digit = _digit(text[i])
        if digit is None or digit >= base:
            break
        value = value * base + digit
        i += 1
    if i == start:
        return 0, text
    if value > _ULONG_MAX:
        value = _ULONG_MAX
    elif negative:
        value = (-value) & _ULONG_MAX
    return value, text[i:]


def _digit(ch: str) -> int | None:
    if "0" <= ch <= "9":
        return ord(ch) - 48
    if "a" <= ch <= "z":
        return ord(ch) - 87
    if "A" <= ch <= "Z":
        return ord(ch) - 55
    return None


def u32(value: int) -> int:
    """The low 32 bits, as an ``unsigned int``/``uid_t``/``key_perm_t`` keeps them."""
    return value & 0xFFFFFFFF


def int32(value: int) -> int:
    """The low 32 bits as a signed ``key_serial_t``."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def hex2bin(data: bytes) -> bytes:
    """keyctl's ``-x``: hex pairs, white space between them ignored.

    "Short hex doublet" / "Bad hex doublet" on stderr and exit status 1, as keyctl.
    """
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        ch = data[i]
        if ch in b" \t\n\v\f\r":
            i += 1
            continue
        if n - i < 2:
            _die("Short hex doublet")
        pair = data[i : i + 2]
        if not all(c in b"0123456789abcdefABCDEF" for c in pair):
            _die("Bad hex doublet")
        out.append(int(pair, 16))
        i += 2
    return bytes(out)


def _die(message: str) -> None:
    sys.stderr.write(message + "\n")
    raise Exit(1)


def grab_stdin() -> bytes:
    """All of standard input, at most 1 MiB ("Too much data read on stdin", status 1)."""
    chunks = []
    total = 0
    fd = sys.stdin.fileno() if sys.stdin is not None else 0
    while total <= _STDIN_MAX:
        try:
            chunk = os.read(fd, _STDIN_MAX + 1 - total)
        except OSError as exc:
            sys.stderr.write(f"stdin: {os.strerror(exc.errno or 0)}\n")
            raise Exit(1) from None
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > _STDIN_MAX:
        _die("Too much data read on stdin")
    return b"".join(chunks)
