"""confd's template function vocabulary, with confd's exact semantics.

Two kinds. ``FUNCS`` are the functions that depend on nothing but their arguments: confd's own
(``base``, ``split``, ``json``, ``atoi``, ``seq``...) and the libconfd/OpenPitrix extras (``filter``,
``toJson``, ``toYaml``, ``min``, ``max``, arithmetic that takes numbers written as strings); they are
fixed into every confd template when it is parsed. ``BOUND`` names the functions over a render's
context (the key space: ``getv``, ``gets``, ``ls``...; the environment, the filesystem root, DNS):
the engine knows their names, so a template calling an unknown function still fails to parse, but
not their implementation, which the renderer (the agent) passes to each ``execute``. That split is
what lets the runtime check a template without any of the agent's machinery.
Go's builtins (``eq``, ``printf``...) stay Go's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from pitrix.gotemplate import gopath
from pitrix.gotemplate.errors import FuncError
from pitrix.gotemplate.gofmt import go_bytes, quote
from pitrix.gotemplate.limits import check_chars, check_items
from pitrix.gotemplate.literals import parse_float
from pitrix.gotemplate.template import Template, parse
from pitrix.gotemplate.values import KVPair, go_type_name, is_int

__all__ = ["BOUND", "FUNCS", "parse_confd", "str_arg"]


def str_arg(v: Any) -> str:
    """A string argument, or confd's error for any other type (for the functions bound elsewhere too)."""
    if not isinstance(v, str):
        raise FuncError(f"wrong type for value; expected string; got {go_type_name(v)}")
    return v


def _int(v: Any) -> int:
    if not is_int(v):
        raise FuncError(f"wrong type for value; expected int; got {go_type_name(v)}")
    return int(v)


def _strings(v: Any) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise FuncError(f"wrong type for value; expected []string; got {go_type_name(v)}")
    return v


def _kvpairs(v: Any) -> list[KVPair]:
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, KVPair) for x in v):
        raise FuncError(f"wrong type for value; expected []memkv.KVPair; got {go_type_name(v)}")
    return v


_DECIMAL = re.compile(r"[+-]?[0-9]+")


def atoi(s: Any) -> int:
    """``strconv.Atoi``: decimal digits with an optional sign, nothing else."""
    text = str_arg(s)
    if not _DECIMAL.fullmatch(text):
        raise FuncError(f"strconv.Atoi: parsing {quote(text)}: invalid syntax")
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise FuncError(f"strconv.Atoi: parsing {quote(text)}: value out of range")
    return value


def _number(v: Any) -> int | float:
    """An arithmetic operand: ints and floats as they are, strings parsed (``.`` means float)."""
    if isinstance(v, bool) or v is None:
        raise FuncError("can't apply the operator to the values")
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        if "." in v:
            f = parse_float(v)
            if f is None:
                raise FuncError(f"can't apply the operator to the value {quote(v)}: not a number")
            return f
        if not _DECIMAL.fullmatch(v):
            raise FuncError(f"can't apply the operator to the value {quote(v)}: not a number")
        return int(v)
    raise FuncError(f"can't apply the operator to a value of type {go_type_name(v)}")


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def add(a: Any, b: Any) -> int | float:
    x, y = _number(a), _number(b)
    return x + y


def sub(a: Any, b: Any) -> int | float:
    x, y = _number(a), _number(b)
    return x - y


def mul(a: Any, b: Any) -> int | float:
    x, y = _number(a), _number(b)
    return x * y


def div(a: Any, b: Any) -> int | float:
    x, y = _number(a), _number(b)
    if y == 0:
        raise FuncError("integer divide by zero" if is_int(x) and is_int(y) else "divide by zero")
    if is_int(x) and is_int(y):
        return _trunc_div(int(x), int(y))
    return x / y


def mod(a: Any, b: Any) -> int:
    x, y = _number(a), _number(b)
    if not (is_int(x) and is_int(y)):
        raise FuncError("modulo needs integer operands")
    if y == 0:
        raise FuncError("integer divide by zero")
    r = abs(int(x)) % abs(int(y))
    return -r if x < 0 else r


def max_(a: Any, b: Any) -> float:
    return float(max(_number(a), _number(b)))


def min_(a: Any, b: Any) -> float:
    return float(min(_number(a), _number(b)))


def seq(first: Any, last: Any) -> list[int]:
    lo, hi = _int(first), _int(last)
    check_items(hi - lo + 1, "seq")
    return list(range(lo, hi + 1))


def split(s: Any, sep: Any) -> list[str]:
    """``strings.Split``: an empty separator splits into characters."""
    text, separator = str_arg(s), str_arg(sep)
    if separator == "":
        return list(text)
    return text.split(separator)


def join(a: Any, sep: Any) -> str:
    items, separator = _strings(a), str_arg(sep)
    check_chars(sum(map(len, items)) + len(separator) * max(len(items) - 1, 0), "join")
    return separator.join(items)


def _map_case(s: Any, upper: bool) -> str:
    """``strings.ToUpper``/``ToLower``: rune by rune, never changing the length (no "ß" → "SS")."""
    out = []
    for c in str_arg(s):
        m = c.upper() if upper else c.lower()
        out.append(m if len(m) == 1 else c)
    return "".join(out)


def to_upper(s: Any) -> str:
    return _map_case(s, True)


def to_lower(s: Any) -> str:
    return _map_case(s, False)


def replace(s: Any, old: Any, new: Any, n: Any) -> str:
    text, old_s, new_s, count = str_arg(s), str_arg(old), str_arg(new), _int(n)
    if len(new_s) > len(old_s):  # the result grows: by how much, before building it
        hits = text.count(old_s)
        if count >= 0:
            hits = min(hits, count)
        check_chars(len(text) + hits * (len(new_s) - len(old_s)), "replace")
    return text.replace(old_s, new_s, count)


def contains(s: Any, substr: Any) -> bool:
    return str_arg(substr) in str_arg(s)


def trim_suffix(s: Any, suffix: Any) -> str:
    return str_arg(s).removesuffix(str_arg(suffix))


def create_map(*values: Any) -> dict[str, Any]:
    if len(values) % 2:
        raise FuncError("invalid map call")
    out: dict[str, Any] = {}
    for i in range(0, len(values), 2):
        key = values[i]
        if not isinstance(key, str):
            raise FuncError("map keys must be strings")
        out[key] = values[i + 1]
    return out


def reverse(values: Any) -> Any:
    """Reverses a ``[]string`` or ``[]memkv.KVPair`` in place, as confd does; anything else unchanged.

    That includes what ``gets`` returns (memkv's named ``KVPairs`` type, which confd's type switch
    does not match) and lists of other values (``jsonArray``'s ``[]interface{}``).
    """
    if type(values) is list and (
        all(isinstance(x, str) for x in values) or all(isinstance(x, KVPair) for x in values)
    ):
        values.reverse()
    return values


def sort_by_length(values: Any) -> list[str]:
    items = _strings(values)
    items.sort(key=lambda s: len(go_bytes(s)))
    return items


def sort_kv_by_length(values: Any) -> list[KVPair]:
    """Sorts in place by key length and returns a plain ``[]memkv.KVPair`` (so ``reverse`` applies)."""
    items = _kvpairs(values)
    items.sort(key=lambda kv: len(go_bytes(kv.Key)))
    return list(items)


def base64_encode(data: Any) -> str:
    import base64

    return base64.b64encode(go_bytes(str_arg(data))).decode("ascii")


_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def base64_decode(data: Any) -> str:
    """``base64.StdEncoding.DecodeString``: padding required, newlines ignored."""
    import base64
    import binascii

    raw = go_bytes(str_arg(data))
    clean = bytes(b for b in raw if b not in b"\r\n")
    for i, b in enumerate(clean):
        if b not in _B64 and b != ord("="):
            raise FuncError(f"illegal base64 data at input byte {i}")
    try:
        out = base64.b64decode(clean, validate=True)
    except binascii.Error:
        raise FuncError(f"illegal base64 data at input byte {max(len(clean) - 1, 0)}") from None
    return out.decode("utf-8", "surrogateescape")


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(s: Any) -> bool:
    text = str_arg(s)
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise FuncError(f"strconv.ParseBool: parsing {quote(text)}: invalid syntax")


def filter_(regex: Any, values: Any) -> list[Any]:
    """Items of a list matching ``regex``: strings by themselves, KVPairs by their value."""
    import re2  # here: most templates never call filter, and the library is 3 MiB of RSS

    try:
        # RE2, as Go's regexp: the same syntax (no backreferences or lookaround) and matching in
        # time linear in the input, so a hostile pattern cannot hang the render inside one match.
        options = re2.Options()
        options.log_errors = False  # the error is the template's, reported here, not on stderr
        rx = re2.compile(str_arg(regex), options=options)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise FuncError(f"error parsing regexp: {detail}") from None
    if not isinstance(values, (list, tuple)):
        raise FuncError("filter only support slice or array.")
    out: list[Any] = []
    for v in values:
        if isinstance(v, str):
            if rx.search(v):
                out.append(v)
        elif isinstance(v, KVPair) and rx.search(v.Value):
            out.append(v)
    return out


# The functions below load what they call on first use: JSON, YAML and time are for the few
# templates that use them, and a one-shot render of the others should not import them.


def _json(text: Any) -> Any:
    from pitrix.gotemplate.encoding import decode

    return decode(text, dict)


def _json_array(text: Any) -> Any:
    from pitrix.gotemplate.encoding import decode

    return decode(text, list)


def _datetime() -> Any:
    from pitrix.gotemplate.gotime import GoTime

    return GoTime.now()


def _to_json(v: Any) -> str:
    from pitrix.gotemplate.encoding import to_json

    return to_json(v)


def _to_yaml(v: Any) -> str:
    from pitrix.gotemplate.encoding import to_yaml

    return to_yaml(v)


def _base(path: Any) -> str:
    return gopath.base(str_arg(path))


def _dir(path: Any) -> str:
    return gopath.dir(str_arg(path))


FUNCS: Mapping[str, Callable[..., Any]] = MappingProxyType(
    {
        "base": _base,
        "dir": _dir,
        "split": split,
        "join": join,
        "toUpper": to_upper,
        "toLower": to_lower,
        "replace": replace,
        "contains": contains,
        "trimSuffix": trim_suffix,
        "json": _json,
        "jsonArray": _json_array,
        "map": create_map,
        "datetime": _datetime,
        "atoi": atoi,
        "add": add,
        "sub": sub,
        "mul": mul,
        "div": div,
        "mod": mod,
        "max": max_,
        "min": min_,
        "seq": seq,
        "reverse": reverse,
        "sortByLength": sort_by_length,
        "sortKVByLength": sort_kv_by_length,
        "base64Encode": base64_encode,
        "base64Decode": base64_decode,
        "parseBool": parse_bool,
        "filter": filter_,
        "toJson": _to_json,
        "toYaml": _to_yaml,
    }
)

BOUND: frozenset[str] = frozenset(
    {
        "getv",
        "getvs",
        "get",
        "gets",
        "exists",
        "ls",
        "lsdir",
        "getenv",
        "fileExists",
        "lookupIP",
        "lookupIPV4",
        "lookupIPV6",
        "lookupSRV",
    }
)


def parse_confd(text: str, name: str = "template") -> Template:
    """Parse a confd template: ``FUNCS`` fixed in, the ``BOUND`` names left to each ``execute``."""
    return parse(text, name, FUNCS, names=BOUND)
