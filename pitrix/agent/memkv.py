"""confd's in-memory key space (``memkv``): flat ``/a/b/c`` keys with string values.

Listing follows memkv exactly, quirks included: ``ls`` names every child (a key's own name when the
path is itself a key), ``lsdir`` only children that have children, and both work on path terms, so
``ls "/"`` sees only keys directly under the root.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any

from pitrix.gotemplate import gopath
from pitrix.gotemplate.errors import FuncError
from pitrix.gotemplate.gofmt import format_json_float
from pitrix.gotemplate.values import KVPair, KVPairs


def _scalar(value: Any, key: str) -> str | None:
    """A YAML scalar as confd's file backend stores it (``None``: the key is left out)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        # strconv.FormatFloat(f, 'f', -1, 64): shortest digits, never an exponent
        text = format_json_float(value)
        if "e" in text:
            mant, _, exp = text.partition("e")
            digits = mant.replace(".", "").lstrip("-")
            point = (mant.lstrip("-").find(".") if "." in mant else len(mant.lstrip("-"))) + int(exp)
            if point <= 0:
                text = "0." + "0" * -point + digits
            elif point >= len(digits):
                text = digits + "0" * (point - len(digits))
            else:
                text = digits[:point] + "." + digits[point:]
            text = ("-" if value < 0 else "") + text
        return text
    import datetime as _dt  # here: only YAML's timestamps get this far

    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    raise ValueError(f"value of {key}: unsupported type {type(value).__name__}")


def _is_clean(key: str) -> bool:
    """``gopath.clean(key) == key``, cheaply (it runs over every key when the index is built)."""
    if key == "/":
        return True
    probe = (key if key.startswith("/") else "/" + key) + "/"
    return "//" not in probe and "/./" not in probe and "/../" not in probe


def _join(prefix: str, name: str) -> str:
    return gopath.clean(prefix + "/" + name) if prefix else gopath.clean("/" + name)


class MemKV:
    """Flat path → string value, with confd's lookups."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._m: dict[str, str] = {}
        self._index: list[str] | None = None  # sorted keys, built on first listing after a change
        self._all_clean = True
        if values:
            self.replace(values)

    @classmethod
    def from_tree(cls, tree: Any, prefix: str = "/") -> MemKV:
        """Flatten nested maps and lists as confd's file backend does (``/a/b``, ``/list/0``)."""
        out: dict[str, str] = {}

        def walk(node: Any, key: str) -> None:
            if isinstance(node, Mapping):
                for k, v in node.items():
                    walk(v, _join(key, k if isinstance(k, str) else _scalar(k, key) or ""))
            elif isinstance(node, (list, tuple)):
                for i, v in enumerate(node):
                    walk(v, _join(key, str(i)))
            else:
                value = _scalar(node, key)
                if value is not None:
                    out[key] = value

        walk(tree, gopath.clean(prefix) if prefix != "/" else "")
        return cls(out)

    def replace(self, values: Mapping[str, Any]) -> None:
        """Swap in a new key space (templates bound to this store see it on their next run)."""
        self._index = None
        if all(type(k) is str and type(v) is str for k, v in values.items()):
            self._m = dict(values)  # the usual case: a backend's flat string values
            return
        fresh: dict[str, str] = {}
        for key, value in values.items():
            if not isinstance(key, str):
                raise ValueError(f"key {key!r}: keys must be strings")
            text = _scalar(value, key)
            if text is None:
                raise ValueError(f"value of {key}: must be a string, not None")
            fresh[key] = text
        self._m = fresh
        self._index = None

    def put(self, key: str, value: str) -> None:
        self._m[key] = value
        self._index = None

    def delete(self, key: str) -> None:
        self._m.pop(key, None)
        self._index = None

    # -- the sorted index that keeps listings proportional to what they return ----------------

    def _keys(self) -> list[str]:
        if self._index is None:
            self._index = sorted(self._m)
            self._all_clean = all(_is_clean(k) for k in self._index)
        return self._index

    def _with_prefix(self, prefix: str) -> Iterator[str]:
        keys = self._keys()
        i = bisect_left(keys, prefix)
        while i < len(keys) and keys[i].startswith(prefix):
            yield keys[i]
            i += 1

    def _children(self, base: str, dirs_only: bool) -> set[str]:
        """Names right under ``base`` (ending in "/"), skipping each child's subtree by bisection."""
        keys = self._keys()
        names: set[str] = set()
        i = bisect_left(keys, base)
        n = len(keys)
        while i < n and keys[i].startswith(base):
            rest = keys[i][len(base) :]
            cut = rest.find("/")
            if cut < 0:
                if not dirs_only:
                    names.add(rest)
                i += 1
            else:
                name = rest[:cut]
                names.add(name)
                i = bisect_left(keys, base + name + "0", i + 1)  # "0" sorts right after "/"
        return names

    def _fast_base(self, path: str) -> str | None:
        """``clean(path) + "/"`` when the index shortcut gives memkv's exact answer, else None."""
        self._keys()
        if not self._all_clean:
            return None
        clean = gopath.clean(path)
        if clean in ("/", ".") or path not in (clean, clean + "/"):
            return None
        return clean + "/"

    def __len__(self) -> int:
        return len(self._m)

    def __iter__(self) -> Iterator[str]:
        return iter(self._m)

    def __contains__(self, key: object) -> bool:
        return key in self._m

    def as_dict(self) -> dict[str, str]:
        return dict(self._m)

    # -- confd's functions ---------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return key in self._m

    def get(self, key: str) -> KVPair:
        value = self._m.get(key)
        if value is None:
            raise FuncError(f"key does not exist: {key}")
        return KVPair(key, value)

    def get_value(self, key: str, *default: str) -> str:
        value = self._m.get(key)
        if value is None:
            if default:
                return default[0]
            raise FuncError(f"key does not exist: {key}")
        return value

    def _glob_candidates(self, pattern: str) -> Iterator[str]:
        literal = len(pattern)
        for meta in "*?[\\":
            at = pattern.find(meta)
            if 0 <= at < literal:
                literal = at
        return self._with_prefix(pattern[:literal])

    def get_all(self, pattern: str) -> KVPairs:
        rx = gopath.glob_regex(pattern)
        return KVPairs(KVPair(k, self._m[k]) for k in self._glob_candidates(pattern) if rx.match(k))

    def get_all_values(self, pattern: str) -> list[str]:
        rx = gopath.glob_regex(pattern)
        return sorted(self._m[k] for k in self._glob_candidates(pattern) if rx.match(k))

    def ls(self, path: str) -> list[str]:
        """Every child name under ``path`` (memkv's ``List``)."""
        base = self._fast_base(path)
        if base is None:
            return self.ls_scan(path)
        names = self._children(base, dirs_only=False)
        if path in self._m:
            names.add(gopath.base(path))
        return sorted(names)

    def lsdir(self, path: str) -> list[str]:
        """Child names under ``path`` that have children themselves (memkv's ``ListDir``)."""
        base = self._fast_base(path)
        if base is None:
            return self.lsdir_scan(path)
        return sorted(self._children(base, dirs_only=True))

    def ls_scan(self, path: str) -> list[str]:
        """memkv's ``List`` literally: a pass over every key (for odd paths and keys)."""
        prefix = gopath.clean(path).split("/")
        names: set[str] = set()
        for key in self._m:
            if key == path:
                names.add(gopath.base(key))
                continue
            target = gopath.dir(key).split("/")
            if len(target) >= len(prefix) and target[: len(prefix)] == prefix:
                names.add(key.removeprefix(path).removeprefix("/").split("/")[0])
        return sorted(names)

    def lsdir_scan(self, path: str) -> list[str]:
        """memkv's ``ListDir`` literally: a pass over every key (for odd paths and keys)."""
        prefix = gopath.clean(path).split("/")
        names: set[str] = set()
        for key in self._m:
            if key.startswith(path):
                items = gopath.dir(key).split("/")
                if len(items) > len(prefix) and items[: len(prefix)] == prefix:
                    names.add(items[len(prefix)])
        return sorted(names)
