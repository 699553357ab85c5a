"""The simulator's EC2 face as EC2 answers: SigV4 refusals, the wire checked against botocore's model,
ClientToken idempotency, and what the other faces see of an EC2-made instance.

Requests are made by aioboto3 where a client would make them, and by hand (signed with botocore's
SigV4Auth at a chosen time) where the point is a request no client sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

import aioboto3
import aiohttp
import pytest
from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from pitrix.providers.base import InstanceSpec
from pitrix.providers.registry import load_provider
from simulator.cloud import Simulator
from simulator.testing import admin, call


@pytest.fixture
async def ec2(sim: Simulator) -> AsyncIterator[Any]:
    runtime = sim.aws_runtime()
    session = aioboto3.Session(
        aws_access_key_id=runtime["access_key_id"],
        aws_secret_access_key=runtime["secret_access_key"],
        region_name=runtime["region"],
    )
    async with session.client("ec2", endpoint_url=runtime["endpoint"]) as client:
        yield client


async def raw(
    sim: Simulator,
    form: dict[str, str],
    *,
    secret: str | None = None,
    region: str | None = None,
    when: datetime | None = None,
    tamper: bool = False,
    sign: bool = True,
) -> tuple[int, str, str]:
    """One hand-made POST to the EC2 face: (HTTP status, error code or "", body)."""
    url = sim.url + "/ec2/"
    body = urlencode({"Version": "2016-11-15", **form}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    if sign:
        request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
        stamp = (when or datetime.now(UTC)).strftime(SIGV4_TIMESTAMP)
        request.context["timestamp"] = stamp
        request.headers["X-Amz-Date"] = stamp
        creds = Credentials(sim.credentials["access_key_id"], secret or sim.credentials["secret_access_key"])
        signer = SigV4Auth(creds, "ec2", region or sim.zone)
        signature = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request
        )
        signer._inject_signature_to_request(request, signature)
        headers = dict(request.headers.items())
    if tamper:
        body = body.replace(b"DescribeInstances", b"DescribeKeyPairs")
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as response:
        text = await response.text()
    code = ""
    if response.status != 200:
        code = ElementTree.fromstring(text).findtext("Errors/Error/Code") or ""
    return response.status, code, text


async def test_signatures_are_checked_as_ec2_checks_them(sim: Simulator) -> None:
    describe = {"Action": "DescribeInstances"}
    status, code, body = await raw(sim, describe)
    assert (status, code) == (200, "")
    assert "<DescribeInstancesResponse" in body and "http://ec2.amazonaws.com/doc/2016-11-15/" in body
    assert (await raw(sim, describe, sign=False))[:2] == (401, "AuthFailure")
    assert (await raw(sim, describe, secret="x" * 40))[:2] == (403, "SignatureDoesNotMatch")
    assert (await raw(sim, describe, region="us-east-1"))[:2] == (403, "SignatureDoesNotMatch")
    assert (await raw(sim, describe, tamper=True))[:2] == (403, "SignatureDoesNotMatch")
    old = datetime.now(UTC) - timedelta(minutes=20)
    assert (await raw(sim, describe, when=old))[:2] == (400, "RequestExpired")
    status, code, body = await raw(sim, {"Action": "DescribeInstances", "InstanceIdd.1": "i-x"})
    assert (status, code) == (400, "UnknownParameter") and "InstanceIdd.1" in body
    assert (await raw(sim, {"Action": "NoSuchThing"}))[:2] == (400, "InvalidAction")
    status, code, _ = await raw(sim, {"Action": "DescribeInstances", "Version": "2014-01-01"})
    assert (status, code) == (400, "NoSuchVersion")


async def test_client_token_makes_run_instances_idempotent(sim: Simulator, ec2: Any) -> None:
    params: dict[str, Any] = {
        "ImageId": "plain",
        "InstanceType": "t3.micro",
        "MinCount": 1,
        "MaxCount": 1,
        "UserData": "#!/bin/sh\necho booted > /tmp/booted\n",
        "TagSpecifications": [
            {
                "ResourceType": "instance",
                "Tags": [{"Key": "Name", "Value": "tok-1"}, {"Key": "k", "Value": "v"}],
            }
        ],
    }
    first = await ec2.run_instances(ClientToken="t-1", **params)
    again = await ec2.run_instances(ClientToken="t-1", **params)
    assert again["ReservationId"] == first["ReservationId"]
    [instance] = first["Instances"]
    assert [i["InstanceId"] for i in again["Instances"]] == [instance["InstanceId"]]
    assert [vm["name"] for vm in sim.ledger()] == ["tok-1"]  # made once
    with pytest.raises(ClientError) as mismatch:
        await ec2.run_instances(ClientToken="t-1", **{**params, "InstanceType": "t3.small"})
    assert mismatch.value.response["Error"]["Code"] == "IdempotentParameterMismatch"

    iid = instance["InstanceId"]
    # The other faces see the same VM: QingCloud by id, with EC2's Name as its name.
    qc = await call(sim, "DescribeInstances", {"instances.1": iid})
    assert qc["instance_set"][0]["instance_name"] == "tok-1"
    waiter_found = await ec2.describe_instances(Filters=[{"Name": "tag:k", "Values": ["v"]}])
    assert [i["InstanceId"] for r in waiter_found["Reservations"] for i in r["Instances"]] == [iid]
    await ec2.terminate_instances(InstanceIds=[iid])
    gone = ec2.get_waiter("instance_terminated")
    await gone.wait(InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    with pytest.raises(ClientError) as terminated:
        await ec2.run_instances(ClientToken="t-1", **params)
    assert terminated.value.response["Error"]["Code"] == "IdempotentInstanceTerminated"
    assert len(sim.ledger()) == 1


async def test_refusals_name_what_is_wrong(ec2: Any) -> None:
    base: dict[str, Any] = {"ImageId": "plain", "InstanceType": "t3.micro", "MinCount": 1, "MaxCount": 1}
    for changes, code in [
        ({"ImageId": "ami-0badbad0"}, "InvalidAMIID.NotFound"),
        ({"InstanceType": "z9.huge"}, "InvalidParameterValue"),
        ({"KeyName": "nobody"}, "InvalidKeyPair.NotFound"),
        ({"SubnetId": "net-1"}, "InvalidSubnetID.NotFound"),
        ({"Placement": {"AvailabilityZone": "us-east-1a"}}, "InvalidParameterValue"),
    ]:
        with pytest.raises(ClientError) as refused:
            await ec2.run_instances(**{**base, **changes})
        assert refused.value.response["Error"]["Code"] == code, changes
    with pytest.raises(ClientError) as unknown:
        await ec2.describe_instances(InstanceIds=["i-nevrwas0"])
    assert unknown.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"
    with pytest.raises(ClientError) as filter_error:
        await ec2.describe_instances(Filters=[{"Name": "colour", "Values": ["red"]}])
    assert filter_error.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as no_volume:
        await ec2.delete_volume(VolumeId="vol-nevrwas0")
    assert no_volume.value.response["Error"]["Code"] == "InvalidVolume.NotFound"


async def test_key_pairs_and_the_console(sim: Simulator, ec2: Any) -> None:
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    public = key.export_public_key("openssh")
    await ec2.import_key_pair(KeyName="ops", PublicKeyMaterial=public)
    with pytest.raises(ClientError) as duplicate:
        await ec2.import_key_pair(KeyName="ops", PublicKeyMaterial=public)
    assert duplicate.value.response["Error"]["Code"] == "InvalidKeyPair.Duplicate"
    assert [k["KeyName"] for k in (await ec2.describe_key_pairs(KeyNames=["ops"]))["KeyPairs"]] == ["ops"]
    run = await ec2.run_instances(
        ImageId="plain", InstanceType="t3.micro", MinCount=1, MaxCount=1, KeyName="ops"
    )
    iid = run["Instances"][0]["InstanceId"]
    waiter = ec2.get_waiter("instance_running")
    await waiter.wait(InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    [reservation] = (await ec2.describe_instances(InstanceIds=[iid]))["Reservations"]
    instance = reservation["Instances"][0]
    assert instance["KeyName"] == "ops" and instance["State"] == {"Code": 16, "Name": "running"}
    console = await ec2.get_console_output(InstanceId=iid)  # botocore decodes EC2's base64 itself
    published = sim.fleet.console(iid)["ssh_host_key"]
    assert published.split()[1] in console["Output"]
    # The key pair logs in: the VM's SSH accepts the imported key.
    async with asyncssh.connect(
        instance["PrivateIpAddress"],
        port=sim.fleet.ssh_port,
        username="root",
        client_keys=[key],
        known_hosts=None,
    ) as conn:
        assert (await conn.run("echo in", check=True)).stdout == "in\n"
    await ec2.terminate_instances(InstanceIds=[iid])
    assert (await ec2.delete_key_pair(KeyName="ops"))["Return"] is True
    assert (await ec2.describe_key_pairs())["KeyPairs"] == []


async def test_faults_come_back_in_ec2_words_and_the_provider_retries_them(sim: Simulator) -> None:
    """The fault injector speaks EC2 on this face: a throttle is RequestLimitExceeded (503), an
    error InternalError (500); the aws provider retries both (RunInstances too: its client token
    makes it safe to repeat), and the retried RunInstances makes one VM."""
    assert (await admin(sim, "POST", "/_sim/faults", {"action": "DescribeInstances", "times": 2}))[0] == 201
    assert (await raw(sim, {"Action": "DescribeInstances"}))[:2] == (503, "RequestLimitExceeded")
    body = {"action": "RunInstances", "ret_code": 5000, "times": 1}
    assert (await admin(sim, "POST", "/_sim/faults", body))[0] == 201
    provider = load_provider("aws", sim.aws_runtime())
    try:
        assert await provider.describe_instances() == []  # the second throttle, retried
        [made] = await provider.run_instances([InstanceSpec(name="flt-1", image="plain")])
        await provider.terminate_instances([made.instance_id])
    finally:
        await provider.close()
    assert [vm["name"] for vm in sim.ledger()] == ["flt-1"]
