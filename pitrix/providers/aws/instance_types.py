"""Choosing an EC2 instance type for a role's cpu and memory.

EC2 sells fixed shapes, so a role's (cpu, memory) becomes the first shape in a cheapest-first list
that holds both. A runtime may give its own list when the defaults do not exist in its region.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pitrix.providers.base import ProviderError

# (type, vCPUs, memory in MiB), cheapest first: general purpose burstable, then m5.
DEFAULT_TYPES: tuple[tuple[str, int, int], ...] = (
    ("t3.nano", 2, 512),
    ("t3.micro", 2, 1024),
    ("t3.small", 2, 2048),
    ("t3.medium", 2, 4096),
    ("t3.large", 2, 8192),
    ("t3.xlarge", 4, 16384),
    ("t3.2xlarge", 8, 32768),
    ("m5.4xlarge", 16, 65536),
    ("m5.8xlarge", 32, 131072),
    ("m5.12xlarge", 48, 196608),
    ("m5.16xlarge", 64, 262144),
    ("m5.24xlarge", 96, 393216),
)


def parse_types(value: Any) -> tuple[tuple[str, int, int], ...]:
    """A runtime's ``instance_types``: a list of ``{"name", "cpu", "memory"}``, cheapest first."""
    if not isinstance(value, list) or not value:
        raise ProviderError("aws runtime: instance_types must be a non-empty list", code="config")
    parsed = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ProviderError(f"aws runtime: instance_types[{i}] must be an object", code="config")
        name, cpu, memory = item.get("name"), item.get("cpu"), item.get("memory")
        if not isinstance(name, str) or not name:
            raise ProviderError(f"aws runtime: instance_types[{i}].name must be a string", code="config")
        for field, number in (("cpu", cpu), ("memory", memory)):
            if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
                raise ProviderError(
                    f"aws runtime: instance_types[{i}].{field} must be a positive integer", code="config"
                )
        parsed.append((name, int(cpu), int(memory)))  # type: ignore[arg-type]
    return tuple(parsed)


def choose(cpu: int, memory: int, types: Iterable[tuple[str, int, int]] = DEFAULT_TYPES) -> str:
    """The first type with at least ``cpu`` vCPUs and ``memory`` MiB."""
    if cpu < 1 or memory < 1:
        raise ProviderError(f"aws: cpu {cpu} and memory {memory} must be positive", code="flavor")
    for name, type_cpu, type_memory in types:
        if type_cpu >= cpu and type_memory >= memory:
            return name
    raise ProviderError(
        f"aws: no instance type has {cpu} vCPUs and {memory} MiB (largest known: "
        f"{max(types, key=lambda t: (t[1], t[2]), default=('none', 0, 0))[0]})",
        code="flavor",
    )
