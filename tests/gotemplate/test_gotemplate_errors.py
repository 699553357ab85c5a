"""Parse and execution errors: Go's messages, and always the template's name, line and column."""

from __future__ import annotations

from typing import Any

import pytest

from pitrix.gotemplate import KVPair, TemplateError, parse

PARSE_ERRORS: list[tuple[str, str]] = [
    ("{{.x", "unclosed action"),
    ("{{/* x", "unclosed comment"),
    ("{{/* x */ .}}", "comment ends before closing delimiter"),
    ("{{if .x}}", "unexpected EOF"),
    ("{{range .x}}a", "unexpected EOF"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{else}}", "unexpected {{else}}"),
    ("{{nofunc 1}}", 'function "nofunc" not defined'),
    ("{{$x}}", 'undefined variable "$x"'),
    ("{{if true}}{{$x := 1}}{{end}}{{$x}}", 'undefined variable "$x"'),
    ('{{define "T"}}{{$y}}{{end}}', 'undefined variable "$y"'),
    ("{{break}}", "{{break}} outside {{range}}"),
    ("{{continue}}", "{{continue}} outside {{range}}"),
    ("{{range .}}{{else}}{{break}}{{end}}", "{{break}} outside {{range}}"),
    ("{{break 1}}", 'unexpected "1" in {{break}}'),
    ("{{}}", "missing value for command"),
    ("{{$x := }}", "missing value for command"),
    ("{{if}}{{end}}", "missing value for if"),
    ('{{. | "x"}}', "non executable command in pipeline stage 2"),
    ("{{. | 3}}", "non executable command in pipeline stage 2"),
    ("{{(.x}}", "unclosed left paren"),
    ("{{.x)}}", "unexpected right paren"),
    ('{{"abc}}', "unterminated quoted string"),
    ("{{'a}}", "unterminated character constant"),
    ("{{`abc}}", "unterminated raw quoted string"),
    ("{{3x}}", 'bad number syntax: "3x"'),
    ("{{.x!}}", "bad character U+0021 '!'"),
    ("{{#}}", 'unexpected "#" in command'),
    ("{{a:b}}", "expected :="),
    ("{{08}}", 'integer overflow: "08"'),
    ("{{'ab'}}", "malformed character constant: 'ab'"),
    ('{{"\\q"}}', "invalid syntax"),
    ("{{1+2i}}", "complex constants are not supported"),
    ('{{"x".y}}', 'unexpected . after term ""x""'),
    ("{{if 1}}{{else}}{{else}}{{end}}", "expected end; found {{else}}"),
    ('{{define "T"}}a{{end}}{{define "T"}}b{{end}}', 'multiple definition of template "T"'),
    ('{{block "B" .}}a{{end}}{{define "B"}}b{{end}}', 'multiple definition of template "B"'),
    ("{{define 3}}{{end}}", 'unexpected "3" in define clause'),
    ("{{template .x}}", 'unexpected ".x" in template clause'),
    ("{{range $i, $j, $k := .}}{{end}}", "too many declarations in range"),
    ("{{$i, $j := .}}", "too many declarations in command"),
    ("{{range $i, 3}}{{end}}", "range can only initialize variables"),
    ('{{if true}}{{define "T"}}{{end}}{{end}}', "unexpected <define> in command"),
    ("{{with .}}{{else if .}}{{end}}", "unexpected <if> in input"),
    ("{{.a.b.c | (}}", "unclosed left paren"),
]


@pytest.mark.parametrize(("text", "message"), PARSE_ERRORS, ids=[p[0] for p in PARSE_ERRORS])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse(text, "bad.tmpl")
    err = info.value
    assert message in err.message
    assert err.name == "bad.tmpl"
    assert err.line >= 1 and err.col >= 1
    assert str(err).startswith(f"bad.tmpl:{err.line}:{err.col}: ")


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [
        ("{{nofunc}}", 1, 3),
        ("line1\n  {{nofunc}}", 2, 5),
        ("a\nb\nc {{$undefined}}", 3, 5),
        ("x\n{{if .}}\n{{.x", 3, 1),
        ("é{{nofunc}}", 1, 4),
    ],
)
def test_parse_error_position(text: str, line: int, col: int) -> None:
    with pytest.raises(TemplateError) as info:
        parse(text, "p.tmpl")
    assert (info.value.line, info.value.col) == (line, col)


def _raise(*args: Any) -> Any:
    raise RuntimeError("boom")


EXEC_ERRORS: list[tuple[str, Any, str]] = [
    ("{{nil}}", None, "nil is not a command"),
    ("{{.s 1}}", {"s": "x"}, "s is not a method but has arguments"),
    ("{{.s.x}}", {"s": "x"}, "can't evaluate field x in type string"),
    ("{{.n.x}}", {"n": 1}, "can't evaluate field x in type int"),
    ("{{.l.x}}", {"l": [1]}, "can't evaluate field x in type []int"),
    ("{{.kv.Nope}}", {"kv": KVPair("a", "b")}, "can't evaluate field Nope in type memkv.KVPair"),
    ("{{.kv.Key 1}}", {"kv": KVPair("a", "b")}, "Key has arguments but cannot be invoked as function"),
    ("{{$x := 1}}{{$x 2}}", None, "can't give argument to non-function $x"),
    ('{{"a" 1}}', None, 'can\'t give argument to non-function "a"'),
    ("{{1 | 2}}", None, "non executable"),
    ("{{len 3}}", None, "len: len of type int"),
    ("{{len .missing}}", {}, "len: len of nil pointer"),
    ("{{index .l 5}}", {"l": [1]}, "index: index out of range: 5"),
    ("{{index .l -1}}", {"l": [1]}, "index: index out of range: -1"),
    ('{{index .l "a"}}', {"l": [1]}, "index: cannot index slice/array with type string"),
    ("{{index .m 1}}", {"m": {"a": 1}}, "index: value has type int; should be string"),
    ("{{index 3 1}}", None, "index: can't index item of type int"),
    ("{{index .missing 1}}", {}, "index: index of untyped nil"),
    ("{{slice .l 2 1}}", {"l": [1, 2, 3]}, "slice: invalid slice index: 2 > 1"),
    ("{{slice .l 5}}", {"l": [1]}, "slice: index out of range: 5"),
    ('{{slice "abc" 0 1 2}}', None, "slice: cannot 3-index slice a string"),
    ("{{slice 3 1}}", None, "slice: can't slice item of type int"),
    ('{{eq 1 "1"}}', None, "eq: incompatible types for comparison"),
    ("{{eq 1 1.0}}", None, "eq: incompatible types for comparison"),
    ("{{eq .l .l}}", {"l": [1]}, "eq: non-comparable type [1]: []int"),
    ("{{eq 1}}", None, "eq: missing argument for comparison"),
    ("{{lt true false}}", None, "lt: invalid type for comparison"),
    ('{{lt 1 "a"}}', None, "lt: incompatible types for comparison"),
    ("{{lt .missing 1}}", {}, "lt: invalid type for comparison"),
    ("{{gt .l 1}}", {"l": []}, "gt: invalid type for comparison"),
    ("{{and}}", None, "wrong number of args for and: want at least 1 got 0"),
    ("{{not 1 2}}", None, "wrong number of args for not: want 1 got 2"),
    ("{{ne 1}}", None, "wrong number of args for ne: want 2 got 1"),
    ("{{call .missing}}", {}, "call: call of nil"),
    ("{{call 3}}", None, "call: non-function of type int"),
    ("{{call .f}}", {"f": _raise}, "call: boom"),
    ('{{template "nope"}}', None, 'template "nope" not defined'),
    ("{{range .}}{{end}}", "str", "range can't iterate over str"),
    ("{{range $i, $v := 3}}{{end}}", None, "can't use 3 to iterate over more than one variable"),
    ("{{18446744073709551615}}", None, "18446744073709551615 overflows int"),
    ('{{define "R"}}{{template "R" .}}{{end}}{{template "R" 1}}', None, "exceeded maximum template depth"),
    ("{{.f}}", {"f": _raise}, "can't print {{.f}} of type func"),
    ("{{(nil).x}}", None, "nil is not a command"),
    ("{{.}}", len, "can't print {{.}} of type func"),
]


@pytest.mark.parametrize(("text", "data", "message"), EXEC_ERRORS, ids=[e[0] for e in EXEC_ERRORS])
def test_exec_errors(text: str, data: Any, message: str) -> None:
    try:
        tmpl = parse(text, "run.tmpl")
    except TemplateError as exc:  # some are caught while parsing, as Go does
        assert message in exc.message
        return
    with pytest.raises(TemplateError) as info:
        tmpl.execute(data)
    assert message in info.value.message
    assert str(info.value).startswith(f"run.tmpl:{info.value.line}:{info.value.col}: ")


def test_function_error_names_function_and_place() -> None:
    tmpl = parse('line one\n  value: {{boom "x"}}\n', "f.tmpl", {"boom": _raise})
    with pytest.raises(TemplateError) as info:
        tmpl.execute()
    assert str(info.value) == "f.tmpl:2:12: boom: boom"


def test_wrong_arg_count_for_user_function() -> None:
    tmpl = parse("{{two 1}}", "w.tmpl", {"two": lambda a, b: a})
    with pytest.raises(TemplateError, match="wrong number of args for two: want 2 got 1"):
        tmpl.execute()


def test_error_inside_define_points_into_source() -> None:
    text = '{{define "T"}}\n\n   {{index . 9}}{{end}}{{template "T" .}}'
    with pytest.raises(TemplateError) as info:
        parse(text, "d.tmpl").execute([1])
    assert (info.value.line, info.value.col) == (3, 6)


def test_output_is_all_or_nothing() -> None:
    """A failing execution returns no partial text: the caller keeps its last good file."""
    tmpl = parse("partial {{index .l 3}}", "a.tmpl")
    with pytest.raises(TemplateError):
        tmpl.execute({"l": []})


def test_parse_rejects_non_string() -> None:
    with pytest.raises(TypeError, match="text must be str"):
        parse(b"{{.}}")  # type: ignore[arg-type]


def test_execute_unknown_named_template() -> None:
    with pytest.raises(TemplateError, match='no such template "X"'):
        parse("x", "n.tmpl").execute(name="X")
