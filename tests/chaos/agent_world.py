"""A private etcd (it may be compacted) with a real pitrix-metad on it, for agent chaos tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from bench import procs
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd


@contextlib.asynccontextmanager
async def metad_on_private_etcd(tmp: Path, ip: str) -> AsyncIterator[tuple[Store, procs.Child]]:
    etcd = EmbeddedEtcd(tmp / "etcd", unsafe_no_fsync=True)
    metad: procs.Child | None = None
    store: Store | None = None
    try:
        url = await etcd.start()
        store = await Store.connect([url], prefix="/chaos")
        argv = [procs.bin_path("pitrix-metad"), "--listen-ip", ip, "--instance-port", "0"]
        argv += ["--manage-port", "0", "--etcd", url, "--prefix", "/chaos", "--log-level", "warning"]
        metad = await procs.start("pitrix-metad", argv, tmp / "metad.log")
        yield store, metad
    finally:
        if metad is not None:
            await metad.stop()
        if store is not None:
            await store.close()
        await etcd.stop()
