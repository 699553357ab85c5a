"""The parse cache a one-shot render keeps across runs: used while a file is unchanged, never for
a file too young to trust, and a torn or foreign cache file is ignored rather than believed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pitrix.agent.parsecache import FILE_NAME, ParseCache, plain


def settled(path: Path, text: str) -> None:
    """Write ``text`` and date the file back past the cache's trust window."""
    path.write_text(text)
    old = time.time() - 60
    os.utime(path, (old, old))


class Counter:
    def __init__(self, value: object) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        return self.value


def test_a_settled_file_is_parsed_once_across_runs(tmp_path: Path) -> None:
    data = tmp_path / "a.toml"
    settled(data, "x")
    parse = Counter({"template": {"src": "a", "keys": ["/a"], "mode": 420}})
    first = ParseCache.in_dir(tmp_path / "state")
    assert first.get("toml", data, parse) == parse.value
    first.save()
    assert (tmp_path / "state" / FILE_NAME).stat().st_mode & 0o777 == 0o600
    second = ParseCache.in_dir(tmp_path / "state")
    assert second.get("toml", data, parse) == parse.value
    assert parse.calls == 1
    # Another kind of parse of the same file is its own entry.
    assert second.get("yaml", data, Counter({"/a": "1"})) == {"/a": "1"}


def test_a_changed_file_is_parsed_again(tmp_path: Path) -> None:
    data = tmp_path / "d.yaml"
    settled(data, "a: 1\n")
    cache = ParseCache.in_dir(tmp_path)
    cache.get("yaml", data, Counter({"/a": "1"}))
    cache.save()
    settled(data, "a: 2\n")  # same size, same (old) mtime: the ctime and inode tell it apart
    parse = Counter({"/a": "2"})
    assert ParseCache.in_dir(tmp_path).get("yaml", data, parse) == {"/a": "2"}
    assert parse.calls == 1


def test_a_young_file_is_not_kept(tmp_path: Path) -> None:
    data = tmp_path / "young.yaml"
    data.write_text("a: 1\n")
    parse = Counter({"/a": "1"})
    cache = ParseCache.in_dir(tmp_path)
    cache.get("yaml", data, parse)
    cache.save()
    ParseCache.in_dir(tmp_path).get("yaml", data, parse)
    assert parse.calls == 2


def test_what_is_not_plain_data_is_returned_but_not_kept(tmp_path: Path) -> None:
    import datetime as dt

    data = tmp_path / "dated.toml"
    settled(data, "x")
    parse = Counter({"when": dt.date(2024, 1, 2)})
    cache = ParseCache.in_dir(tmp_path)
    assert cache.get("toml", data, parse) == parse.value
    cache.save()
    ParseCache.in_dir(tmp_path).get("toml", data, parse)
    assert parse.calls == 2
    assert not plain({1: "a"}) and not plain(b"x") and plain({"a": [1, 2.5, None, True, "s"]})


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign", "empty"])
def test_a_damaged_cache_is_ignored(tmp_path: Path, damage: str) -> None:
    data = tmp_path / "d.yaml"
    settled(data, "a: 1\n")
    cache = ParseCache.in_dir(tmp_path)
    cache.get("yaml", data, Counter({"/a": "1"}))
    cache.save()
    path = tmp_path / FILE_NAME
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        path.write_bytes(blob[:-10] + bytes([blob[-10] ^ 0xFF]) + blob[-9:])
    elif damage == "foreign":
        path.write_bytes(b"something else\n" + blob.partition(b"\n")[2])
    else:
        path.write_bytes(b"")
    parse = Counter({"/a": "1"})
    assert ParseCache.in_dir(tmp_path).get("yaml", data, parse) == {"/a": "1"}
    assert parse.calls == 1


def test_an_unwritable_state_dir_is_not_an_error(tmp_path: Path) -> None:
    data = tmp_path / "d.yaml"
    settled(data, "a: 1\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = ParseCache.in_dir(blocker / "state")  # a path under a regular file
    assert cache.get("yaml", data, Counter({"/a": "1"})) == {"/a": "1"}
    cache.save()
    assert sorted(tmp_path.iterdir()) == sorted([data, blocker])


def test_a_parse_error_is_the_callers_and_nothing_is_kept(tmp_path: Path) -> None:
    data = tmp_path / "bad.toml"
    settled(data, "x")

    def fails() -> object:
        raise ValueError("bad")

    cache = ParseCache.in_dir(tmp_path)
    with pytest.raises(ValueError, match="bad"):
        cache.get("toml", data, fails)
    cache.save()
    assert not (tmp_path / FILE_NAME).exists()
