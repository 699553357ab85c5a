"""Tag actions on the wire (QingCloud shapes and errors) and the provider's key=value labels."""

from __future__ import annotations

from pitrix.providers.base import InstanceSpec
from pitrix.providers.qingcloud import QingCloudProvider
from simulator.cloud import Simulator
from simulator.testing import call, wait_job


async def run_one(sim: Simulator, name: str) -> str:
    reply = await call(
        sim,
        "RunInstances",
        {
            "image_id": "pitrix-metadata",
            "instance_name": name,
            "vxnets.1": "vxnet-0",
            "login_mode": "passwd",
            "login_passwd": "Px1xxxxxx",
        },
    )
    await wait_job(sim, reply["job_id"])
    return str(reply["instances"][0])


def pair(n: int, tag_id: str, resource: str, kind: str = "instance") -> dict[str, str]:
    prefix = f"resource_tag_pairs.{n}"
    return {f"{prefix}.tag_id": tag_id, f"{prefix}.resource_id": resource, f"{prefix}.resource_type": kind}


async def test_create_attach_describe_detach_delete(sim: Simulator) -> None:
    iid = await run_one(sim, "tagged")
    tag_id = (await call(sim, "CreateTag", {"tag_name": "team=web"}))["tag_id"]
    assert tag_id.startswith("tag-")
    assert (await call(sim, "AttachTags", pair(1, tag_id, iid)))["ret_code"] == 0
    [item] = (await call(sim, "DescribeInstances", {"instances.1": iid}))["instance_set"]
    assert [t["tag_name"] for t in item["tags"]] == ["team=web"]
    [tag] = (await call(sim, "DescribeTags", {"search_word": "team="}))["tag_set"]
    assert tag["tag_id"] == tag_id and tag["resource_count"] == 1
    assert (await call(sim, "DetachTags", pair(1, tag_id, iid)))["ret_code"] == 0
    [item] = (await call(sim, "DescribeInstances", {"instances.1": iid}))["instance_set"]
    assert item["tags"] == []
    assert (await call(sim, "DeleteTags", {"tags.1": tag_id}))["tags"] == [tag_id]
    assert (await call(sim, "DescribeTags", {}))["total_count"] == 0


async def test_errors_name_what_is_wrong(sim: Simulator) -> None:
    iid = await run_one(sim, "plain")
    assert (await call(sim, "CreateTag", {}))["ret_code"] == 1100
    missing = await call(sim, "AttachTags", pair(1, "tag-nothere", iid))
    assert missing["ret_code"] == 2100 and "tag-nothere" in missing["message"]
    tag_id = (await call(sim, "CreateTag", {"tag_name": "x=y"}))["tag_id"]
    wrong_kind = await call(sim, "AttachTags", pair(1, tag_id, iid, kind="volume"))
    assert wrong_kind["ret_code"] == 1100 and "resource_type" in wrong_kind["message"]
    assert (await call(sim, "AttachTags", {}))["ret_code"] == 1100
    assert (await call(sim, "DeleteTags", {}))["ret_code"] == 1100


async def test_provider_labels_instances_and_reads_them_back(sim: Simulator) -> None:
    provider = QingCloudProvider.from_runtime(sim.runtime())
    try:
        tags = {"pitrix:cluster": "cl-t1", "pitrix:owner": "usr-1"}
        specs = [InstanceSpec(name=f"cl-t1-web-{n}", image="pitrix-metadata", tags=tags) for n in (1, 2)]
        created = await provider.run_instances(specs)
        found = await provider.describe_instances(name_prefix="cl-t1-")
        assert sorted(i.name for i in found) == ["cl-t1-web-1", "cl-t1-web-2"]
        assert all(dict(i.tags) == tags for i in found)
        # each label is one QingCloud tag, created once however many instances carry it
        names = sorted(t["tag_name"] for t in (await call(sim, "DescribeTags", {}))["tag_set"])
        assert names == ["pitrix:cluster=cl-t1", "pitrix:owner=usr-1"]
        await provider.terminate_instances([i.instance_id for i in created])
        counts = {
            t["tag_name"]: t["resource_count"] for t in (await call(sim, "DescribeTags", {}))["tag_set"]
        }
        assert counts == {"pitrix:cluster=cl-t1": 0, "pitrix:owner=usr-1": 0}
    finally:
        await provider.close()
