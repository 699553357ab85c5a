"""The ``metadata_image`` runtime setting: the image metadata VMs boot (an AMI id on real AWS)."""

from __future__ import annotations

import pydantic
import pytest

from pitrix.providers.base import Provider, ProviderError
from pitrix.providers.qingcloud import QingCloudProvider
from pitrix.runtime.keys import metadata_key
from pitrix.runtime.metadata import MetadataClusters
from pitrix.runtime.metadata_plan import METADATA_IMAGE, MetadataBuild
from pitrix.runtime.records import MetadataCluster, Runtime
from pitrix.sealing import Sealer
from pitrix.store import Store


def test_the_setting_defaults_to_the_bundled_image_and_refuses_what_no_cloud_names() -> None:
    assert Runtime(name="rt", provider="aws").metadata_image == METADATA_IMAGE == "pitrix-metadata"
    for image in (
        "ami-0123456789abcdef0",
        "img-meta01",
        "ubuntu-22.04",
        "7b1c2d3e-0000-4000-8000-000000000000",
    ):
        assert Runtime(name="rt", provider="aws", metadata_image=image).metadata_image == image
    for bad in ("", "two words", "-leading-dash", "x" * 256, "ami-1\n"):
        with pytest.raises(pydantic.ValidationError, match="metadata_image"):
            Runtime(name="rt", provider="aws", metadata_image=bad)


async def test_metadata_vms_are_asked_for_with_the_runtime_s_image(
    store: Store, sealer: Sealer, provider: QingCloudProvider
) -> None:
    async def provider_for(runtime: str) -> Provider:
        return provider

    clusters = MetadataClusters(store, provider_for, sealer=sealer, tls=False)
    record = MetadataCluster(owner="usr-a", runtime="sim", name="pitrix-meta-usr-a-sim")
    await store.put(metadata_key("usr-a", "sim"), record.sealed(sealer))
    definition = Runtime(name="sim", provider="qingcloud", metadata_size=1, metadata_image="img-custom1")
    build = MetadataBuild(clusters, "usr-a", "sim", definition, 30.0)
    try:
        assert await build.plan_vm() == "VM pitrix-meta-usr-a-sim, image img-custom1"
        # The simulator has no such image: its refusal shows the cloud was asked for this one.
        with pytest.raises(ProviderError, match="img-custom1"):
            await build.run_instance()
        assert MetadataBuild(clusters, "usr-a", "sim", None, 30.0).image == METADATA_IMAGE
    finally:
        await clusters.close()
