"""Finding a provider for a runtime through the ``pitrix.providers`` entry-point group.

The built-in providers register the same way a third-party package would, so adding a cloud
never means touching pitrix.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from pitrix.providers.base import Provider, ProviderError

GROUP = "pitrix.providers"


def available() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load_provider(name: str, runtime: Mapping[str, Any]) -> Provider:
    """Construct provider ``name`` from a runtime definition."""
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        raise ProviderError(
            f"provider: unknown provider {name!r} (installed: {', '.join(available()) or 'none'})"
        )
    factory = matches[0].load()
    provider: Provider = factory.from_runtime(runtime)
    return provider
