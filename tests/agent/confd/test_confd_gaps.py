"""Cases the other template tables leave out: getv's default against an empty value, the edges of
confd's listing and list functions, and where an error inside a nested construct is reported
(file, line and column of the failing action, as Go's ``template: name:line:col:`` prefix)."""

from __future__ import annotations

from typing import Any

import pytest

from pitrix.agent.confdfuncs import confd_funcs
from pitrix.agent.memkv import MemKV
from pitrix.gotemplate import TemplateError, parse

TREE: dict[str, Any] = {
    "env": {"empty": "", "n": "7", "csv": "b,a,,c"},
    "hosts": {"kafka": {"i-2": {"ip": "10.0.0.2", "sid": "2"}, "i-10": {"ip": "10.0.0.10", "sid": "10"}}},
    "leaf": "x",
}


def render(text: str) -> str:
    return parse(text, "t.tmpl", confd_funcs(MemKV.from_tree(TREE))).execute()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # confd's getv returns the default only when the key is missing, not when it is empty.
        ('[{{getv "/env/empty" "d"}}]', "[]"),
        ('[{{getv "/env/missing" "d" "ignored"}}]', "[d]"),
        # getvs/gets with no match: an empty list, not an error.
        ('{{getvs "/nothing/*"}} {{len (gets "/nothing/*")}}', "[] 0"),
        # Values sorted by key: i-10 before i-2 (strings), not by number.
        ('{{getvs "/hosts/kafka/*/sid"}}', "[10 2]"),
        (
            '{{range gets "/hosts/kafka/*/ip"}}{{base (dir .Key)}}={{.Value}} {{end}}',
            "i-10=10.0.0.10 i-2=10.0.0.2 ",
        ),
        # ls of a leaf key lists the key's own name (memkv's List); lsdir of a leaf lists nothing.
        ('{{ls "/leaf"}} {{lsdir "/leaf"}} {{lsdir "/hosts"}}', "[leaf] [] [kafka]"),
        # split keeps empty fields; sortByLength is stable for equal lengths; reverse is in place.
        ('{{$s := split (getv "/env/csv") ","}}{{len $s}} {{sortByLength $s}}', "4 [ b a c]"),
        ('{{$s := lsdir "/hosts/kafka"}}{{reverse $s}} {{$s}}', "[i-2 i-10] [i-2 i-10]"),
        # Arithmetic on values read as strings, as libconfd's type-tolerant add/sub/mul.
        ('{{add (getv "/env/n") "3"}} {{sub (getv "/env/n") 10}} {{mul (getv "/env/n") 0.5}}', "10 -3 3.5"),
        ('{{$n := atoi (getv "/env/n")}}{{if gt $n 5}}big{{else if gt $n 2}}mid{{end}}', "big"),
        # Nested defines with $ bound to the data given to the template, not the caller's.
        (
            '{{define "row"}}{{$.k}}={{.v}}{{end}}'
            '{{define "rows"}}{{range .}}{{template "row" .}};{{end}}{{end}}'
            '{{template "rows" (jsonArray "[{\\"k\\":\\"a\\",\\"v\\":1},{\\"k\\":\\"b\\",\\"v\\":2}]")}}',
            "a=1;b=2;",
        ),
        # A range over a map from json: keys in sorted order, with $k, $v.
        ('{{range $k, $v := json "{\\"z\\":1,\\"a\\":2}"}}{{$k}}{{$v}}{{end}}', "a2z1"),
        # break/continue inside a range over lsdir.
        (
            '{{range $i, $d := lsdir "/hosts/kafka"}}{{if eq $d "i-2"}}{{break}}{{end}}{{$i}}{{$d}}{{end}}',
            "0i-10",
        ),
        ('{{range lsdir "/hosts/kafka"}}{{if eq . "i-10"}}{{continue}}{{end}}{{.}}{{end}}', "i-2"),
    ],
)
def test_gap_cases(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        # The failing action's own place (line and column from 1, the function's name in a
        # pipeline), also inside a define, a range body or an else branch.
        (
            '{{define "T"}}\n  {{getv "/nope"}}{{end}}{{template "T"}}',
            "t.tmpl:2:5",
            "getv: key does not exist: /nope",
        ),
        (
            '{{range lsdir "/hosts/kafka"}}\n{{getv (printf "/hosts/kafka/%s/port" .)}}{{end}}',
            "t.tmpl:2:3",
            "getv",
        ),
        ('a\nb {{getv "/env/n" | atoi | add "x"}}', "t.tmpl:2:28", "add: can't apply the operator"),
        ('{{with $x := getv "/env/empty"}}{{else}}\n\n   {{atoi "z"}}{{end}}', "t.tmpl:3:6", "atoi"),
        # Parse errors name the line of the problem.
        ('line one\n{{if true}}\n{{getv "/env/n"}', "t.tmpl:3", "unclosed action"),
        ('{{range $i, $d := lsdir "/"}}\n{{end}}\n{{end}}', "t.tmpl:3", "unexpected {{end}}"),
    ],
)
def test_errors_name_the_place(text: str, where: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(text)
    assert str(info.value).startswith(where + ":"), str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("fmt", "args"),
    [
        ("a%%b", []),
        ("%%s", []),
        ("%s%%", ["x"]),
        ("a%", []),
        ("%%%", []),
        ("%s-%v", ["a", "b"]),
        ("%s", []),
        ("%s", ["a", "b"]),
        ("%d", ["a"]),
        ("%s", [1]),
        ("%s", [None]),
        ("x", ["a"]),
        ("%5s", ["a"]),
        ("%[1]s", ["a"]),
        ("%s%s%%%s", ["a", "b", "c"]),
        ("", []),
        ("%v", ["é\udcff"]),
    ],
)
def test_printf_string_fast_path_agrees_with_fmt(fmt: str, args: list[Any]) -> None:
    """The shortcut for bare %s/%v of strings gives what the general formatter gives, or steps aside."""
    from pitrix.gotemplate.gofmt import _Printf, sprintf

    assert sprintf(fmt, args) == _Printf(fmt, args).run()
