"""A private etcd (it may be compacted) with a real pitrix-metad on it, for agent chaos tests.

``one_vm_world`` adds what both agent chaos tests stand on: cluster ``cb`` with one ``w`` host,
``i-0``, mapped at its own loopback address, and the way to start that VM's ``pitrix-agent``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from pitrix.metad.client import MetadManagementClient
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd


@contextlib.asynccontextmanager
async def metad_on_private_etcd(tmp: Path, ip: str) -> AsyncIterator[tuple[Store, procs.Child]]:
    etcd = EmbeddedEtcd(tmp / "etcd", unsafe_no_fsync=True)
    metad: procs.Child | None = None
    store: Store | None = None
    try:
        url = await etcd.start()
        store = await Store.connect([url], prefix="/chaos", tls=etcd.client_tls)
        argv = [procs.bin_path("pitrix-metad"), "--listen-ip", ip, "--instance-port", "0"]
        argv += ["--manage-port", "0", "--etcd", url, "--prefix", "/chaos", "--log-level", "warning"]
        tls = etcd.client_tls
        assert tls is not None
        argv += [
            "--etcd-cacert",
            str(tls.ca_file),
            "--etcd-cert",
            str(tls.cert_file),
            "--etcd-key",
            str(tls.key_file),
        ]
        metad = await procs.start("pitrix-metad", argv, tmp / "metad.log")
        yield store, metad
    finally:
        if metad is not None:
            await metad.stop()
        if store is not None:
            await store.close()
        await etcd.stop()


@dataclass
class OneVm:
    store: Store
    manage: MetadManagementClient
    instance_url: str  # what the VM's agent.toml names as its node
    ip: str  # the VM's own address, which metad knows it by

    async def start_agent(self, root: Path) -> procs.Child:
        env = {"PITRIX_VM_ROOT": str(root), "PITRIX_VM_IP": self.ip, "PITRIX_VM_ID": "i-0"}
        return await procs.start("pitrix-agent", [procs.bin_path("pitrix-agent")], root / "agent.log", env)


@contextlib.asynccontextmanager
async def one_vm_world(tmp: Path) -> AsyncIterator[OneVm]:
    octet = procs.private_net()
    async with metad_on_private_etcd(tmp, procs.host_ip(octet, 1000)) as (store, metad):
        manage = MetadManagementClient(metad.ready["manage_url"])
        ip = procs.host_ip(octet, 0)
        try:
            await manage.post_data(
                "/clusters/cb", {"cluster": {"cluster_id": "cb"}, "env": {"w": {"v": "0"}}}
            )
            await manage.put_data("/clusters/cb/hosts/w/i-0", {"ip": ip, "role": "w"})
            await manage.put_mapping("i-0", {"cluster_id": "cb", "role": "w", "ip": ip})
            yield OneVm(store, manage, metad.ready["instance_url"], ip)
        finally:
            await manage.close()
