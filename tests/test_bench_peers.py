"""bench/peers.py: where a peer's binary comes from, and a clear reason when it cannot be had.

No network: the trees here are made by the test (a broken Go program, a git repository of one
commit); a build, when the host has Go, is of the broken tree only and fails in its compile step.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench import peers


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    src, cache = tmp_path / "src", tmp_path / "cache"
    monkeypatch.setenv("PITRIX_PEERS_SRC", str(src))
    monkeypatch.setenv("PITRIX_PEERS_CACHE", str(cache))
    return src, cache


def go_tree(root: Path, main_go: str) -> Path:
    root.mkdir(parents=True)
    (root / "go.mod").write_text("module example.invalid/peer\n\ngo 1.19\n")
    (root / "vendor").mkdir()
    (root / "vendor/modules.txt").write_text("")
    (root / "main.go").write_text(main_go)
    return root


def test_no_source_says_where_it_looked_and_how_to_prepare_it(homes: tuple[Path, Path]) -> None:
    built = peers.ensure("confd")
    assert built.path is None and built.label() == "ANCHORS"
    assert str(homes[0] / "confd") in built.why and "python -m bench.peers prepare confd" in built.why
    assert "kelseyhightower/confd" in built.why


def test_unknown_peer() -> None:
    built = peers.ensure("etcd")
    assert built.path is None and "unknown peer 'etcd'" in built.why


def test_a_cached_binary_is_used_without_go(
    homes: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, cache = homes
    tree = go_tree(src / "metad", "package main\n")
    (tree / peers.COMMIT_FILE).write_text("0123456789abcdef\n")
    binary = cache / "metad-0123456789abcdef/metad"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")  # no go: the cache alone must answer
    built = peers.ensure("metad")
    assert built.path == binary and built.commit == "0123456789abcdef"
    assert built.label() == "metad 0123456789, same run"
    (tree / peers.COMMIT_FILE).write_text("fedcba\n")  # another commit: not that binary
    built = peers.ensure("metad")
    assert built.path is None and built.why == "no Go toolchain on PATH (apt-get install golang-go)"


@pytest.mark.parametrize("layout", ["module", "gopath"])
def test_a_tree_that_does_not_build_gives_the_compiler_s_reason(
    homes: tuple[Path, Path], layout: str
) -> None:
    assert shutil.which("go"), "no Go toolchain: scripts/system-deps.sh installs golang-go"
    src, cache = homes
    tree = go_tree(src / "confd", "package main\n\nfunc main() { undefinedCall() }\n")
    if layout == "gopath":  # a vendor/ of the dep/govendor era: built as its import path in a GOPATH
        (tree / "vendor/modules.txt").unlink()
    assert peers.gopath_mode(tree) is (layout == "gopath")
    built = peers.ensure("confd")
    assert built.path is None and built.commit.startswith("tree-")
    assert built.why.startswith(f"go build of confd ({src / 'confd'}) failed: ")
    assert "undefinedCall" in built.why and "Traceback" not in built.why
    assert not list(cache.glob("confd-*/confd"))  # nothing cached for a failed build


def test_prepare_exports_a_commit_of_a_git_mirror(homes: tuple[Path, Path], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "main.go").write_text("package main\n\nfunc main() {}\n")
    subprocess.run([*git, "add", "main.go"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
    tree = peers.prepare("yunify-metad", repo / ".git")
    assert tree == homes[0] / "yunify-metad"
    assert (tree / "main.go").is_file() and peers.commit_of(tree) == head.strip()
    with pytest.raises(ValueError, match="unknown peer"):
        peers.prepare("nope", repo / ".git")
