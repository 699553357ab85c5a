"""A notify socket as systemd holds one: a unix datagram socket that learns each sender's pid."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

CREDENTIALS = struct.Struct("3i")  # pid, uid, gid of SCM_CREDENTIALS


class NotifyListener:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # as systemd: who sent it
        self.sock.bind(self.path)
        self.sock.setblocking(False)

    async def receive(self, timeout: float = 60) -> tuple[int, str]:
        """The next message and the pid of the process that sent it."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(self.sock.fileno(), ready.set)
        try:
            while True:
                try:
                    data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(CREDENTIALS.size))
                    break
                except BlockingIOError:
                    ready.clear()
                    await asyncio.wait_for(ready.wait(), timeout)
        finally:
            loop.remove_reader(self.sock.fileno())
        pid = -1
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = CREDENTIALS.unpack(payload[: CREDENTIALS.size])[0]
        return pid, data.decode()

    def close(self) -> None:
        self.sock.close()
