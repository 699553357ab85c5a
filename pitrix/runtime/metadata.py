"""Metadata clusters: one etcd + pitrix-metad per owner × runtime, made on first use.

Created under an etcd lock so two clusters created together share one; its record in etcd is
written before the VM is asked for, and the VM has a deterministic name, so a crash between the
two never makes a second one. Removed when the owner's last cluster on the runtime is deleted.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import aiohttp

from pitrix.logs import get_logger
from pitrix.metad.client import MetadManagementClient
from pitrix.providers.base import InstanceSpec, Provider
from pitrix.runtime.booting import wait_booted
from pitrix.runtime.records import Cluster, MetadataCluster, metadata_key
from pitrix.runtime.userdata import metad_userdata
from pitrix.store import Store

METADATA_IMAGE = "pitrix-metadata"
# A crashed pitrixd holds this lock until its lease runs out: keep the wait after a restart short.
LOCK_TTL = 5


def metadata_name(owner: str, runtime: str) -> str:
    """The metadata VM's deterministic instance name."""
    safe = re.sub(r"[^a-z0-9-]", "-", f"{owner}-{runtime}".lower())
    return f"pitrix-meta-{safe}"


class MetadataClusters:
    def __init__(self, store: Store, provider_for: Callable[[str], Awaitable[Provider]]) -> None:
        self.store = store
        self.provider_for = provider_for
        self._clients: dict[str, MetadManagementClient] = {}

    async def get(self, owner: str, runtime: str) -> MetadataCluster | None:
        kv = await self.store.get(metadata_key(owner, runtime))
        return MetadataCluster.model_validate_json(kv.value) if kv else None

    async def ensure(self, owner: str, runtime: str, timeout: float = 120.0) -> MetadataCluster:
        """The owner's metadata cluster on ``runtime``, created and healthy."""
        current = await self.get(owner, runtime)
        if current and current.status == "ready" and await self._healthy(current):
            return current
        async with self.store.lock(f"metadata/{owner}/{runtime}", ttl=LOCK_TTL):
            return await self._ensure_locked(owner, runtime, timeout)

    async def _ensure_locked(self, owner: str, runtime: str, timeout: float) -> MetadataCluster:
        log = get_logger("pitrix.metadata", owner=owner, runtime=runtime)
        key = metadata_key(owner, runtime)
        record = await self.get(owner, runtime) or MetadataCluster(
            owner=owner, runtime=runtime, name=metadata_name(owner, runtime)
        )
        if record.status == "ready" and await self._healthy(record):
            return record
        await self.store.put(key, record.dump())
        provider = await self.provider_for(runtime)
        found = [
            i for i in await provider.describe_instances(name_prefix=record.name) if i.name == record.name
        ]
        if found:
            instance = found[0]
        else:
            log.info("creating metadata cluster", name=record.name)
            spec = InstanceSpec(
                name=record.name,
                image=METADATA_IMAGE,
                userdata=metad_userdata(),
                tags={"pitrix:owner": owner, "pitrix:role": "metadata"},
            )
            instance = (await provider.run_instances([spec]))[0]
        started = time.monotonic()
        (instance,) = await wait_booted(provider, [instance.instance_id], timeout)
        record = record.model_copy(update={"instance_id": instance.instance_id, "ip": instance.private_ip})
        await self.store.put(key, record.dump())
        await self._wait_healthy(record, timeout - (time.monotonic() - started))
        record = record.model_copy(update={"status": "ready"})
        await self.store.put(key, record.dump())
        log.info("metadata cluster ready", ip=record.ip, instance_id=record.instance_id)
        return record

    async def release(self, owner: str, runtime: str, remaining: list[Cluster]) -> bool:
        """Remove the metadata cluster if no cluster of ``owner`` on ``runtime`` is left."""
        if any(c.owner == owner and c.runtime == runtime and c.state != "deleted" for c in remaining):
            return False
        async with self.store.lock(f"metadata/{owner}/{runtime}", ttl=LOCK_TTL):
            record = await self.get(owner, runtime)
            if record is None:
                return False
            provider = await self.provider_for(runtime)
            found = [
                i for i in await provider.describe_instances(name_prefix=record.name) if i.name == record.name
            ]
            if found:
                await provider.terminate_instances([i.instance_id for i in found])
            client = self._clients.pop(record.manage_url, None)
            if client:
                await client.close()
            await self.store.delete(metadata_key(owner, runtime))
        get_logger("pitrix.metadata", owner=owner, runtime=runtime).info("metadata cluster removed")
        return True

    def client(self, record: MetadataCluster) -> MetadManagementClient:
        client = self._clients.get(record.manage_url)
        if client is None:
            client = self._clients[record.manage_url] = MetadManagementClient(record.manage_url)
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def _healthy(self, record: MetadataCluster) -> bool:
        try:
            await self.client(record).healthz()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        return True

    async def _wait_healthy(self, record: MetadataCluster, timeout: float) -> None:
        """metad starts a moment after the VM runs: wait for it, with a deadline and backoff."""
        deadline = time.monotonic() + max(timeout, 1.0)
        delay = 0.02
        while not await self._healthy(record):
            if time.monotonic() > deadline:
                raise TimeoutError(f"metadata service at {record.manage_url} did not become healthy")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
