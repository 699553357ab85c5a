"""Go's predefined template functions (``len``, ``index``, ``printf``, ``eq``...), with Go's errors.

``and`` and ``or`` are here for their arity and for use as values; the executor evaluates them
itself because they short-circuit and return the deciding argument rather than a bool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pitrix.gotemplate.errors import FuncError
from pitrix.gotemplate.gofmt import Spec, format_value, go_bytes, sprint, sprintf, sprintln
from pitrix.gotemplate.values import go_type_name, is_int, truth


def and_(arg0: Any, *args: Any) -> Any:
    for v in (arg0, *args):
        if not truth(v):
            return v
    return args[-1] if args else arg0


def or_(arg0: Any, *args: Any) -> Any:
    for v in (arg0, *args):
        if truth(v):
            return v
    return args[-1] if args else arg0


def not_(arg: Any) -> bool:
    return not truth(arg)


def len_(item: Any) -> int:
    if item is None:
        raise FuncError("len of nil pointer")
    if isinstance(item, str):
        return len(go_bytes(item))
    if isinstance(item, (list, tuple, dict, bytes)):
        return len(item)
    raise FuncError(f"len of type {go_type_name(item)}")


def _index_arg(index: Any, cap: int) -> int:
    if index is None:
        raise FuncError("cannot index slice/array with nil")
    if not is_int(index):
        raise FuncError(f"cannot index slice/array with type {go_type_name(index)}")
    if index < 0 or index > cap:
        raise FuncError(f"index out of range: {index}")
    return int(index)


def index(item: Any, *indexes: Any) -> Any:
    """``index x 1 2``: x[1][2] for slices, strings (a byte) and maps (a missing key gives nil)."""
    if item is None:
        raise FuncError("index of untyped nil")
    for idx in indexes:
        if item is None:
            raise FuncError("index of untyped nil")
        if isinstance(item, (list, tuple, str)):
            seq: Any = go_bytes(item) if isinstance(item, str) else item
            x = _index_arg(idx, len(seq))
            if x == len(seq):
                raise FuncError(f"index out of range: {x}")
            item = seq[x]
        elif isinstance(item, dict):
            if idx is None:
                raise FuncError("value is nil; should be of type string")
            if not isinstance(idx, str) and not all(isinstance(k, type(idx)) for k in item):
                raise FuncError(f"value has type {go_type_name(idx)}; should be string")
            item = item.get(idx)
        else:
            raise FuncError(f"can't index item of type {go_type_name(item)}")
    return item


def slice_(item: Any, *indexes: Any) -> Any:
    """``slice x 1 2``: x[1:2]; strings slice by bytes; a third index is a capacity (slices only)."""
    if item is None:
        raise FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise FuncError("cannot 3-index slice a string")
        seq: Any = go_bytes(item)
    elif isinstance(item, (list, tuple)):
        seq = item
    else:
        raise FuncError(f"can't slice item of type {go_type_name(item)}")
    cap = len(seq)
    idx = [0, cap]
    for i, index_ in enumerate(indexes):
        x = _index_arg(index_, cap)
        if i < 2:
            idx[i] = x
        elif idx[1] > x:
            raise FuncError(f"invalid slice index: {idx[1]} > {x}")
    if idx[0] > idx[1]:
        raise FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    out = seq[idx[0] : idx[1]]
    if isinstance(item, str):
        return bytes(out).decode("utf-8", "surrogateescape")
    return list(out)


def print_(*args: Any) -> str:
    return sprint(args)


def printf(format_: Any, *args: Any) -> str:
    if not isinstance(format_, str):
        raise FuncError(f"wrong type for value; expected string; got {go_type_name(format_)}")
    return sprintf(format_, args)


def println(*args: Any) -> str:
    return sprintln(args)


def _eval_args(args: tuple[Any, ...]) -> str:
    """What html/js/urlquery escape: a lone string as is, anything else as fmt.Sprint prints it."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(["<no value>" if a is None else a for a in args])


_HTML = {'"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;", "\0": "\ufffd"}


def html(*args: Any) -> str:
    return "".join(_HTML.get(c, c) for c in _eval_args(args))


_JS = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026", "=": "\\u003D"}


def _js_char(c: str) -> str:
    if c in _JS:
        return _JS[c]
    cp = ord(c)
    if cp < 0x20:
        return f"\\u00{cp:02X}"
    if cp < 0x80 or c.isprintable():
        return c
    return f"\\u{cp:04X}"


def js(*args: Any) -> str:
    return "".join(_js_char(c) for c in _eval_args(args))


_URL_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def urlquery(*args: Any) -> str:
    out = []
    for b in go_bytes(_eval_args(args)):
        if b in _URL_SAFE:
            out.append(chr(b))
        elif b == 0x20:
            out.append("+")
        else:
            out.append(f"%{b:02X}")
    return "".join(out)


def _basic_kind(v: Any) -> str:
    if v is None:
        return "invalid"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, complex):
        return "complex"
    if isinstance(v, str):
        return "string"
    return "other"


_BASIC = frozenset({"bool", "int", "float", "complex", "string"})


def eq(arg1: Any, *args: Any) -> bool:
    """``eq a b c``: a == b || a == c; values of different basic kinds are an error, as in Go."""
    if not args:
        raise FuncError("missing argument for comparison")
    k1 = _basic_kind(arg1)
    for arg in args:
        k2 = _basic_kind(arg)
        if k1 != k2:
            if arg1 is not None and arg is not None:
                raise FuncError("incompatible types for comparison")
            result = False
        elif k1 in _BASIC or k1 == "invalid":
            result = arg1 == arg
        else:
            if type(arg1) is not type(arg):
                raise FuncError(
                    f"non-comparable types {_v(arg1)}: {go_type_name(arg1)}, {go_type_name(arg)}: {_v(arg)}"
                )
            if isinstance(arg, (list, tuple, dict)) or callable(arg):
                raise FuncError(f"non-comparable type {_v(arg)}: {go_type_name(arg)}")
            result = arg1 == arg
        if result:
            return True
    return False


def _v(v: Any) -> str:
    return format_value(v, "v", Spec())


def ne(arg1: Any, arg2: Any) -> bool:
    return not eq(arg1, arg2)


def lt(arg1: Any, arg2: Any) -> bool:
    k1, k2 = _basic_kind(arg1), _basic_kind(arg2)
    if k1 not in _BASIC or k2 not in _BASIC:
        raise FuncError("invalid type for comparison")
    if k1 != k2:
        raise FuncError("incompatible types for comparison")
    if k1 in ("bool", "complex"):
        raise FuncError("invalid type for comparison")
    return bool(arg1 < arg2)


def le(arg1: Any, arg2: Any) -> bool:
    return lt(arg1, arg2) or eq(arg1, arg2)


def gt(arg1: Any, arg2: Any) -> bool:
    return not le(arg1, arg2)


def ge(arg1: Any, arg2: Any) -> bool:
    return not lt(arg1, arg2)


def call(fn: Any, *args: Any) -> Any:
    if fn is None:
        raise FuncError("call of nil")
    if not callable(fn):
        raise FuncError(f"non-function of type {go_type_name(fn)}")
    return fn(*args)


BUILTINS: dict[str, Callable[..., Any]] = {
    "and": and_,
    "or": or_,
    "not": not_,
    "len": len_,
    "index": index,
    "slice": slice_,
    "print": print_,
    "printf": printf,
    "println": println,
    "html": html,
    "js": js,
    "urlquery": urlquery,
    "eq": eq,
    "ne": ne,
    "lt": lt,
    "le": le,
    "gt": gt,
    "ge": ge,
    "call": call,
}
