"""A provider from a separate package: built, pip-installed into this venv, found by entry point.

Nothing in pitrix names the package; ``load_provider`` finds it through the ``pitrix.providers``
group as it finds the built-in ones. The package is uninstalled afterwards, whatever happens.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import secrets
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pitrix.providers.base import InstanceSpec, Provider, ProviderError
from pitrix.providers.registry import available, load_provider

PLUGIN = '''
"""An in-memory cloud: enough of the provider interface to prove a plugin is loaded and called."""

import itertools


class MemoryCloud:
    name = "{name}"

    def __init__(self, region):
        self.region = region
        self.instances = {{}}
        self._ids = itertools.count(1)

    @classmethod
    def from_runtime(cls, runtime):
        return cls(runtime["region"])

    async def run_instances(self, specs):
        from pitrix.providers.base import Instance

        made = []
        for spec in specs:
            iid = f"mem-{{next(self._ids)}}"
            self.instances[iid] = Instance(iid, spec.name, "running", "10.0.0.1", tags=dict(spec.tags))
            made.append(self.instances[iid])
        return made

    async def describe_instances(self, *, instance_ids=None, name_prefix=None):
        return [
            i for i in self.instances.values()
            if (instance_ids is None or i.instance_id in instance_ids)
            and (name_prefix is None or i.name.startswith(name_prefix))
        ]

    async def terminate_instances(self, instance_ids):
        for iid in instance_ids:
            self.instances.pop(iid, None)

    async def start_instances(self, instance_ids):
        pass

    async def stop_instances(self, instance_ids):
        pass

    async def wait_running(self, instance_ids, timeout):
        return [self.instances[iid] for iid in instance_ids]

    async def host_keys(self, instance):
        return []  # no SSH here: the runtime refuses to connect, as it must without a pinned key

    async def import_key_pair(self, name, public_key):
        self.key_pairs = dict(getattr(self, "key_pairs", {{}}), **{{name: public_key}})
        return name

    async def create_volume(self, spec):
        raise NotImplementedError("memcloud has no volumes")  # apps with volumes need another cloud

    async def describe_volumes(self, *, volume_ids=None, name_prefix=None):
        return []

    async def attach_volume(self, volume_id, instance_id):
        raise NotImplementedError("memcloud has no volumes")

    async def detach_volume(self, volume_id):
        pass

    async def delete_volumes(self, volume_ids):
        pass

    async def create_snapshot(self, volume_id, name, tags):
        raise NotImplementedError("memcloud has no volumes to snapshot")

    async def describe_snapshots(self, *, snapshot_ids=None, name_prefix=None):
        return []

    async def delete_snapshots(self, snapshot_ids):
        pass

    online_resize = False
    online_volume_growth = False

    async def resize_instance(self, instance_id, *, cpu, memory, instance_type=""):
        raise NotImplementedError("memcloud instances have no size")

    async def grow_volume(self, volume_id, size):
        raise NotImplementedError("memcloud has no volumes")

    async def close(self):
        pass
'''


async def pip(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pip",
        "--disable-pip-version-check",
        "--no-input",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 180)
    if process.returncode != 0:
        raise AssertionError(f"pip {' '.join(args)} failed:\n{out.decode()}")
    return out.decode()


@pytest.fixture
async def plugin(tmp_path: Path) -> AsyncIterator[str]:
    """Install a one-module package registering provider ``memcloud-<hex>``; yields that name."""
    suffix = secrets.token_hex(4)
    name = f"memcloud-{suffix}"
    module = f"pitrix_memcloud_{suffix}"
    project = tmp_path / "plugin"
    (project / module).mkdir(parents=True)
    (project / module / "__init__.py").write_text(PLUGIN.format(name=name))
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=69"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{module.replace("_", "-")}"
            version = "0.0.1"

            [project.entry-points."pitrix.providers"]
            {json.dumps(name)} = "{module}:MemoryCloud"

            [tool.setuptools]
            packages = ["{module}"]
            """
        )
    )
    await pip("install", "--no-deps", "--no-build-isolation", "--quiet", str(project))
    importlib.invalidate_caches()
    try:
        yield name
    finally:
        await pip("uninstall", "--yes", "--quiet", module.replace("_", "-"))
        importlib.invalidate_caches()


async def test_an_installed_package_is_a_provider(plugin: str) -> None:
    assert plugin in available()
    assert {"qingcloud", "aws", "openstack"} <= set(available())
    provider = load_provider(plugin, {"region": "here"})
    assert isinstance(provider, Provider) and provider.name == plugin
    [made] = await provider.run_instances(
        [InstanceSpec(name="c-1-n1", image="any", tags={"pitrix:cluster": "c-1"})]
    )
    assert await provider.describe_instances(name_prefix="c-1-") == [made]
    await provider.terminate_instances([made.instance_id])
    assert await provider.describe_instances() == []
    await provider.close()

    # A fresh interpreter finds it the same way, with no pitrix module naming it.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from pitrix.providers.registry import load_provider; "
        "p = load_provider(sys.argv[1], {'region': 'r'}); print(type(p).__module__, p.region)",
        plugin,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert out.decode().split() == [f"pitrix_memcloud_{plugin.split('-')[1]}", "r"]


async def test_an_unknown_provider_names_the_installed_ones() -> None:
    with pytest.raises(
        ProviderError, match=r"unknown provider 'nocloud' \(installed: .*aws.*openstack.*qingcloud"
    ):
        load_provider("nocloud", {})
