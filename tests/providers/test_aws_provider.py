"""AwsProvider against a real moto server: what EC2 receives, idempotence, retries, credentials."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncssh
import pytest
import structlog
from fault_proxy import Fault, FaultProxy
from moto_helpers import MotoServer

from pitrix.providers.aws import AwsProvider
from pitrix.providers.aws.instance_types import choose
from pitrix.providers.aws.provider import client_token
from pitrix.providers.base import InstanceSpec, ProviderError


@pytest.fixture(scope="module")
async def image(moto: MotoServer) -> str:
    async with moto.session().client("ec2", endpoint_url=moto.endpoint) as ec2:
        images = (await ec2.describe_images(Owners=["amazon"]))["Images"]
    return str(sorted(i["ImageId"] for i in images)[0])


@pytest.fixture
async def ec2(moto: MotoServer) -> AsyncIterator[Any]:
    async with moto.session().client("ec2", endpoint_url=moto.endpoint) as client:
        yield client


@pytest.fixture
def cid() -> str:
    return "aw" + secrets.token_hex(4)


@pytest.fixture
async def provider(moto: MotoServer, cid: str) -> AsyncIterator[AwsProvider]:
    client = AwsProvider.from_runtime(moto.runtime())
    try:
        yield client
    finally:
        leftovers = await client.describe_instances(name_prefix=cid)
        await client.terminate_instances([i.instance_id for i in leftovers])
        await client.close()


@pytest.fixture
async def proxy(moto: MotoServer) -> AsyncIterator[FaultProxy]:
    server = await FaultProxy(moto.endpoint).start()
    try:
        yield server
    finally:
        await server.stop()


async def test_run_sends_token_userdata_key_subnet_group_and_tags(
    moto: MotoServer, ec2: Any, image: str, cid: str
) -> None:
    vpc = (await ec2.create_vpc(CidrBlock="10.42.0.0/16"))["Vpc"]["VpcId"]
    subnet = (await ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24"))["Subnet"]["SubnetId"]
    group = (await ec2.create_security_group(GroupName=cid, Description="pitrix", VpcId=vpc))["GroupId"]
    await ec2.create_key_pair(KeyName=cid)
    provider = AwsProvider.from_runtime(
        moto.runtime(subnet_id=subnet, security_group_ids=group, key_name=cid)
    )
    script = "#!/bin/sh\necho hello from pitrix\n"
    try:
        [created] = await provider.run_instances(
            [
                InstanceSpec(
                    name=f"{cid}-n1",
                    image=image,
                    cpu=2,
                    memory=3000,
                    userdata=script,
                    tags={"pitrix:cluster": cid, "pitrix:owner": "usr-1"},
                )
            ]
        )
        [running] = await provider.wait_running([created.instance_id], timeout=30)
        raw = running.raw
        assert raw["ClientToken"] == client_token(f"{cid}-n1")
        assert raw["InstanceType"] == "t3.medium" == choose(2, 3000)
        assert raw["KeyName"] == cid and raw["SubnetId"] == subnet
        assert [g["GroupId"] for g in raw["SecurityGroups"]] == [group]
        assert running.private_ip.startswith("10.42.1.")
        assert running.name == f"{cid}-n1"
        assert running.tags == {"pitrix:cluster": cid, "pitrix:owner": "usr-1"}
        attribute = await ec2.describe_instance_attribute(
            InstanceId=created.instance_id, Attribute="userData"
        )
        assert base64.b64decode(attribute["UserData"]["Value"]).decode() == script
        by_tag = await provider.describe_instances(tags={"pitrix:cluster": cid, "pitrix:owner": "usr-1"})
        assert [i.instance_id for i in by_tag] == [created.instance_id]
        assert await provider.describe_instances(tags={"pitrix:cluster": cid, "pitrix:owner": "other"}) == []
        await provider.terminate_instances([created.instance_id])
    finally:
        await provider.close()


async def test_client_token_is_deterministic_and_short() -> None:
    assert client_token("c-1-n1") == client_token("c-1-n1") != client_token("c-1-n2")
    assert client_token("c-1-n1", 1) != client_token("c-1-n1")
    assert len(client_token("x" * 500)) <= 64 and client_token("x" * 500).isascii()


async def test_create_repeated_returns_the_same_instance(provider: AwsProvider, image: str, cid: str) -> None:
    wanted = InstanceSpec(name=f"{cid}-n1", image=image)
    [first] = await provider.run_instances([wanted])
    [again] = await provider.run_instances([wanted])
    assert again.instance_id == first.instance_id
    assert len(await provider.describe_instances(name_prefix=cid)) == 1


async def test_throttling_is_retried_with_backoff(
    moto: MotoServer, proxy: FaultProxy, image: str, cid: str
) -> None:
    proxy.faults = [
        Fault("DescribeInstances", "RequestLimitExceeded", 503, times=2),
        Fault("RunInstances", "Throttling", 400, times=1),
        Fault("TerminateInstances", "InternalError", 500, times=1),
    ]
    provider = AwsProvider.from_runtime(moto.runtime(endpoint=proxy.url))
    try:
        with structlog.testing.capture_logs() as logs:
            [created] = await provider.run_instances([InstanceSpec(name=f"{cid}-n1", image=image)])
            await provider.terminate_instances([created.instance_id])
        retries = [(e["action"], e["code"]) for e in logs if e["event"] == "provider.retry"]
        assert retries == [
            ("describe_instances", "RequestLimitExceeded"),
            ("describe_instances", "RequestLimitExceeded"),
            ("run_instances", "Throttling"),
            ("terminate_instances", "InternalError"),
        ]
        assert proxy.seen["RunInstances"] == 2  # the retry carried the same client token
        assert await provider.describe_instances(name_prefix=cid) == []
    finally:
        await provider.close()


async def test_throttling_that_outlasts_the_attempts_is_a_retryable_error(
    moto: MotoServer, proxy: FaultProxy
) -> None:
    proxy.faults = [Fault("DescribeInstances", "RequestLimitExceeded", 503, times=10)]
    provider = AwsProvider.from_runtime(moto.runtime(endpoint=proxy.url, attempts=3))
    try:
        with pytest.raises(ProviderError) as error:
            await provider.describe_instances()
    finally:
        await provider.close()
    assert error.value.transient and error.value.code == "RequestLimitExceeded"
    assert error.value.exhausted  # retried here: the step executor will not retry it again
    assert proxy.seen["DescribeInstances"] == 3


async def test_a_token_of_a_terminated_instance_moves_to_the_next(
    moto: MotoServer, proxy: FaultProxy, image: str, cid: str
) -> None:
    proxy.faults = [Fault("RunInstances", "IdempotentInstanceTerminated", 400, times=1)]
    provider = AwsProvider.from_runtime(moto.runtime(endpoint=proxy.url))
    try:
        [created] = await provider.run_instances([InstanceSpec(name=f"{cid}-n1", image=image)])
        assert created.raw["ClientToken"] == client_token(f"{cid}-n1", 1)
        await provider.terminate_instances([created.instance_id])
    finally:
        await provider.close()


async def test_parameter_mismatch_names_the_instance(moto: MotoServer, proxy: FaultProxy, image: str) -> None:
    proxy.faults = [Fault("RunInstances", "IdempotentParameterMismatch", 400, times=1)]
    provider = AwsProvider.from_runtime(moto.runtime(endpoint=proxy.url))
    try:
        with pytest.raises(ProviderError, match="c-9-n1 was created before with other parameters"):
            await provider.run_instances([InstanceSpec(name="c-9-n1", image=image)])
    finally:
        await provider.close()


async def test_unreachable_endpoint_is_retryable() -> None:
    provider = AwsProvider.from_runtime(
        {
            "region": "us-east-1",
            "endpoint": "http://127.0.0.1:9",
            "access_key_id": "A",
            "secret_access_key": "S",
            "attempts": 2,
        }
    )
    try:
        with pytest.raises(ProviderError) as error:
            await provider.describe_instances()
    finally:
        await provider.close()
    assert error.value.transient and error.value.code == "connect"


async def test_credentials_are_never_logged(moto: MotoServer, image: str, cid: str) -> None:
    with structlog.testing.capture_logs() as logs:
        provider = AwsProvider.from_runtime(moto.runtime())
        try:
            [created] = await provider.run_instances([InstanceSpec(name=f"{cid}-n1", image=image)])
            await provider.terminate_instances([created.instance_id])
        finally:
            await provider.close()
        bad = AwsProvider.from_runtime(moto.runtime(secret_access_key="s3cr3t-" + "q" * 33))
        try:
            with pytest.raises(ProviderError) as error:
                await bad.describe_instances()
        finally:
            await bad.close()
    assert logs, "the provider logs its actions"
    text = repr(logs) + str(error.value)
    assert moto.secret_access_key not in text and "s3cr3t-" not in text


def test_from_runtime_errors_name_the_field() -> None:
    with pytest.raises(ProviderError, match="missing region"):
        AwsProvider.from_runtime({})
    with pytest.raises(ProviderError, match="go together"):
        AwsProvider.from_runtime({"region": "us-east-1", "access_key_id": "AKIA"})
    with pytest.raises(ProviderError, match="security_group_ids"):
        AwsProvider.from_runtime({"region": "us-east-1", "security_group_ids": [1]})
    with pytest.raises(ProviderError, match="timeout"):
        AwsProvider.from_runtime({"region": "us-east-1", "timeout": 0})
    with pytest.raises(ProviderError, match=r"instance_types\[0\].cpu"):
        AwsProvider.from_runtime(
            {"region": "us-east-1", "instance_types": [{"name": "x", "cpu": 0, "memory": 1}]}
        )
    with pytest.raises(ProviderError, match="endpoint must be a string"):
        AwsProvider.from_runtime({"region": "us-east-1", "endpoint": 5})


def test_an_availability_zone_gives_region_and_placement() -> None:
    provider = AwsProvider.from_runtime({"zone": "eu-west-1b", "subnet_id": "subnet-1"})
    assert provider.region == "eu-west-1" and provider.availability_zone == "eu-west-1b"
    params = provider._run_params(InstanceSpec(name="c-n1", image="ami-1", network="subnet-2"))
    assert params["Placement"] == {"AvailabilityZone": "eu-west-1b"} and params["SubnetId"] == "subnet-2"
    assert AwsProvider.from_runtime({"region": "ap-south-1"}).availability_zone == ""


def test_instance_type_choice() -> None:
    assert choose(1, 512) == "t3.nano"
    assert choose(1, 1024) == "t3.micro"
    assert choose(4, 1024) == "t3.xlarge"
    assert choose(16, 65536) == "m5.4xlarge"
    with pytest.raises(ProviderError, match="no instance type has 200 vCPUs") as error:
        choose(200, 1024)
    assert error.value.code == "flavor"
    assert choose(2, 2048, [("small", 1, 1024), ("big", 4, 8192)]) == "big"


async def test_import_key_pair_is_idempotent_by_name(provider: AwsProvider, ec2: Any, cid: str) -> None:
    public = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()
    try:
        assert await provider.import_key_pair(cid, public) == cid
        assert await provider.import_key_pair(cid, public) == cid
        pairs = (await ec2.describe_key_pairs(KeyNames=[cid]))["KeyPairs"]
        assert [p["KeyName"] for p in pairs] == [cid]
    finally:
        await ec2.delete_key_pair(KeyName=cid)


async def test_console_without_a_key_block_gives_no_host_key(
    provider: AwsProvider, image: str, cid: str
) -> None:
    """moto's console output is a fake text (base64, as EC2's): no key block, so no key to pin."""
    [created] = await provider.run_instances([InstanceSpec(name=f"{cid}-n1", image=image)])
    assert await provider.host_keys(created) == []
