"""A role's size now: the spec's cpu, memory, instance type and volume size, as a resize left them.

A resize records what it gave a role's nodes in ``Cluster.resources``; every step that makes a
node (create, scale-out, recover) asks here, so a node made after a resize matches the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from pitrix.runtime.records import Cluster


@dataclass(frozen=True, slots=True)
class Size:
    cpu: int
    memory: int  # MiB
    instance_type: str
    volume_size: int | None  # GiB; None: the role has no volume


def role_size(cluster: Cluster, role: str) -> Size:
    spec = cluster.app.role(role)
    override = cluster.resources.get(role)
    volume = spec.volume.size if spec.volume is not None else None
    if override is None:
        return Size(spec.cpu, spec.memory, spec.instance_type, volume)
    return Size(
        cpu=override.cpu if override.cpu is not None else spec.cpu,
        memory=override.memory if override.memory is not None else spec.memory,
        instance_type=override.instance_type if override.instance_type is not None else spec.instance_type,
        volume_size=override.volume_size if volume is not None and override.volume_size else volume,
    )
