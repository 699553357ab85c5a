"""Go library pieces the engine rebuilds: path.Clean/Base/Dir/Match, strconv literals, MemKV listing."""

from __future__ import annotations

import pytest

from pitrix.agent.template import gopath
from pitrix.agent.template.errors import FuncError
from pitrix.agent.template.literals import LiteralError, number_constant, parse_int, unquote, unquote_char
from pitrix.agent.template.memkv import MemKV


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


def test_memkv_lists_like_memkv() -> None:
    kv = MemKV({"/a": "1", "/b/c": "2", "/b/d/e": "3", "/bb/x": "4"})
    assert kv.ls("/") == ["a"]
    assert kv.lsdir("/") == []
    assert kv.ls("/b") == ["c", "d"]
    assert kv.lsdir("/b") == ["d"]
    assert kv.ls("/b/") == ["c", "d"]
    assert kv.ls("/a") == ["a"]
    assert kv.lsdir("/b/d") == []
    assert kv.ls("/b/d") == ["e"]


@pytest.mark.parametrize("seed", range(20))
def test_memkv_index_agrees_with_memkv_scan(seed: int) -> None:
    """The sorted-index shortcuts give exactly what memkv's full scans give, for any keys and paths."""
    import random

    rng = random.Random(seed)
    segs = ["a", "b", "ab", "a-b", "a0", "0", "x.y", "", ".", ".."]
    keys = {}
    for _ in range(rng.randint(1, 40)):
        depth = rng.randint(1, 4)
        key = "/" + "/".join(rng.choice(segs[:6] if seed % 2 else segs) for _ in range(depth))
        keys[key] = "v"
    kv = MemKV(keys)
    paths = ["/", "", "/a", "/a/", "/ab", "/a/b", "/a/b/", "/a//b", "/a/./b", "/0", "a", "/a/b/ab", *keys]
    for path in paths:
        assert kv.ls(path) == kv.ls_scan(path), path
        assert kv.lsdir(path) == kv.lsdir_scan(path), path
    for pattern in ["/a/*", "/*/b", "/a*", "/[ab]/*", "/a/b/*", "*", "/a\\-b/*"]:
        expected = sorted(k for k in keys if gopath.match(pattern, k))
        assert [p.Key for p in kv.get_all(pattern)] == expected
        assert kv.get_all_values(pattern) == sorted(keys[k] for k in expected)


def test_memkv_index_follows_changes() -> None:
    kv = MemKV({"/a/b/c": "1"})
    assert kv.lsdir("/a") == ["b"]
    kv.put("/a/d/e", "2")
    assert kv.lsdir("/a") == ["b", "d"]
    kv.delete("/a/b/c")
    assert kv.lsdir("/a") == ["d"]
    kv.replace({"/z/y": "3"})
    assert kv.ls("/z") == ["y"] and kv.lsdir("/a") == []
