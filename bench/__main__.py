"""``python -m bench [--quick] [names...]``: run the benchmarks, print their tables, write the report."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import pkgutil
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

from bench import machine
from bench.table import Table
from pitrix import aio, logs

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
# The order of the report; benchmarks found besides these follow in name order.
FIRST = ["propagation", "orchestration"]
FAILED = "**failed**: "
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\S* +\[")
SECTION = re.compile(r"<!-- bench:(\S+) -->\n.*?<!-- /bench:\1 -->\n", re.S)


class Broken:
    """A benchmark module that does not import: reported in its section, the others still run."""

    def __init__(self, name: str, error: BaseException) -> None:
        self.TITLE = name
        self.__doc__ = ""
        self.error = error

    async def run(self, quick: bool) -> list[Table]:
        raise RuntimeError(f"bench.{self.TITLE} does not import: {type(self.error).__name__}: {self.error}")


def is_native(module: Any) -> bool:
    """A benchmark of this runner's shape: ``TITLE`` and ``async def run(quick)``."""
    return hasattr(module, "TITLE") and inspect.iscoroutinefunction(getattr(module, "run", None))


def discover() -> dict[str, Any]:
    """Every module of the package that is a benchmark (native, or a script with ``main``/``run``)."""
    found: dict[str, Any] = {}
    names = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])]
    for name in sorted(names, key=lambda n: (FIRST.index(n) if n in FIRST else len(FIRST), n)):
        if name.startswith("_"):
            continue
        try:
            module: Any = importlib.import_module(f"bench.{name}")
        except Exception as exc:
            found[name] = Broken(name, exc)
            continue
        if (
            is_native(module)
            or callable(getattr(module, "main", None))
            or callable(getattr(module, "run", None))
        ):
            found[name] = module
    return found


async def run_script(name: str, module: Any, quick: bool) -> str:
    """A benchmark that is a script of its own: its output, verbatim (``--quick`` if it has one)."""
    quick = quick and "--quick" in inspect.getsource(module)
    argv = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPORT.parents[1]
    )
    out, err = await proc.communicate()
    # The figures; log lines a script prints among them (and its stderr) stay out, but for a failure.
    lines = out.decode(errors="replace").rstrip().splitlines()
    text = "\n".join(line for line in lines if not LOG_LINE.match(line))
    if proc.returncode:
        tail = "\n".join(err.decode(errors="replace").splitlines()[-10:])
        text += f"\n(exit status {proc.returncode})\n{tail}"
    return text


def reflow(paragraph: str) -> str:
    """A docstring paragraph on one line; a list keeps one line per item (``- `` starts an item)."""
    items: list[str] = []
    for line in paragraph.splitlines():
        if line.lstrip().startswith("- ") or not items:
            items.append(line.strip())
        else:
            items[-1] += " " + line.strip()
    return "\n".join(" ".join(item.split()) for item in items)


def script_markdown(text: str) -> str:
    """A script's output for the report: its markdown table (lines starting ``|``) as a table, the
    rest (progress lines, a failure's tail) verbatim in a code block."""
    lines = text.splitlines()
    table = [line for line in lines if line.startswith("|")]
    rest = "\n".join(line for line in lines if not line.startswith("|")).strip("\n")
    parts = [f"```\n{rest}\n```\n"] if rest else []
    if table:
        parts.append("\n".join(table) + "\n")
    return "\n".join(parts)


async def run_one(name: str, module: Any, quick: bool) -> str:
    """Run one benchmark; the markdown of its section (a failure is reported, not raised)."""
    began = time.monotonic()
    title = getattr(module, "TITLE", name)
    measured = machine.Stamp()
    print(f"== {name}: {title}\n{measured.text()}", flush=True)
    try:
        if is_native(module) or isinstance(module, Broken):
            tables: list[Table] = await module.run(quick)
            body = "\n".join(t.markdown() for t in tables)
            for t in tables:
                print(t.text(), flush=True)
        else:
            text = await run_script(name, module, quick)
            print(text, flush=True)
            body = script_markdown(text)
    except Exception as exc:
        body = f"{FAILED}`{type(exc).__name__}: {exc}`\n"
        print(f"  FAILED: {type(exc).__name__}: {exc}", flush=True)
    took = time.monotonic() - began
    measured.end()
    print(f"   ({took:.1f} s; reference loop {measured.ended_ms:.1f} ms at the end)\n", flush=True)
    doc = getattr(module, "__doc__", None) or ""
    # The module's docstring says how the figures were taken: it heads the section, reflowed.
    intro = "\n\n".join(reflow(p) for p in inspect.cleandoc(doc).split("\n\n")) if doc else ""
    head = f"## {title}\n\n{measured.text()}\n\n{intro}"
    return f"<!-- bench:{name} -->\n{head}\n\n{body}\n<!-- /bench:{name} -->\n"


def header(quick: bool, m: dict[str, str]) -> str:
    return (
        "# pitrix benchmarks\n\n"
        "Written by `make bench` (`python -m bench`); do not edit by hand. Figures in milliseconds,\n"
        "p50 / p99 over the rounds unless a column says otherwise.\n\n"
        f"Last written {m['date']} on {m['cores']} cores ({m['cpu']}), {m['memory']} of memory, "
        f"Python {m['python']}, Linux {m['kernel']}{' (quick run)' if quick else ''}. Each section "
        "says when and on which CPU it ran, how busy the machine was and how fast its Python was (a "
        "`make bench` of a few sections keeps the others' figures, which may come from another "
        "host). Everything runs on one machine: etcd, metad, pitrixd, the simulator, every agent "
        "and the clients share the cores.\n\n"
        f"{PEERS_NOTE}\n\n"
    )


# How the peers get here; part of the report's head, so a rewrite keeps it.
PEERS_NOTE = (
    "**Peers in the same run.** Where a section compares with confd or Go metad, it measures them "
    'minutes apart from pitrix on the same host and prints ratios ("same run"); only when a peer '
    "cannot be built does it fall back to ANCHORS.md's figures from another host, labelled "
    '"ANCHORS"/"anchor", with the reason. `bench/peers.py` builds confd (kelseyhightower/confd) '
    "and metad (openpitrix/metad; yunify/metad too) with the host's Go (`apt-get install golang-go`; "
    "Debian's 1.19 builds both) offline from their vendor/ folders (GOPROXY=off, -mod=vendor; GOPATH "
    "mode for trees without go.mod) and caches them in `~/.cache/pitrix-bench/peers/<name>-<commit>/` "
    "(`$PITRIX_PEERS_CACHE`). It reads the sources from `$PITRIX_PEERS_SRC/<name>` (default "
    "`~/.cache/pitrix-bench/src/<name>`). Neither PyPI nor Debian carries them: on a machine with only "
    "those, bring a clone made elsewhere (`git clone --mirror https://github.com/kelseyhightower/confd` "
    "then `git bundle create confd.bundle --all`, the same for openpitrix/metad; copy the bundles; "
    "`git clone --mirror confd.bundle confd.git`), then `python -m bench.peers prepare confd --from "
    "confd.git` and `python -m bench.peers prepare metad --from metad.git`; a source tarball extracted "
    "into `$PITRIX_PEERS_SRC/<name>` works too. `python -m bench.peers build` builds them (each in "
    "under 3 minutes on an idle 2-core host) or says why it cannot."
)


def write_report(sections: dict[str, str], quick: bool, m: dict[str, str]) -> None:
    """Replace the sections that ran, keep the others from the last run."""
    kept: dict[str, str] = {}
    if REPORT.exists():
        kept = {m.group(1): m.group(0) for m in SECTION.finditer(REPORT.read_text())}
    for name, section in sections.items():
        if FAILED in section and name in kept and FAILED not in kept[name]:
            # Keep the figures of the last good run, saying that this one failed and why.
            error = section.split(FAILED, 1)[1].split("\n", 1)[0]
            head, rest = kept[name].split("\n\n", 1)
            stamp = machine.describe()["date"]
            note = f"**the run of {stamp} failed** ({error}); the figures are from the run before."
            section = f"{head}\n\n{note}\n\n{rest}"
        kept[name] = section
    order = list(discover())
    body = "\n".join(kept[n] for n in sorted(kept, key=lambda n: order.index(n) if n in order else 99))
    REPORT.write_text(header(quick, m) + body)


async def main_async(names: list[str], quick: bool, write: bool) -> int:
    benches = discover()
    unknown = [n for n in names if n not in benches]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(benches)}", file=sys.stderr)
        return 2
    sections = {}
    began = machine.describe()  # the load average before our own work adds to it
    for name in names or list(benches):
        sections[name] = await run_one(name, benches[name], quick)
    if write:
        write_report(sections, quick, began)
        print(f"report written to {REPORT}")
    return 0


def main() -> None:
    # Spawning children while aetcd's gRPC threads run makes gRPC log a line per fork; figures only.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args()
    logs.configure("error")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sys.exit(aio.run(main_async(args.names, args.quick, not args.no_write)))


if __name__ == "__main__":
    main()
