"""Fixtures shared by every test suite: one real etcd per test session, and a store per test.

``etcd_url`` is session-scoped because starting etcd costs about a second; ``store`` gives each
test its own key prefix on it, so tests never see each other's keys, even in parallel runs. That
etcd speaks mutual TLS, as pitrixd's does, so the whole suite goes through it: connect with
``etcd_tls``. ``plain_etcd_url`` is an etcd without TLS, only for the agent's etcdv3 backend,
which reads a user's own etcd and has no TLS settings.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from pitrix.logs import console_renderer
from pitrix.providers.qingcloud import QingCloudProvider
from pitrix.sealing import Sealer
from pitrix.store import Store, StoreError
from pitrix.store.embedded import EmbeddedEtcd
from pitrix.store.tls import EtcdTLS
from simulator.cloud import Simulator
from simulator.testing import Beacon, random_network


def pytest_configure(config: pytest.Config) -> None:
    """In-process services log with structlog's defaults, but with pitrixd's cheap tracebacks: the
    default rich ones with locals freeze the event loop for seconds on a loaded machine."""
    processors = list(structlog.get_config()["processors"])
    if processors and isinstance(processors[-1], structlog.dev.ConsoleRenderer):
        processors[-1] = console_renderer(colors=False)
        structlog.configure(processors=processors)


def _shared_fixtures(item: pytest.Item) -> set[str]:
    """The fixtures ``item`` shares with other tests (module, package or session scope), by where
    they are defined; the root conftest's (the session etcd: cheap, and every worker has one) aside."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return set()
    here = Path(__file__).parent.relative_to(item.config.rootpath).as_posix()
    return {
        f"{d.baseid}::{name}"
        for name, defs in info.name2fixturedefs.items()
        for d in defs
        if d.scope != "function" and d.baseid not in ("", here)
    }


def _units(items: list[pytest.Item]) -> list[list[pytest.Item]]:
    """``items`` in groups that must run on one worker: tests sharing an expensive fixture (the
    security suite's deployment, a module's stack) would otherwise each start it on every worker."""
    unit_of: dict[str, list[pytest.Item]] = {}  # a shared fixture -> the group of its tests
    units: list[list[pytest.Item]] = []
    for item in items:
        # sorted: every worker must order the collection alike (a set follows the hash seed)
        joined = {id(unit_of[f]): unit_of[f] for f in sorted(_shared_fixtures(item)) if f in unit_of}
        unit = [member for other in joined.values() for member in other] + [item]
        units = [u for u in units if id(u) not in joined] + [unit]
        for member in unit:
            unit_of.update(dict.fromkeys(_shared_fixtures(member), unit))
    return units


def _weight(unit: list[pytest.Item]) -> float:
    """A rough cost, in tests that boot a cluster of their own (20-30 s each). The further tests of
    a group probe what its fixture started: the security suite's 82 take ~25 s after its ~25 s
    set-up, the bad-input stack's 32 cases ~10 s."""
    return 1 + 0.05 * (len(unit) - 1)


def _long_form_only(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the tests marked ``long_form`` unless ``CHAOS_LONG`` asks for them (`make chaos`):
    deselected, not skipped, so a run of `make test` has no skipped test to explain."""
    if os.environ.get("CHAOS_LONG", "") not in ("", "0"):
        return
    left = [i for i in items if i.get_closest_marker("long_form")]
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = [i for i in items if not i.get_closest_marker("long_form")]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long tests (e2e, chaos, the example packages) first, dealt out evenly to the workers' shares.

    The worksteal scheduler gives each worker a contiguous share of the collection and lets an idle
    worker steal the end of a busy one's queue. In file order a run ended with one e2e test running
    alone for minutes; with each share starting with its part of the long tests and ending with
    short ones, what is left to steal at the end is short. Long tests that share a module- or
    session-scoped fixture go to one worker together (``_units``): dealt one by one, each worker
    started the security suite's deployment (~25 s) and the bad-input stack of its own.
    """
    _long_form_only(config, items)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    long = [
        i
        for i in items
        if i.get_closest_marker("e2e") or i.get_closest_marker("chaos") or "examples" in i.path.parts
    ]
    taken = {id(i) for i in long}
    short = [i for i in items if id(i) not in taken]
    dealt: list[list[pytest.Item]] = [[] for _ in range(workers)]
    load = [0.0] * workers
    for unit in sorted(_units(long), key=_weight, reverse=True):  # stable: file order among equals
        lightest = load.index(min(load))
        dealt[lightest] += unit
        load[lightest] += _weight(unit)
    ordered: list[pytest.Item] = []
    left = len(items)
    for worker in range(workers):
        share = left // (workers - worker)  # as the scheduler sizes each worker's first share
        mine = dealt[worker]
        fill = max(share - len(mine), 0)
        ordered += mine + short[:fill]
        short = short[fill:]
        left -= len(mine) + fill
    items[:] = ordered + short


@pytest.fixture(scope="session")
async def session_etcd(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedEtcd]:
    """A real etcd on 127.0.0.1 (free ports, mutual TLS), started once and stopped at session end."""
    state_dir: Path = tmp_path_factory.mktemp("etcd")
    etcd = EmbeddedEtcd(state_dir, unsafe_no_fsync=True)
    await etcd.start()
    try:
        yield etcd
    finally:
        await etcd.stop()


@pytest.fixture(scope="session")
def etcd_url(session_etcd: EmbeddedEtcd) -> str:
    """The session etcd's client URL (``https://``)."""
    return session_etcd.client_url


@pytest.fixture(scope="session")
def etcd_tls(session_etcd: EmbeddedEtcd) -> EtcdTLS:
    """The CA and client certificate the session etcd answers."""
    tls = session_etcd.client_tls
    assert tls is not None
    return tls


@pytest.fixture(scope="session")
def metad_etcd_args(etcd_url: str, etcd_tls: EtcdTLS) -> list[str]:
    """pitrix-metad's flags for the session etcd: its URL and etcdctl-style TLS files."""
    return [
        "--etcd", etcd_url,
        "--etcd-cacert", str(etcd_tls.ca_file),
        "--etcd-cert", str(etcd_tls.cert_file),
        "--etcd-key", str(etcd_tls.key_file),
    ]  # fmt: skip


@pytest.fixture(scope="session")
def etcd_env(etcd_tls: EtcdTLS) -> dict[str, str]:
    """pitrixd's environment settings (``PITRIX_ETCD__*_FILE``) for the session etcd's TLS."""
    return {
        "PITRIX_ETCD__CA_FILE": str(etcd_tls.ca_file),
        "PITRIX_ETCD__CERT_FILE": str(etcd_tls.cert_file),
        "PITRIX_ETCD__KEY_FILE": str(etcd_tls.key_file),
    }


@pytest.fixture(scope="session")
async def plain_etcd_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """Client URL of an etcd without TLS: the agent's etcdv3 backend speaks only plain gRPC."""
    etcd = EmbeddedEtcd(tmp_path_factory.mktemp("plain-etcd"), unsafe_no_fsync=True, tls=False)
    url = await etcd.start()
    try:
        yield url
    finally:
        await etcd.stop()


@pytest.fixture
async def store(etcd_url: str, etcd_tls: EtcdTLS) -> AsyncIterator[Store]:
    """A connected Store on the session etcd, under a prefix unique to this test."""
    s = await Store.connect([etcd_url], prefix=f"/test-{uuid.uuid4().hex}", tls=etcd_tls)
    try:
        yield s
    finally:
        # Keep the shared etcd small over a long session; a test that closed its store keeps its keys.
        with contextlib.suppress(StoreError):
            await s.delete_prefix("")
        await s.close()


@pytest.fixture
def sealer() -> Sealer:
    """The key a test's pitrixd seals its secrets with (a fresh one per test, held in memory)."""
    return Sealer.generate()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    """A fresh simulator per test: its own state dir and its own /24 of loopback."""
    simulator = Simulator(tmp_path / "sim", network=random_network())
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def provider(sim: Simulator) -> AsyncIterator[QingCloudProvider]:
    """The QingCloud provider on ``sim``."""
    client = QingCloudProvider.from_runtime(sim.runtime())
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def beacon() -> AsyncIterator[Beacon]:
    """A listener VM daemons report to, so tests wait on their reports instead of polling."""
    listener = await Beacon().start()
    try:
        yield listener
    finally:
        await listener.stop()
