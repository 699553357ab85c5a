"""The Go template language: each case is (template, data, output Go's text/template gives)."""

from __future__ import annotations

from typing import Any

import pytest

from pitrix.gotemplate import KVPair, TemplateError, parse

DATA: dict[str, Any] = {
    "s": "str",
    "empty": "",
    "n": 3,
    "zero": 0,
    "f": 2.5,
    "t": True,
    "no": False,
    "l": ["a", "b", "c"],
    "nl": [],
    "m": {"b": 2, "a": 1, "c": 3},
    "nm": {},
    "nested": {"inner": {"deep": "value"}, "list": [{"name": "x"}, {"name": "y"}]},
    "nil": None,
    "kv": KVPair("/k", "v"),
    "mixed": ["a", 1, 2.5, True, None],
    "ints": [3, 1, 2],
}


class Obj:
    """An object whose attributes and methods templates reach as fields and methods."""

    Name = "obj"

    def Greet(self, who: str) -> str:
        return f"hi {who}"

    def Self(self) -> Obj:
        return self


CASES: list[tuple[str, str, str]] = [
    # text, trimming, comments
    ("plain", "hello", "hello"),
    ("empty", "", ""),
    ("trim both", "a  {{- .s -}}  b", "astrb"),
    ("trim left only", "a \n\t{{- .s}} b", "astr b"),
    ("trim right only", "a {{.s -}} \n\n b", "a strb"),
    ("trim newlines", "x\n{{- /* c */ -}}\ny", "xy"),
    ("comment", "a{{/* comment */}}b", "ab"),
    ("comment multiline", "a{{/* line1\nline2 */}}b", "ab"),
    ("comment trim", "a {{- /* c */}} b", "a b"),
    ("negative number not trim", "{{-3}}", "-3"),
    ("trim then number", "x {{- 3}}", "x3"),
    # literals
    ("string", '{{"quoted"}}', "quoted"),
    ("raw string", "{{`raw\\n`}}", "raw\\n"),
    ("escapes", '{{"a\\tb\\n"}}', "a\tb\n"),
    ("hex escape", '{{"\\x41\\u00e9\\U0001F600"}}', "Aé😀"),
    ("octal escape", '{{"\\101"}}', "A"),
    ("char", "{{'a'}}", "97"),
    ("char escape", "{{'\\n'}}", "10"),
    ("int", "{{42}}", "42"),
    ("negative int", "{{-42}}", "-42"),
    ("hex int", "{{0x1F}}", "31"),
    ("octal int", "{{017}}", "15"),
    ("octal 0o", "{{0o17}}", "15"),
    ("binary int", "{{0b101}}", "5"),
    ("underscore int", "{{1_000}}", "1000"),
    ("float", "{{2.5}}", "2.5"),
    ("float integral", "{{3.0}}", "3"),
    ("float exponent", "{{1e3}}", "1000"),
    ("float big", "{{1e6}}", "1e+06"),
    ("float small", "{{0.0001}}", "0.0001"),
    ("float smaller", "{{0.00001}}", "1e-05"),
    ("float leading dot", "{{.5}}", "0.5"),
    ("hex float", "{{0x1p-2}}", "0.25"),
    ("bool true", "{{true}}", "true"),
    ("bool false", "{{false}}", "false"),
    # fields and dot
    ("dot map", "{{.nested}}", "map[inner:map[deep:value] list:[map[name:x] map[name:y]]]"),
    ("field", "{{.s}}", "str"),
    ("nested field", "{{.nested.inner.deep}}", "value"),
    ("missing field", "{{.missing}}", "<no value>"),
    ("missing nested field", "{{.missing.deeper}}", "<no value>"),
    ("nil field", "{{.nil}}", "<no value>"),
    ("list value", "{{.l}}", "[a b c]"),
    ("empty list", "{{.nl}}", "[]"),
    ("map value", "{{.m}}", "map[a:1 b:2 c:3]"),
    ("empty map", "{{.nm}}", "map[]"),
    ("struct value", "{{.kv}}", "{/k v}"),
    ("struct field", "{{.kv.Key}}={{.kv.Value}}", "/k=v"),
    ("mixed list", "{{.mixed}}", "[a 1 2.5 true <nil>]"),
    ("paren field", "{{(.nested).inner.deep}}", "value"),
    ("paren chain", "{{(index .nested.list 1).name}}", "y"),
    # variables
    ("declare", "{{$x := .s}}{{$x}}", "str"),
    ("declare prints nothing", "{{$x := 1}}", ""),
    ("assign", "{{$x := 1}}{{$x = 2}}{{$x}}", "2"),
    ("dollar", "{{with .nested}}{{$.s}}{{end}}", "str"),
    ("dollar field chain", "{{$.nested.inner.deep}}", "value"),
    ("var field", "{{$n := .nested}}{{$n.inner.deep}}", "value"),
    ("var scope ends", "{{if true}}{{$x := 1}}{{$x}}{{end}}", "1"),
    ("assign in if visible after", "{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}", "2"),
    ("shadow", "{{$x := 1}}{{if true}}{{$x := 2}}{{$x}}{{end}}{{$x}}", "21"),
    # if / else
    ("if true", "{{if .t}}yes{{end}}", "yes"),
    ("if false", "{{if .no}}yes{{end}}", ""),
    ("if else", "{{if .no}}yes{{else}}no{{end}}", "no"),
    ("if else if", "{{if .no}}a{{else if .t}}b{{else}}c{{end}}", "b"),
    ("if else if chain", "{{if eq .n 1}}1{{else if eq .n 2}}2{{else if eq .n 3}}3{{else}}?{{end}}", "3"),
    ("if empty string", "{{if .empty}}y{{else}}n{{end}}", "n"),
    ("if zero", "{{if .zero}}y{{else}}n{{end}}", "n"),
    ("if empty list", "{{if .nl}}y{{else}}n{{end}}", "n"),
    ("if empty map", "{{if .nm}}y{{else}}n{{end}}", "n"),
    ("if nil", "{{if .nil}}y{{else}}n{{end}}", "n"),
    ("if missing", "{{if .missing}}y{{else}}n{{end}}", "n"),
    ("if struct", "{{if .kv}}y{{else}}n{{end}}", "y"),
    ("if float", "{{if .f}}y{{else}}n{{end}}", "y"),
    ("if declares", "{{if $x := .s}}{{$x}}{{end}}", "str"),
    # with
    ("with", "{{with .nested.inner}}{{.deep}}{{end}}", "value"),
    ("with else", "{{with .nl}}x{{else}}empty{{end}}", "empty"),
    ("with else with", "{{with .nl}}x{{else with .s}}{{.}}{{end}}", "str"),
    ("with var", "{{with $v := .s}}{{$v}}{{.}}{{end}}", "strstr"),
    # range
    ("range list", "{{range .l}}[{{.}}]{{end}}", "[a][b][c]"),
    ("range index", "{{range $i, $e := .l}}{{$i}}={{$e}} {{end}}", "0=a 1=b 2=c "),
    ("range one var", "{{range $e := .l}}{{$e}}{{end}}", "abc"),
    ("range map sorted", "{{range $k, $v := .m}}{{$k}}:{{$v}},{{end}}", "a:1,b:2,c:3,"),
    ("range map values", "{{range .m}}{{.}}{{end}}", "123"),
    ("range else", "{{range .nl}}x{{else}}none{{end}}", "none"),
    ("range nil", "{{range .nil}}x{{else}}none{{end}}", "none"),
    ("range missing", "{{range .missing}}x{{end}}", ""),
    ("range break", '{{range .l}}{{if eq . "b"}}{{break}}{{end}}{{.}}{{end}}', "a"),
    ("range continue", '{{range .l}}{{if eq . "b"}}{{continue}}{{end}}{{.}}{{end}}', "ac"),
    ("range nested", "{{range .nested.list}}{{.name}}{{end}}", "xy"),
    ("range dollar", "{{range .l}}{{$.s}}{{end}}", "strstrstr"),
    ("range int", "{{range 3}}{{.}}{{end}}", "012"),
    ("range assign", "{{$i := 0}}{{range $i = .l}}{{end}}{{$i}}", "c"),
    ("range var after body", "{{range $i, $e := .l}}{{$x := $e}}{{end}}done", "done"),
    ("range keeps order", "{{range .ints}}{{.}}{{end}}", "312"),
    # pipelines
    ("pipe", '{{.s | printf "%s!"}}', "str!"),
    ("pipe chain", '{{"a" | printf "%s-%s" "b" | printf "[%s]"}}', "[b-a]"),
    ("paren args", '{{printf "%s%s" (printf "x") (print "y")}}', "xy"),
    ("pipe into len", "{{.l | len}}", "3"),
    # builtins
    ("len string bytes", '{{len "héllo"}}', "6"),
    ("len list", "{{len .l}}", "3"),
    ("len map", "{{len .m}}", "3"),
    ("index list", "{{index .l 1}}", "b"),
    ("index map", '{{index .m "b"}}', "2"),
    ("index missing key", '{{index .m "z"}}', "<no value>"),
    ("index nested", '{{index .nested "inner" "deep"}}', "value"),
    ("index string byte", '{{index "abc" 1}}', "98"),
    ("index no indexes", "{{index .s}}", "str"),
    ("slice list", "{{slice .l 1}}", "[b c]"),
    ("slice list 2", "{{slice .l 0 2}}", "[a b]"),
    ("slice list 3", "{{slice .l 0 1 2}}", "[a]"),
    ("slice string", '{{slice "hello" 1 3}}', "el"),
    ("slice none", "{{slice .l}}", "[a b c]"),
    ("not", "{{not .t}} {{not .empty}}", "false true"),
    ("and returns deciding", '{{and 1 0 "x"}}', "0"),
    ("and returns last", '{{and 1 "x"}}', "x"),
    ("or returns first true", '{{or 0 "" "y" "z"}}', "y"),
    ("or returns last", '{{or 0 ""}}', ""),
    ("and short circuit", "{{and .nil .nil.x}}", "<no value>"),
    ("or short circuit", "{{or .s (index .nl 5)}}", "str"),
    ("and pipeline final", "{{1 | and true}}", "1"),
    ("print", '{{print "a" "b"}}', "ab"),
    ("print numbers spaced", "{{print 1 2}}", "1 2"),
    ("print mixed", '{{print "a" 1 2 "b"}}', "a1 2b"),
    ("print nil", "{{print nil}}", "<nil>"),
    ("println", '{{println "a" 1}}', "a 1\n"),
    ("eq", "{{eq .n 3}}", "true"),
    ("eq multi", '{{eq .s "x" "y" "str"}}', "true"),
    ("eq multi none", '{{eq .s "x" "y"}}', "false"),
    ("eq strings", '{{eq "a" "a"}}', "true"),
    ("eq nil missing", '{{eq .missing "x"}}', "false"),
    ("eq struct", "{{eq .kv .kv}}", "true"),
    ("eq bool", "{{eq true true}}", "true"),
    ("eq float", "{{eq 2.5 .f}}", "true"),
    ("ne", "{{ne .n 4}}", "true"),
    ("lt", "{{lt 1 2}}", "true"),
    ("lt strings", '{{lt "a" "b"}}', "true"),
    ("le", "{{le 2 2}}", "true"),
    ("gt", "{{gt 3 2}}", "true"),
    ("ge", "{{ge 1 2}}", "false"),
    ("lt float", "{{lt 1.5 2.5}}", "true"),
    ("html", '{{html "<a href=\\"x\\">&\'"}}', "&lt;a href=&#34;x&#34;&gt;&amp;&#39;"),
    ("js", '{{js "a\'b\\"c<d>&="}}', "a\\'b\\\"c\\u003Cd\\u003E\\u0026\\u003D"),
    ("js control", '{{js "\\n"}}', "\\u000A"),
    ("urlquery", '{{urlquery "a b&c=d/é"}}', "a+b%26c%3Dd%2F%C3%A9"),
    ("urlquery nonstring", "{{urlquery 1 2}}", "1+2"),
    ("html nil", "{{html nil}}", "&lt;no value&gt;"),
    # define / template / block
    ("define and call", '{{define "T"}}<{{.}}>{{end}}{{template "T" "x"}}', "<x>"),
    ("template no data", '{{define "T"}}{{.}}{{end}}{{template "T"}}', "<no value>"),
    ("template pipeline", '{{define "T"}}{{.}}{{end}}{{template "T" .s | printf "%s!"}}', "str!"),
    ("template no vars", '{{define "T"}}{{$}}{{end}}{{$x := 1}}{{template "T" 2}}', "2"),
    ("define after use", '{{template "T" 1}}{{define "T"}}[{{.}}]{{end}}', "[1]"),
    ("block default", '{{block "B" .s}}({{.}}){{end}}', "(str)"),
    ("block over empty define", '{{define "B"}} {{end}}{{block "B" .s}}({{.}}){{end}}', "(str)"),
    (
        "recursive template",
        '{{define "R"}}{{if .}}{{index . 0}}{{template "R" (slice . 1)}}{{end}}{{end}}{{template "R" .l}}',
        "abc",
    ),
    ("define only whitespace main", '{{define "T"}}x{{end}}', ""),
    # objects
    ("object field", "{{.obj.Name}}", "obj"),
    ("object method", '{{.obj.Greet "you"}}', "hi you"),
    ("object method pipeline", '{{"me" | .obj.Greet}}', "hi me"),
    ("object method chain", '{{.obj.Self.Greet "x"}}', "hi x"),
    # spacing and newlines in actions
    ("newline in action", '{{printf\n"%d"\n3}}', "3"),
    ("spaces", "{{  .s  }}", "str"),
]


@pytest.mark.parametrize(("template", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_language(template: str, expected: str) -> None:
    data = dict(DATA, obj=Obj())
    assert parse(template, "t").execute(data) == expected


def test_dot_nil_prints_no_value() -> None:
    assert parse("{{.}}").execute(None) == "<no value>"


def test_dot_string_data() -> None:
    assert parse("[{{.}}]").execute("x") == "[x]"


def test_parse_once_execute_many_with_different_data() -> None:
    tmpl = parse("{{range .}}{{.}},{{end}}")
    assert tmpl.execute([1, 2]) == "1,2,"
    assert tmpl.execute(["a"]) == "a,"
    assert tmpl.execute([]) == ""


def test_user_funcs_override_builtins() -> None:
    tmpl = parse("{{eq 1 2}}", funcs={"eq": lambda a, b: "custom"})
    assert tmpl.execute() == "custom"


def test_user_function_with_pipeline_final_arg() -> None:
    tmpl = parse('{{"b" | cat "a"}}', funcs={"cat": lambda a, b: a + b})
    assert tmpl.execute() == "ab"


def test_parsed_template_keeps_its_own_functions() -> None:
    """A parsed template copies the functions it was given: changing the caller's map later, or
    trying to change the template's, does not change what it renders."""
    funcs = {"v": lambda: "one"}
    tmpl = parse("{{v}}", funcs=funcs)
    funcs["v"] = lambda: "two"
    assert tmpl.execute() == "one"
    with pytest.raises(TypeError):
        tmpl.funcs["v"] = lambda: "three"  # type: ignore[index]
    with pytest.raises(TypeError):
        tmpl.trees["x"] = tmpl.root  # type: ignore[index]
    assert tmpl.execute() == "one"


def test_names_parse_and_are_bound_per_execute() -> None:
    """Names declared at parse are accepted by the parser and bound by each run, so one parsed
    template serves concurrent renders over different data."""
    tmpl = parse('{{v "x"}}-{{w}}', funcs={"w": lambda: "fixed"}, names=["v"])
    assert tmpl.execute(funcs={"v": lambda s: s + "1"}) == "x1-fixed"
    assert tmpl.execute(funcs={"v": lambda s: s + "2"}) == "x2-fixed"
    assert tmpl.names == frozenset({"v"})


def test_declared_name_not_bound_fails_at_execution() -> None:
    tmpl = parse("a{{v}}", names=["v"])
    with pytest.raises(TemplateError) as info:
        tmpl.execute()
    assert str(info.value) == 'template:1:4: "v" is not a defined function'


def test_undeclared_name_fails_at_parse() -> None:
    with pytest.raises(TemplateError, match='function "v" not defined'):
        parse("{{v}}", names=["w"])


def test_execute_funcs_override_for_one_run() -> None:
    tmpl = parse("{{v}}", funcs={"v": lambda: "one"})
    assert tmpl.execute(funcs={"v": lambda: "two"}) == "two"
    assert tmpl.execute() == "one"


def test_call_builtin() -> None:
    assert parse("{{call .f 2 3}}").execute({"f": lambda a, b: a * b}) == "6"


def test_execute_named_definition() -> None:
    tmpl = parse('{{define "T"}}<{{.}}>{{end}}main')
    assert tmpl.execute(1) == "main"
    assert tmpl.execute(1, name="T") == "<1>"
    assert tmpl.defined_templates() == ["T"]


def test_trailing_whitespace_trim_at_end_of_file() -> None:
    assert parse("a\n{{- /* x */ -}}\n\n").execute() == "a"


def test_windows_newlines_kept_in_text() -> None:
    assert parse("a\r\n{{.}}\r\n").execute("b") == "a\r\nb\r\n"


def test_raw_string_drops_carriage_returns() -> None:
    assert parse("{{`a\r\nb`}}").execute() == "a\nb"


def test_unicode_text_and_fields() -> None:
    assert parse("ünï {{.ключ}} ✓").execute({"ключ": "значение"}) == "ünï значение ✓"
