"""confd's in-memory key space as the agent's bound functions read it: memkv's listing, exactly."""

from __future__ import annotations

import pytest

from pitrix.agent.memkv import MemKV
from pitrix.gotemplate import gopath


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
