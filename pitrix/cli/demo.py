"""`pitrix demo`: the whole product in one minute, on a private simulator.

Starts a simulator and a pitrixd as separate processes (killing pitrixd never kills the cloud),
deploys the demo app (2 web + 1 lb), proves requests through the lb reach every web node, scales
web to 4 and back to 3 while the lb's confd-rendered upstream list follows, deletes the cluster,
and tears everything down, checking that no VM, process or directory is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from pitrix.cli.client import ApiClient
from pitrix.cli.progress import ended_job, follow, job_failure, step_line

APP_SPEC = Path(__file__).resolve().parents[2] / "examples" / "demo" / "app.yaml"
READY_TIMEOUT = 60.0
REQUESTS = 24
# pitrix-sim's exit status when another simulator serves the network it was given (the command's
# contract; the demo does not import the simulator): whoever drew the network draws another.
SIM_NETWORK_IN_USE = 3
# Networks a simulator start draws before giving up: two runs draw the same block about once in a
# hundred, so this many clashes in a row mean something else is wrong.
NETWORK_DRAWS = 8


class DemoFailed(Exception):
    """A check of the demo did not hold; the message says which and what was seen."""


class ChildExited(DemoFailed):
    """A child that exited before its ready line; ``returncode`` says how (the caller may act on it)."""

    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


@dataclass
class Account:
    """What the demo did and saw, printed for people or as JSON for tests."""

    as_json: bool
    steps: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def say(self, text: str) -> None:
        if not self.as_json:
            print(text, flush=True)

    def step(self, title: str, seconds: float, **facts: Any) -> None:
        self.steps.append({"title": title, "seconds": round(seconds, 3), **facts})
        self.say(f"  {title:<58} {seconds:6.2f}s")


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    ready: dict[str, Any]
    log: Path


def sim_runtime(ready: dict[str, Any], name: str = "sim") -> dict[str, Any]:
    """The runtime definition of a simulator, from the ready line pitrix-sim printed."""
    return {
        "name": name,
        "provider": "qingcloud",
        "endpoint": ready["url"],
        "zone": ready["zone"],
        "access_key_id": ready["access_key_id"],
        "secret_access_key": ready["secret_access_key"],
        "hypervisor": "simulator",  # what AppCenter-profile apps read as /host/hypervisor
        # One metadata VM: the demo runs on one machine (a runtime's default is a cluster of three).
        "metadata_size": 1,
    }


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


async def start_child(name: str, argv: list[str], log: Path, env: dict[str, str]) -> Child:
    """Start a pitrix process and wait (with a deadline) for its JSON ready line."""
    with log.open("ab") as err:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=err, stdin=asyncio.subprocess.DEVNULL, env=env
        )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT)
    except TimeoutError:
        process.kill()
        raise DemoFailed(f"{name} did not become ready within {READY_TIMEOUT:.0f}s; see {log}") from None
    if not line:
        await process.wait()
        code = process.returncode
        raise ChildExited(f"{name} exited with status {code}:\n{_tail(log)}", code)
    return Child(name, process, json.loads(line), log)


def demo_network() -> str:
    """A network of the demo's own (127.100–199.0.0/16), so two demos (or a demo and a test run)
    on one machine rarely meet; when they do, the simulator refuses it and another is drawn."""
    return f"127.{secrets.choice(range(100, 200))}.0.0/16"


async def start_simulator_drawn(
    state_dir: Path, log: Path, env: dict[str, str], draw: Callable[[], str], *extra: str
) -> tuple[Child, str]:
    """A pitrix-sim on a network from ``draw``, drawn again while another simulator serves the one
    drawn (exit :data:`SIM_NETWORK_IN_USE`), at most :data:`NETWORK_DRAWS` times; the child and its
    network. Two simulators on one network would hand out the same addresses, and each one's
    clients would reach the other's VMs."""
    tried: list[str] = []
    while True:
        network = draw()
        tried.append(network)
        argv = [_bin("pitrix-sim"), "--state-dir", str(state_dir), "--port", "0", "--network", network]
        try:
            return await start_child("pitrix-sim", [*argv, *extra], log, env), network
        except ChildExited as exc:
            if exc.returncode != SIM_NETWORK_IN_USE:
                raise
            if len(tried) >= NETWORK_DRAWS:
                raise DemoFailed(
                    f"pitrix-sim: every network drawn ({', '.join(tried)}) is in use by another "
                    f"simulator; stop the other simulators or give one a network that is free"
                ) from None


async def stop_child(child: Child, timeout: float = 30.0) -> None:
    """SIGTERM ``child``, SIGKILL after ``timeout``; then stop the embedded etcd it left running.

    A pitrixd that is killed (here, by a test, or by a crash) leaves its embedded etcd running in a
    session of its own so that the next start adopts it. Whoever ends a pitrixd for good stops
    that etcd too: its ready line names the pid record, which proves the pid is still that etcd.
    """
    if child.process.returncode is None:
        child.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.process.wait(), timeout)
        except TimeoutError:
            child.process.kill()
            await child.process.wait()
    await stop_left_etcd(child)


async def stop_left_etcd(child: Child) -> None:
    """Stop the embedded etcd named by the pid record in ``child``'s ready line, if it is running.

    Nothing to do after a clean stop (pitrixd removes the record) or for a pitrixd on an
    external etcd (no record named).
    """
    record = child.ready.get("etcd_pid_file") if child.process.returncode is not None else None
    if record and await asyncio.to_thread(Path(record).exists):
        from pitrix.store.embedded import EmbeddedEtcd  # only here: the demo needs no store otherwise

        await EmbeddedEtcd(Path(record).parent).stop()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def leftovers(marker: str) -> list[str]:
    """Processes whose command line or environment still mention the demo's directory."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in cmdline or needle in environ:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")[:120]
            found.append(f"{entry.name}: {command}")
    return found


async def through_lb(session: aiohttp.ClientSession, ip: str, count: int = REQUESTS) -> Counter[str]:
    """Send ``count`` requests through the lb; which nodes answered, how often."""
    answered: Counter[str] = Counter()
    for _ in range(count):
        async with session.get(f"http://{ip}:8000/") as response:
            body = await response.text()
            if response.status != 200:
                raise DemoFailed(f"the lb answered {response.status}: {body.strip()}")
            answered[body.split()[0]] += 1
    return answered


async def steady_load(session: aiohttp.ClientSession, ip: str, stop: asyncio.Event) -> dict[str, int]:
    """Requests through the lb, paced at ~100/s, until ``stop``: how many, how many failed."""
    sent = failed = 0
    while not stop.is_set():
        sent += 1
        try:
            async with session.get(f"http://{ip}:8000/") as response:
                await response.read()
                failed += response.status != 200
        except (aiohttp.ClientError, TimeoutError):
            failed += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.01)
    return {"requests": sent, "failed": failed}


async def live_upstreams(session: aiohttp.ClientSession, ip: str) -> list[str]:
    async with session.get(f"http://{ip}:8000/_lb/upstreams") as response:
        return (await response.text()).split()


class Demo:
    def __init__(self, workdir: Path, account: Account) -> None:
        self.workdir = workdir
        self.account = account
        self.sim: Child | None = None
        self.pitrixd: Child | None = None
        self.draw_network: Callable[[], str] = demo_network
        self.network = ""  # the one the simulator took (drawn at its start)
        self.env = dict(os.environ, PITRIX_LOG_FORMAT="json")
        self.env.pop("PITRIX_URL", None)
        # pitrixd refuses requests without a token: the demo gives its own an admin token.
        self.token = secrets.token_urlsafe(24)
        self.env["PITRIX_API__TOKENS"] = json.dumps([{"token": self.token, "owner": "demo", "admin": True}])

    @contextlib.asynccontextmanager
    async def services(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for child in (self.pitrixd, self.sim):
                if child is not None:
                    await stop_child(child)

    async def start(self) -> None:
        began = time.monotonic()
        self.sim, self.network = await start_simulator_drawn(
            self.workdir / "sim", self.workdir / "sim.log", self.env, self.draw_network
        )
        self.pitrixd = await start_child(
            "pitrixd",
            [_bin("pitrixd"), "--state-dir", str(self.workdir / "pitrixd"), "--api-listen", "127.0.0.1:0"],
            self.workdir / "pitrixd.log",
            self.env,
        )
        self.account.step(
            f"start simulator ({self.network}) and pitrixd",
            time.monotonic() - began,
            simulator=self.sim.ready["url"],
            pitrixd=self.pitrixd.ready["url"],
        )

    def vm_file(self, instance_id: str, path: str) -> str:
        return (self.workdir / "sim" / "vms" / instance_id / "root" / path.lstrip("/")).read_text()

    async def job(self, api: ApiClient, title: str, cid: str, job: dict[str, Any]) -> dict[str, Any]:
        began = time.monotonic()
        steps: list[dict[str, Any]] = []
        view = await follow(api, cid, job["id"], steps.append)
        ended = await ended_job(api, cid, job["id"])
        if ended["status"] != "successful":
            for s in steps:
                self.account.say(step_line(s))
            raise DemoFailed(f"{title}: {job_failure(ended)} (the cluster is {view['state']})")
        view = await api.get(f"/v1/clusters/{cid}") if view["state"] != "deleted" else view
        self.account.step(
            title,
            time.monotonic() - began,
            steps=[
                {"name": s["name"], "seconds": round((s.get("finished") or s["started"]) - s["started"], 3)}
                for s in steps
            ],
        )
        return view

    def check_upstreams(self, view: dict[str, Any], expected: int) -> tuple[str, list[str]]:
        lb = next(n for n in view["nodes"] if n["role"] == "lb")
        webs = sorted(n["ip"] for n in view["nodes"] if n["role"] == "web")
        rendered = self.vm_file(lb["instance_id"], "/etc/demo/upstreams.conf")
        listed = sorted(
            line.split()[1].rsplit(":", 1)[0] for line in rendered.splitlines() if line.startswith("server")
        )
        if listed != webs or len(webs) != expected:
            raise DemoFailed(f"the lb's upstream list has {listed}, the web nodes are {webs}:\n{rendered}")
        return lb["ip"], webs

    async def story(self) -> None:
        assert self.sim is not None and self.pitrixd is not None
        account = self.account
        sim = self.sim.ready
        async with (
            ApiClient(self.pitrixd.ready["url"], self.token) as api,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        ):
            await api.post("/v1/runtimes", sim_runtime(sim))
            spec = yaml.safe_load(APP_SPEC.read_text())
            created = await api.post("/v1/clusters", {"runtime": "sim", "app": spec, "name": "demo"})
            cid = created["cluster"]["id"]
            account.facts["cluster_id"] = cid
            view = await self.job(
                api, f"create {cid}: 2 web + 1 lb (and the metadata VM)", cid, created["job"]
            )
            lb_ip, webs = self.check_upstreams(view, 2)
            answered = await through_lb(http, lb_ip)
            expected = {n["node_id"] for n in view["nodes"] if n["role"] == "web"}
            if set(answered) != expected:
                raise DemoFailed(
                    f"requests through the lb reached {dict(answered)}, expected all of {sorted(expected)}"
                )
            account.facts["after_create"] = {"answered": dict(answered), "upstreams": webs}
            account.say(f"      {REQUESTS} requests through lb {lb_ip}: {dict(sorted(answered.items()))}")

            for target in (4, 3):
                began = time.monotonic()
                stop = asyncio.Event()
                load = asyncio.create_task(steady_load(http, lb_ip, stop))
                job = (await api.post(f"/v1/clusters/{cid}/scale", {"role": "web", "count": target}))["job"]
                try:
                    view = await self.job(api, f"scale web to {target}", cid, job)
                finally:
                    stop.set()
                    during = await load
                if during["failed"]:
                    raise DemoFailed(
                        f"{during['failed']} of {during['requests']} requests failed while scaling"
                    )
                lb_ip, webs = self.check_upstreams(view, target)
                live = await live_upstreams(http, lb_ip)
                if sorted(u.rsplit(":", 1)[0] for u in live) != webs:
                    raise DemoFailed(f"the lb serves {live} but its file lists {webs}: it did not reload")
                answered = await through_lb(http, lb_ip)
                expected = {n["node_id"] for n in view["nodes"] if n["role"] == "web"}
                if set(answered) != expected:
                    raise DemoFailed(
                        f"after scaling to {target}, requests reached {dict(answered)}, "
                        f"expected {sorted(expected)}"
                    )
                account.facts[f"after_scale_{target}"] = {
                    "answered": dict(answered),
                    "upstreams": webs,
                    "rendered": self.vm_file(
                        next(n for n in view["nodes"] if n["role"] == "lb")["instance_id"],
                        "/etc/demo/upstreams.conf",
                    ),
                    "seconds": round(time.monotonic() - began, 3),
                    "during": during,
                }
                spread = dict(sorted(answered.items()))
                account.say(f"      lb reloaded with {len(webs)} upstreams; {REQUESTS} requests: {spread}")
                account.say(f"      {during['requests']} requests while scaling, {during['failed']} failed")

            job = (await api.delete(f"/v1/clusters/{cid}"))["job"]
            await self.job(api, f"delete {cid} (and its metadata VM)", cid, job)
            async with http.get(f"{sim['url']}/_sim/ledger") as response:
                ledger = (await response.json())["instances"]
            alive = [vm for vm in ledger if vm["status"] != "terminated"]
            if alive:
                raise DemoFailed(f"VMs still alive after delete: {alive}")
            account.facts["ledger"] = ledger
            account.say(f"      simulator ledger: {len(ledger)} VMs created, all terminated")


async def run_demo(as_json: bool = False, keep_on_failure: bool = False) -> int:
    account = Account(as_json)
    workdir = Path(tempfile.mkdtemp(prefix="pitrix-demo-"))
    account.say(f"pitrix demo (state in {workdir})")
    began = time.monotonic()
    demo = Demo(workdir, account)
    failure: str | None = None
    try:
        async with demo.services():
            await demo.start()
            await demo.story()
    except (DemoFailed, OSError, aiohttp.ClientError, TimeoutError) as exc:
        failure = str(exc) or type(exc).__name__
    teardown = time.monotonic()
    left = leftovers(str(workdir))
    if left and failure is None:
        failure = "processes left behind:\n" + "\n".join(left)
    account.step("stop pitrixd and the simulator", time.monotonic() - teardown, leftovers=left)
    account.facts["seconds"] = round(time.monotonic() - began, 3)
    if failure is not None:
        account.say(f"\nFAILED: {failure}")
        for child in ("pitrixd", "sim"):
            account.say(f"--- {child}.log (last lines)\n{_tail(workdir / f'{child}.log')}")
    if failure is None or not keep_on_failure:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    account.facts["workdir_removed"] = not await asyncio.to_thread(workdir.exists)
    if as_json:
        print(json.dumps({"ok": failure is None, "error": failure, "steps": account.steps, **account.facts}))
    elif failure is None:
        account.say(f"\ndemo done in {account.facts['seconds']:.1f}s: nothing left behind")
    return 0 if failure is None else 1
