"""Go constant syntax: string, raw string, character and number literals (``strconv`` semantics).

Go strings are bytes: ``"\\xff"`` is one byte that is not UTF-8. Such bytes are kept as Python's
surrogate escapes (decode with ``surrogateescape``) so that writing the output encoded the same way
reproduces Go's bytes.
"""

from __future__ import annotations

import re

_SIMPLE = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
_HEX = "0123456789abcdefABCDEF"


class LiteralError(ValueError):
    pass


def _unescape(body: str, quote: str) -> str:
    """The value of an interpreted literal's body (between the quotes)."""
    out = bytearray()
    i = 0
    n = len(body)
    while i < n:
        c = body[i]
        if c == quote or c == "\n":
            raise LiteralError("invalid syntax")
        if c != "\\":
            out += c.encode("utf-8", "surrogateescape")
            i += 1
            continue
        if i + 1 >= n:
            raise LiteralError("invalid syntax")
        e = body[i + 1]
        i += 2
        if e in _SIMPLE:
            out.append(_SIMPLE[e])
        elif e == quote:
            out += e.encode()
        elif e in "01234567":
            digits = body[i - 1 : i + 2]
            if len(digits) != 3 or any(d not in "01234567" for d in digits) or int(digits, 8) > 255:
                raise LiteralError("invalid syntax")
            out.append(int(digits, 8))
            i += 2
        elif e in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i : i + size]
            if len(digits) != size or any(d not in _HEX for d in digits):
                raise LiteralError("invalid syntax")
            v = int(digits, 16)
            i += size
            if e == "x":
                out.append(v)
            else:
                if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
                    raise LiteralError("invalid syntax")
                out += chr(v).encode()
        else:
            raise LiteralError("invalid syntax")
    return out.decode("utf-8", "surrogateescape")


def unquote(text: str) -> str:
    """``strconv.Unquote`` of a ``"..."`` or `` `...` `` literal."""
    if len(text) < 2 or text[0] != text[-1] or text[0] not in '"`':
        raise LiteralError("invalid syntax")
    body = text[1:-1]
    if text[0] == "`":
        if "`" in body:
            raise LiteralError("invalid syntax")
        return body.replace("\r", "")
    return _unescape(body, '"')


def unquote_char(text: str) -> int:
    """The code point of a ``'x'`` character literal."""
    if len(text) < 3 or text[0] != "'" or text[-1] != "'":
        raise LiteralError(f"malformed character constant: {text}")
    body = text[1:-1]
    if body.startswith("\\") and len(body) >= 2 and body[1] in "01234567x":
        raw = _unescape(body, "'").encode("utf-8", "surrogateescape")
        if len(raw) != 1:
            raise LiteralError(f"malformed character constant: {text}")
        return raw[0]
    value = _unescape(body, "'")
    if len(value) != 1:
        raise LiteralError(f"malformed character constant: {text}")
    return ord(value)


_OCTAL_LEGACY = re.compile(r"0[0-7_]+")


def underscore_ok(s: str) -> bool:
    """Go's rule: underscores only between digits, or between a base prefix and a digit."""
    saw = "^"
    i = 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexa = 2, "0", s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if c.isascii() and (c.isdigit() or (hexa and c.lower() in "abcdef")):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def _unsigned(body: str) -> int | None:
    """Digits as Go's strconv reads them with base 0: 0x/0o/0b prefixes, a leading 0 for octal."""
    try:
        if len(body) > 1 and body[0] == "0" and body[1] in "0123456789":
            return int(body, 8)
        if len(body) > 1 and body[0] == "0" and body[1] in "xXoObB":
            return int(body, 0)
        if body.isdigit() and body.isascii():
            return int(body, 10)
    except ValueError:
        return None
    return None


def parse_int(text: str) -> int | None:
    """``strconv.ParseInt(text, 0, 64)``; ``None`` when Go would reject it (syntax or range)."""
    if "_" in text and not underscore_ok(text):
        return None
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if text[:1] in "+-" else text
    body = body.replace("_", "")
    if not body:
        return None
    value = _unsigned(body)
    if value is None:
        return None
    value *= sign
    if not -(2**63) <= value < 2**63:
        return None
    return value


def parse_uint(text: str) -> int | None:
    if text.startswith(("+", "-")):
        return None
    if "_" in text and not underscore_ok(text):
        return None
    body = text.replace("_", "")
    value = _unsigned(body)
    if value is None:
        return None
    return value if value < 2**64 else None


def parse_float(text: str) -> float | None:
    if "_" in text and not underscore_ok(text):
        return None
    body = text.replace("_", "")
    try:
        if body.lstrip("+-")[:2].lower() == "0x":
            if "p" not in body.lower():
                return None
            return float.fromhex(body)
        if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", body):
            return None
        return float(body)
    except (ValueError, OverflowError):
        return None


def number_constant(text: str) -> tuple[object, str | None]:
    """A number literal's value as execution sees it (Go's ``idealConstant``), or an error message.

    Raises ``LiteralError`` for text that is not a number at all (a parse error in Go).
    """
    if text.startswith("'"):
        return unquote_char(text), None
    if text.endswith("i"):
        raise LiteralError(f"complex constants are not supported: {text}")
    as_int = parse_int(text)
    as_uint = parse_uint(text)
    is_float = False
    as_float = 0.0
    if as_int is None and as_uint is None:
        f = parse_float(text)
        if f is not None:
            if not any(c in text for c in ".eEpP"):
                raise LiteralError(f'integer overflow: "{text}"')
            is_float, as_float = True, f
            if f.is_integer() and -(2**63) <= f < 2**63:
                as_int = int(f)
    if as_int is None and as_uint is None and not is_float:
        raise LiteralError(f'illegal number syntax: "{text}"')
    is_hex_int = len(text) > 2 and text[0] == "0" and text[1] in "xX" and not any(c in text for c in "pP")
    if is_float and not is_hex_int and any(c in text for c in ".eEpP"):
        return as_float, None
    if as_int is not None:
        return as_int, None
    if is_float:
        return as_float, None
    return None, f"{text} overflows int"
