"""The peers pitrix is compared with, built from their public source on this host: confd and metad.

Hosts differ by 2x or more from one day to the next, so a figure is only worth a ratio to its peer
measured in the same run. This module builds each peer with the host's Go toolchain (Debian's
golang-go is enough), offline from the source tree's own vendor/ folder, and caches the binary
outside the repository: ``$PITRIX_PEERS_CACHE`` (default ``~/.cache/pitrix-bench/peers``), one
directory ``<name>-<commit>`` per build. When it cannot (no ``go``, no source, a failed build) it
says why and the benchmark prints ANCHORS.md's figures instead, labelled so.

Sources are looked for in ``$PITRIX_PEERS_SRC/<name>`` (default ``~/.cache/pitrix-bench/src``).
Prepare one from a git clone or mirror of the peer (no network is used here)::

    python -m bench.peers prepare confd --from /path/to/confd.git   # kelseyhightower/confd
    python -m bench.peers prepare metad --from /path/to/metad.git   # openpitrix/metad
    python -m bench.peers prepare confd-yunify --from /path/to/confd.git  # yunify/confd (AppCenter)
    python -m bench.peers build                                      # build (or find) them all
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BUILD_TIMEOUT = 900.0  # seconds; each builds in under 3 minutes on an idle 2-core host
COMMIT_FILE = ".pitrix-peer-commit"  # written by ``prepare``: the commit the tree was taken from


@dataclass(frozen=True)
class Peer:
    name: str
    repository: str  # where its public source lives
    package: str  # its import path: in GOPATH mode the tree is built as this package


PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer("confd", "github.com/kelseyhightower/confd", "github.com/kelseyhightower/confd"),
        Peer("metad", "github.com/openpitrix/metad", "openpitrix.io/metad"),
        Peer("yunify-metad", "github.com/yunify/metad", "github.com/yunify/metad"),
        # AppCenter's confd (a fork keeping the upstream import path): what QingCloud's VMs render with.
        Peer("confd-yunify", "github.com/yunify/confd", "github.com/kelseyhightower/confd"),
    )
}


@dataclass(frozen=True)
class Built:
    """A peer's binary, or why there is none (``path`` None and ``why`` says it)."""

    name: str
    path: Path | None
    why: str = ""
    commit: str = ""

    def label(self) -> str:
        """How a table names the figure's source: the peer and its commit, or the fallback."""
        if self.path is None:
            return "ANCHORS"
        return f"{self.name} {self.commit[:10]}, same run"


def source_root() -> Path:
    return Path(os.environ.get("PITRIX_PEERS_SRC") or Path.home() / ".cache/pitrix-bench/src")


def cache_root() -> Path:
    return Path(os.environ.get("PITRIX_PEERS_CACHE") or Path.home() / ".cache/pitrix-bench/peers")


def commit_of(tree: Path) -> str:
    """The commit the tree was prepared from; a git checkout's HEAD; else a digest of its Go files
    (so an edited tree is a new cache entry, never a stale binary)."""
    recorded = tree / COMMIT_FILE
    if recorded.is_file():
        return recorded.read_text().strip()
    if (tree / ".git").exists():
        head = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True)
        if head.returncode == 0:
            return head.stdout.strip()
    digest = hashlib.sha1()
    for path in sorted(tree.rglob("*")):
        if path.suffix in (".go", ".mod", ".sum") and path.is_file():
            digest.update(str(path.relative_to(tree)).encode())
            digest.update(path.read_bytes())
    return "tree-" + digest.hexdigest()


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def ensure(name: str) -> Built:
    """The peer's binary: from the cache, else built now; never raises for a missing tool or source."""
    peer = PEERS.get(name)
    if peer is None:
        return Built(name, None, f"unknown peer {name!r} (known: {', '.join(PEERS)})")
    tree = source_root() / name
    if not (tree / "vendor").is_dir() and not any(tree.glob("*.go")):
        return Built(
            name,
            None,
            f"no source of {name} at {tree} (prepare it from a clone of {peer.repository}: "
            f"python -m bench.peers prepare {name} --from GIT_DIR; docs/benchmarks.md says how)",
        )
    try:
        commit = commit_of(tree)
    except OSError as exc:
        return Built(name, None, f"cannot read the source of {name} at {tree}: {exc}")
    binary = cache_root() / f"{name}-{commit}" / name
    if binary.is_file() and os.access(binary, os.X_OK):
        return Built(name, binary, "", commit)
    go = shutil.which("go")
    if go is None:
        return Built(name, None, "no Go toolchain on PATH (apt-get install golang-go)", commit)
    return _build(peer, tree, commit, go, binary)


def gopath_mode(tree: Path) -> bool:
    """Whether the tree builds in GOPATH mode: a vendor/ without modules.txt (govendor, dep, or
    none) is not a module vendor directory, even beside a go.mod (openpitrix/metad's)."""
    return not (tree / "go.mod").is_file() or not (tree / "vendor/modules.txt").is_file()


def _build(peer: Peer, tree: Path, commit: str, go: str, binary: Path) -> Built:
    """``go build`` offline (GOPROXY=off, GOFLAGS=-mod=vendor, or GOPATH mode), into the cache."""
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"pitrix-peer-{peer.name}-") as tmp:
        env = {
            **os.environ,
            "GOPROXY": "off",
            "GOFLAGS": "-mod=vendor",
            "GOCACHE": os.environ.get("GOCACHE") or str(cache_root() / "go-build-cache"),
            "GOPATH": str(Path(tmp) / "gopath"),
            "CGO_ENABLED": "0",
            "GOTOOLCHAIN": "local",
        }
        cwd, target = tree, "."
        if gopath_mode(tree):
            # The tree as its import path inside a GOPATH of its own; its vendor/ is found there.
            env.update(GO111MODULE="off", GOFLAGS="")
            cwd = Path(env["GOPATH"]) / "src" / peer.package
            cwd.parent.mkdir(parents=True)
            cwd.symlink_to(tree.resolve(), target_is_directory=True)
            # By import path, from the link: go must not see the tree's real place, outside GOPATH.
            env["PWD"], target = str(cwd), peer.package
        else:
            env["GO111MODULE"] = "on"
        out = Path(tmp) / peer.name
        try:
            done = subprocess.run(
                [go, "build", "-o", str(out), target],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return Built(peer.name, None, f"go build of {peer.name} took over {BUILD_TIMEOUT:.0f} s", commit)
        except OSError as exc:
            return Built(peer.name, None, f"cannot run {go}: {exc}", commit)
        if done.returncode != 0 or not out.is_file():
            why = _tail(done.stderr or done.stdout) or f"exit status {done.returncode}"
            return Built(peer.name, None, f"go build of {peer.name} ({tree}) failed: {why}", commit)
        staged = binary.with_name(binary.name + ".new")
        shutil.copy2(out, staged)
        staged.replace(binary)  # a cache entry is whole or absent
    return Built(peer.name, binary, "", commit)


def prepare(name: str, git_dir: Path, rev: str = "HEAD") -> Path:
    """Export ``rev`` of a local clone or mirror into the source tree ``ensure`` builds from."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r} (known: {', '.join(PEERS)})")
    commit = subprocess.run(
        ["git", "--git-dir", str(git_dir), "rev-parse", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tree = source_root() / name
    staging = tree.with_name(tree.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    archive = subprocess.Popen(["git", "--git-dir", str(git_dir), "archive", commit], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(staging)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError(f"git archive of {git_dir} failed")
    (staging / COMMIT_FILE).write_text(commit + "\n")
    shutil.rmtree(tree, ignore_errors=True)
    staging.replace(tree)
    return tree


def cli() -> None:
    """Not ``main``: a module of bench/ with a ``main`` is run as a benchmark by ``python -m bench``."""
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="export a peer's source from a local git clone or mirror")
    prep.add_argument("name", choices=sorted(PEERS))
    prep.add_argument("--from", dest="git_dir", type=Path, required=True, help="its .git dir or bare mirror")
    prep.add_argument("--rev", default="HEAD")
    build = sub.add_parser("build", help="build (or find in the cache) the peers; say why one cannot be")
    build.add_argument("names", nargs="*", default=["confd", "metad"])
    args = parser.parse_args()
    if args.command == "prepare":
        print(prepare(args.name, args.git_dir, args.rev))
        return
    failed = False
    for name in args.names:
        built = ensure(name)
        print(f"{name}: {built.path}" if built.path else f"{name}: not built: {built.why}")
        failed |= built.path is None
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    cli()
