"""The agent's template cache: parse once, bind each render's values per execute, share safely."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from pitrix.agent.confdfuncs import bound_funcs, confd_funcs
from pitrix.agent.filecache import SETTLED_NS
from pitrix.agent.memkv import MemKV
from pitrix.agent.render import RenderError, TemplateCache
from pitrix.gotemplate import CONFD_BOUND, CONFD_FUNCS, parse_confd


def settled(path: Path) -> None:
    """Date the file back past the cache's trust window, so it is parsed once and kept."""
    old = (time.time_ns() - 2 * SETTLED_NS) // 1_000_000_000
    os.utime(path, (old, old))


def test_bound_names_are_what_the_engine_declares() -> None:
    assert set(bound_funcs(MemKV({}))) == CONFD_BOUND
    assert set(confd_funcs(MemKV({}))) == CONFD_BOUND | set(CONFD_FUNCS)
    assert not CONFD_BOUND & set(CONFD_FUNCS)


def test_parsed_once_and_never_rebound(tmp_path: Path) -> None:
    src = tmp_path / "a.tmpl"
    src.write_text('{{getv "/k"}}')
    settled(src)
    cache = TemplateCache()
    assert cache.render(src, {"/k": "1"}) == "1"
    parsed, made = cache._parsed.get(src, src.stat(), lambda: parse_confd("unused"))
    assert not made
    assert "getv" not in parsed.funcs and "getv" in parsed.names
    assert cache.render(src, {"/k": "2"}) == "2"
    again, _ = cache._parsed.get(src, src.stat(), lambda: parse_confd("unused"))
    assert again is parsed and "getv" not in parsed.funcs


def test_concurrent_renders_of_one_template_keep_their_own_values(tmp_path: Path) -> None:
    """Renders run in worker threads; two at once over one cached template must not read each
    other's values (they did when a render re-pointed the template's shared function map)."""
    src = tmp_path / "many.tmpl"
    src.write_text('{{range seq 1 3000}}{{getv "/who"}}{{end}}')
    settled(src)
    cache = TemplateCache()
    cache.render(src, {"/who": "a"})  # parsed and cached before the threads start
    start = threading.Barrier(4)
    mixed: list[str] = []

    def renders(who: str) -> None:
        start.wait()
        for _ in range(15):
            out = cache.render(src, {"/who": who})
            if out != who * 3000:
                mixed.append(who)

    threads = [threading.Thread(target=renders, args=(w,)) for w in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert mixed == []


def test_unknown_function_fails_at_parse_with_place(tmp_path: Path) -> None:
    src = tmp_path / "bad.tmpl"
    src.write_text('x\n{{nosuch "/k"}}')
    try:
        TemplateCache().render(src, {})
    except RenderError as exc:
        assert str(exc) == 'template bad.tmpl: bad.tmpl:2:3: function "nosuch" not defined'
    else:
        raise AssertionError("rendered a template calling an unknown function")
