"""Benchmark: what a command costs before it does anything, beside a bare ``python -c pass``.

Each entry point's cheap paths (``--help``, ``--version``, a usage error) and ``pitrix clusters
list`` against a running pitrixd run as the console scripts do, in fresh processes of this venv's
interpreter, with their bytecode cached (as an installed package has it); the figure is the least
CPU time (user + system) and peak RSS of several runs, each as a ratio to a bare
``python -c pass`` of the same interpreter measured in the same run (hosts differ by 2× from
one day to the next; the ratio does not). Goal: ≤ 2.5× on CPU. Wall time follows the machine's
load and is left out. Beside them, the instructions each command executes, counted by valgrind
(one run each, when valgrind is installed): the host's load moves CPU time, not these.
"""

from __future__ import annotations

import asyncio
import compileall
import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.agent_footprint import instructions
from bench.stack import Stack
from bench.table import Table

TITLE = "Start-up: each command's cheap paths, as ratios to a bare python"
GOAL = 2.5
ROOT = Path(__file__).resolve().parents[1]

# (command as typed, its console script's module)
CHEAP = [
    (["pitrix", "--help"], "pitrix.cli.main"),
    (["pitrix", "clusters", "--help"], "pitrix.cli.main"),
    (["pitrix", "--version"], "pitrix.cli.main"),
    (["pitrix", "clusters", "frobnicate"], "pitrix.cli.main"),
    (["pitrixd", "--version"], "pitrix.daemon"),
    (["pitrixd", "--help"], "pitrix.daemon"),
    (["pitrix-metad", "--version"], "pitrix.metad.main"),
    (["pitrix-metad", "--help"], "pitrix.metad.main"),
    (["pitrix-sim", "--help"], "simulator.main"),
]


@dataclass(frozen=True)
class Cost:
    cpu: float  # seconds, user + system
    rss_kib: int


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, bytecode written and read (a test runner may have turned it off)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env | (extra or {})


# Every child reports its own peak RSS on stderr as it exits: the kernel's figure for a child
# (wait4's ru_maxrss) counts the pages it shared with this large process before its exec.
PEAK = (
    "import atexit, sys; atexit.register(lambda: sys.stderr.write('\\nPEAK ' + "
    "[l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1] + '\\n'))\n"
)
BARE = [sys.executable, "-c", PEAK + "pass"]


def script(argv: list[str], module: str) -> list[str]:
    """``argv`` as its console script runs it: import the module's ``main``, call it, exit with it."""
    code = f"import sys; sys.argv = {argv!r}; from {module} import main; sys.exit(main())"
    return [sys.executable, "-c", PEAK + code]


def counted(command: list[str], env: dict[str, str]) -> float | None:
    """Millions of instructions ``command`` runs (None without valgrind); a usage error's exit
    status is taken as success here (the count is of the work, not of the outcome)."""
    code = command[-1].replace("sys.exit(main())", "\ntry:\n    main()\nexcept SystemExit:\n    pass")
    return instructions([*command[:-1], code], env, ROOT)


def cost(command: list[str], runs: int, env: dict[str, str]) -> Cost:
    """The least CPU and RSS of ``runs`` runs: the least is the one the least disturbed by others."""
    best: Cost | None = None
    for _ in range(runs):
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT
        )
        assert process.stderr is not None
        err = process.stderr.read()
        process.stderr.close()
        _, _, usage = os.wait4(process.pid, 0)
        process.returncode = 0  # reaped above
        cpu = usage.ru_utime + usage.ru_stime
        _, marker, peak = err.rpartition(b"\nPEAK ")
        if not marker:
            raise RuntimeError(f"{command[-1][-80:]!r} reported no peak RSS: {err[-300:]!r}")
        here = Cost(cpu, int(peak))
        best = here if best is None else Cost(min(best.cpu, cpu), min(best.rss_kib, here.rss_kib))
    assert best is not None
    return best


def row(
    table: Table, what: str, mine: Cost, bare: Cost, count: float | None, bare_count: float | None
) -> None:
    ratio = mine.cpu / bare.cpu
    table.add(
        f"`{what}`",
        f"{mine.cpu * 1000:.0f}",
        f"{ratio:.2f}×",
        f"{mine.rss_kib / 1024:.1f}",
        f"{mine.rss_kib / bare.rss_kib:.2f}×",
        "-" if count is None else f"{count:.0f}",
        "-" if count is None or not bare_count else f"{count / bare_count:.2f}×",
        "yes" if ratio <= GOAL else "**no**",
    )


async def clusters_list(runs: int, env: dict[str, str]) -> tuple[Cost, float | None]:
    """``pitrix clusters list`` against a pitrixd of its own (embedded etcd, no clusters)."""
    with tempfile.TemporaryDirectory(prefix="pitrix-bench-startup-") as tmp:
        stack = Stack(Path(tmp), f"127.{procs.private_net()}.0.0/16", token=secrets.token_urlsafe(24))
        try:
            await stack.start_pitrixd()
            mine = env | {"PITRIX_URL": stack.api_url, "PITRIX_TOKEN": stack.token}
            command = script(["pitrix", "clusters", "list"], "pitrix.cli.main")
            check = await asyncio.to_thread(subprocess.run, command, env=mine, capture_output=True, text=True)
            if check.returncode != 0 or not check.stdout.startswith("ID"):
                raise RuntimeError(f"pitrix clusters list failed: {check.stderr.strip()[-300:]}")
            spent = await asyncio.to_thread(cost, command, runs, mine)
            return spent, await asyncio.to_thread(counted, command, mine)
        finally:
            await stack.stop()


async def run(quick: bool) -> list[Table]:
    runs = 5 if quick else 15
    env = child_env()
    # Bytecode as an installed package has it: compiled once here, not by every run.
    for package in ("pitrix", "simulator"):
        compileall.compile_dir(ROOT / package, quiet=1)
    bare = await asyncio.to_thread(cost, BARE, runs, env)
    bare_count = await asyncio.to_thread(instructions, BARE, env, ROOT)
    table = Table(
        f"CPU and peak RSS, least of {runs} runs each; instructions",
        [
            "command",
            "CPU ms",
            "CPU vs bare python",
            "RSS MiB",
            "RSS vs bare python",
            "M instructions",
            "instructions vs bare",
            f"CPU ≤ {GOAL}×",
        ],
    )
    table.add(
        "`python -c pass` (bare)",
        f"{bare.cpu * 1000:.0f}",
        "1.00×",
        f"{bare.rss_kib / 1024:.1f}",
        "1.00×",
        "-" if bare_count is None else f"{bare_count:.0f}",
        "1.00×",
        "",
    )
    for argv, module in CHEAP:
        command = script(argv, module)
        spent = await asyncio.to_thread(cost, command, runs, env)
        row(table, " ".join(argv), spent, bare, await asyncio.to_thread(counted, command, env), bare_count)
    spent, count = await clusters_list(runs, env)
    row(table, "pitrix clusters list", spent, bare, count, bare_count)
    # The bare figure again at the end: a ratio is only as good as the load stayed level.
    again = await asyncio.to_thread(cost, BARE, runs, env)
    load = os.getloadavg()
    table.notes.append(
        f"bare `python -c pass`: {bare.cpu * 1000:.0f} ms CPU at the start, {again.cpu * 1000:.0f} ms "
        f"at the end of the run (load average {load[0]:.1f} then); each command runs as its console "
        "script does (`from module import main; sys.exit(main())`)"
    )
    if not 0.8 <= again.cpu / bare.cpu <= 1.25:
        table.notes.append(
            "the bare figure moved by more than a quarter during the run: the host's load changed, "
            "and the CPU ratios with it; the instruction counts, which load does not move, are the "
            "ones to compare"
        )
    table.notes.append(
        "`pitrix clusters list` asks a pitrixd started for the run (embedded etcd, no clusters); "
        "it runs on the CLI's blocking client, without an event loop"
    )
    return [table]


if __name__ == "__main__":
    from pitrix import aio

    for t in aio.run(run("--quick" in sys.argv)):
        print(t.text())
