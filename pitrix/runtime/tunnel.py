"""A metadata cluster reached through SSH: a local port forward to metad's management port.

For runtimes whose definition sets ``metad_via_ssh`` (pitrixd cannot route to the cloud's private
network, only to the VMs' SSH): the metadata VM is created with pitrixd's key pair, and pitrixd
talks to ``127.0.0.1:<local port>``, which asyncssh forwards over the metadata VM's SSH (host key
pinned from the cloud) to ``<metad ip>:9611``. With TLS the certificate chain is still checked
against that metadata cluster's own issuer; only the host name no longer matches (the connection is
made to the loopback end of the tunnel), so it is not compared.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pitrix.providers.base import Instance
from pitrix.ssh import HostKeys, connect

if TYPE_CHECKING:
    import asyncssh  # annotations only: pitrix.ssh loads it when a connection is made

MANAGE_PORT = 9611


@dataclass
class Tunnel:
    conn: asyncssh.SSHClientConnection
    listener: asyncssh.SSHListener

    @property
    def port(self) -> int:
        return int(self.listener.get_port())

    @property
    def alive(self) -> bool:
        return not self.conn.is_closed()

    async def close(self) -> None:
        self.listener.close()
        self.conn.close()
        with contextlib.suppress(Exception):
            await self.conn.wait_closed()


async def open_tunnel(
    instance: Instance,
    key: asyncssh.SSHKey,
    *,
    keys: HostKeys,
    timeout: float = 60.0,
) -> Tunnel:
    """A local port on 127.0.0.1 forwarded through ``instance``'s SSH to its management port.

    ``keys``: a provider's ``host_keys``, the host keys to pin.
    """
    conn = await connect(instance, key, timeout=timeout, keys=keys)
    try:
        listener = await conn.forward_local_port("127.0.0.1", 0, instance.private_ip, MANAGE_PORT)
    except BaseException:
        conn.close()
        raise
    return Tunnel(conn, listener)
