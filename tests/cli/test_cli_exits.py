"""How pitrix ends when it is interrupted, its reader leaves, its address is wrong or pitrixd goes.

Each test runs the real ``pitrix`` executable as a child process against a real admin API and
checks its exit code and what it says on stderr: one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestServer
from cli_helpers import ADMIN, PITRIX, Run

from pitrix.cli.url import BadUrl, normalize_url

APP = {"name": "demo", "version": "1.0", "roles": [{"name": "web", "count": 1, "image": "demo"}]}
DEADLINE = 60.0


@pytest.fixture
async def silent_cloud() -> AsyncIterator[str]:
    """A cloud endpoint that accepts connections and never answers: a job on it keeps running."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in held:
            writer.close()


@pytest.fixture
async def runtimes(cli: Run, tmp_path: Path, silent_cloud: str) -> None:
    """Runtimes ``slow`` (its cloud never answers) and ``dead`` (refused), and alice's app."""
    spec = tmp_path / "app.yaml"
    spec.write_text(yaml.safe_dump(APP))
    code, _, err = await cli("apps", "register", "-f", str(spec))
    assert code == 0, err
    for name, endpoint in (("slow", silent_cloud), ("dead", "http://127.0.0.1:9")):
        code, _, err = await cli(
            "runtimes", "add", name, "--no-check", "--provider", "qingcloud", "--endpoint", endpoint,
            "--zone", "z1",
            "--set", "access_key_id=AK", "--set", "secret_access_key=SK", env={"PITRIX_TOKEN": ADMIN},
        )  # fmt: skip
        assert code == 0, err


def _env(tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PITRIX_")}
    environ["PITRIX_CONFIG"] = str(tmp_path / "cli.toml")
    return environ


async def _spawn(
    tmp_path: Path, *args: str, stdout: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        PITRIX, *args, stdout=stdout, stderr=asyncio.subprocess.PIPE, env=_env(tmp_path)
    )


async def _line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    raw = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
    assert raw, "pitrix closed its output early"
    return raw.decode()


async def _ended(process: asyncio.subprocess.Process) -> tuple[int, str]:
    """Its exit code and all of stderr, once it exits (within the deadline)."""
    _, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode is not None
    return process.returncode, err.decode()


def _one_line(err: str) -> str:
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.mark.usefixtures("runtimes")
async def test_ctrl_c_while_following_a_job_says_how_to_find_it_again(tmp_path: Path, cli: Run) -> None:
    process = await _spawn(tmp_path, "clusters", "create", "--runtime", "slow", "--app", "demo")
    first = await _line(process)  # "<cid>: create (job <job>)": the follower is running
    cid, job = first.split(":")[0], first.rsplit("job ", 1)[1].rstrip(")\n")
    process.send_signal(signal.SIGINT)
    code, err = await _ended(process)
    assert code == 130, err
    line = _one_line(err)
    assert line.startswith("pitrix: interrupted") and job in line and f"pitrix jobs wait {cid} {job}" in line
    # The job did go on: it is still there to be looked at, and followed again as the hint says.
    code, out, err = await cli("-o", "json", "clusters", "show", cid)
    assert code == 0 and json.loads(out)["job"]["id"] == job, err
    code, out, err = await cli("jobs", "wait", cid, job, "--timeout", "0.5")
    assert code == 7 and out.startswith(f"{cid}: create (job {job})"), (out, err)
    assert f"pitrix jobs wait {cid} {job}" in _one_line(err)


@pytest.mark.usefixtures("runtimes")
async def test_ctrl_c_ends_events_follow(tmp_path: Path, cli: Run) -> None:
    code, _, err = await cli("clusters", "create", "--runtime", "slow", "--app", "demo", "--no-wait")
    assert code == 0, err
    process = await _spawn(tmp_path, "clusters", "events", "--follow")
    await _line(process)  # the snapshot's line: following now
    process.send_signal(signal.SIGINT)
    code, err = await _ended(process)
    assert code == 130 and _one_line(err) == "pitrix: interrupted\n", err


@pytest.mark.usefixtures("runtimes")
async def test_a_job_outlasting_the_wait_ends_with_its_id(cli: Run) -> None:
    code, out, err = await cli(
        "clusters", "create", "--runtime", "slow", "--app", "demo", "--timeout", "0.5"
    )  # fmt: skip
    assert code == 7, (out, err)
    cid, job = out.split(":")[0], out.split("job ", 1)[1].split(")")[0]
    line = _one_line(err)
    assert "stopped waiting after 0.5s" in line and job in line and f"pitrix jobs wait {cid} {job}" in line
    code, _, err = await cli("clusters", "scale", cid, "web", "2", "--timeout", "0")
    assert code == 2 and "--timeout" in err and "Traceback" not in err


@pytest.mark.usefixtures("runtimes")
@pytest.mark.parametrize("output", ["table", "json"])
async def test_output_to_a_closed_pipe_exits_quietly(tmp_path: Path, cli: Run, output: str) -> None:
    """``pitrix clusters show X | head`` with head gone: exit 141 (as if SIGPIPE), nothing on stderr."""
    code, out, err = await cli(
        "-o", "json", "clusters", "create", "--runtime", "dead", "--app", "demo", "--no-wait"
    )
    assert code == 0, err
    args = ("-o", output, "clusters", "show", json.loads(out)["cluster_id"])
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before pitrix writes a byte
    try:
        process = await _spawn(tmp_path, *args, stdout=write_end)
    finally:
        os.close(write_end)
    code, err = await _ended(process)
    assert (code, err) == (141, "")


@pytest.mark.usefixtures("runtimes")
async def test_events_follow_into_head_exits_quietly(tmp_path: Path, cli: Run) -> None:
    """``pitrix clusters events -f | head -n 1``: once head has its line, the next event ends pitrix."""
    code, _, err = await cli("clusters", "create", "--runtime", "slow", "--app", "demo", "--no-wait")
    assert code == 0, err
    read_end, write_end = os.pipe()
    try:
        head = await asyncio.create_subprocess_exec(
            "head", "-n", "1", stdin=read_end, stdout=asyncio.subprocess.PIPE
        )
        follower = await _spawn(tmp_path, "clusters", "events", "--follow", stdout=write_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    out, _ = await asyncio.wait_for(head.communicate(), DEADLINE)
    assert b"cluster" in out
    code, _, err = await cli("clusters", "create", "--runtime", "dead", "--app", "demo", "--no-wait")
    assert code == 0, err  # its events are written to a pipe nobody reads
    code, err = await _ended(follower)
    assert (code, err) == (141, "")


async def test_url_without_scheme_is_http_and_a_bad_one_is_named(cli: Run, server: str) -> None:
    host_port = server.removeprefix("http://")
    code, out, err = await cli("--url", host_port, "clusters", "list")
    assert code == 0 and out.startswith("ID"), err
    for url in ("ftp://127.0.0.1:9610", "127.0.0.1:port", "http://", "unix:relative.sock"):
        code, _, err = await cli("--url", url, "clusters", "list")
        assert code == 2 and err.startswith("pitrix: --url: ") and "Traceback" not in err, (url, err)
    code, _, err = await cli("clusters", "list", env={"PITRIX_URL": "gopher://x:1"})
    assert code == 2 and err.startswith("pitrix: PITRIX_URL: "), err


@pytest.mark.usefixtures("runtimes")
async def test_events_follow_says_when_pitrixd_goes_away(
    tmp_path: Path, cli: Run, api_server: TestServer
) -> None:
    code, _, err = await cli("clusters", "create", "--runtime", "slow", "--app", "demo", "--no-wait")
    assert code == 0, err
    process = await _spawn(tmp_path, "clusters", "events", "--follow")
    await _line(process)  # subscribed
    await api_server.close()  # pitrixd stops: it ends every event stream
    code, err = await _ended(process)
    assert code == 3, err
    assert "lost the connection to pitrixd" in _one_line(err)


class Proxy:
    """A TCP relay to the API that can drop every connection at once, as a killed pitrixd's kernel does
    (a graceful stop would first wait out the CLI's 30 s long poll)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        with contextlib.suppress(OSError):
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def kill(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()


@pytest.mark.usefixtures("runtimes")
async def test_a_wait_says_when_pitrixd_goes_away(tmp_path: Path, api_server: TestServer) -> None:
    assert api_server.port is not None
    proxy = Proxy(api_server.port)
    url = f"http://127.0.0.1:{await proxy.start()}"
    process = await _spawn(tmp_path, "--url", url, "clusters", "create", "--runtime", "slow", "--app", "demo")
    first = await _line(process)  # following the job
    job = first.rsplit("job ", 1)[1].rstrip(")\n")
    proxy.kill()
    code, err = await _ended(process)
    assert code == 3, err
    line = _one_line(err)
    assert "lost the connection to pitrixd" in line and job in line, line


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("127.0.0.1:9610", "http://127.0.0.1:9610"),
        ("[::1]:9610", "http://[::1]:9610"),
        ("https://pitrix.example:443/", "https://pitrix.example:443"),
        ("unix:/run/pitrix/api.sock", "unix:/run/pitrix/api.sock"),
    ],
)
def test_url_forms(given: str, used: str) -> None:
    assert normalize_url(given) == used


@pytest.mark.parametrize("given", ["", "ftp://h:1", "h:99999", "http://h:1/?x=1", "unix:api.sock"])
def test_bad_urls(given: str) -> None:
    with pytest.raises(BadUrl):
        normalize_url(given)
