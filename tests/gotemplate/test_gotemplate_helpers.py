"""Go library pieces the engine rebuilds: path.Clean/Base/Dir/Match, strconv literals."""

from __future__ import annotations

from typing import Any

import pytest

from pitrix.gotemplate import gopath
from pitrix.gotemplate.errors import FuncError
from pitrix.gotemplate.literals import LiteralError, number_constant, parse_int, unquote, unquote_char


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("", "."),
        ("/", "/"),
        ("//", "/"),
        ("a/b/", "a/b"),
        ("/a/./b/../c", "/a/c"),
        ("../a", "../a"),
        ("/../a", "/a"),
        ("a/../..", ".."),
        ("//a//b//", "/a/b"),
    ],
)
def test_clean(path: str, expected: str) -> None:
    assert gopath.clean(path) == expected


@pytest.mark.parametrize(
    ("path", "base", "dirname"),
    [
        ("/a/b/c", "c", "/a/b"),
        ("/a/b/c/", "c", "/a/b/c"),
        ("c", "c", "."),
        ("/", "/", "/"),
        ("", ".", "."),
        ("//x", "x", "/"),
    ],
)
def test_base_dir(path: str, base: str, dirname: str) -> None:
    assert gopath.base(path) == base
    assert gopath.dir(path) == dirname


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("/a/*", "/a/b", True),
        ("/a/*", "/a/b/c", False),
        ("/a/*/c", "/a/b/c", True),
        ("/a/?", "/a/b", True),
        ("/a/?", "/a/bc", False),
        ("/a/[bc]", "/a/c", True),
        ("/a/[^bc]", "/a/d", True),
        ("/a/[^bc]", "/a/b", False),
        ("/a/[a-c]x", "/a/bx", True),
        ("/a/\\*", "/a/*", True),
        ("/a/\\*", "/a/b", False),
        ("*", "", True),
        ("/a.b", "/aXb", False),
        ("/a+", "/a+", True),
    ],
)
def test_match(pattern: str, name: str, matches: bool) -> None:
    assert gopath.match(pattern, name) is matches


@pytest.mark.parametrize("pattern", ["[", "/a/[]", "/a/[b", "\\", "[a-]", "[-a]"])
def test_match_bad_pattern(pattern: str) -> None:
    with pytest.raises(FuncError, match="syntax error in pattern"):
        gopath.match(pattern, "x")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('"a\\"b"', 'a"b'),
        ('"\\\\"', "\\"),
        ('"\\x41\\101\\u0041\\U00000041"', "AAAA"),
        ('"\\a\\b\\f\\n\\r\\t\\v"', "\a\b\f\n\r\t\v"),
        ("`a\\nb`", "a\\nb"),
        ('"\\xff"', "\udcff"),
        ('"\\xc3\\xa9"', "é"),
    ],
)
def test_unquote(text: str, value: str) -> None:
    assert unquote(text) == value


@pytest.mark.parametrize("text", ['"\\q"', '"\\x4"', '"\\400"', '"\\ud800"', "'a'", '"a'])
def test_unquote_invalid(text: str) -> None:
    with pytest.raises(LiteralError):
        unquote(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("'a'", 97), ("'\\n'", 10), ("'\\x41'", 65), ("'é'", 233), ("'\\''", 39), ("'\\u00e9'", 233)],
)
def test_unquote_char(text: str, value: int) -> None:
    assert unquote_char(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("-0", 0),
        ("+5", 5),
        ("010", 8),
        ("0x_1F", 31),
        ("1_000_000", 1000000),
        ("0b1_0", 2),
        ("9223372036854775807", 9223372036854775807),
        ("9223372036854775808", None),
        ("1__0", None),
        ("_1", None),
        ("08", None),
    ],
)
def test_parse_int(text: str, value: int | None) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1), ("1.0", 1.0), ("1e2", 100.0), ("0x10", 16), ("0x1p4", 16.0), ("'x'", 120), ("-.5", -0.5)],
)
def test_number_constant(text: str, value: object) -> None:
    got, err = number_constant(text)
    assert err is None
    assert got == value and type(got) is type(value)


def test_number_constant_uint_overflows_at_execution() -> None:
    value, err = number_constant("18446744073709551615")
    assert value is None and err == "18446744073709551615 overflows int"


def _arity_by_inspect(fn: Any) -> tuple[int, int | None] | None:
    """What ``arity_of`` answered when it always asked ``inspect.signature``."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    lo = hi = 0
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            hi += 1
            lo += p.default is p.empty
        elif p.kind is p.VAR_POSITIONAL:
            return lo, None
    return lo, hi


class _Shapes:
    def none(self) -> None: ...
    def two(self, x: Any, y: Any = 1) -> None: ...
    def rest(self, *a: Any) -> None: ...
    def kw(self, x: Any, *a: Any, k: Any) -> None: ...
    def star_only(*a: Any) -> None: ...
    def defaults(self: Any = None, x: Any = 2) -> None: ...
    @staticmethod
    def static(x: Any) -> None: ...
    @classmethod
    def klass(cls, x: Any, y: Any = 3) -> None: ...


def _f(x: Any, /, y: Any, z: Any = 1, *, k: Any) -> None: ...


def test_arity_from_code_objects_matches_inspect() -> None:
    """The code-object fast path (no inspect import on a render) answers as inspect did, for every
    function a confd template can call and for the shapes a function can have."""
    import functools

    from pitrix.agent.confdfuncs import BoundFuncs
    from pitrix.gotemplate import builtins, confd
    from pitrix.gotemplate.executor import arity_of

    s = _Shapes()
    shapes: list[Any] = [s.none, s.two, s.rest, s.kw, s.star_only, s.defaults, s.static, s.klass, _f]
    shapes += [lambda x, y=2: 0, len, print, functools.partial(_f, 1), functools.wraps(len)(lambda *a: 0)]
    shapes += list(builtins.BUILTINS.values())
    shapes += [getattr(confd, name) for name in dir(confd) if callable(getattr(confd, name))]
    shapes += [getattr(BoundFuncs, name) for name in dir(BoundFuncs) if not name.startswith("__")]
    assert [(fn, arity_of(fn)) for fn in shapes] == [(fn, _arity_by_inspect(fn)) for fn in shapes]
