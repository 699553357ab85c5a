"""Real pitrixd and simulator processes for end-to-end tests that kill and restart the daemon.

The test watches the daemon's own etcd (the embedded one, or a shared one) through a Store, so it
can act at the exact moment a journal record appears instead of sleeping; the simulator's ledger
is the truth about which VMs exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from pitrix.cli.client import ApiClient
from pitrix.cli.demo import Child, _bin, sim_runtime, start_child, start_simulator_drawn, stop_child
from pitrix.store import Store
from pitrix.store.etcd_pki import EtcdPKI
from pitrix.store.tls import EtcdTLS
from simulator.testing import random_network

APP = Path(__file__).resolve().parents[2] / "examples" / "demo" / "app.yaml"
STATE_TIMEOUT = 90.0


def child_env() -> dict[str, str]:
    env = dict(os.environ, PITRIX_LOG_FORMAT="json")
    env.pop("PITRIX_URL", None)
    return env


async def start_simulator(workdir: Path, *extra: str, draw: Callable[[], str] = random_network) -> Child:
    """A simulator on a network of its own: one another test run's simulator serves is drawn again."""
    sim, _ = await start_simulator_drawn(workdir / "sim", workdir / "sim.log", child_env(), draw, *extra)
    return sim


class Pitrixd:
    """One pitrixd process that can be SIGKILLed and started again on the same state dir."""

    def __init__(
        self,
        workdir: Path,
        name: str = "pitrixd",
        etcd: list[str] | None = None,
        prefix: str | None = None,
        etcd_tls: EtcdTLS | None = None,
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.etcd = etcd or []
        self.given_tls = etcd_tls
        self.prefix = prefix
        self.child: Child | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        assert self.child is not None
        return str(self.child.ready["url"])

    @property
    def etcd_endpoints(self) -> list[str]:
        assert self.child is not None
        return list(self.child.ready["etcd"])

    @property
    def etcd_tls(self) -> EtcdTLS | None:
        """What a Store needs to reach this daemon's etcd: the given TLS, or its embedded etcd's."""
        if self.etcd:
            return self.given_tls
        return EtcdPKI(self.workdir / self.name / "etcd-pki").client

    async def start(self, *extra: str) -> Pitrixd:
        argv = [_bin("pitrixd"), "--state-dir", str(self.workdir / self.name), "--api-listen", "127.0.0.1:0"]
        for endpoint in self.etcd:
            argv += ["--etcd", endpoint]
        env = child_env()
        # Replicas on one etcd share the key that seals its secrets, as docs/config.md says.
        env["PITRIX_SECRETS__KEY_FILE"] = str(self.workdir / "secret.key")
        if self.prefix:
            env["PITRIX_ETCD__PREFIX"] = self.prefix
        if self.etcd and self.given_tls is not None:
            env.update(etcd_tls_env(self.given_tls))
        self.child = await start_child(self.name, [*argv, *extra], self.workdir / f"{self.name}.log", env)
        self.starts += 1
        return self

    async def kill(self) -> None:
        """SIGKILL: no clean-up at all, as a power cut or the OOM killer would do."""
        assert self.child is not None
        process = self.child.process
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()

    async def stop(self) -> None:
        if self.child is not None:
            await stop_child(self.child)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.workdir / f"{self.name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def etcd_tls_env(tls: EtcdTLS) -> dict[str, str]:
    """pitrixd's settings for an external etcd with TLS, as its environment."""
    env = {}
    for name, path in (("CA_FILE", tls.ca_file), ("CERT_FILE", tls.cert_file), ("KEY_FILE", tls.key_file)):
        if path is not None:
            env[f"PITRIX_ETCD__{name}"] = str(path)
    return env


async def current_revision(store: Store) -> int:
    _, revision = await store.get_prefix("/runtimes/")
    return revision


async def wait_for_key(
    store: Store,
    prefix: str,
    from_revision: int,
    match: Callable[[str, dict[str, Any]], bool],
    timeout: float = STATE_TIMEOUT,
) -> tuple[str, dict[str, Any]]:
    """The first put under ``prefix`` since ``from_revision`` whose (key, JSON value) ``match``es."""

    async def watching() -> tuple[str, dict[str, Any]]:
        async for batch in store.watch_prefix(prefix, from_revision):
            events = batch.state if batch.resync else batch.events
            for event in events:
                if getattr(event, "type", "put") != "put":
                    continue
                with contextlib.suppress(ValueError):
                    value = json.loads(event.value)
                    if isinstance(value, dict) and match(event.key, value):
                        return event.key, value
        raise AssertionError("watch ended")

    return await asyncio.wait_for(watching(), timeout)


async def wait_state(
    store: Store, cid: str, states: set[str], timeout: float = STATE_TIMEOUT
) -> dict[str, Any]:
    """The cluster record once its state is one of ``states`` (watching, from its current value)."""
    kv = await store.get(f"/clusters/{cid}")
    assert kv is not None, f"cluster {cid} has no record"
    value = kv.json()
    if value["state"] in states:
        return dict(value)
    _, value = await wait_for_key(
        store, f"/clusters/{cid}", kv.mod_revision + 1, lambda _, v: v.get("state") in states, timeout
    )
    return value


async def ledger(session: aiohttp.ClientSession, sim_url: str) -> list[dict[str, Any]]:
    async with session.get(f"{sim_url}/_sim/ledger") as response:
        return list((await response.json())["instances"])


def duplicated_names(entries: list[dict[str, Any]]) -> dict[str, int]:
    """Names the cloud was asked to create more than once: each one is a VM created twice."""
    counts = Counter(vm["name"] for vm in entries)
    return {name: n for name, n in counts.items() if n > 1}


def live(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [vm for vm in entries if vm["status"] not in ("terminated", "ceased")]


def runtime_definition(sim: Child, name: str = "sim") -> dict[str, Any]:
    """The runtime of a simulator, from its ready line; one metadata VM (tests where HA is the
    point ask for more)."""
    return {**sim_runtime(sim.ready, name), "metadata_size": 1}


async def add_runtime(api: ApiClient, sim: Child) -> None:
    await api.post("/v1/runtimes", runtime_definition(sim))
