"""Where the agent reads its key/value data: one interface, a backend per store.

A backend answers ``get_values`` with full keys (the caller's prefix included) mapped to string
leaves, and ``watch`` blocks until something under the prefix changed after ``last_index``,
returning the new index (lower than ``last_index`` when the store was reset or restored; the
caller then re-reads in full and resumes from there). ``revision`` is the index the last
``get_values`` answer reflects (0 when the store has no such notion), so a watch started from it
cannot miss a change that landed between the read and the watch.

Backends are imported lazily by name: the agent must not pay for aetcd/gRPC unless it uses etcd.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from pitrix.agent.config import AgentConfig


class Backend(Protocol):
    revision: int

    async def get_values(self, keys: list[str]) -> dict[str, str]: ...

    async def watch(self, prefix: str, keys: list[str], last_index: int) -> int: ...

    async def close(self) -> None: ...


_MODULES = {
    "metad": ("pitrix.agent.backends.metad", "MetadBackend"),
    "file": ("pitrix.agent.backends.file", "FileBackend"),
    "env": ("pitrix.agent.backends.env", "EnvBackend"),
    "etcdv3": ("pitrix.agent.backends.etcdv3", "EtcdBackend"),
    "redis": ("pitrix.agent.backends.redis", "RedisBackend"),
    "zookeeper": ("pitrix.agent.backends.zookeeper", "ZookeeperBackend"),
}


def open_backend(config: AgentConfig) -> Backend:
    """The backend ``config.backend`` names, built from the config."""
    module_name, class_name = _MODULES[config.backend]
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = cls.from_config(config)
    return backend


def under_keys(key: str, keys: list[str]) -> bool:
    """Whether ``key`` matches one of ``keys`` the way confd selects values.

    confd's file, env and etcd backends match keys as string prefixes (``/host`` also selects
    ``/hosts/...``); templates written against confd may rely on that, so the agent does the same.
    """
    return any(key.startswith(k) for k in keys)


def select(values: dict[str, str], keys: list[str]) -> dict[str, str]:
    """The entries of ``values`` that ``keys`` select."""
    return {k: v for k, v in values.items() if under_keys(k, keys)}


def minimal_keys(keys: list[str]) -> list[str]:
    """``keys`` without those inside another key's subtree, so a subtree is fetched once.

    Path-wise, not string-wise: a GET of ``/self/host`` does not return ``/self/hosts``.
    """
    out: list[str] = []
    for k in sorted({k.rstrip("/") or "/" for k in keys}, key=len):
        if not any(o == "/" or k == o or k.startswith(o + "/") for o in out):
            out.append(k)
    return sorted(out)
