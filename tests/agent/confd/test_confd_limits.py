"""Hostile templates end in a TemplateError naming the limit they hit, never in a hung or
memory-starved agent: output, value sizes, list lengths, ints, template depth and render time
are all bounded (pitrix/gotemplate/limits.py)."""

from __future__ import annotations

import pytest

from pitrix.agent.confdfuncs import confd_funcs
from pitrix.agent.memkv import MemKV
from pitrix.gotemplate import TemplateError, parse
from pitrix.gotemplate.limits import MAX_ITEMS, MAX_OUTPUT, MAX_VALUE, Limits


def render(text: str, values: dict[str, str] | None = None, limits: Limits | None = None) -> str:
    funcs = confd_funcs(MemKV(values or {"/a": "1"}))
    return parse(text, "hostile.tmpl", funcs).execute(None, limits=limits)


def fails(text: str, match: str, values: dict[str, str] | None = None, limits: Limits | None = None) -> str:
    with pytest.raises(TemplateError, match=match) as info:
        render(text, values, limits)
    assert str(info.value).startswith("hostile.tmpl:")
    return str(info.value)


def test_huge_output_loop_stops_at_the_output_cap() -> None:
    fails('{{range seq 1 900000}}{{printf "%01000d" 1}}{{end}}', f"output exceeds the limit of {MAX_OUTPUT}")


def test_huge_text_loop_stops_at_the_output_cap() -> None:
    fails("{{range 900000}}" + "x" * 100 + "{{end}}", "output exceeds the limit")


def test_a_string_doubled_in_a_loop_stops_at_the_value_cap() -> None:
    text = '{{$s := "ab"}}{{range seq 1 200}}{{$s = printf "%s%s" $s $s}}{{end}}{{len $s}}'
    fails(text, f"printf: result of [0-9]+ characters exceeds the limit of {MAX_VALUE}")


def test_replace_that_would_explode_is_refused_before_it_builds() -> None:
    text = '{{$s := printf "%0100000d" 0}}{{replace $s "" $s -1}}'
    fails(text, "replace: replace would be [0-9]+ characters")


def test_join_with_a_huge_separator_is_refused_before_it_builds() -> None:
    text = '{{$l := split (printf "%0100000d" 0) ""}}{{join $l (printf "%01000d" 0)}}'
    fails(text, "join: join would be [0-9]+ characters")


def test_enormous_seq_and_range_are_refused() -> None:
    fails(
        "{{range seq 1 10000000000}}x{{end}}",
        f"seq would have 10000000000 elements, more than the limit of {MAX_ITEMS}",
    )
    fails("{{range 10000000000}}x{{end}}", f"range over 10000000000 exceeds the limit of {MAX_ITEMS}")


def test_repeated_squaring_is_an_overflow_not_a_huge_int() -> None:
    fails("{{$x := 3}}{{range 100}}{{$x = mul $x $x}}{{end}}{{$x}}", "mul: integer overflow")


def test_self_recursion_stops_at_the_depth_limit() -> None:
    fails('{{define "r"}}{{template "r" .}}{{end}}{{template "r"}}', "exceeded maximum template depth")


def test_branching_recursion_stops_at_the_deadline() -> None:
    # Depth 40, within the depth limit, but 2**40 calls.
    text = '{{define "r"}}{{if lt . 40}}{{template "r" (add . 1)}}{{template "r" (add . 1)}}{{end}}{{end}}'
    text += '{{template "r" 0}}'
    fails(text, "render exceeded its deadline of 0.3 s", limits=Limits(deadline=0.3))


def test_nested_loops_stop_at_the_deadline() -> None:
    text = "{{range seq 1 1000000}}{{range seq 1 1000000}}{{end}}{{end}}"
    fails(text, "render exceeded its deadline", limits=Limits(deadline=0.3))


def test_enormous_getvs_hits_the_output_cap() -> None:
    values = {f"/big/{n:06d}": "v" * 1024 for n in range(12000)}
    fails('{{range getvs "/big/*"}}{{.}}{{.}}{{end}}', "output exceeds the limit", values)
    # The same key space within the limits renders whole.
    assert len(render('{{range getvs "/big/*"}}{{.}}{{end}}', values)) == 12000 * 1024


def test_functions_with_bad_arguments_fail_with_the_call_named() -> None:
    fails("{{getv}}", "wrong number of args for getv")
    fails('{{seq "a" "b"}}', "seq: ")
    fails("{{index 1 2}}", "index")
    fails('{{getv "/missing"}}', "getv: key does not exist")
    fails("{{div 1 0}}", "div: integer divide by zero")


def test_a_template_failing_mid_render_returns_no_partial_output() -> None:
    fails('before{{range seq 1 3}}{{.}}{{end}}{{getv "/nope"}}after', "key does not exist")


def test_limits_leave_ordinary_templates_alone() -> None:
    values = {f"/hosts/{n}": f"10.0.0.{n}" for n in range(200)}
    out = render('{{range gets "/hosts/*"}}server {{.Value}}\n{{end}}', values)
    assert out.count("\n") == 200
