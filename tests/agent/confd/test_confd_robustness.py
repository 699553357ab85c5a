"""Whatever a template author writes, the engine answers with output or a TemplateError, never a traceback."""

from __future__ import annotations

import random

import pytest

from pitrix.agent.confdfuncs import confd_funcs
from pitrix.agent.memkv import MemKV
from pitrix.gotemplate import KVPair, TemplateError, parse

FRAGMENTS = [
    "{{", "}}", "{{-", " -}}", " ", ".", ".a", ".b.c", "$", "$x", ":=", "=", "|", "(", ")", '"s"', "`r`",
    "'c'", "1", "-2", "3.5", "0x1f", "1e3", "if", "else", "end", "range", "with", "define", '"T"',
    "template", "block", "break", "continue", "nil", "true", "and", "or", "not", "len", "index", "slice",
    "printf", '"%d %s %v"', "print", "eq", "lt", "getv", '"/a"', "ls", "lsdir", "gets", '"/*"', "json",
    "jsonArray", '"[1,2]"', "add", "div", "mod", "seq", "toJson", "toYaml", "map", "split", "join", ",",
    "/*", "*/", "\n", "x", "$i", "$v", "call", "html", "js", "urlquery", "atoi", "base64Decode", "filter",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(8))
def test_random_input_never_crashes(seed: int) -> None:
    rng = random.Random(seed)
    funcs = confd_funcs(MemKV({"/a": "1", "/b/c": "x", "/b/d": "2"}))
    data = {"a": [1, "x", None], "b": {"c": {"d": 1.5}}, "kv": KVPair("k", "v")}
    outcomes = {"ok": 0, "error": 0}
    for _ in range(1500):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 14)))
        try:
            parse(text, "fuzz", funcs).execute(data)
            outcomes["ok"] += 1
        except TemplateError as exc:
            assert str(exc).startswith(f"fuzz:{exc.line}:{exc.col}: ")
            outcomes["error"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    text = "{{if true}}" * 400 + "x" + "{{end}}" * 400
    try:
        out = parse(text, "deep").execute()
    except TemplateError:
        return
    assert out == "x"


def test_large_template_renders() -> None:
    text = "".join(f"line {i}: {{{{.v}}}}\n" for i in range(5000))
    out = parse(text).execute({"v": "x"})
    assert out.count("\n") == 5000 and out.startswith("line 0: x\n")
