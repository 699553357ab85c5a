"""How Python values stand in for Go values inside templates.

Go distinguishes ``int`` from ``float64`` and typed structs from maps; templates show those
differences in their output (``3`` vs ``3.5``, ``{key value}`` vs ``map[...]``). The mapping used
throughout the engine: ``None`` is nil / "no value", ``bool``, ``int`` (Go int), ``float`` (float64),
``str``, ``list``/``tuple`` (slices), ``dict`` (maps, printed and ranged in sorted key order),
dataclass instances (structs: ``KVPair``), and any other object (fields are its public attributes,
methods its public callables).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class KVPair:
    """confd's ``memkv.KVPair``: what ``get`` and ``gets`` return (``.Key``, ``.Value``)."""

    Key: str
    Value: str


class KVPairs(list[KVPair]):
    """memkv's named slice type that ``gets`` returns.

    It matters for byte-exactness: confd's ``reverse`` switches on ``[]memkv.KVPair`` and so leaves a
    ``KVPairs`` (the result of ``gets``) as it is, while ``sortKVByLength`` returns a plain slice.
    """


def is_int(v: Any) -> bool:
    """A Go integer: a Python int that is not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_struct(v: Any) -> bool:
    return dataclasses.is_dataclass(v) and not isinstance(v, type)


def truth(v: Any) -> bool:
    """Go's template truth: empty, zero, false and nil are false; structs and other objects are true."""
    if v is None:
        return False
    if isinstance(v, (bool, int, float, complex, str, list, tuple, dict)):
        return bool(v)
    return True


def go_type_name(v: Any) -> str:
    """The Go type a value stands for, as ``%T`` and ``%!verb(type=value)`` print it."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, complex):
        return "complex128"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(x, str) for x in v):
            return "[]string"
        if v and all(is_int(x) for x in v):
            return "[]int"
        if isinstance(v, KVPairs):
            return "memkv.KVPairs"
        if v and all(isinstance(x, KVPair) for x in v):
            return "[]memkv.KVPair"
        return "[]interface {}"
    if isinstance(v, dict):
        return "map[string]interface {}"
    if isinstance(v, KVPair):
        return "memkv.KVPair"
    go_name = getattr(type(v), "go_type", None)
    if isinstance(go_name, str):
        return go_name
    if callable(v):
        return "func"
    return type(v).__name__


def sort_keys(keys: list[Any]) -> list[Any]:
    """Map keys in the order Go's fmt and range use: numbers numerically, strings bytewise."""
    try:
        return sorted(keys)
    except TypeError:
        return sorted(keys, key=lambda k: (go_type_name(k), str(k)))


def struct_fields(v: Any) -> list[tuple[str, Any]]:
    return [(f.name, getattr(v, f.name)) for f in dataclasses.fields(v)]
