"""confd-yunify's comparisons: ``eq ne lt le gt ge`` that treat number-like strings as numbers.

QingCloud's confd fork replaces text/template's comparison builtins with its own, and AppCenter
templates rely on it: metadata values are strings, so ``{{if gt (getv "/env/port") 1024}}`` or
``{{if eq (getv "/host/sid") 1}}`` compare numbers there, where Go's builtins stop with
"incompatible types for comparison". Pass ``COMPARE_FUNCS`` to ``Template.execute`` (functions
given there win over the builtins) to render as that confd does; without them nothing changes.

What the fork does, worked out from its source and matched case by case here:

- ``eq``/``ne`` take exactly two arguments. Each side is normalised: a string that parses as a
  number becomes a float64 (with a ``.`` it is read as a float, without one as a base-10 int64;
  ``"01"`` is 1, ``"1e3"`` is not a number, ``"1.5e3"`` is); ints and floats become float64;
  anything else stays as it is. Then the two are deeply equal or not: ``eq "1" 1`` and
  ``eq "1.0" "1"`` hold, ``eq "x" 1`` is false (never an error), a bool never equals a number.
- ``lt le gt ge`` turn each side into a float64: ints and floats as they are, strings through
  ``ParseFloat`` (so ``"1e3"``, ``"inf"`` and ``"nan"`` are numbers here), lists and maps by their
  length, a time by its Unix seconds, anything else (nil, bools, a struct) as 0. When both sides
  are strings that are not numbers they compare as strings, byte by byte; when only one is, it
  counts as 0 (an out-of-range one as ±Inf, what ParseFloat returns with its error). Never an error.

The number syntax is Go's strconv (Go 1.19, the toolchain Debian builds confd with here):
``ParseFloat`` takes an optional sign, decimal digits with an optional point and exponent or a
hexadecimal mantissa with a ``p`` exponent, ``inf``/``infinity``/``nan`` in any case, and ``_``
between digits; ``ParseInt`` (base 10) takes an optional sign and digits only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from pitrix.gotemplate.gofmt import go_bytes
from pitrix.gotemplate.gotime import GoTime
from pitrix.gotemplate.literals import underscore_ok
from pitrix.gotemplate.values import is_int

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_DEC_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_FLOAT = re.compile(r"([+-]?)0[xX]((?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+))[pP]([+-]?[0-9]+)")
_SPECIAL = re.compile(r"([+-]?)(inf|infinity)|(nan)", re.IGNORECASE)
_DEC_INT = re.compile(r"[+-]?[0-9]+")


def parse_float(text: str) -> tuple[float, bool]:
    """Go's ``strconv.ParseFloat(text, 64)``: (value, ok). Out of range gives (±Inf, False), as
    ParseFloat gives ±Inf with its range error; bad syntax (0, False)."""
    special = _SPECIAL.fullmatch(text)
    if special:
        if special.group(3):
            return math.nan, True
        return (-math.inf if special.group(1) == "-" else math.inf), True
    if "_" in text:
        # Digit separators: where strconv allows them, its parser skips them.
        if not underscore_ok(text):
            return 0.0, False
        text = text.replace("_", "")
    if _DEC_FLOAT.fullmatch(text):
        value = float(text)
    else:
        hexa = _HEX_FLOAT.fullmatch(text)
        if not hexa:
            return 0.0, False
        sign, mantissa, exponent = hexa.groups()
        whole, _, frac = mantissa.partition(".")
        try:
            value = float.fromhex(f"{sign}0x{whole or '0'}.{frac or '0'}p{exponent}")
        except OverflowError:
            return (-math.inf if sign == "-" else math.inf), False
    if math.isinf(value):
        return value, False
    return value, True


def string_to_number(text: str) -> float | None:
    """The fork's stringToNumber, as a float64: a ``.`` makes it a float, else a base-10 int64."""
    if "." in text:
        value, ok = parse_float(text)
        return value if ok else None
    if not _DEC_INT.fullmatch(text):
        return None
    number = int(text)
    if not _INT64_MIN <= number <= _INT64_MAX:
        return None
    return float(number)


def _normalise(v: Any) -> Any:
    if isinstance(v, str):
        number = string_to_number(v)
        return v if number is None else number
    if is_int(v) or isinstance(v, float):
        return float(v)
    return v


def _deep_equal(a: Any, b: Any) -> bool:
    """reflect.DeepEqual over the engine's values: same Go type and equal contents."""
    if a is None or b is None:
        return a is None and b is None
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_deep_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_deep_equal(a[k], b[k]) for k in a)
    if callable(a):
        return False  # DeepEqual: funcs are equal only when both are nil
    return bool(a == b)


def eq(x: Any, y: Any) -> bool:
    return _deep_equal(_normalise(x), _normalise(y))


def ne(x: Any, y: Any) -> bool:
    return not eq(x, y)


def _as_float(v: Any) -> tuple[float, str | None]:
    """One side of lt/le/gt/ge: its number, and the string itself when it is a non-number."""
    if isinstance(v, bool) or v is None:
        return 0.0, None
    if is_int(v) or isinstance(v, float):
        return float(v), None
    if isinstance(v, str):
        value, ok = parse_float(v)
        return value, (None if ok else v)
    if isinstance(v, (list, tuple, dict)):
        return float(len(v)), None
    if isinstance(v, GoTime):
        return float(v.Unix()), None
    return 0.0, None


def _pair(a: Any, b: Any) -> tuple[float, float]:
    left, left_str = _as_float(a)
    right, right_str = _as_float(b)
    if left_str is not None and right_str is not None:
        lb, rb = go_bytes(left_str), go_bytes(right_str)
        if lb < rb:
            return 0.0, 1.0
        if lb > rb:
            return 1.0, 0.0
        return 0.0, 0.0
    return left, right


def lt(a: Any, b: Any) -> bool:
    left, right = _pair(a, b)
    return left < right


def le(a: Any, b: Any) -> bool:
    left, right = _pair(a, b)
    return left <= right


def gt(a: Any, b: Any) -> bool:
    left, right = _pair(a, b)
    return left > right


def ge(a: Any, b: Any) -> bool:
    left, right = _pair(a, b)
    return left >= right


COMPARE_FUNCS: dict[str, Callable[..., Any]] = {"eq": eq, "ne": ne, "lt": lt, "le": le, "gt": gt, "ge": ge}
