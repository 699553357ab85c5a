"""Key pair actions on the wire (QingCloud shapes and errors) and through the provider."""

from __future__ import annotations

import asyncssh
import pytest

from pitrix.providers.base import InstanceSpec, ProviderError
from pitrix.providers.qingcloud import QingCloudProvider
from simulator.cloud import Simulator
from simulator.testing import call, wait_job


async def test_system_mode_generates_and_answers_the_private_key_once(sim: Simulator) -> None:
    reply = await call(sim, "CreateKeyPair", {"keypair_name": "ops", "mode": "system"})
    assert reply["action"] == "CreateKeyPairResponse" and reply["ret_code"] == 0
    kid = reply["keypair_id"]
    assert kid.startswith("kp-")
    private = asyncssh.import_private_key(reply["private_key"])
    assert private.get_algorithm() == "ssh-rsa"  # QingCloud's default encrypt_method
    described = await call(sim, "DescribeKeyPairs", {"keypairs.1": kid})
    [item] = described["keypair_set"]
    assert described["total_count"] == 1
    assert item["keypair_name"] == "ops" and item["encrypt_method"] == "ssh-rsa"
    assert item["instance_ids"] == [] and "private_key" not in item
    public = asyncssh.import_public_key(item["pub_key"])
    assert public.public_data == private.public_data


async def test_user_mode_imports_a_public_key(sim: Simulator) -> None:
    mine = asyncssh.generate_private_key("ssh-ed25519")
    line = mine.export_public_key("openssh").decode().strip()
    reply = await call(sim, "CreateKeyPair", {"keypair_name": "mine", "mode": "user", "public_key": line})
    assert reply["ret_code"] == 0 and "private_key" not in reply
    [item] = (await call(sim, "DescribeKeyPairs", {"keypairs.1": reply["keypair_id"]}))["keypair_set"]
    assert item["encrypt_method"] == "ssh-ed25519"
    assert asyncssh.import_public_key(item["pub_key"]).public_data == mine.public_data


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"mode": "user"}, "[public_key]"),
        ({"mode": "user", "public_key": "ssh-rsa not-base64"}, "[public_key]"),
        ({"mode": "system", "public_key": "ssh-ed25519 AAAA"}, "[public_key]"),
        ({"mode": "magic"}, "[mode]"),
        ({"encrypt_method": "ssh-rot13"}, "[encrypt_method]"),
    ],
)
async def test_create_refuses_bad_parameters_naming_them(
    sim: Simulator, params: dict[str, str], field: str
) -> None:
    reply = await call(sim, "CreateKeyPair", params)
    assert reply["ret_code"] == 1100 and field in reply["message"], reply


async def test_describe_filters_and_pages(sim: Simulator) -> None:
    ids = []
    for name in ("alpha", "beta", "alphabet"):
        reply = await call(sim, "CreateKeyPair", {"keypair_name": name, "encrypt_method": "ssh-ed25519"})
        ids.append(reply["keypair_id"])
    found = await call(sim, "DescribeKeyPairs", {"search_word": "alpha"})
    assert found["total_count"] == 2
    assert [k["keypair_name"] for k in found["keypair_set"]] == ["alphabet", "alpha"]  # newest first
    page = await call(sim, "DescribeKeyPairs", {"offset": 1, "limit": 1})
    assert page["total_count"] == 3 and [k["keypair_id"] for k in page["keypair_set"]] == [ids[1]]
    assert (await call(sim, "DescribeKeyPairs", {"encrypt_method": "ssh-rsa"}))["total_count"] == 0
    assert (await call(sim, "DescribeKeyPairs", {"limit": 101}))["ret_code"] == 1100


async def test_attach_detach_delete_and_their_errors(sim: Simulator) -> None:
    kid = (await call(sim, "CreateKeyPair", {"encrypt_method": "ssh-ed25519"}))["keypair_id"]
    run = await call(
        sim,
        "RunInstances",
        {
            "image_id": "pitrix-metadata",
            "vxnets.1": "vxnet-0",
            "login_mode": "passwd",
            "login_passwd": "Secret123",
        },
    )
    [iid] = run["instances"]
    assert await wait_job(sim, run["job_id"]) == "successful"

    unknown = await call(sim, "AttachKeyPairs", {"keypairs.1": "kp-nothere0", "instances.1": iid})
    assert unknown["ret_code"] == 2100 and "kp-nothere0" in unknown["message"]
    unknown = await call(sim, "AttachKeyPairs", {"keypairs.1": kid, "instances.1": "i-nothere0"})
    assert unknown["ret_code"] == 2100 and "i-nothere0" in unknown["message"]
    empty = await call(sim, "AttachKeyPairs", {"instances.1": iid})
    assert empty["ret_code"] == 1100 and "[keypairs]" in empty["message"]
    empty = await call(sim, "DetachKeyPairs", {"keypairs.1": kid})
    assert empty["ret_code"] == 1100 and "[instances]" in empty["message"]

    attach = await call(sim, "AttachKeyPairs", {"keypairs.1": kid, "instances.1": iid})
    assert (
        attach["action"] == "AttachKeyPairsResponse" and await wait_job(sim, attach["job_id"]) == "successful"
    )
    [pair] = (await call(sim, "DescribeKeyPairs", {"instance_id": iid}))["keypair_set"]
    assert pair["instance_ids"] == [iid]
    [vm] = (await call(sim, "DescribeInstances", {"instances.1": iid}))["instance_set"]
    assert vm["keypair_ids"] == [kid]

    in_use = await call(sim, "DeleteKeyPairs", {"keypairs.1": kid})
    assert in_use["ret_code"] == 2500 and kid in in_use["message"]
    detach = await call(sim, "DetachKeyPairs", {"keypairs.1": kid, "instances.1": iid})
    assert await wait_job(sim, detach["job_id"]) == "successful"
    deleted = await call(sim, "DeleteKeyPairs", {"keypairs.1": kid})
    assert deleted == {"action": "DeleteKeyPairsResponse", "ret_code": 0, "keypairs": [kid]}
    again = await call(sim, "DeleteKeyPairs", {"keypairs.1": kid})
    assert again["ret_code"] == 2100


async def test_run_with_an_unknown_keypair_is_refused(sim: Simulator) -> None:
    reply = await call(
        sim,
        "RunInstances",
        {
            "image_id": "pitrix-metadata",
            "vxnets.1": "vxnet-0",
            "login_mode": "keypair",
            "login_keypair": "kp-nothere0",
        },
    )
    assert reply["ret_code"] == 2100 and "kp-nothere0" in reply["message"]
    assert sim.ledger() == [] and sim.pool.in_use() == 0


async def test_terminating_an_instance_releases_its_keypairs(sim: Simulator) -> None:
    kid = (await call(sim, "CreateKeyPair", {"encrypt_method": "ssh-ed25519"}))["keypair_id"]
    run = await call(
        sim,
        "RunInstances",
        {"image_id": "pitrix-metadata", "vxnets.1": "vxnet-0", "login_mode": "keypair", "login_keypair": kid},
    )
    assert await wait_job(sim, run["job_id"]) == "successful"
    gone = await call(sim, "TerminateInstances", {"instances.1": run["instances"][0]})
    assert await wait_job(sim, gone["job_id"]) == "successful"
    [pair] = (await call(sim, "DescribeKeyPairs", {"keypairs.1": kid}))["keypair_set"]
    assert pair["instance_ids"] == []
    [vm] = (await call(sim, "DescribeInstances", {"instances.1": run["instances"][0]}))["instance_set"]
    assert vm["status"] == "terminated" and vm["keypair_ids"] == []
    late = await call(sim, "AttachKeyPairs", {"keypairs.1": kid, "instances.1": run["instances"][0]})
    assert late["ret_code"] == 2500 and "terminated" in late["message"]
    assert (await call(sim, "DeleteKeyPairs", {"keypairs.1": kid}))["ret_code"] == 0


async def test_provider_key_pair_methods(sim: Simulator, provider: QingCloudProvider) -> None:
    generated = await provider.create_key_pair("gen", encrypt_method="ssh-ed25519")
    assert generated.private_key and generated.name == "gen" and generated.encrypt_method == "ssh-ed25519"
    mine = asyncssh.generate_private_key("ssh-ed25519")
    imported = await provider.create_key_pair("gen-2", public_key=mine.export_public_key("openssh").decode())
    assert imported.private_key == ""
    assert [p.keypair_id for p in await provider.describe_key_pairs(name="gen")] == [generated.keypair_id]
    [instance] = await provider.run_instances(
        [InstanceSpec(name="kp-vm", image="pitrix-metadata", key_pair=generated.keypair_id)]
    )
    await provider.wait_running([instance.instance_id], timeout=10)
    await provider.attach_key_pairs([imported.keypair_id], [instance.instance_id])
    pairs = await provider.describe_key_pairs([generated.keypair_id, imported.keypair_id])
    assert {p.keypair_id: p.instance_ids for p in pairs} == {
        generated.keypair_id: (instance.instance_id,),
        imported.keypair_id: (instance.instance_id,),
    }
    with pytest.raises(ProviderError) as caught:
        await provider.delete_key_pairs([imported.keypair_id])
    assert caught.value.code == "2500" and not caught.value.transient
    await provider.detach_key_pairs([imported.keypair_id], [instance.instance_id])
    await provider.delete_key_pairs([imported.keypair_id, imported.keypair_id])
    await provider.delete_key_pairs([imported.keypair_id])  # already gone: nothing to do
    assert await provider.describe_key_pairs([imported.keypair_id]) == []
