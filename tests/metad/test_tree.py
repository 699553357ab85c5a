"""The mirror's building blocks on their own: tree revisions and caches, documents → ops, formats."""

from __future__ import annotations

import asyncio

import pytest

from pitrix.metad import data, render
from pitrix.metad.tree import Tree
from pitrix.metad.waiters import Waiter, WaiterIndex, ancestors
from pitrix.store import Op


def test_revisions_propagate_and_tombstones_date_deletions() -> None:
    tree = Tree()
    tree.put("/c/1/env/web/port", "80", 10)
    tree.put("/c/1/env/db/x", "1", 11)
    assert tree.rev_of("/c/1/env/web") == 10
    assert tree.rev_of("/c/1/env") == 11
    assert tree.rev_of("/c/1/env/nope") == 0
    tree.delete("/c/1/env/web/port", 12)
    assert tree.live("/c/1/env/web") is None
    # The deleted subtree still knows when it changed, so "changed since 11" is answerable.
    assert tree.rev_of("/c/1/env/web") == 12
    assert tree.rev_of("/c/1/env/db") == 11
    assert tree.root.obj() == {"c": {"1": {"env": {"db": {"x": "1"}}}}}
    # Deleting what is not there changes nothing.
    tree.delete("/c/1/env/web/port", 13)
    tree.delete("/c/9", 13)
    assert tree.root.rev == 12
    assert tree.prune() == 2  # web and its port
    assert tree.find("/c/1/env/web") is None
    assert tree.root.obj() == {"c": {"1": {"env": {"db": {"x": "1"}}}}}


def test_rendering_is_cached_until_the_subtree_changes() -> None:
    tree = Tree()
    tree.put("/a/x", "1", 1)
    tree.put("/b/y", "2", 2)
    a = tree.find("/a")
    b = tree.find("/b")
    assert a is not None and b is not None
    first_a, first_b = a.obj(), b.json()
    tree.put("/b/y", "3", 3)
    assert a.obj() is first_a  # untouched subtree: same object, not rebuilt
    assert b.json() == '{"y":"3"}' and first_b == '{"y":"2"}'
    assert tree.root.json() == '{"a":{"x":"1"},"b":{"y":"3"}}'


def test_children_win_over_a_value_at_the_same_path() -> None:
    tree = Tree()
    tree.put("/a", "leaf", 1)
    tree.put("/a/b", "child", 2)
    assert tree.root.obj() == {"a": {"b": "child"}}
    assert tree.text("/a") is None
    tree.delete("/a/b", 3)
    assert tree.text("/a") == "leaf"


def test_merge_ops_flatten_and_resolve_conflicts() -> None:
    tree = Tree()
    tree.put("/x/leaf", "v", 1)
    tree.put("/x/dir/k", "v", 1)
    ops = data.merge_ops(tree, "/x", {"leaf": {"sub": 1}, "dir": "now a leaf", "n": None, "l": [True, 2.5]})
    assert set(ops) == {
        Op("delete", "/x/leaf"),
        Op("put", "/x/leaf/sub", b"1"),
        Op("delete_prefix", "/x/dir/"),
        Op("put", "/x/dir", b"now a leaf"),
        Op("delete", "/x/n"),
        Op("delete_prefix", "/x/n/"),
        Op("put", "/x/l/0", b"true"),
        Op("put", "/x/l/1", b"2.5"),
    }
    assert data.merge_ops(tree, "/x/leaf", "scalar at the path") == [
        Op("put", "/x/leaf", b"scalar at the path")
    ]


def test_replace_ops_delete_what_the_document_lacks() -> None:
    ops = data.replace_ops(["/m/i/a", "/m/i/b"], "/m/i", {"a": "1", "c": "3"})
    assert (
        Op("delete", "/m/i/b") in ops
        and Op("put", "/m/i/a", b"1") in ops
        and Op("put", "/m/i/c", b"3") in ops
    )
    assert Op("delete", "/m/i/a") not in ops
    # Leaves above the subtree would shadow it: they go too.
    assert Op("delete", "/m") in ops and Op("delete", "/m/i") in ops
    assert data.delete_ops("/") == [Op("delete_prefix", "/")]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"a": {"b/c": "1"}}, "/p/a/b/c"),
        ({"a": {"..": "1"}}, "/p/a/.."),
        ({"a": object()}, "/p/a"),
        ({"a": float("nan")}, "/p/a"),
        ({1: "x"}, "/p"),
    ],
)
def test_bad_documents_name_the_field(doc: object, field: str) -> None:
    with pytest.raises(data.BadDocument) as info:
        data.merge_ops(Tree(), "/p", doc)
    assert info.value.field == field


def test_deeply_nested_documents_are_refused() -> None:
    doc: dict[str, object] = {}
    inner = doc
    for _ in range(40):
        inner["d"] = {}
        inner = inner["d"]  # type: ignore[assignment]
    inner["leaf"] = "x"
    with pytest.raises(data.BadDocument, match="deeper"):
        data.merge_ops(Tree(), "/p", doc)


def test_negotiation_and_text_format() -> None:
    # metad's choice: text by default and for */*; the most specific, then most preferred, range.
    assert render.negotiate(None) == render.TEXT
    assert render.negotiate("") == render.TEXT
    assert render.negotiate("*/*") == render.TEXT
    assert render.negotiate("application/json") == render.JSON
    assert render.negotiate("text/plain") == render.TEXT
    assert render.negotiate("application/json;q=0.5, text/yaml") == render.YAML
    assert render.negotiate("text/html, application/x-yaml;q=0.1, */*;q=0.9") == render.TEXT
    assert render.negotiate("application/*") == render.JSON
    assert render.negotiate("application/json;q=0.5, text/*") == render.TEXT
    assert render.negotiate("image/png") == render.TEXT
    assert render.negotiate("text/plain;q=0, application/json") == render.JSON
    # As metad reads the header: a parameter other than q ends it.
    assert render.negotiate("text/plain;charset=utf-8, application/json") == render.TEXT
    tree = Tree()
    tree.put("/h/ip", "1.2.3.4", 1)
    tree.put("/h/tags/a", "x", 1)
    node = tree.find("/h")
    assert render.to_text(node) == "/ip\t1.2.3.4\n/tags/a\tx\n"
    assert render.to_text(tree.find("/h/ip")) == "1.2.3.4"
    assert render.to_json({"self": {"host": node}}) == '{"self":{"host":{"ip":"1.2.3.4","tags":{"a":"x"}}}}'


async def test_waiter_index_wakes_by_ancestry_only() -> None:
    index = WaiterIndex()
    env_web = Waiter(["/clusters/c1/env/web"])
    hosts = Waiter(["/clusters/c1/hosts", "/_pitrix/mapping/i-1"])
    for waiter in (env_web, hosts):
        index.add(waiter)
    assert ancestors("/a/b") == ["/", "/a", "/a/b"]
    assert index.notify(["/clusters/c1/env/db/x", "/clusters/c2/env/web/x"], 5) == 0
    assert index.notify(["/clusters/c1/hosts/web/i-2/ip"], 6) == 1
    assert hosts.future.result() == 6 and not env_web.future.done()
    assert len(index) == 1
    # A leaf written at an ancestor path is outside the waiter's subtree; one at the dependency is not.
    assert index.notify(["/clusters/c1/env"], 7) == 0
    assert index.notify(["/clusters/c1/env/web"], 8) == 1
    assert len(index) == 0
    await asyncio.wait_for(index.wait_until(lambda held: held == 0), 1)
