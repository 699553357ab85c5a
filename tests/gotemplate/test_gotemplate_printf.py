"""Go's fmt as templates see it through printf: verbs, flags, widths, and the error forms."""

from __future__ import annotations

from typing import Any

import pytest

from pitrix.gotemplate import KVPair, parse
from pitrix.gotemplate.gofmt import format_float, quote, sprint, sprintf, sprintln

CASES: list[tuple[str, list[Any], str]] = [
    # strings
    ("%s", ["x"], "x"),
    ("%v", ["x"], "x"),
    ("%-8s|", ["ab"], "ab      |"),
    ("%8s|", ["ab"], "      ab|"),
    ("%.2s", ["abcdef"], "ab"),
    ("%5.1s|", ["abc"], "    a|"),
    ("%q", ['a"b'], '"a\\"b"'),
    ("%q", ["tab\there"], '"tab\\there"'),
    ("%q", ["é"], '"é"'),
    ("%+q", ["é"], '"\\u00e9"'),
    ("%#q", ["raw"], "`raw`"),
    ("%x", ["hi"], "6869"),
    ("%X", ["hi"], "6869"),
    ("% x", ["hi"], "68 69"),
    ("%s", ["é"], "é"),
    ("%3s|", ["é"], "  é|"),
    # integers
    ("%d", [42], "42"),
    ("%5d|", [42], "   42|"),
    ("%-5d|", [42], "42   |"),
    ("%05d", [42], "00042"),
    ("%05d", [-42], "-0042"),
    ("%+d", [42], "+42"),
    ("% d", [42], " 42"),
    ("%3d", [30], " 30"),
    ("%.3d", [7], "007"),
    ("%6.3d|", [7], "   007|"),
    ("%x", [255], "ff"),
    ("%X", [255], "FF"),
    ("%#x", [255], "0xff"),
    ("%x", [-255], "-ff"),
    ("%o", [8], "10"),
    ("%#o", [8], "010"),
    ("%O", [8], "0o10"),
    ("%b", [5], "101"),
    ("%c", [65], "A"),
    ("%q", [65], "'A'"),
    ("%U", [0x1F600], "U+1F600"),
    ("%v", [7], "7"),
    ("%.0d|", [0], "|"),
    # floats
    ("%f", [3.14159], "3.141590"),
    ("%.2f", [3.14159], "3.14"),
    ("%05.2f", [3.14159], "03.14"),
    ("%8.3f|", [3.14159], "   3.142|"),
    ("%-8.3f|", [3.14159], "3.142   |"),
    ("%+.1f", [2.0], "+2.0"),
    ("%08.2f", [-3.5], "-0003.50"),
    ("%e", [1234.5678], "1.234568e+03"),
    ("%E", [1234.5678], "1.234568E+03"),
    ("%.2e", [0.000123], "1.23e-04"),
    ("%g", [1234.5678], "1234.5678"),
    ("%g", [0.00001234], "1.234e-05"),
    ("%g", [1e21], "1e+21"),
    ("%g", [100000.0], "100000"),
    ("%g", [1000000.0], "1e+06"),
    ("%.3g", [1234.5678], "1.23e+03"),
    ("%G", [1e-7], "1E-07"),
    ("%v", [2.5], "2.5"),
    ("%v", [3.0], "3"),
    ("%v", [0.1], "0.1"),
    ("%v", [123456789.0], "1.23456789e+08"),
    ("%v", [-0.5], "-0.5"),
    ("%6.2f|", [float("inf")], "  +Inf|"),
    ("%f", [float("-inf")], "-Inf"),
    ("%f", [float("nan")], "NaN"),
    ("%v", [float("inf")], "+Inf"),
    # bools and nil
    ("%t", [True], "true"),
    ("%v", [False], "false"),
    ("%6t|", [True], "  true|"),
    ("%v", [None], "<nil>"),
    ("%s", [None], "%!s(<nil>)"),
    ("%d", [None], "%!d(<nil>)"),
    # composites
    ("%v", [["a", "b"]], "[a b]"),
    ("%s", [["a", "b"]], "[a b]"),
    ("%q", [["a", "b"]], '["a" "b"]'),
    ("%d", [[1, 2]], "[1 2]"),
    ("%3d", [[1, 2]], "[  1   2]"),
    ("%v", [{"b": 2, "a": 1}], "map[a:1 b:2]"),
    ("%v", [{"a": [1, 2]}], "map[a:[1 2]]"),
    ("%v", [KVPair("/k", "v")], "{/k v}"),
    ("%+v", [KVPair("/k", "v")], "{Key:/k Value:v}"),
    ("%v", [[None, "x"]], "[<nil> x]"),
    ("%d", [["a"]], "[%!d(string=a)]"),
    ("%#v", [["a", "b"]], '[]string{"a", "b"}'),
    ("%#v", ["s"], '"s"'),
    ("%#v", [KVPair("k", "v")], 'memkv.KVPair{Key:"k", Value:"v"}'),
    ("%T", ["s"], "string"),
    ("%T", [1], "int"),
    ("%T", [1.5], "float64"),
    ("%T", [["a"]], "[]string"),
    ("%T", [{"a": 1}], "map[string]interface {}"),
    ("%T", [KVPair("k", "v")], "memkv.KVPair"),
    # bad verbs, missing, extra
    ("%d", ["x"], "%!d(string=x)"),
    ("%s", [1], "%!s(int=1)"),
    ("%t", [1], "%!t(int=1)"),
    ("%d", [2.5], "%!d(float64=2.5)"),
    ("%z", [1], "%!z(int=1)"),
    ("%d %d", [1], "1 %!d(MISSING)"),
    ("%d", [1, 2], "1%!(EXTRA int=2)"),
    ("%d", [1, "a", None], "1%!(EXTRA string=a, <nil>)"),
    ("x", [1], "x%!(EXTRA int=1)"),
    ("100%%", [], "100%"),
    ("%", [], "%!(NOVERB)"),
    ("%-", [], "%!(NOVERB)"),
    # argument indexes and star widths
    ("%[2]d %[1]d", [1, 2], "2 1"),
    ("%[3]d", [1, 2], "%!d(BADINDEX)"),
    ("%*d|", [5, 42], "   42|"),
    ("%-*d|", [5, 42], "42   |"),
    ("%.*f", [2, 3.14159], "3.14"),
    ("%*d", ["x", 1], "%!(BADWIDTH)1"),
]


@pytest.mark.parametrize(("fmt", "args", "expected"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_sprintf(fmt: str, args: list[Any], expected: str) -> None:
    assert sprintf(fmt, args) == expected


def test_printf_in_template() -> None:
    out = parse('{{printf "%-8s|%3d|%t" "roundrobin" 30 true}}').execute()
    assert out == "roundrobin| 30|true"


def test_printf_format_must_be_string() -> None:
    from pitrix.gotemplate import TemplateError

    with pytest.raises(TemplateError, match="printf: wrong type for value; expected string; got int"):
        parse("{{printf 3}}").execute()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["a", "b"], "ab"),
        ([1, 2], "1 2"),
        (["a", 1, 2, "b"], "a1 2b"),
        ([1, "a", 2], "1a2"),
        ([None, None], "<nil> <nil>"),
        ([True, 3.5], "true 3.5"),
        ([], ""),
    ],
)
def test_sprint(args: list[Any], expected: str) -> None:
    assert sprint(args) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["a", "b"], "a b\n"), ([1, "a"], "1 a\n"), ([], "\n")],
)
def test_sprintln(args: list[Any], expected: str) -> None:
    assert sprintln(args) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, "0"),
        (-0.0, "-0"),
        (1.0, "1"),
        (1e20, "1e+20"),
        (123456.0, "123456"),
        (1234567.0, "1.234567e+06"),
        (0.000123, "0.000123"),
        (0.0000123, "1.23e-05"),
        (1 / 3, "0.3333333333333333"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
    ],
)
def test_shortest_g(value: float, expected: str) -> None:
    assert format_float(value, "g", None) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", '"abc"'),
        ("\x00", '"\\x00"'),
        ("\x7f", '"\\x7f"'),
        ("\a\b\f\n\r\t\v", '"\\a\\b\\f\\n\\r\\t\\v"'),
        ("\\", '"\\\\"'),
        ("\u00a0", '"\\u00a0"'),
        ("\U0001f600", '"\U0001f600"'),
        ("\ufeff", '"\\ufeff"'),
    ],
)
def test_quote(text: str, expected: str) -> None:
    assert quote(text) == expected
