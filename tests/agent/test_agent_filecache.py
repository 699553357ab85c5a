"""Files parsed once per change: conf.d resources and templates, and when a cached parse is trusted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pitrix.agent.confdir import ConfDir
from pitrix.agent.config import AgentConfig, Overrides, load_config
from pitrix.agent.filecache import SETTLED_NS, FileCache
from pitrix.agent.render import TemplateCache

RESOURCE = '[template]\nsrc = "{src}"\ndest = "/etc/{name}.conf"\nkeys = ["/app"]\n'


def make_config(root: Path) -> AgentConfig:
    return load_config(root, None, Overrides(backend="env"), environ={})


def age(path: Path, seconds: float = 3600) -> None:
    """Date ``path`` back, as a file installed long ago is."""
    then = time.time() - seconds
    os.utime(path, (then, then))


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def make(self, path: Path) -> str:
        self.calls += 1
        return path.read_text()


def test_a_settled_file_is_read_once(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("one")
    age(path)
    cache: FileCache[str] = FileCache()
    counter = Counter()
    assert cache.get(path, path.stat(), lambda: counter.make(path)) == ("one", True)
    assert cache.get(path, path.stat(), lambda: counter.make(path)) == ("one", False)
    assert counter.calls == 1
    path.write_text("two")  # a new mtime
    assert cache.get(path, path.stat(), lambda: counter.make(path)) == ("two", True)


def test_a_young_file_is_read_every_time(tmp_path: Path) -> None:
    """Rewritten within one timestamp tick at the same size, a file's stat does not change: while it
    is young, the cache does not trust its stat."""
    path = tmp_path / "f"
    path.write_text("aaa")
    st = path.stat()
    cache: FileCache[str] = FileCache()
    assert cache.get(path, st, lambda: path.read_text())[0] == "aaa"
    path.write_text("bbb")
    # Within one tick the rewrite leaves the stat as it was: ask with the first stat again.
    assert cache.get(path, st, lambda: path.read_text()) == ("bbb", True)
    assert time.time_ns() - st.st_mtime_ns < SETTLED_NS


def test_a_failed_make_caches_nothing(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    age(path)
    cache: FileCache[str] = FileCache()

    def broken() -> str:
        raise ValueError("bad")

    with pytest.raises(ValueError):
        cache.get(path, path.stat(), broken)
    assert cache.get(path, path.stat(), lambda: "ok") == ("ok", True)


def test_confdir_parses_each_file_once_per_change(vm_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pitrix.agent import resource

    conf_d = vm_root / "etc/confd/conf.d"
    for name in ("a", "b"):
        (conf_d / f"{name}.toml").write_text(RESOURCE.format(src="a.tmpl", name=name))
        age(conf_d / f"{name}.toml")
    loads: list[str] = []
    real = resource.TemplateResource.load.__func__  # type: ignore[attr-defined]

    def counting(cls: type[resource.TemplateResource], path: Path, config: AgentConfig) -> object:
        loads.append(path.name)
        return real(cls, path, config)

    monkeypatch.setattr(resource.TemplateResource, "load", classmethod(counting))
    confdir = ConfDir(make_config(vm_root))
    first, errors = confdir.load()
    again, _ = confdir.load()
    assert [r.name for r in first] == ["a", "b"] and not errors
    assert loads == ["a.toml", "b.toml"] and again == first
    (conf_d / "b.toml").write_text(RESOURCE.format(src="b.tmpl", name="b"))
    (conf_d / "c.toml").write_text("[template\n")
    (conf_d / "a.toml").unlink()
    resources, errors = confdir.load()
    assert [(r.name, r.src.name) for r in resources] == [("b", "b.tmpl")]
    assert list(errors) == ["c"] and "invalid TOML" in errors["c"]
    _, errors = confdir.load()  # a file in error is read again: it may be fixed by now
    assert loads.count("c.toml") == 2 and list(errors) == ["c"]


def test_template_reparsed_when_changed(vm_root: Path) -> None:
    src = vm_root / "etc/confd/templates/t.tmpl"
    src.write_text('v={{getv "/v"}}\n')
    age(src)
    cache = TemplateCache()
    assert cache.render(src, {"/v": "1"}) == "v=1\n"
    assert cache.render(src, {"/v": "2"}) == "v=2\n"  # the kept parse sees this round's values
    src.write_text('w={{getv "/v"}}\n')
    assert cache.render(src, {"/v": "3"}) == "w=3\n"
