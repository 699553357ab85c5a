"""pitrixd's embedded etcd behind identity (finding 7 of issue 23): it holds every owner's SSH keys,
the CA keys and cloud credentials, so neither a local process without pitrixd's client certificate
nor another local user may read a key of it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd
from pitrix.store.etcd_pki import EtcdPKI
from tests.etcd_probes import (
    certless,
    needs_root,
    plain,
    probe_as_unprivileged_user,
    request,
    with_cert,
    world_traversable,
)

BIN = Path(sys.executable).parent
DEADLINE = 60.0


@pytest.fixture
async def pitrixd(tmp_path: Path) -> AsyncIterator[tuple[Path, str]]:
    """A pitrixd on its embedded etcd: (state dir, etcd client URL)."""
    state = world_traversable(tmp_path) / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITRIX_ETCD__")}
    process = await asyncio.create_subprocess_exec(
        str(BIN / "pitrixd"), "--state-dir", str(state), "--api-listen", "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=(tmp_path / "pitrixd.log").open("wb"), env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
        assert line, (tmp_path / "pitrixd.log").read_text()
        [url] = json.loads(line)["etcd"]
        yield state, url
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), DEADLINE)
        await EmbeddedEtcd(state).stop()  # an etcd left behind by a failure


async def test_pitrixd_s_etcd_answers_only_its_client_certificate(pitrixd: tuple[Path, str]) -> None:
    state, url = pitrixd
    assert url.startswith("https://127.0.0.1:")
    tls = EtcdPKI(state / "etcd-pki").client
    assert tls.ca_file and tls.cert_file and tls.key_file
    served = request(url, context=with_cert(tls.ca_file, tls.cert_file, tls.key_file))
    assert served.answered, served.detail
    assert not (outcome := request(plain(url))).answered, outcome.detail
    assert not (outcome := request(url, context=certless(tls.ca_file))).answered, outcome.detail
    async with Store([url], prefix="/pitrix", tls=tls) as store:
        assert await store.revision() > 0


async def test_another_local_user_reads_nothing_of_pitrixd_s_etcd(pitrixd: tuple[Path, str]) -> None:
    if (why := needs_root()) is not None:
        pytest.fail(why)
    state, url = pitrixd
    record = json.loads((state / "etcd.pid.json").read_text())
    seen = probe_as_unprivileged_user(state, url, record["peer_url"])
    assert seen["readable"] == [], seen
    answers = seen["answers"]
    assert isinstance(answers, dict) and len(answers) == 4
    assert not any(a["answered"] for a in answers.values()), answers
