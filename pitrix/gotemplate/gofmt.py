"""Go's ``fmt`` formatting of template values: ``print``, ``println``, ``printf`` and ``{{.}}`` output.

Output must match what a Go program prints byte for byte, so this follows ``fmt``'s rules rather
than Python's: ``[a b]`` for slices, ``map[k:v]`` with sorted keys, ``%v`` of a float64 as ``%g``
with the shortest digits (``1e+06``, ``3``), ``%!d(string=x)`` for a verb that does not fit, zero
padding after the sign, widths counted in characters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pitrix.gotemplate.values import (
    KVPair,
    go_type_name,
    is_int,
    is_struct,
    sort_keys,
    struct_fields,
)

NIL_ANGLE = "<nil>"


@dataclass(slots=True)
class Spec:
    """One verb's flags, width and precision (``None``: absent)."""

    plus: bool = False
    minus: bool = False
    sharp: bool = False
    space: bool = False
    zero: bool = False
    plus_v: bool = False
    sharp_v: bool = False
    width: int | None = None
    prec: int | None = None


_PLAIN = Spec()


# ---------------------------------------------------------------------------------------------
# strings: quoting as strconv does
# ---------------------------------------------------------------------------------------------

_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _quote_rune(ch: str, quote: str, ascii_only: bool) -> str:
    if ch == quote or ch == "\\":
        return "\\" + ch
    cp = ord(ch)
    if 0xDC80 <= cp <= 0xDCFF:  # an undecodable byte kept by surrogateescape
        return f"\\x{cp - 0xDC00:02x}"
    if ascii_only:
        if 0x20 <= cp < 0x7F:
            return ch
    elif ch.isprintable():
        return ch
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def quote(s: str, *, ascii_only: bool = False) -> str:
    """``strconv.Quote``: a double-quoted Go string literal (``QuoteToASCII`` with ``ascii_only``)."""
    return '"' + "".join(_quote_rune(c, '"', ascii_only) for c in s) + '"'


def quote_char(cp: int, *, ascii_only: bool = False) -> str:
    """``strconv.QuoteRune``: a single-quoted Go character literal."""
    if cp < 0 or cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
        cp = 0xFFFD
    return "'" + _quote_rune(chr(cp), "'", ascii_only) + "'"


def can_backquote(s: str) -> bool:
    return all(c == "\t" or (c != "`" and c != "\ufeff" and (ord(c) >= 0x20 and ord(c) != 0x7F)) for c in s)


def go_bytes(s: str) -> bytes:
    """A Go string's bytes (undecodable input bytes survive as surrogate escapes)."""
    return s.encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------------------------


def _shortest_digits(f: float) -> tuple[str, int]:
    """The shortest decimal digits that round-trip ``f`` (> 0) and the decimal point position.

    ``decimal`` is loaded here, on the first float formatted: most templates format none."""
    from decimal import Decimal

    _sign, digits, exp = Decimal(repr(f)).normalize().as_tuple()
    ds = "".join(map(str, digits))
    assert isinstance(exp, int)
    return ds, len(ds) + exp


def _exp_suffix(e: int, letter: str) -> str:
    return f"{letter}{'-' if e < 0 else '+'}{abs(e):02d}"


def format_float(f: float, verb: str, prec: int | None) -> str:
    """``strconv.FormatFloat`` for the verbs fmt uses (``e E f F g G x X``); ``prec None``: shortest."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if verb in "xX":
        return _hex_float(f, prec, verb)
    if verb in "fF":
        return f"{f:.{6 if prec is None else prec}f}"
    if verb in "eE":
        out = f"{f:.{6 if prec is None else prec}e}"
        return out.upper() if verb == "E" else out
    # g / G
    if prec is not None:
        out = f"{f:.{max(prec, 1)}g}"
        return out.upper() if verb == "G" else out
    neg = math.copysign(1.0, f) < 0
    if f == 0:
        return "-0" if neg else "0"
    digits, dp = _shortest_digits(abs(f))
    exp = dp - 1
    if exp < -4 or exp >= 6:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        out = mant + _exp_suffix(exp, "E" if verb == "G" else "e")
    elif dp <= 0:
        out = "0." + "0" * (-dp) + digits
    elif dp >= len(digits):
        out = digits + "0" * (dp - len(digits))
    else:
        out = digits[:dp] + "." + digits[dp:]
    return ("-" if neg else "") + out


def _hex_float(f: float, prec: int | None, verb: str) -> str:
    """``%x`` of a float: ``0x1.8p+01`` (mantissa in hex, binary exponent with at least two digits)."""
    neg = math.copysign(1.0, f) < 0
    if f == 0:
        out = "0x0p+00"
    else:
        mant, _, exp = float.hex(abs(f))[2:].partition("p")
        whole, _, frac = mant.partition(".")
        frac = frac.rstrip("0")
        if prec is not None:
            frac = (frac + "0" * prec)[:prec]
        out = "0x" + whole + ("." + frac if frac else "") + _exp_suffix(int(exp), "p")
    if verb == "X":
        out = out.upper()
    return ("-" if neg else "") + out


def format_json_float(f: float) -> str:
    """encoding/json's float64: like ES6, %f unless the exponent is below -6 or at least 21."""
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    digits, dp = _shortest_digits(abs(f))
    exp = dp - 1
    if exp < -6 or exp >= 21:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        out = f"{mant}e{'-' if exp < 0 else '+'}{abs(exp)}"
    elif dp <= 0:
        out = "0." + "0" * (-dp) + digits
    elif dp >= len(digits):
        out = digits + "0" * (dp - len(digits))
    else:
        out = digits[:dp] + "." + digits[dp:]
    return ("-" if f < 0 else "") + out


# ---------------------------------------------------------------------------------------------
# the printer
# ---------------------------------------------------------------------------------------------


def _pad(s: str, spec: Spec, zero_ok: bool = True) -> str:
    w = spec.width
    if w is None or len(s) >= w:
        return s
    fill = w - len(s)
    if spec.minus:
        return s + " " * fill
    return ("0" if spec.zero and zero_ok else " ") * fill + s


def _fmt_integer(n: int, base: int, verb: str, spec: Spec) -> str:
    negative = n < 0
    u = -n if negative else n
    prec = 0
    if spec.prec is not None:
        prec = spec.prec
        if prec == 0 and u == 0:
            return _pad("", spec, zero_ok=False)
    elif spec.zero and not spec.minus and spec.width is not None:
        prec = spec.width
        if negative or spec.plus or spec.space:
            prec -= 1
    if base == 10:
        digits = str(u)
    elif base == 16:
        digits = format(u, "X" if verb == "X" else "x")
    elif base == 8:
        digits = format(u, "o")
    else:
        digits = format(u, "b")
    if len(digits) < prec:
        digits = "0" * (prec - len(digits)) + digits
    if spec.sharp:
        if base == 2:
            digits = "0b" + digits
        elif base == 8 and not digits.startswith("0"):
            digits = "0" + digits
        elif base == 16:
            digits = ("0X" if verb == "X" else "0x") + digits
    if verb == "O":
        digits = "0o" + digits
    if negative:
        digits = "-" + digits
    elif spec.plus:
        digits = "+" + digits
    elif spec.space:
        digits = " " + digits
    return _pad(digits, spec, zero_ok=False)


def _fmt_float(f: float, verb: str, spec: Spec) -> str:
    prec = spec.prec
    if verb == "v":
        verb = "g"
    if prec is None and verb in "eEfF":
        prec = 6
    num = format_float(f, verb, prec)
    if spec.sharp and verb in "gG" and "." not in num and "e" not in num.lower() and num[-1].isdigit():
        num += "."
    if num[0] not in "+-":
        num = "+" + num
    if spec.space and num[0] == "+" and not spec.plus:
        num = " " + num[1:]
    if num[1] in "IN":
        if num[1] == "N" and not spec.space and not spec.plus:
            num = num[1:]
        return _pad(num, spec, zero_ok=False)
    if spec.plus or num[0] != "+":
        if spec.zero and not spec.minus and spec.width is not None and spec.width > len(num):
            return num[0] + "0" * (spec.width - len(num)) + num[1:]
        return _pad(num, spec)
    return _pad(num[1:], spec)


def _fmt_string(s: str, verb: str, spec: Spec) -> str:
    if verb in "vs":
        if spec.sharp_v:
            return _pad(quote(s), spec)
        if spec.prec is not None:
            s = s[: spec.prec]
        return _pad(s, spec)
    if verb == "q":
        if spec.prec is not None:
            s = s[: spec.prec]
        if spec.sharp and can_backquote(s):
            return _pad("`" + s + "`", spec)
        return _pad(quote(s, ascii_only=spec.plus), spec)
    if verb in "xX":
        data = go_bytes(s)
        if spec.prec is not None:
            data = data[: spec.prec]
        hexes = [format(b, "02X" if verb == "X" else "02x") for b in data]
        prefix = ("0X" if verb == "X" else "0x") if spec.sharp else ""
        if spec.space:
            out = " ".join(prefix + h for h in hexes)
        else:
            out = (prefix if hexes else "") + "".join(hexes)
        return _pad(out, spec)
    return _bad_verb(s, verb)


def _bad_verb(v: Any, verb: str) -> str:
    if v is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({go_type_name(v)}={format_value(v, 'v', _PLAIN)})"


def _go_syntax(v: Any) -> str:
    """``%#v``: the value as a Go literal."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if is_int(v):
        return str(v)
    if isinstance(v, float):
        return format_float(v, "g", None)
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, (list, tuple)):
        return go_type_name(v) + "{" + ", ".join(_go_syntax(x) for x in v) + "}"
    if isinstance(v, dict):
        items = ", ".join(f"{_go_syntax(k)}:{_go_syntax(v[k])}" for k in sort_keys(list(v)))
        return go_type_name(v) + "{" + items + "}"
    if is_struct(v):
        fields = ", ".join(f"{n}:{_go_syntax(x)}" for n, x in struct_fields(v))
        return go_type_name(v) + "{" + fields + "}"
    return str(v)


def _stringer(v: Any) -> str | None:
    for name in ("Error", "String"):
        meth = getattr(v, name, None)
        if callable(meth):
            out = meth()
            if isinstance(out, str):
                return out
    return None


def format_value(v: Any, verb: str, spec: Spec, depth: int = 0) -> str:
    """One operand formatted with one verb, as fmt's ``printArg``/``printValue`` would."""
    if verb == "T":
        return _pad(go_type_name(v), spec)
    if v is None:
        if depth > 0 or verb == "v":
            return _pad(NIL_ANGLE, spec)
        return _bad_verb(None, verb)
    if spec.sharp_v:
        return _go_syntax(v)
    if isinstance(v, bool):
        if verb in "tv":
            return _pad("true" if v else "false", spec)
        return _bad_verb(v, verb)
    if isinstance(v, int):
        if verb in "vd":
            return _fmt_integer(v, 10, verb, spec)
        if verb in "xX":
            return _fmt_integer(v, 16, verb, spec)
        if verb in "oO":
            return _fmt_integer(v, 8, verb, spec)
        if verb == "b":
            return _fmt_integer(v, 2, verb, spec)
        if verb == "c":
            return _pad(chr(v) if 0 <= v <= 0x10FFFF and not 0xD800 <= v <= 0xDFFF else "\ufffd", spec)
        if verb == "q":
            return _pad(quote_char(v, ascii_only=spec.plus), spec)
        if verb == "U":
            out = f"U+{v:04X}"
            if spec.sharp and 0 <= v <= 0x10FFFF and chr(v).isprintable():
                out += f" '{chr(v)}'"
            return _pad(out, spec)
        return _bad_verb(v, verb)
    if isinstance(v, float):
        if verb in "veEfFgGxX":
            return _fmt_float(v, verb, spec)
        return _bad_verb(v, verb)
    if isinstance(v, str):
        return _fmt_string(v, verb, spec)
    if isinstance(v, (bytes, bytearray)):
        return _fmt_string(bytes(v).decode("utf-8", "surrogateescape"), verb, spec)
    if isinstance(v, (list, tuple)):
        inner = " ".join(format_value(x, verb, spec, depth + 1) for x in v)
        return "[" + inner + "]"
    if isinstance(v, dict):
        parts = [
            format_value(k, verb, spec, depth + 1) + ":" + format_value(v[k], verb, spec, depth + 1)
            for k in sort_keys(list(v))
        ]
        return "map[" + " ".join(parts) + "]"
    if verb in "vsqxX":
        text = _stringer(v)
        if text is not None:
            return _fmt_string(text, "s" if verb == "v" else verb, spec)
    if isinstance(v, KVPair) or is_struct(v):
        parts = []
        for name, x in struct_fields(v):
            val = format_value(x, verb, spec, depth + 1)
            parts.append(f"{name}:{val}" if spec.plus_v else val)
        return "{" + " ".join(parts) + "}"
    return _pad(str(v), spec)


def sprint_value(v: Any) -> str:
    """``fmt.Sprint(v)`` of one value."""
    if isinstance(v, str):
        return v
    return format_value(v, "v", _PLAIN)


def sprint(args: Sequence[Any]) -> str:
    """``fmt.Sprint``: spaces between operands when neither side is a string."""
    out: list[str] = []
    prev_string = False
    for i, a in enumerate(args):
        is_string = isinstance(a, str)
        if i > 0 and not is_string and not prev_string:
            out.append(" ")
        out.append(sprint_value(a))
        prev_string = is_string
    return "".join(out)


def sprintln(args: Sequence[Any]) -> str:
    """``fmt.Sprintln``: spaces between all operands and a newline at the end."""
    return " ".join(sprint_value(a) for a in args) + "\n"


def _parse_num(fmt: str, i: int, end: int) -> tuple[int | None, int]:
    start = i
    while i < end and fmt[i].isdigit() and fmt[i] in "0123456789":
        i += 1
        if i - start > 6:  # Go: absurdly large numbers are a bad width
            return None, i
    if i == start:
        return None, i
    return int(fmt[start:i]), i


class _Printf:
    """The state of one ``Sprintf`` call (fmt's ``doPrintf``)."""

    def __init__(self, fmt: str, args: Sequence[Any]) -> None:
        self.fmt = fmt
        self.args = args
        self.argnum = 0
        self.reordered = False
        self.good_argnum = True
        self.out: list[str] = []

    def arg_number(self, i: int) -> tuple[int, bool]:
        """Handle an explicit ``[n]`` argument index at ``i``; returns (new i, found)."""
        fmt = self.fmt
        if i >= len(fmt) or fmt[i] != "[":
            return i, False
        self.reordered = True
        close = fmt.find("]", i + 1)
        if close < 0:
            self.good_argnum = False
            return i + 1, False
        text = fmt[i + 1 : close]
        if text.isdigit() and 0 <= int(text) - 1 < len(self.args):
            self.argnum = int(text) - 1
            return close + 1, True
        self.good_argnum = False
        return close + 1, text.isdigit()

    def int_from_arg(self) -> tuple[int, bool]:
        if self.argnum >= len(self.args):
            return 0, False
        v = self.args[self.argnum]
        self.argnum += 1
        if is_int(v) and abs(v) <= 10**6:
            return v, True
        return 0, False

    def run(self) -> str:
        fmt, out = self.fmt, self.out
        end = len(fmt)
        i = 0
        while i < end:
            j = fmt.find("%", i)
            if j < 0:
                out.append(fmt[i:])
                break
            out.append(fmt[i:j])
            i = j + 1
            spec = Spec()
            self.good_argnum = True
            while i < end:
                c = fmt[i]
                if c == "#":
                    spec.sharp = True
                elif c == "0":
                    spec.zero = not spec.minus
                elif c == "+":
                    spec.plus = True
                elif c == "-":
                    spec.minus = True
                    spec.zero = False
                elif c == " ":
                    spec.space = True
                else:
                    break
                i += 1
            i, after_index = self.arg_number(i)
            if i < end and fmt[i] == "*":
                i += 1
                w, ok = self.int_from_arg()
                if not ok:
                    out.append("%!(BADWIDTH)")
                elif w < 0:
                    spec.minus, spec.zero, w = True, False, -w
                spec.width = w if ok else None
                after_index = False
            else:
                w2, i = _parse_num(fmt, i, end)
                if after_index and w2 is not None:
                    self.good_argnum = False
                spec.width = w2
            if i < end and fmt[i] == ".":
                i += 1
                if after_index:
                    self.good_argnum = False
                i, after_index = self.arg_number(i)
                if i < end and fmt[i] == "*":
                    i += 1
                    p, ok = self.int_from_arg()
                    if not ok:
                        out.append("%!(BADPREC)")
                    spec.prec = p if ok and p >= 0 else None
                    after_index = False
                else:
                    p2, i = _parse_num(fmt, i, end)
                    spec.prec = 0 if p2 is None else p2
            if not after_index:
                i, after_index = self.arg_number(i)
            if i >= end:
                out.append("%!(NOVERB)")
                break
            verb = fmt[i]
            i += 1
            if verb == "%":
                out.append("%")
                continue
            if not self.good_argnum:
                out.append(f"%!{verb}(BADINDEX)")
                continue
            if self.argnum >= len(self.args):
                out.append(f"%!{verb}(MISSING)")
                continue
            if verb == "v":
                if spec.sharp:
                    spec.sharp, spec.sharp_v = False, True
                if spec.plus:
                    spec.plus, spec.plus_v = False, True
            arg = self.args[self.argnum]
            self.argnum += 1
            if verb == "w":
                out.append(_bad_verb(arg, verb))
            else:
                out.append(format_value(arg, verb, spec))
        if not self.reordered and self.argnum < len(self.args):
            extra = []
            for a in self.args[self.argnum :]:
                extra.append(NIL_ANGLE if a is None else f"{go_type_name(a)}={format_value(a, 'v', _PLAIN)}")
            out.append("%!(EXTRA " + ", ".join(extra) + ")")
        return "".join(out)


def sprintf(fmt: str, args: Sequence[Any]) -> str:
    """``fmt.Sprintf``."""
    simple = _sprintf_strings(fmt, args)
    return simple if simple is not None else _Printf(fmt, args).run()


def _sprintf_strings(fmt: str, args: Sequence[Any]) -> str | None:
    """The form templates use most (``printf "/hosts/%s/ip" $dir``: bare ``%s``/``%v`` verbs fed
    one string each, ``%%`` aside) without the general machinery; None for anything else."""
    parts = fmt.split("%")
    out = [parts[0]]
    used = 0
    i = 1
    while i < len(parts):
        part = parts[i]
        if not part:  # "%%", or a "%" at the very end (NOVERB: the general path says so)
            if i + 1 >= len(parts):
                return None
            out += ("%", parts[i + 1])
            i += 2
            continue
        if part[0] not in "sv" or used >= len(args) or type(args[used]) is not str:
            return None
        out += (args[used], part[1:])
        used += 1
        i += 1
    return "".join(out) if used == len(args) else None
