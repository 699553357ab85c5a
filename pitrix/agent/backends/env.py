"""The ``env`` backend: environment variables as keys, as confd maps them (``/a/b`` <-> ``A_B``)."""

from __future__ import annotations

import asyncio
import os

from pitrix.agent.config import AgentConfig


def env_name(key: str) -> str:
    """``/database/host`` -> ``DATABASE_HOST``."""
    return key.lstrip("/").replace("/", "_").upper()


def key_name(env: str) -> str:
    """``DATABASE_HOST`` -> ``/database/host``."""
    return "/" + env.replace("_", "/").lower()


class EnvBackend:
    """Values read from the process environment (or a given mapping, for tests and embedding)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self._environ = environ
        self._closed = asyncio.Event()
        self.revision = 0

    @classmethod
    def from_config(cls, config: AgentConfig) -> EnvBackend:
        return cls()

    async def get_values(self, keys: list[str]) -> dict[str, str]:
        environ = os.environ if self._environ is None else self._environ
        out: dict[str, str] = {}
        for key in keys:
            wanted = env_name(key)
            for name, value in environ.items():
                if name.startswith(wanted):
                    out[key_name(name)] = value
        return out

    async def watch(self, prefix: str, keys: list[str], last_index: int) -> int:
        """A process's environment never changes: wait until the backend is closed (as confd)."""
        await self._closed.wait()
        return last_index

    async def close(self) -> None:
        self._closed.set()
