"""pitrix-metad's etcd behind identity: ``--embedded-etcd`` serves mutual TLS only, with a CA born in
metad's state directory, so no instance (and no other local user) reads or writes the metadata;
an external etcd is reached with etcdctl's ``--etcd-cacert/--etcd-cert/--etcd-key``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pitrix.metad.client import MetadManagementClient
from pitrix.store import Store
from pitrix.store.etcd_pki import EtcdPKI
from pitrix.store.tls import EtcdTLS
from tests.etcd_probes import (
    certless,
    needs_root,
    plain,
    probe_as_unprivileged_user,
    request,
    with_cert,
    world_traversable,
)

from .conftest import Net

DEADLINE = 30.0


@dataclass
class Running:
    state: Path
    ready: dict[str, object]

    @property
    def client_url(self) -> str:
        return str(json.loads((self.state / "etcd.pid.json").read_text())["client_url"])

    @property
    def peer_url(self) -> str:
        return str(json.loads((self.state / "etcd.pid.json").read_text())["peer_url"])

    @property
    def tls(self) -> EtcdTLS:
        return EtcdPKI(self.state / "etcd-pki").client


@pytest.fixture
async def metad(net: Net, tmp_path: Path) -> AsyncIterator[Running]:
    state = world_traversable(tmp_path) / "state"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pitrix.metad.main",
        "--listen-ip", net.metad_ip, "--instance-port", "0", "--manage-port", "0",
        "--embedded-etcd", "--state-dir", str(state), "--etcd-client-port", "0", "--etcd-peer-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=(tmp_path / "metad.log").open("wb"),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
        assert line, (tmp_path / "metad.log").read_text()
        yield Running(state, json.loads(line))
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), DEADLINE)


async def test_the_metadata_etcd_answers_only_metad_s_certificate(metad: Running, net: Net) -> None:
    url = metad.client_url
    assert url.startswith(f"https://{net.metad_ip}:") and metad.ready["etcd"] == [url]
    async with MetadManagementClient(str(metad.ready["manage_url"])) as manage:
        await manage.put_data("/clusters/c1/env/password", "s3cret")
    tls = metad.tls
    assert tls.ca_file and tls.cert_file and tls.key_file
    served = request(url, context=with_cert(tls.ca_file, tls.cert_file, tls.key_file))
    assert served.answered, served.detail
    # What an instance on the VM's network tries: finding 1 of issue 23.
    assert not (outcome := request(plain(url))).answered, outcome.detail
    assert not (outcome := request(url, context=certless(None))).answered, outcome.detail
    assert not (outcome := request(plain(metad.peer_url), "/members", method="GET")).answered, outcome.detail
    outcome = request(metad.peer_url, "/members", context=certless(None), method="GET")
    assert not outcome.answered, outcome.detail
    # metad's own client reads and writes through the same etcd.
    async with Store([url], tls=tls) as store:
        kvs, _ = await store.get_prefix("/clusters/c1/")
        assert [kv.value for kv in kvs] == [b"s3cret"]


async def test_another_local_user_reads_nothing_of_the_metadata_etcd(metad: Running) -> None:
    if (why := needs_root()) is not None:
        pytest.fail(why)
    seen = probe_as_unprivileged_user(metad.state, metad.client_url, metad.peer_url)
    assert seen["readable"] == [], seen
    answers = seen["answers"]
    assert isinstance(answers, dict) and len(answers) == 4
    assert not any(a["answered"] for a in answers.values()), answers


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--etcd", "https://127.0.0.1:2379"], "give --etcd-cacert"),
        (["--etcd", "http://127.0.0.1:2379", "--etcd-cacert", "ca.pem"], "is plain http://"),
        (["--etcd", "https://127.0.0.1:2379", "--etcd-cacert", "ca", "--etcd-cert", "c"], "go together"),
        (["--embedded-etcd", "--state-dir", "s", "--etcd-cacert", "ca"], "are for an external etcd"),
    ],
)
def test_external_etcd_tls_flags_are_checked(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pitrix.metad.main import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--listen-ip", "127.0.0.1", *extra])
    assert message in capsys.readouterr().err


def test_external_etcd_tls_flags_parse() -> None:
    from pitrix.metad.main import parse_args

    base = ["--listen-ip", "127.0.0.1", "--etcd", "https://127.0.0.1:2379"]
    args = parse_args([*base, "--etcd-cacert", "ca.pem", "--etcd-cert", "c.crt", "--etcd-key", "c.key"])
    assert args.etcd_tls == EtcdTLS(Path("ca.pem"), Path("c.crt"), Path("c.key"))


async def test_unreadable_etcd_tls_files_are_a_clear_error(net: Net, tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pitrix.metad.main",
        "--listen-ip", net.metad_ip, "--instance-port", "0", "--manage-port", "0",
        "--etcd", "https://127.0.0.1:1", "--etcd-cacert", str(tmp_path / "missing-ca.pem"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 1 and out == b""
    assert b"ca_file" in err and b"missing-ca.pem" in err and b"Traceback" not in err
