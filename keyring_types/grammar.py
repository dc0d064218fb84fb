"""The kernel's payload grammar: ``strsep`` tokens, ``kstrto*`` numbers, hex fields, option tables.

Every key type that takes a text payload (``encrypted``, ``trusted``, the coming
derived keys) parses it with the same few kernel helpers.  They live here once,
with the kernel's rules (``lib/kstrtox.c``, ``lib/hexdump.c``, ``lib/parser.c``):

* :func:`split_tokens`: ``strsep(&s, " \\t")`` -- every single space or tab ends a
  token, so doubled separators make empty tokens;
* :func:`kstrtoull` and its siblings: an optional ``+`` (``-`` for the signed
  ones), ``0x``/``0X`` for base 16 (and base 0's autodetection), digits of the
  base, at most one trailing newline; ``ERANGE`` when the value does not fit
  the C type, ``EINVAL`` for anything else;
* :func:`hex2bin`: exactly ``2*n`` hex digits of either case;
* :class:`OptionTable`: ``name=value`` options, each at most once, an unknown
  name or an empty value ``EINVAL``.

Every error is an ``OSError`` with the kernel's errno, whatever the input's
type.  Messages name the field and the rule, never the text that broke it: a
payload can hold a key, a password or a blob, and a mistyped one lands where a
number or an option name was expected.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable, Iterator

import attrs

from keyring_types.errors import error

__all__ = [
    "OptionTable",
    "Text",
    "as_payload",
    "as_token",
    "hex2bin",
    "is_hex",
    "kstrtoint",
    "kstrtol",
    "kstrtoll",
    "kstrtouint",
    "kstrtoul",
    "kstrtoull",
    "split_text",
    "split_tokens",
]

#: What the parsers accept: payload bytes, or text (encoded as UTF-8).
Text = bytes | bytearray | memoryview | str

_SEPARATORS = re.compile(rb"[ \t]")
_SEPARATORS_STR = re.compile("[ \t]")
#: The run of digits ``_parse_integer`` consumes, per base.
_DIGITS = {8: re.compile(rb"[0-7]*"), 10: re.compile(rb"[0-9]*"), 16: re.compile(rb"[0-9A-Fa-f]*")}
#: Significant digits (leading zeros stripped) above which a value cannot fit 64 bits.
_MAX_DIGITS = {8: 22, 10: 20, 16: 16}
_HEX = re.compile(rb"[0-9A-Fa-f]*")
_HEX_STR = re.compile("[0-9A-Fa-f]*")
_HEX_DIGIT_CODES = frozenset(b"0123456789abcdefABCDEF")
_U64 = 1 << 64
_S64 = 1 << 63


def as_payload(data: object, what: str = "payload") -> bytes:
    """``data`` as bytes: bytes-like as is, ``str`` as UTF-8.

    ``EINVAL`` for any other type (an ``int`` is not a length here) and for a
    ``str`` that UTF-8 cannot encode (a lone surrogate).
    """
    if type(data) is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        try:
            return data.encode()
        except UnicodeEncodeError:
            raise error(errno.EINVAL, f"the {what} is text that UTF-8 cannot encode (a lone surrogate?)") from None
    raise error(errno.EINVAL, f"the {what} must be bytes or str, not {type(data).__name__}")


def as_token(text: object, what: str) -> bytes:
    """One token as bytes, cut at its first NUL as the kernel's C string ends there.

    ``str`` tokens are encoded with ``surrogateescape`` (how the parsers decode
    payload bytes) and otherwise as UTF-8.  ``EINVAL`` for other types.
    """
    if type(text) is bytes:
        raw = text
    elif isinstance(text, str):
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise error(errno.EINVAL, f"{what} is not ASCII text") from None
    elif isinstance(text, (bytearray, memoryview)):
        raw = bytes(text)
    else:
        raise error(errno.EINVAL, f"{what} must be bytes or str, not {type(text).__name__}")
    nul = raw.find(0)
    return raw if nul < 0 else raw[:nul]


def split_tokens(data: bytes) -> list[bytes]:
    """Split as ``strsep(&s, " \\t")`` does: every single space or tab ends a token.

    ``b"a  b"`` gives ``[b"a", b"", b"b"]``; an empty input gives ``[b""]``.
    ``EINVAL`` if ``data`` is not bytes-like or text.
    """
    if type(data) is not bytes:
        data = as_payload(data)
    return _SEPARATORS.split(data)


def split_text(text: str) -> list[str]:
    """:func:`split_tokens` for a payload already decoded to ``str``."""
    # str.split is the same cut when there is no tab, and cheaper.
    return _SEPARATORS_STR.split(text) if "\t" in text else text.split(" ")


# -- kstrto* -------------------------------------------------------------------------


def _parse_unsigned(s: bytes, base: int, what: str) -> int:
    """``_kstrtoull``: no sign handling; ``s`` already a bytes token."""
    if base == 0:
        # _parse_integer_fixup_radix: "0x" + a hex digit is hex, another leading 0 octal.
        if s[:1] == b"0":
            base = 16 if s[1:2] in (b"x", b"X") and len(s) > 2 and s[2] in _HEX_DIGIT_CODES else 8
        else:
            base = 10
    elif base not in _DIGITS:
        raise error(errno.EINVAL, f"base {base} is not one the kernel's kstrto* helpers take here")
    if base == 16 and s[:1] == b"0" and s[1:2] in (b"x", b"X"):
        s = s[2:]
    m = _DIGITS[base].match(s)
    digits = m.group() if m is not None else b""
    # The kernel counts past an overflow and reports ERANGE before anything else,
    # even when junk follows the digits.  Leading zeros never overflow.
    significant = digits.lstrip(b"0")
    if len(significant) > _MAX_DIGITS[base]:
        raise error(errno.ERANGE, f"{what} does not fit in 64 bits")
    value = int(significant, base) if significant else 0
    if value >= _U64:
        raise error(errno.ERANGE, f"{what} does not fit in 64 bits")
    if not digits:
        raise error(errno.EINVAL, f"{what} is not a base-{base} number")
    rest = s[len(digits) :]
    if rest[:1] == b"\n":
        rest = rest[1:]
    if rest:
        raise error(errno.EINVAL, f"{what} is not a base-{base} number (stray characters after the digits)")
    return value


def kstrtoull(text: Text, base: int, what: str = "the number") -> int:
    """``kstrtoull``: an unsigned 64-bit number.

    An optional leading ``+``; base 16 takes an optional ``0x``; base 0 detects
    ``0x`` (hex), a leading ``0`` (octal) or decimal; one trailing newline.
    ``ERANGE`` if the value is 2**64 or more, ``EINVAL`` for anything else
    (including a non-text argument).  ``what`` names the field in messages.
    """
    s = as_token(text, what)
    if s[:1] == b"+":
        s = s[1:]
    return _parse_unsigned(s, base, what)


def kstrtoll(text: Text, base: int, what: str = "the number") -> int:
    """``kstrtoll``: a signed 64-bit number (``-`` or ``+``, not both).

    ``ERANGE`` outside -2**63 .. 2**63-1, ``EINVAL`` otherwise as :func:`kstrtoull`.
    """
    s = as_token(text, what)
    if s[:1] == b"-":
        # The kernel does not skip a '+' after the '-'.
        value = _parse_unsigned(s[1:], base, what)
        if value > _S64:
            raise error(errno.ERANGE, f"{what} is below the signed 64-bit range")
        return -value
    if s[:1] == b"+":
        s = s[1:]
    value = _parse_unsigned(s, base, what)
    if value >= _S64:
        raise error(errno.ERANGE, f"{what} is above the signed 64-bit range")
    return value


#: ``unsigned long`` and ``long`` are 64-bit on the kernels this library mirrors (LP64).
kstrtoul = kstrtoull
kstrtol = kstrtoll


def kstrtouint(text: Text, base: int, what: str = "the number") -> int:
    """``kstrtouint``: :func:`kstrtoull`, then ``ERANGE`` above 2**32-1."""
    value = kstrtoull(text, base, what)
    if value > 0xFFFFFFFF:
        raise error(errno.ERANGE, f"{what} does not fit in 32 bits")
    return value


def kstrtoint(text: Text, base: int, what: str = "the number") -> int:
    """``kstrtoint``: :func:`kstrtoll`, then ``ERANGE`` outside -2**31 .. 2**31-1."""
    value = kstrtoll(text, base, what)
    if not -(1 << 31) <= value < 1 << 31:
        raise error(errno.ERANGE, f"{what} does not fit in a signed 32-bit int")
    return value


# -- hex -----------------------------------------------------------------------------


def is_hex(text: bytes | str) -> bool:
    """Whether every character of ``text`` is a hex digit (either case); True when empty."""
    if isinstance(text, str):
        return _HEX_STR.fullmatch(text) is not None
    return _HEX.fullmatch(text) is not None


def hex2bin(text: Text, nbytes: int, what: str) -> bytes:
    """``hex2bin``: ``nbytes`` bytes from the first ``2*nbytes`` hex digits of ``text``.

    Characters after those are not looked at, as in the kernel.  ``EINVAL`` if
    ``text`` is shorter or any of those characters is not a hex digit, or
    ``text`` is not text at all.
    """
    digits = as_token(text, what)[: 2 * nbytes]
    if len(digits) != 2 * nbytes or _HEX.fullmatch(digits) is None:
        raise error(errno.EINVAL, f"{what} must be {2 * nbytes} hex digits")
    return bytes.fromhex(digits.decode("ascii"))


# -- option tables -------------------------------------------------------------------


@attrs.frozen
class OptionTable:
    """The ``match_token`` table of one grammar: ``name=value`` options it knows.

    ``what`` names the grammar in messages ("trusted-key option").  Messages name
    known options only: an unknown name may be a mistyped secret, so it is
    never repeated, though a close known name is suggested.
    """

    what: str
    names: frozenset[str]

    def items(self, tokens: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
        """Yield ``(name, value)`` for each option in order, as ``getoptions`` walks them.

        Empty tokens are skipped.  ``EINVAL`` (at the token it concerns) for a
        token without ``=``, an empty value (``match_token``'s ``%s`` needs one
        character), an unknown name, or a name given twice.
        """
        seen: set[str] = set()
        for position, token in enumerate(tokens, 1):
            if not token:
                continue
            name_b, eq, value = token.partition(b"=")
            name = name_b.decode("ascii", "replace")
            if name not in self.names:
                raise error(errno.EINVAL, self._unknown(position, name))
            if not eq or not value:
                raise error(errno.EINVAL, f"{self.what} {name}= needs a value")
            if name in seen:
                raise error(errno.EINVAL, f"{self.what} {name}= given more than once")
            seen.add(name)
            yield name, value

    def _unknown(self, position: int, name: str) -> str:
        import difflib  # only on this error path: it costs a millisecond of import time

        # Only a short name can be a typo of a known one; a long one is not compared.
        close = difflib.get_close_matches(name, sorted(self.names), n=1, cutoff=0.75) if len(name) <= 32 else []
        hint = f"; did you mean {close[0]}=?" if close else f" (known: {', '.join(sorted(self.names))})"
        return f"token {position} of the options is not a known {self.what}{hint}"
