"""QingCloud's userdata kinds and vxnets on the simulator's face: what each kind leaves in the VM,
what boot runs, and what RunInstances refuses (with QingCloud's codes)."""

from __future__ import annotations

import asyncio
import base64
import io
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from simulator.cloud import Simulator
from simulator.testing import admin, call, wait_job
from simulator.userdata import ATTACHMENT_LIMIT, VALUE_LIMIT

BASE = {
    "image_id": "pitrix-metadata",
    "vxnets.1": "vxnet-0",
    "login_mode": "passwd",
    "login_passwd": "Secret123",
}
SCRIPT = b'#!/bin/sh\necho "ran $0" > "$PITRIX_VM_ROOT/ran"\n'


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tgz(files: dict[str, tuple[bytes, int]], *, link: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, (content, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), mode
            archive.addfile(info, io.BytesIO(content))
        if link:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
            archive.addfile(info)
    return buffer.getvalue()


async def run(sim: Simulator, **extra: Any) -> tuple[str, Path]:
    if "userdata_type" in extra:
        extra.setdefault("need_userdata", 1)
    reply = await call(sim, "RunInstances", {**BASE, **extra})
    assert reply["ret_code"] == 0, reply
    assert await wait_job(sim, reply["job_id"]) == "successful"
    [iid] = reply["instances"]
    return iid, sim.state_dir / "vms" / iid / "root"


async def finished(sim: Simulator, iid: str) -> int | None:
    vm = sim.fleet.vm(iid)
    assert vm is not None
    return await asyncio.wait_for(vm.userdata_finished(), 10)


async def test_exec_goes_to_rc_local_and_runs_at_boot(sim: Simulator) -> None:
    iid, root = await run(sim, need_userdata=1, userdata_type="exec", userdata_value=b64(SCRIPT))
    assert await finished(sim, iid) == 0
    assert (root / "ran").read_text() == f"ran {root}/etc/rc.local\n"
    assert stat.S_IMODE((root / "etc/rc.local").stat().st_mode) == 0o700
    assert not (root / "etc/qingcloud/userdata/userdata.string").exists()


async def test_exec_to_a_chosen_file(sim: Simulator) -> None:
    iid, root = await run(
        sim, userdata_type="exec", userdata_value=b64(SCRIPT), userdata_file="/opt/boot/start.sh"
    )
    assert await finished(sim, iid) == 0
    assert (root / "ran").read_text() == f"ran {root}/opt/boot/start.sh\n"
    assert not (root / "etc/rc.local").exists()


async def test_plain_is_data_written_and_never_run(sim: Simulator) -> None:
    iid, root = await run(sim, userdata_type="plain", userdata_value=b64(SCRIPT), userdata_path="/srv/ud")
    assert await finished(sim, iid) is None  # nothing was started for it
    assert (root / "srv/ud/userdata.string").read_bytes() == SCRIPT
    assert stat.S_IMODE((root / "srv/ud").stat().st_mode) == 0o700
    assert not (root / "ran").exists() and not (root / "etc/rc.local").exists()
    # A userdata_path QingCloud would not take falls back to the default directory.
    _, other = await run(sim, userdata_type="plain", userdata_value=b64(b"x"), userdata_path="../up")
    assert (other / "etc/qingcloud/userdata/userdata.string").read_bytes() == b"x"


@pytest.mark.parametrize("form", ["tgz", "zip"])
async def test_tar_is_unpacked_from_the_root_and_its_rc_local_runs(sim: Simulator, form: str) -> None:
    files = {"etc/rc.local": (SCRIPT, 0o755), "opt/app/conf.txt": (b"conf\n", 0o644)}
    if form == "tgz":
        archive = tgz(files)
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as packed:
            for name, (content, _) in files.items():
                packed.writestr(name, content)
        archive = buffer.getvalue()
    upload = await call(sim, "UploadUserDataAttachment", {"attachment_content": b64(archive)})
    assert upload["ret_code"] == 0 and upload["attachment_id"].startswith("uda-"), upload
    iid, root = await run(sim, need_userdata=1, userdata_type="tar", userdata_value=upload["attachment_id"])
    assert await finished(sim, iid) == 0
    assert (root / "opt/app/conf.txt").read_bytes() == b"conf\n"
    assert (root / "ran").read_text() == f"ran {root}/etc/rc.local\n"


async def test_tar_without_rc_local_runs_nothing(sim: Simulator) -> None:
    upload = await call(
        sim, "UploadUserDataAttachment", {"attachment_content": b64(tgz({"a/b": (b"1", 0o644)}))}
    )
    iid, root = await run(sim, userdata_type="tar", userdata_value=upload["attachment_id"])
    assert await finished(sim, iid) is None
    assert (root / "a/b").read_bytes() == b"1"


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("", "[attachment_content] should not be empty"),
        ("!!", "[attachment_content] should be base64"),
        (b64(b"just text, no archive"), "not a usable archive"),
        (b64(tgz({"../escape": (b"x", 0o644)})), "leaves the root"),
        (b64(tgz({}, link="etc/passwd")), "is a link"),
        (b64(b"\0" * (ATTACHMENT_LIMIT + 1)), "larger than"),
    ],
)
async def test_bad_attachments_are_refused(sim: Simulator, content: str, text: str) -> None:
    reply = await call(sim, "UploadUserDataAttachment", {"attachment_content": content})
    assert reply["ret_code"] == 1100 and text in reply["message"], reply


@pytest.mark.parametrize(
    ("extra", "ret_code", "text"),
    [
        ({"userdata_type": "shell", "userdata_value": b64(SCRIPT)}, 1100, "[userdata_type] should be one of"),
        ({"userdata_value": b64(SCRIPT)}, 1100, "[userdata_type] should not be empty"),
        ({"need_userdata": 1}, 1100, "[userdata_type] should not be empty"),
        ({"need_userdata": 2, "userdata_type": "exec", "userdata_value": "eA=="}, 1100, "[need_userdata]"),
        (
            {"need_userdata": 0, "userdata_type": "exec", "userdata_value": "eA=="},
            1100,
            "[need_userdata] should be 1",
        ),
        ({"need_userdata": "", "userdata_type": "exec", "userdata_value": "eA=="}, 1100, "got [0]"),
        ({"userdata_type": "exec"}, 1100, "[userdata_value] should not be empty"),
        ({"userdata_type": "exec", "userdata_value": "not base64!"}, 1100, "base64"),
        ({"userdata_type": "exec", "userdata_value": "A" * (VALUE_LIMIT + 4)}, 1100, "longer than 4096"),
        (
            {"userdata_type": "exec", "userdata_value": "eA==", "userdata_file": "rel/x"},
            1100,
            "[userdata_file]",
        ),
        ({"userdata_type": "tar", "userdata_value": "uda-nothere"}, 2100, "[uda-nothere] not found"),
        ({"vxnets.1": ""}, 1100, "[vxnets.1] should not be empty"),
        ({"vxnets.1": "vxnet-nothere"}, 2100, "[vxnet-nothere] not found"),
        ({"vxnets.1": "vxnet-0|192.168.1.2"}, 1100, "fixed private address"),
        ({"vxnets.2": "vxnet-0"}, 1100, "one is supported"),
    ],
)
async def test_run_refusals_name_the_parameter(
    sim: Simulator, extra: dict[str, Any], ret_code: int, text: str
) -> None:
    params = {**BASE, **extra}
    if "userdata_type" in params:
        params.setdefault("need_userdata", 1)
    if params["vxnets.1"] == "":
        del params["vxnets.1"]
    reply = await call(sim, "RunInstances", params)
    assert set(reply) == {"ret_code", "message"} and reply["ret_code"] == ret_code, reply
    assert text in reply["message"], reply
    assert sim.ledger() == []


async def test_vxnets_made_through_the_admin_api_are_accepted(sim: Simulator) -> None:
    status, made = await admin(sim, "POST", "/_sim/vxnets", {"vxnet_id": "vxnet-app1", "name": "apps"})
    assert status == 201 and made == {"vxnet_id": "vxnet-app1", "vxnet_name": "apps", "vxnet_type": 1}
    for bad, field in (
        ({"vxnet_id": "net 1"}, "vxnet_id"),
        ({}, "vxnet_id"),
        ({"vxnet_id": "vxnet-a", "name": 3}, "name"),
    ):
        status, answer = await admin(sim, "POST", "/_sim/vxnets", bad)
        assert status == 400 and answer["error"].startswith(field), answer
    listed = await call(sim, "DescribeVxNets", {})
    assert [v["vxnet_id"] for v in listed["vxnet_set"]] == ["vxnet-0", "vxnet-app1"] and listed[
        "total_count"
    ] == 2
    one = await call(sim, "DescribeVxNets", {"vxnets.1": "vxnet-app1"})
    assert [v["vxnet_name"] for v in one["vxnet_set"]] == ["apps"]
    iid, _ = await run(sim, **{"vxnets.1": "vxnet-app1"})
    [item] = (await call(sim, "DescribeInstances", {"instances.1": iid}))["instance_set"]
    assert item["vxnets"][0]["vxnet_id"] == "vxnet-app1"


async def test_the_instance_quota_refuses_with_2600_and_counts_live_instances(sim: Simulator) -> None:
    status, answer = await admin(sim, "PUT", "/_sim/quotas", {"instance": -1})
    assert status == 400 and answer["error"].startswith("instance:"), answer
    status, answer = await admin(sim, "PUT", "/_sim/quotas", {"instance": 1})
    assert (status, answer) == (200, {"instance": 1})
    iid, _ = await run(sim)
    reply = await call(sim, "RunInstances", BASE)
    assert (
        reply["ret_code"] == 2600 and "QuotaExceeded" in reply["message"] and "[1] in use" in reply["message"]
    )
    assert (
        await wait_job(sim, (await call(sim, "TerminateInstances", {"instances.1": iid}))["job_id"])
        == "successful"
    )
    await run(sim)  # a terminated instance no longer counts
