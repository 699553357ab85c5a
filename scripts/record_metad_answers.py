"""Record what AppCenter's metad (github.com/yunify/metad) answers, for tests/metad/test_metad_fidelity.py.

CI has no network and no Go metad, so its answers are recorded here once, on a host where
``bench/peers.py`` can build it (``python -m bench.peers prepare yunify-metad --from GIT_DIR``),
and the test replays the same requests against pitrix-metad loaded with the same data::

    PYTHONPATH=. python scripts/record_metad_answers.py [--out tests/metad/metad_answers.json]

metad runs with its in-memory backend on loopback; the caller is told apart by its source address
(the client binds its socket to ``CALLER_IP``). Requests go out as raw HTTP/1.1 so that paths
with ``..`` reach metad as written (curl and aiohttp resolve them first). Long-polls are started,
given a moment to be held (metad offers no count of held requests), then a value is written
through metad's management API; the record says whether the answer came only after the write.

The ``confd-yunify`` cases are the requests confd-yunify's metad backend makes (read from its
source, backends/metad/client.go): ``GET /`` to pick a node, one ``GET <key>`` per key, then
``GET <prefix>?wait=true&prev_version=N`` with N = 1 first, then the version metad last answered,
every request with ``Accept: application/json``; it reads ``X-Metad-Version`` of the poll only.
With ``--confd-yunify BINARY`` (a confd built from github.com/yunify/confd) the script also runs
it against metad through a logging proxy and keeps the requests it really sent
(``confd_yunify_session``); the test checks that the cases above cover every kind of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers

LISTEN_IP = "127.109.29.1"
CALLER_IP = "127.109.29.11"  # mapped to i-web1
STRANGER_IP = "127.109.29.12"  # not mapped
PROXY_IP = "127.109.29.2"  # where confd-yunify's requests are seen on their way to metad
HOLD_SECONDS = 0.5  # how long a poll must go unanswered to count as held
CID = "c1"

# The data set, ours: one cluster as pitrixd lays it out (pitrix-metad's keyspace), loaded into
# metad at the same paths so both /self views come from the same keys.
DATA: dict[str, Any] = {
    "clusters": {
        CID: {
            "cluster": {"cluster_id": CID, "app_id": "app-fid", "owner": "usr-fid", "zone": "sim1"},
            "hosts": {
                "web": {
                    "i-web1": {"instance_id": "i-web1", "ip": CALLER_IP, "role": "web", "sid": "1"},
                    "i-web2": {"instance_id": "i-web2", "ip": "127.109.29.13", "role": "web", "sid": "2"},
                },
                "db": {"i-db1": {"instance_id": "i-db1", "ip": "127.109.29.14", "role": "db", "sid": "3"}},
            },
            "env": {
                "web": {"port": "80", "workers": "4", "banner": "a <b> & c", "empty": ""},
                "db": {"max_conn": "100"},
            },
            "endpoints": {"http": {"port": "8000", "protocol": "tcp"}},
        }
    }
}
# What metad maps the caller's /self to; pitrix-metad derives the same from (cluster, role, iid).
MAPPING = {
    "host": f"/clusters/{CID}/hosts/web/i-web1",
    "hosts": f"/clusters/{CID}/hosts",
    "cluster": f"/clusters/{CID}/cluster",
    "env": f"/clusters/{CID}/env/web",
    "endpoints": f"/clusters/{CID}/endpoints",
}
JSON = "application/json"
ACCEPTS: list[str | None] = [None, "*/*", "text/plain", JSON, "text/html, */*;q=0.8", "application/*"]


def _case(name: str, target: str, accept: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "target": target, "accept": accept, "caller": "mapped", **extra}


def cases() -> list[dict[str, Any]]:
    """The requests, in order: plain reads first, then long-polls (each changes one value)."""
    out: list[dict[str, Any]] = []
    for path in ("/self/host/ip", "/self/env/banner", "/self/env/empty", "/self/env", "/self/hosts", "/self"):
        for accept in ACCEPTS:
            out.append(_case(f"{path} accept={accept}", path, accept))
    for accept in (
        "application/yaml",
        "text/plain;q=0.5, application/json",
        "application/json;q=0.5, text/*",
    ):
        out.append(_case(f"/self/env accept={accept}", "/self/env", accept))
    for path in ("/self/nope", "/self/host/nope", "/self/env/port/deeper", "/nope"):
        for accept in (None, JSON, "application/yaml"):
            out.append(_case(f"404 {path} accept={accept}", path, accept))
    for target in (
        "/self/host/../env",
        "/self/./env",
        "//self/env",
        "/self/env/../../self/host/ip?x=1",
        "/../self",
    ):
        out.append(_case(f"unclean {target}", target))
    out.append(_case("trailing slash", "/self/env/", JSON))
    for query in ("pretty=true", "pretty=1", "pretty=false", "pretty="):
        out.append(_case(f"pretty {query}", f"/self/env?{query}", JSON))
        out.append(_case(f"pretty {query} /self/host", f"/self/host?{query}", JSON))
    out.append(_case("unmapped caller", "/self", JSON, caller="stranger"))
    out.append(_case("unmapped caller text", "/self/host/ip", None, caller="stranger"))
    # Long-polls: ``prev_version`` "current" is the version a plain read answered just before.
    write = {"path": f"/clusters/{CID}/env/web/workers"}
    out.append(
        _case(
            "poll prev_version=abc",
            "/self/env?wait=true&prev_version=abc",
            JSON,
            write={**write, "value": "5"},
        )
    )
    out.append(_case("poll no prev_version", "/self/env?wait=true", JSON, write={**write, "value": "6"}))
    out.append(
        _case(
            "poll prev_version=current",
            "/self/env?wait=true",
            JSON,
            prev_version="current",
            write={**write, "value": "7"},
        )
    )
    out.append(
        _case(
            "poll text",
            "/self/env/workers?wait=true",
            None,
            prev_version="current",
            write={**write, "value": "8"},
        )
    )
    out.append(_case("poll prev_version=1", "/self/env?wait=true&prev_version=1", JSON))
    # confd-yunify's metad backend (prefix /self, keys /host/ip and /env).
    out.append(_case("confd-yunify pick node", "/", JSON, confd=True))
    out.append(_case("confd-yunify key /self/host/ip", "/self/host/ip", JSON, confd=True))
    out.append(_case("confd-yunify key /self/env", "/self/env", JSON, confd=True))
    out.append(_case("confd-yunify key absent", "/self/env/nope", JSON, confd=True))
    out.append(_case("confd-yunify first poll", "/self?wait=true&prev_version=1", JSON, confd=True))
    out.append(
        _case(
            "confd-yunify poll",
            "/self?wait=true",
            JSON,
            confd=True,
            prev_version="current",
            write={**write, "value": "9"},
        )
    )
    out.append(_case("confd-yunify poll after", "/self?wait=true", JSON, confd=True, prev_version="previous"))
    return out


async def raw_get(
    port: int, target: str, accept: str | None, local_ip: str, *, then: Any = None, ip: str = LISTEN_IP
) -> dict[str, Any]:
    """One GET as sent: the answer's status, headers of interest, body; whether it was held."""
    reader, writer = await asyncio.open_connection(ip, port, local_addr=(local_ip, 0))
    head = f"GET {target} HTTP/1.1\r\nHost: metadata\r\nUser-Agent: recorder\r\n"
    if accept is not None:
        head += f"Accept: {accept}\r\n"
    writer.write((head + "Connection: close\r\n\r\n").encode())
    read = asyncio.ensure_future(reader.read())
    held = False
    if then is not None:
        done, _ = await asyncio.wait([read], timeout=HOLD_SECONDS)
        held = not done
        await then()
    raw = await asyncio.wait_for(read, 30)
    writer.close()
    head_raw, _, body = raw.partition(b"\r\n\r\n")
    lines = head_raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return {
        "status": int(lines[0].split()[1]),
        "content_type": headers.get("content-type"),
        "location": headers.get("location"),
        "version": headers.get("x-metad-version"),
        "body": body.decode("utf-8"),
        "held": held,
    }


def _unchunk(raw: bytes) -> bytes:
    out = b""
    while raw:
        size_line, _, raw = raw.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, raw = out + raw[:size], raw[size + 2 :]
    return out


def _manage(port: int, method: str, path: str, body: Any) -> None:
    request = urllib.request.Request(
        f"http://{LISTEN_IP}:{port}{path}", data=json.dumps(body).encode(), method=method
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


def _health(port: int) -> None:
    with urllib.request.urlopen(f"http://{LISTEN_IP}:{port}/health", timeout=2) as answer:
        answer.read()


def _free_port(ip: str = LISTEN_IP) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def go_metad(binary: Path) -> AsyncIterator[tuple[int, int]]:
    """A fresh Go metad holding ``DATA`` and ``MAPPING``: (instance port, management port)."""
    port, manage = _free_port(), _free_port()
    with tempfile.TemporaryFile() as log:
        process = await asyncio.create_subprocess_exec(
            str(binary), "-backend", "local", "-listen", f"{LISTEN_IP}:{port}",
            "-listen_manage", f"{LISTEN_IP}:{manage}", "-log_level", "warning",
            stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    await asyncio.to_thread(_health, manage)
                    break
                except OSError:
                    if time.monotonic() > deadline or process.returncode is not None:
                        raise RuntimeError("metad did not start") from None
                    await asyncio.sleep(0.1)
            _manage(manage, "PUT", "/v1/data", DATA)
            _manage(manage, "PUT", "/v1/mapping", {CALLER_IP: MAPPING})
            yield port, manage
        finally:
            process.terminate()
            await process.wait()


async def record(binary: Path) -> list[dict[str, Any]]:
    async with go_metad(binary) as (port, manage):
        results = []
        previous = ""
        for case in cases():
            target = case["target"]
            if case.get("prev_version") in ("current", "previous"):
                now = await raw_get(port, "/self", JSON, CALLER_IP)
                version = previous if case["prev_version"] == "previous" else now["version"]
                previous = version = version or ""
                target += f"&prev_version={version}"
                case = {**case, "sent_version": version}
            write = case.get("write")

            async def then(write: Any = write) -> None:
                if write is not None:
                    await asyncio.to_thread(
                        _manage, manage, "PUT", "/v1/data" + write["path"], write["value"]
                    )

            caller = CALLER_IP if case["caller"] == "mapped" else STRANGER_IP
            answer = await raw_get(port, target, case["accept"], caller, then=then if write else None)
            if write is not None:
                await asyncio.sleep(HOLD_SECONDS)  # metad counts its version after answering
            if case.get("sent_version"):
                answer["version_is_sent"] = answer["version"] == case["sent_version"]
            if case.get("confd") and case.get("prev_version") == "current":
                previous = answer["version"] or ""
            results.append({**case, "answer": answer})
        return results


async def confd_session(metad_binary: Path, confd_binary: Path) -> list[dict[str, Any]]:
    """The requests an unmodified confd-yunify sends to Go metad, seen by a proxy in between:
    its start, then two changes of a key its template reads (the proxy's own connections to
    metad come from ``CALLER_IP``, the mapped caller)."""
    from aiohttp import ClientError, ClientSession, TCPConnector, web

    seen: list[dict[str, Any]] = []
    async with go_metad(metad_binary) as (port, manage):
        http = ClientSession(connector=TCPConnector(local_addr=(CALLER_IP, 0)))

        async def forward(request: web.Request) -> web.Response:
            began = time.monotonic()
            accept = request.headers.get("Accept")
            url = f"http://{LISTEN_IP}:{port}{request.path_qs}"
            try:
                async with http.get(url, headers={"Accept": accept} if accept else {}) as answer:
                    body = await answer.read()
            except ClientError:  # the session is over: a poll confd holds while it is stopped
                return web.Response(status=503)
            entry = {"method": request.method, "target": request.path_qs, "accept": accept}
            entry.update(status=answer.status, version=answer.headers.get("X-Metad-Version"))
            entry["held"] = time.monotonic() - began > HOLD_SECONDS
            seen.append(entry)
            names = ("x-metad", "content-type")
            keep = {k: v for k, v in answer.headers.items() if k.lower().startswith(names)}
            return web.Response(body=body, status=answer.status, headers=keep)

        app = web.Application()
        app.router.add_route("*", "/{path:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        proxy_port = _free_port(PROXY_IP)
        await web.TCPSite(runner, PROXY_IP, proxy_port).start()
        with tempfile.TemporaryDirectory() as tmp:
            conf = Path(tmp)
            (conf / "templates").mkdir()
            (conf / "conf.d").mkdir()
            (conf / "templates/t.tmpl").write_text('{{getv "/env/workers"}} {{getv "/host/ip"}}\n')
            (conf / "conf.d/t.toml").write_text(
                f'[template]\nsrc = "t.tmpl"\ndest = "{conf}/t.conf"\nkeys = ["/env", "/host/ip"]\n'
            )
            confd = await asyncio.create_subprocess_exec(
                str(confd_binary), "-backend", "metad", "-node", f"{PROXY_IP}:{proxy_port}",
                "-confdir", str(conf), "-watch", "-prefix", "/self", "-log-level", "warning",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            try:
                for value in ("21", "22"):
                    await asyncio.sleep(3 * HOLD_SECONDS)  # its poll is held by then
                    seen.append({"write": f"/clusters/{CID}/env/web/workers", "value": value})
                    await asyncio.to_thread(
                        _manage, manage, "PUT", f"/v1/data/clusters/{CID}/env/web/workers", value
                    )
                await asyncio.sleep(3 * HOLD_SECONDS)
                rendered = (conf / "t.conf").read_text()
                if rendered != f"22 {CALLER_IP}\n":
                    raise RuntimeError(f"confd-yunify rendered {rendered!r}")
            finally:
                confd.terminate()
                await confd.wait()
                await http.close()
                await runner.cleanup()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/metad/metad_answers.json"))
    parser.add_argument(
        "--confd-yunify",
        type=Path,
        help="a confd built from github.com/yunify/confd: record its requests too",
    )
    args = parser.parse_args()
    built = peers.ensure("yunify-metad")
    if built.path is None:
        sys.exit(f"cannot build yunify/metad: {built.why}")
    results = asyncio.run(record(built.path))
    document: dict[str, Any] = {
        "recorded_from": {"repository": peers.PEERS["yunify-metad"].repository, "commit": built.commit},
        "caller_ip": CALLER_IP,
        "data": DATA,
        "mapping": MAPPING,
        "cases": results,
    }
    if args.confd_yunify is not None:
        document["confd_yunify_session"] = asyncio.run(confd_session(built.path, args.confd_yunify))
    args.out.write_text(json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"{len(results)} answers recorded in {args.out}")


if __name__ == "__main__":
    main()
