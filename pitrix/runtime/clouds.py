"""One provider per runtime, made from its definition once and reused by every job on it."""

from __future__ import annotations

from pitrix.providers.base import Provider
from pitrix.providers.registry import load_provider
from pitrix.runtime.records import Runtime
from pitrix.runtime.repository import Repository


class Clouds:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._providers: dict[str, Provider] = {}

    async def provider(self, runtime: str) -> Provider:
        provider = self._providers.get(runtime)
        if provider is None:
            definition = await self.repo.runtime(runtime)
            provider = self._providers[runtime] = load_provider(definition.provider, definition.model_dump())
        return provider

    async def replace(self, runtime: Runtime, provider: Provider) -> None:
        """A runtime's definition changed: its jobs from now on use ``provider``."""
        old = self._providers.pop(runtime.name, None)
        if old is not None:
            await old.close()
        self._providers[runtime.name] = provider

    async def forget(self, runtime: str) -> None:
        """A runtime was deleted: close its provider."""
        old = self._providers.pop(runtime, None)
        if old is not None:
            await old.close()

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()
        self._providers.clear()
