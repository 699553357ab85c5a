"""confd's template functions, bound to a key space, with confd's exact semantics.

``confd_funcs(kv)`` gives the function map a confd template expects: memkv's lookups (``getv``,
``gets``, ``ls``, ``lsdir``...), confd's own (``base``, ``split``, ``json``, ``atoi``, ``seq``...),
and the libconfd/OpenPitrix extras (``filter``, ``toJson``, ``toYaml``, ``min``, ``max``, arithmetic
that takes numbers written as strings). Go's builtins (``eq``, ``printf``...) stay Go's.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import re2

from pitrix.agent.template import gopath
from pitrix.agent.template.encoding import decode, to_json, to_yaml
from pitrix.agent.template.errors import FuncError
from pitrix.agent.template.gofmt import go_bytes, quote
from pitrix.agent.template.gotime import GoTime
from pitrix.agent.template.limits import check_chars, check_items
from pitrix.agent.template.literals import parse_float
from pitrix.agent.template.memkv import MemKV
from pitrix.agent.template.netlookup import SRV, lookup_ip, lookup_srv
from pitrix.agent.template.values import KVPair, KVPairs, go_type_name, is_int

__all__ = ["SRV", "ConfdFuncs", "KVPair", "MemKV", "confd_funcs"]


def _str(v: Any) -> str:
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
    text = _str(s)
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
    text, separator = _str(s), _str(sep)
    if separator == "":
        return list(text)
    return text.split(separator)


def join(a: Any, sep: Any) -> str:
    items, separator = _strings(a), _str(sep)
    check_chars(sum(map(len, items)) + len(separator) * max(len(items) - 1, 0), "join")
    return separator.join(items)


def _map_case(s: Any, upper: bool) -> str:
    """``strings.ToUpper``/``ToLower``: rune by rune, never changing the length (no "ß" → "SS")."""
    out = []
    for c in _str(s):
        m = c.upper() if upper else c.lower()
        out.append(m if len(m) == 1 else c)
    return "".join(out)


def to_upper(s: Any) -> str:
    return _map_case(s, True)


def to_lower(s: Any) -> str:
    return _map_case(s, False)


def replace(s: Any, old: Any, new: Any, n: Any) -> str:
    text, old_s, new_s, count = _str(s), _str(old), _str(new), _int(n)
    if len(new_s) > len(old_s):  # the result grows: by how much, before building it
        hits = text.count(old_s)
        if count >= 0:
            hits = min(hits, count)
        check_chars(len(text) + hits * (len(new_s) - len(old_s)), "replace")
    return text.replace(old_s, new_s, count)


def contains(s: Any, substr: Any) -> bool:
    return _str(substr) in _str(s)


def trim_suffix(s: Any, suffix: Any) -> str:
    return _str(s).removesuffix(_str(suffix))


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
    return base64.b64encode(go_bytes(_str(data))).decode("ascii")


_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def base64_decode(data: Any) -> str:
    """``base64.StdEncoding.DecodeString``: padding required, newlines ignored."""
    raw = go_bytes(_str(data))
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
    text = _str(s)
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise FuncError(f"strconv.ParseBool: parsing {quote(text)}: invalid syntax")


def filter_(regex: Any, values: Any) -> list[Any]:
    """Items of a list matching ``regex``: strings by themselves, KVPairs by their value."""
    try:
        # RE2, as Go's regexp: the same syntax (no backreferences or lookaround) and matching in
        # time linear in the input, so a hostile pattern cannot hang the render inside one match.
        options = re2.Options()
        options.log_errors = False  # the error is the template's, reported here, not on stderr
        rx = re2.compile(_str(regex), options=options)
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


class ConfdFuncs:
    """The functions that need context: the key space, the environment, the filesystem root, DNS."""

    def __init__(
        self,
        kv: MemKV,
        *,
        root: str | None = None,
        environ: Mapping[str, str] | None = None,
        nameservers: list[tuple[str, int]] | None = None,
    ) -> None:
        self.kv = kv
        self.root = root
        self.environ = environ
        self.nameservers = nameservers

    def getv(self, key: Any, *default: Any) -> str:
        return self.kv.get_value(_str(key), *[_str(d) for d in default])

    def getvs(self, pattern: Any) -> list[str]:
        return self.kv.get_all_values(_str(pattern))

    def get(self, key: Any) -> KVPair:
        return self.kv.get(_str(key))

    def gets(self, pattern: Any) -> KVPairs:
        return self.kv.get_all(_str(pattern))

    def exists(self, key: Any) -> bool:
        return self.kv.exists(_str(key))

    def ls(self, path: Any) -> list[str]:
        return self.kv.ls(_str(path))

    def lsdir(self, path: Any) -> list[str]:
        return self.kv.lsdir(_str(path))

    def getenv(self, key: Any, *default: Any) -> str:
        env = self.environ if self.environ is not None else os.environ
        value = env.get(_str(key), "")
        if value == "" and default:
            return _str(default[0])
        return value

    def file_exists(self, path: Any) -> bool:
        target = _str(path)
        if self.root is not None:
            target = os.path.join(self.root, target.lstrip("/"))
        try:
            os.stat(target)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError:
            return True
        return True

    def lookup_ip(self, host: Any) -> list[str]:
        return lookup_ip(_str(host))

    def lookup_ipv4(self, host: Any) -> list[str]:
        return [a for a in lookup_ip(_str(host)) if "." in a]

    def lookup_ipv6(self, host: Any) -> list[str]:
        return [a for a in lookup_ip(_str(host)) if ":" in a]

    def lookup_srv(self, service: Any, proto: Any, name: Any) -> list[SRV]:
        return lookup_srv(_str(service), _str(proto), _str(name), self.nameservers)

    def as_map(self) -> dict[str, Callable[..., Any]]:
        return {
            "getv": self.getv,
            "getvs": self.getvs,
            "get": self.get,
            "gets": self.gets,
            "exists": self.exists,
            "ls": self.ls,
            "lsdir": self.lsdir,
            "getenv": self.getenv,
            "fileExists": self.file_exists,
            "lookupIP": self.lookup_ip,
            "lookupIPV4": self.lookup_ipv4,
            "lookupIPV6": self.lookup_ipv6,
            "lookupSRV": self.lookup_srv,
            "base": lambda p: gopath.base(_str(p)),
            "dir": lambda p: gopath.dir(_str(p)),
            "split": split,
            "join": join,
            "toUpper": to_upper,
            "toLower": to_lower,
            "replace": replace,
            "contains": contains,
            "trimSuffix": trim_suffix,
            "json": lambda s: decode(s, dict),
            "jsonArray": lambda s: decode(s, list),
            "map": create_map,
            "datetime": GoTime.now,
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
            "toJson": to_json,
            "toYaml": to_yaml,
        }


def confd_funcs(
    kv: MemKV,
    *,
    root: str | None = None,
    environ: Mapping[str, str] | None = None,
    nameservers: list[tuple[str, int]] | None = None,
) -> dict[str, Callable[..., Any]]:
    """confd's function map over ``kv``.

    ``root``: directory ``fileExists`` resolves absolute paths under (a VM's root); ``environ``:
    what ``getenv`` reads (default ``os.environ``); ``nameservers``: where ``lookupSRV`` asks
    (default: /etc/resolv.conf's).
    """
    return ConfdFuncs(kv, root=root, environ=environ, nameservers=nameservers).as_map()
