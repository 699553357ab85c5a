"""One harness per provider for the contract suite: a real backend on loopback and what differs.

All three clouds are the in-process simulator: its QingCloud API, its Keystone/Nova face and its
EC2 face, over the same VMs. (moto stays for the AWS provider's own unit tests.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pitrix.providers.base import Instance, Provider
from simulator.cloud import Simulator


@dataclass
class Cloud:
    """A provider's backend: how to reach it, a bootable image, and the tags it can keep."""

    name: str
    runtime: dict[str, Any]
    image: str
    unknown_id: str  # a well-formed id no instance has
    bad_credentials: dict[str, Any] = field(default_factory=dict)
    keeps_tags: bool = True

    def bad_runtime(self) -> dict[str, Any]:
        return {**self.runtime, **self.bad_credentials}


def simulator_clouds(sim: Simulator) -> dict[str, Cloud]:
    credentials = sim.credentials
    openstack_runtime = {
        "provider": "openstack",
        "auth_url": f"{sim.url}/identity/v3",
        "username": credentials["access_key_id"],
        "password": credentials["secret_access_key"],
        "project_name": "pitrix",
        "ssh_port": 2222,
    }
    return {
        "qingcloud": Cloud(
            "qingcloud",
            sim.runtime(),
            "pitrix-metadata",
            "i-nevrwas0",
            {"secret_access_key": "x" * 40},
        ),
        "openstack": Cloud(
            "openstack", openstack_runtime, "pitrix-metadata", "i-nevrwas0", {"password": "wrong"}
        ),
        "aws": Cloud(
            "aws", sim.aws_runtime(), "pitrix-metadata", "i-nevrwas0", {"secret_access_key": "x" * 40}
        ),
    }


async def tagged(provider: Provider, tags: Mapping[str, str]) -> list[Instance]:
    """Leak detection through the base interface only: every live instance carrying ``tags``."""
    return [
        i for i in await provider.describe_instances() if all(i.tags.get(k) == v for k, v in tags.items())
    ]
