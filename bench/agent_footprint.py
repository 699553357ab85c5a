"""The agent's footprint as same-run ratios: a one-shot render's CPU and peak RSS against a bare
``python -c pass`` of the same interpreter (and confd's, when a confd binary is at hand), and the
production install's figures (``pip install .`` without dev extras, in a venv cached under
~/.cache/pitrix-bench).

Used by bench/agent.py (no ``main`` here: it is not a benchmark of its own for ``python -m bench``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pitrix-bench"
PROD_VENV = CACHE / "prod-venv"
# confd 0.17 on the host ANCHORS.md's second table came from (no confd binary in this run).
CONFD_ANCHOR_CPU = 0.033
CONFD_ANCHOR_MIB = 22.8
RESOURCES = 13

DATA_YAML = """\
cluster:
  cluster_id: cl-bench
  app_id: app-web
  zone: pek3
hosts:
  web:
    i-w1: {ip: 10.0.0.11, port: 8081, weight: 3, sid: 1}
    i-w2: {ip: 10.0.0.12, port: 8082, weight: 1, sid: 2}
    i-w3: {ip: 10.0.0.13, port: 8083, weight: 2, sid: 3}
  zk:
    i-z1: {ip: 10.0.1.2, sid: 1}
    i-z2: {ip: 10.0.1.3, sid: 2}
    i-z3: {ip: 10.0.1.4, sid: 3}
host:
  instance_id: i-w1
  ip: 10.0.0.11
  role: web
  sid: 1
env:
  timeout: "30"
  mode: roundrobin
  heap_mb: "512"
  servers: '[{"name": "a", "port": 1}, {"name": "b", "port": 2}]'
"""

# What AppCenter images render most: upstream lists, ZooKeeper ensembles, properties files, ids.
TEMPLATES = {
    "upstream": """upstream web {
{{- range $dir := lsdir "/hosts/web"}}
    server {{getv (printf "/hosts/web/%s/ip" $dir)}}:{{getv (printf "/hosts/web/%s/port" $dir)}} \
weight={{getv (printf "/hosts/web/%s/weight" $dir)}};
{{- end}}
}
{{if eq (getv "/env/mode") "hash"}}hash $remote_addr;{{else}}least_conn;{{end}}
""",
    "zoo": """tickTime=2000
dataDir=/data/zk
{{range $dir := lsdir "/hosts/zk"}}{{$sid := getv (printf "/hosts/zk/%s/sid" $dir)}}\
server.{{$sid}}={{getv (printf "/hosts/zk/%s/ip" $dir)}}:2888:3888
{{end}}""",
    "properties": """broker.id={{getv "/host/sid"}}
listeners=PLAINTEXT://{{getv "/host/ip"}}:9092
zookeeper.connect={{join (getvs "/hosts/zk/*/ip") ":2181,"}}:2181/{{getv "/cluster/cluster_id"}}
heap={{mul (atoi (getv "/env/heap_mb")) 1024}}k
{{range gets "/env/*"}}# {{base .Key}}={{.Value}}
{{end}}""",
    "json": """{{range $s := jsonArray (getv "/env/servers")}}{{$s.name}}:{{$s.port}} {{end}}
{{printf "%-8s|%3d" (getv "/env/mode") (atoi (getv "/env/timeout"))}}
""",
    "myid": """{{getv "/host/sid"}}
""",
}
KEYS = {
    "upstream": ["/hosts/web", "/env"],
    "zoo": ["/hosts/zk"],
    "properties": ["/host", "/hosts/zk", "/cluster", "/env"],
    "json": ["/env"],
    "myid": ["/host"],
}


def oneshot_fixture(base: Path, *, rooted: bool = False) -> list[str]:
    """A confd conf dir of RESOURCES resources over the templates above and their data; the
    command-line tail that renders it once (confd's flags, which pitrix-agent takes too).

    ``rooted`` (pitrix-agent): ``-root`` is ``base``, so the agent's state directory (its parse
    cache) is ``base/var/lib/pitrix-agent``, not the host's. Every input is dated a minute back, as
    an image's conf.d and a data file written before boot are: the parse cache trusts only files
    left alone for a few seconds.
    """
    confdir = base / "confdir"
    (confdir / "conf.d").mkdir(parents=True)
    (confdir / "templates").mkdir()
    (base / "out").mkdir()
    (base / "data.yaml").write_text(DATA_YAML)
    kinds = sorted(TEMPLATES)
    dest = "/out" if rooted else f"{base}/out"
    for n in range(RESOURCES):
        kind = kinds[n % len(kinds)]
        name = f"{kind}-{n}"
        (confdir / "templates" / f"{name}.tmpl").write_text(TEMPLATES[kind])
        keys = ", ".join(f'"{k}"' for k in KEYS[kind])
        (confdir / "conf.d" / f"{name}.toml").write_text(
            f'[template]\nsrc = "{name}.tmpl"\ndest = "{dest}/{name}.conf"\nkeys = [{keys}]\n'
        )
    settled = time.time() - 60
    for path in [base / "data.yaml", *confdir.rglob("*")]:
        os.utime(path, (settled, settled))
    tail = ["-onetime", "-backend", "file", "-file", str(base / "data.yaml"), "-confdir", str(confdir)]
    if rooted:
        tail += ["-root", str(base)]
    return [*tail, "-config-file", os.devnull]  # no host config file read by either agent


def parse_cache(base: Path) -> Path:
    """Where a rooted one-shot keeps its parse cache (pitrix/agent/parsecache.py)."""
    return base / "var/lib/pitrix-agent/parsed.cache"


def compile_tree() -> None:
    """This tree's bytecode, written whatever PYTHONDONTWRITEBYTECODE says: an installed package
    has it, and without it every run compiles the agent's modules anew (the cause of an earlier
    one-shot figure twice this one's)."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "pitrix")],
        check=True,
        stdout=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class Usage:
    cpu: float  # user + system CPU-s, median over the runs
    mib: float  # peak RSS, median over the runs


# Runs a command to its end and prints its rusage, from a small interpreter of its own: a child's
# ru_maxrss counts the memory of the process it was forked (or vforked) from until its exec, so
# children of the benchmark's own 100+ MiB process would all look that big.
_SPAWNER = """
import json, os, sys
argv = json.loads(sys.argv[1])
devnull = os.open(os.devnull, os.O_WRONLY)
pid = os.fork()
if pid == 0:
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.execv(argv[0], argv)
_pid, status, ru = os.wait4(pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime, ru.ru_maxrss]))
"""


def usage(argv: list[str], runs: int, env: dict[str, str], cwd: Path) -> Usage:
    """Run ``argv`` ``runs`` times to its end; its CPU and peak RSS from the kernel (wait4)."""
    cpus, peaks = [], []
    for _ in range(runs):
        spawner = [sys.executable, "-I", "-S", "-c", _SPAWNER, json.dumps(argv)]
        out = subprocess.run(spawner, env=env, cwd=cwd, capture_output=True, text=True, check=True).stdout
        code, cpu, max_kib = json.loads(out)
        if code != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {code}")
        cpus.append(cpu)
        peaks.append(max_kib / 1024)
    return Usage(statistics.median(cpus), statistics.median(peaks))


def plain_env() -> dict[str, str]:
    """This environment without what would change which code a child imports or where it writes."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PITRIX_VM_ROOT", "VIRTUAL_ENV")}


def source_stamp() -> str:
    """What the production venv was installed from: every packaged file's contents."""
    digest = hashlib.sha256()
    files = [
        REPO / "pyproject.toml",
        *sorted((REPO / "pitrix").rglob("*")),
        *sorted((REPO / "simulator").rglob("*.py")),
    ]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def production_venv(timeout: float = 1200.0) -> tuple[Path | None, str]:
    """A venv holding ``pip install .`` of this tree (no dev extras): (its bin dir, "") or (None,
    why not). Made once and kept under ~/.cache/pitrix-bench; later runs reinstall only pitrix
    itself when the source changed (dependencies stay)."""
    stamp_file = PROD_VENV / "pitrix-source.sha256"
    stamp = source_stamp()
    python = PROD_VENV / "bin" / "python"
    if python.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return python.parent, ""
    steps: list[list[str]] = []
    if not python.exists():
        steps.append([sys.executable, "-m", "venv", "--clear", str(PROD_VENV)])
        steps.append([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(REPO)])
    else:
        steps.append(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
             "--force-reinstall", str(REPO)]
        )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="pitrix-bench-pip-") as tmp:
        for step in steps:
            try:
                done = subprocess.run(
                    step, env=plain_env(), cwd=tmp, capture_output=True, text=True, timeout=timeout
                )
            except subprocess.TimeoutExpired:
                return None, f"pip install . did not finish in {timeout:.0f} s"
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["?"])[-1]
                return None, f"pip install . failed (offline?): {last[:160]}"
    stamp_file.write_text(stamp)
    return python.parent, ""


def confd_binary() -> tuple[str | None, str]:
    """confd built from source by bench/peers.py (cached), and its label; (None, why) when it
    cannot be built here (ANCHORS' figure stands in)."""
    from bench import peers

    built = peers.ensure("confd")
    if built.path is None:
        return None, built.why
    return str(built.path), built.label()


@dataclass(frozen=True)
class OneShot:
    """One interpreter's one-shot figures: bare start, the agent's one-shot with its parse cache
    from the previous run (warm) and without one (cold: the first run after a change), and whose
    they are."""

    label: str
    bare: Usage
    agent: Usage
    cold: Usage


def one_shot(bin_dir: Path, label: str, runs: int, *, module: bool) -> OneShot:
    """``pitrix-agent -onetime`` over the fixture with ``bin_dir``'s Python, and a bare
    ``python -c pass`` of it, interleaved run by run so all three see the same host."""
    python = str(bin_dir / "python")
    env = plain_env()
    if module:  # this tree's code, as the shared venv runs it (PYTHONPATH kept)
        env = {**env, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))}
    with tempfile.TemporaryDirectory(prefix="pitrix-bench-oneshot-") as tmp:
        base = Path(tmp)
        tail = oneshot_fixture(base, rooted=True)
        agent = [python, "-m", "pitrix.agent.main"] if module else [str(bin_dir / "pitrix-agent")]
        usage([*agent, *tail], 1, env, base)  # the parse cache's first write
        bare_runs, agent_runs, cold_runs = [], [], []
        for _ in range(runs):
            bare_runs.append(usage([python, "-c", "pass"], 1, env, base))
            if not parse_cache(base).is_file():
                raise RuntimeError("the one-shot render kept no parse cache")
            agent_runs.append(usage([*agent, *tail], 1, env, base))
            parse_cache(base).unlink()
            cold_runs.append(usage([*agent, *tail], 1, env, base))
        if len(list((base / "out").iterdir())) != RESOURCES:
            raise RuntimeError("the one-shot render did not write every resource")
    return OneShot(label, median_usage(bare_runs), median_usage(agent_runs), median_usage(cold_runs))


def median_usage(runs: list[Usage]) -> Usage:
    return Usage(statistics.median(u.cpu for u in runs), statistics.median(u.mib for u in runs))


def confd_one_shot(binary: str, runs: int) -> Usage:
    with tempfile.TemporaryDirectory(prefix="pitrix-bench-confd-") as tmp:
        tail = oneshot_fixture(Path(tmp))
        return usage([binary, *tail], runs, plain_env(), Path(tmp))


def watch_rss(
    argv: list[str], env: dict[str, str], out: Path, settle: float = 1.0, timeout: float = 60.0
) -> float:
    """VmRSS (MiB) of ``argv`` -- a watching agent or confd -- once it has rendered every resource
    into ``out`` and run ``settle`` seconds more; then it is stopped."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while len(list(out.iterdir())) < RESOURCES:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited {proc.returncode} before rendering")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} rendered {len(list(out.iterdir()))} of {RESOURCES}")
            time.sleep(0.05)
        time.sleep(settle)
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def watch_pair(agent: list[str], agent_env: dict[str, str], confd: str | None) -> tuple[float, float | None]:
    """RSS of pitrix-agent -watch and of confd -watch over the same file backend and resources,
    one after the other (confd None: not built here)."""
    figures: list[float | None] = []
    for argv, env, rooted in ((agent, agent_env, True), ([confd] if confd else None, plain_env(), False)):
        if argv is None:
            figures.append(None)
            continue
        with tempfile.TemporaryDirectory(prefix="pitrix-bench-watch-") as tmp:
            tail = oneshot_fixture(Path(tmp), rooted=rooted)
            tail = ["-watch" if a == "-onetime" else a for a in tail]
            figures.append(watch_rss([*argv, *tail], env, Path(tmp) / "out"))
    agent_mib = figures[0]
    assert agent_mib is not None
    return agent_mib, figures[1]


def instructions(argv: list[str], env: dict[str, str], cwd: Path) -> float | None:
    """Millions of instructions ``argv`` executes, counted by valgrind (cachegrind, no cache
    simulation): a figure the host's load does not move, unlike CPU time. None without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    done = subprocess.run(
        [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null", *argv],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    for line in done.stderr.splitlines():
        if "I   refs:" in line or "I refs:" in line:
            return int(line.split(":", 1)[1].strip().replace(",", "")) / 1e6
    return None


@dataclass(frozen=True)
class Counted:
    """Instructions (millions) of one interpreter's bare start and the agent's one-shot, warm and
    cold."""

    label: str
    bare: float
    warm: float
    cold: float


def counted(bin_dir: Path, label: str, *, module: bool) -> Counted | None:
    """``instructions`` of a bare python, the one-shot with its parse cache, and without."""
    python = str(bin_dir / "python")
    env = plain_env()
    if module:
        env = {**env, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))}
    with tempfile.TemporaryDirectory(prefix="pitrix-bench-counted-") as tmp:
        base = Path(tmp)
        tail = oneshot_fixture(base, rooted=True)
        agent = [python, "-m", "pitrix.agent.main"] if module else [str(bin_dir / "pitrix-agent")]
        bare = instructions([python, "-c", "pass"], env, base)
        cold = instructions([*agent, *tail], env, base)
        warm = instructions([*agent, *tail], env, base)
    if bare is None or cold is None or warm is None:
        return None
    return Counted(label, bare, warm, cold)


def confd_instructions(binary: str) -> float | None:
    with tempfile.TemporaryDirectory(prefix="pitrix-bench-confd-") as tmp:
        return instructions([binary, *oneshot_fixture(Path(tmp))], plain_env(), Path(tmp))
