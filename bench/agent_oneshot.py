"""One-shot render: ``pitrix-agent -onetime`` beside ``confd -onetime`` and a bare Python, same run.

Thirteen template resources (an app image's usual share: a few configs, each a handful of keys and
a loop over a directory) rendered once from one YAML file by the file backend, then the process
exits: what a VM pays on every boot and on every ``-onetime`` call. Each program runs several
times in a row; the figure is the median CPU seconds (user + system, from the kernel's rusage of the
child) and the median peak RSS. confd is built from its source on this host (bench/peers.py) and run
minutes apart from the agent; a bare ``python -c pass`` of the same interpreter is the floor any
Python program pays. Ratios are pitrix-agent's figure over confd's (over the bare Python's for CPU).
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import peers, procs
from bench.table import Table

TITLE = "pitrix-agent one-shot render beside confd -onetime"
TEMPLATES = 13
KEYS = 20
# confd's figures in ANCHORS.md (another host): CPU seconds and peak MiB of the same one-shot.
ANCHOR_CONFD = (0.033, 22.8)
TIME = "/usr/bin/time"

TEMPLATE = """# {{getv "/cluster/name"}} #{n}
{{range gets "/app/*"}}{{base .Key}} = {{.Value}}
{{end -}}
{{range $dir := lsdir "/hosts"}}server {{getv (printf "/hosts/%s/ip" $dir)}}
{{end -}}
mode={{getv "/env/mode" "default"}}
"""
RESOURCE = """[template]
src = "t{n}.tmpl"
dest = "{dest}/etc/out/t{n}.conf"
keys = ["/cluster", "/app", "/hosts", "/env"]
mode = "0644"
"""


def values() -> str:
    lines = ["cluster:", "  name: c1", "app:"]
    lines += [f"  k{i}: value-{i}" for i in range(KEYS)]
    lines.append("hosts:")
    for h in range(5):
        lines += [f"  h{h}:", f"    ip: 10.0.0.{h + 1}"]
    lines += ["env:", "  mode: fast"]
    return "\n".join(lines) + "\n"


def confdir(base: Path, dest: str) -> Path:
    """A confdir of TEMPLATES resources whose files go under ``dest`` (the agent's is root-relative)."""
    conf = base / "confd"
    (conf / "conf.d").mkdir(parents=True)
    (conf / "templates").mkdir()
    for n in range(TEMPLATES):
        (conf / f"templates/t{n}.tmpl").write_text(TEMPLATE.replace("{n}", str(n)))
        (conf / f"conf.d/t{n}.toml").write_text(RESOURCE.format(n=n, dest=dest))
    return conf


def measure(argv: list[str], cwd: Path, runs: int, check: Path | None) -> tuple[float, float]:
    """Median CPU seconds and median peak RSS (MiB) of ``runs`` runs of ``argv``.

    Through GNU time (``/usr/bin/time``): a child forked straight from this process would carry
    this process's resident size into its own peak (the kernel keeps the larger across exec), so
    the program is forked by time's small process instead, which reports its rusage.
    """
    cpu: list[float] = []
    peak: list[float] = []
    for _ in range(runs):
        if check is not None:
            check.unlink(missing_ok=True)
        report = cwd / "rusage.txt"
        done = subprocess.run(
            [TIME, "-o", str(report), "-f", "%U %S %M", *argv],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} exited {done.returncode}: {done.stderr.decode(errors='replace')[-400:]}"
            )
        if check is not None and not check.is_file():
            raise RuntimeError(f"{argv[0]} rendered no {check}")
        user, system, kib = report.read_text().split()[-3:]
        cpu.append(float(user) + float(system))
        peak.append(int(kib) / 1024)
    return statistics.median(cpu), statistics.median(peak)


def figures(base: Path, confd: Path | None, runs: int) -> dict[str, tuple[float, float]]:
    (base / "values.yaml").write_text(values())
    (base / "none.toml").write_text("")  # no config file: the flags say everything
    agent_root = base / "agent-root"
    (agent_root / "etc/out").mkdir(parents=True)
    agent_conf = confdir(base / "agent", "")
    out: dict[str, tuple[float, float]] = {}
    out["pitrix-agent"] = measure(
        [
            procs.bin_path("pitrix-agent"),
            "-onetime",
            "-backend", "file",
            "-file", str(base / "values.yaml"),
            "-confdir", str(agent_conf),
            "-root", str(agent_root),
            "-config-file", str(base / "none.toml"),
            "-log-level", "error",
        ],
        base,
        runs,
        agent_root / f"etc/out/t{TEMPLATES - 1}.conf",
    )  # fmt: skip
    if confd is not None:
        confd_root = base / "confd-root"
        (confd_root / "etc/out").mkdir(parents=True)
        conf = confdir(base / "confd", str(confd_root))
        out["confd"] = measure(
            [
                str(confd),
                "-onetime",
                "-backend", "file",
                "-file", str(base / "values.yaml"),
                "-confdir", str(conf),
                "-config-file", str(base / "none.toml"),
                "-log-level", "error",
            ],
            base,
            runs,
            confd_root / f"etc/out/t{TEMPLATES - 1}.conf",
        )  # fmt: skip
    out["python -c pass"] = measure([sys.executable, "-c", "pass"], base, runs, None)
    return out


async def run(quick: bool) -> list[Table]:
    if shutil.which(TIME) is None:
        raise RuntimeError(f"{TIME} is needed for a child's own peak RSS (apt-get install time)")
    runs = 3 if quick else 10
    confd = await asyncio.to_thread(peers.ensure, "confd")
    with tempfile.TemporaryDirectory(prefix="pitrix-bench-oneshot-") as tmp:
        got = await asyncio.to_thread(figures, Path(tmp), confd.path, runs)
    theirs = got.get("confd", ANCHOR_CONFD)
    label = "same run" if "confd" in got else "anchor"
    table = Table(
        f"One-shot render: {TEMPLATES} templates, file backend (median of {runs} runs)",
        ["program", "CPU s", "peak RSS (MiB)", f"÷ confd ({label}): CPU / RSS", "CPU ÷ bare Python"],
    )
    bare = got["python -c pass"][0]
    rows = ["pitrix-agent", "confd", "python -c pass"]
    for name in rows:
        cpu, peak = got.get(name, ANCHOR_CONFD) if name == "confd" else got[name]
        shown = name if name in got else f"{name} (ANCHORS, another host)"
        table.add(
            shown,
            f"{cpu:.3f}",
            f"{peak:.1f}",
            f"{cpu / theirs[0]:.1f}× / {peak / theirs[1]:.2f}×",
            f"{cpu / bare:.1f}×" if bare > 0 else "-",
        )
    if confd.path is not None:
        table.notes.append(
            f"confd built from source at {confd.commit[:12]} (bench/peers.py), run in this benchmark "
            "beside the agent: the same YAML, the same 13 templates (dest paths absolute for confd, "
            "under -root for the agent)"
        )
    else:
        table.notes.append(f"confd not measured in this run ({confd.why}): its row is ANCHORS.md's")
    table.notes.append(
        "CPU and peak RSS from GNU time's rusage of the program (CPU in 10 ms ticks: ±0.01 s per "
        "run); the "
        "agent runs from this checkout's interpreter, as `pitrix-agent` is installed in it"
    )
    return [table]


def main() -> None:
    """``python -m bench.agent_oneshot [--quick]``: print the table."""
    from pitrix import aio

    for table in aio.run(run("--quick" in sys.argv)):
        print(table.text())


if __name__ == "__main__":
    main()
