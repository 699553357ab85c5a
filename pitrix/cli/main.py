"""pitrix: the command line over pitrixd's admin API.

Exit codes scripts can use: 0 done, 1 the action failed (the cluster is ``failed``), 2 bad usage
or input, 3 the API could not be reached, 4 not found, 5 refused in the cluster's current state.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from pitrix import __version__
from pitrix.cli.client import ApiClient, ApiError
from pitrix.cli.progress import follow, step_line

DEFAULT_URL = "http://127.0.0.1:9610"
EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND, EXIT_CONFLICT = 1, 2, 3, 4, 5


def _print(data: Any, output: str, table: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2) if output == "json" else table(data))


def _clusters_table(data: dict[str, Any]) -> str:
    rows = [f"{'ID':<14} {'NAME':<16} {'STATE':<12} {'RUNTIME':<12} NODES"]
    for c in data["clusters"]:
        counts = ", ".join(f"{role}={n}" for role, n in c["counts"].items())
        rows.append(f"{c['id']:<14} {c['name']:<16} {c['state']:<12} {c['runtime']:<12} {counts}")
    return "\n".join(rows)


def _cluster_table(c: dict[str, Any]) -> str:
    lines = [
        f"cluster {c['id']} ({c['name']}, app {c['app']['name']} {c['app']['version']})",
        f"  state: {c['state']}" + (f"  error: {c['last_error']}" if c.get("last_error") else ""),
        f"  runtime: {c['runtime']}  owner: {c['owner']}",
        "  nodes:",
    ]
    for n in c.get("nodes", []):
        lines.append(f"    {n['node_id']:<10} {n['instance_id']:<14} {n['ip']:<16} {n['status']}")
    job = c.get("job")
    if job:
        lines.append(f"  last job: {job['id']} {job['action']} {job['status']}")
        lines += [step_line(s) for s in job.get("steps", [])]
    return "\n".join(lines)


async def _wait_job(client: ApiClient, cid: str, job: dict[str, Any], args: argparse.Namespace) -> int:
    if args.no_wait:
        _print({"cluster_id": cid, "job": job}, args.output, lambda d: f"{cid}: job {job['id']} started")
        return 0
    show = args.output != "json"
    if show:
        print(f"{cid}: {job['action']} (job {job['id']})", flush=True)
    view = await follow(client, cid, job["id"], (lambda s: print(step_line(s), flush=True)) if show else None)
    if args.output == "json":
        print(json.dumps(view, indent=2))
    else:
        print(f"{cid}: {view['state']}" + (f" ({view['last_error']})" if view.get("last_error") else ""))
    return EXIT_FAILED if view["state"] == "failed" else 0


async def cmd_runtimes(client: ApiClient, args: argparse.Namespace) -> int:
    if args.action == "list":
        data = await client.get("/v1/runtimes")
        _print(
            data,
            args.output,
            lambda d: "\n".join(
                f"{r['name']:<16} {r['provider']:<12} {r.get('zone', ''):<8} {r.get('endpoint', '')}"
                for r in d["runtimes"]
            ),
        )
        return 0
    body: dict[str, Any] = {
        "name": args.name,
        "provider": args.provider,
        "zone": args.zone,
        "endpoint": args.endpoint,
    }
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"pitrix: --set takes key=value, got {item!r}")
        body[key] = value
    data = await client.post("/v1/runtimes", body)
    _print(data, args.output, lambda d: f"runtime {d['name']} saved")
    return 0


def _read_spec(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SystemExit(f"pitrix: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SystemExit(f"pitrix: {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"pitrix: {path}: an app spec must be a mapping")
    return data


async def cmd_clusters(client: ApiClient, args: argparse.Namespace) -> int:
    if args.action == "list":
        _print(await client.get("/v1/clusters", all="1" if args.all else None), args.output, _clusters_table)
        return 0
    if args.action == "show":
        _print(await client.get(f"/v1/clusters/{args.cluster}"), args.output, _cluster_table)
        return 0
    if args.action == "create":
        counts = {}
        for item in args.count or []:
            role, sep, value = item.partition("=")
            if not sep or not value.isdigit():
                raise SystemExit(f"pitrix: --count takes role=N, got {item!r}")
            counts[role] = int(value)
        body = {
            "runtime": args.runtime,
            "app": _read_spec(args.file),
            "name": args.name or "",
            "counts": counts,
        }
        data = await client.post("/v1/clusters", body)
        return await _wait_job(client, data["cluster"]["id"], data["job"], args)
    if args.action == "scale":
        data = await client.post(f"/v1/clusters/{args.cluster}/scale", {"role": args.role, "count": args.to})
        return await _wait_job(client, args.cluster, data["job"], args)
    if args.action == "retry":
        data = await client.post(f"/v1/clusters/{args.cluster}/retry")
        return await _wait_job(client, args.cluster, data["job"], args)
    data = await client.delete(f"/v1/clusters/{args.cluster}")
    return await _wait_job(client, args.cluster, data["job"], args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pitrix", description="Deploy and run VM application clusters.")
    parser.add_argument(
        "--url", default=os.environ.get("PITRIX_URL", DEFAULT_URL), help="admin API (PITRIX_URL)"
    )
    parser.add_argument("--token", default=os.environ.get("PITRIX_TOKEN"), help="API token (PITRIX_TOKEN)")
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")
    parser.add_argument("--version", action="version", version=f"pitrix {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the demo on a private simulator and pitrixd, then clean up")
    demo.add_argument("--json", action="store_true", help="print the demo's account as JSON")
    demo.add_argument("--keep-on-failure", action="store_true", help="keep the demo's state dir if it fails")

    runtimes = sub.add_parser("runtimes", help="cloud accounts pitrix deploys to").add_subparsers(
        dest="action", required=True
    )
    runtimes.add_parser("list")
    add = runtimes.add_parser("add", help="add or replace a runtime")
    add.add_argument("name")
    add.add_argument("--provider", required=True)
    add.add_argument("--zone", default="")
    add.add_argument("--endpoint", default="")
    add.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="provider setting (credentials, ...)"
    )

    clusters = sub.add_parser("clusters", help="application clusters").add_subparsers(
        dest="action", required=True
    )
    listing = clusters.add_parser("list")
    listing.add_argument("--all", action="store_true", help="include deleted clusters")
    clusters.add_parser("show").add_argument("cluster")
    create = clusters.add_parser("create")
    create.add_argument("-f", "--file", type=Path, required=True, help="app spec (YAML or JSON)")
    create.add_argument("--runtime", required=True)
    create.add_argument("--name")
    create.add_argument("--count", action="append", metavar="ROLE=N", help="override a role's node count")
    scale = clusters.add_parser("scale")
    scale.add_argument("cluster")
    scale.add_argument("role")
    scale.add_argument("to", type=int, help="the role's new node count")
    clusters.add_parser("retry").add_argument("cluster")
    clusters.add_parser("delete").add_argument("cluster")
    for p in (create, scale, clusters.choices["retry"], clusters.choices["delete"]):
        p.add_argument("--no-wait", action="store_true", help="return once the action is accepted")
    return parser


async def run(args: argparse.Namespace) -> int:
    handlers: dict[str, Callable[[ApiClient, argparse.Namespace], Awaitable[int]]] = {
        "runtimes": cmd_runtimes,
        "clusters": cmd_clusters,
    }
    async with ApiClient(args.url, args.token) as client:
        try:
            return await handlers[args.command](client, args)
        except ApiError as exc:
            print(f"pitrix: {exc}", file=sys.stderr)
            return {404: EXIT_NOT_FOUND, 409: EXIT_CONFLICT}.get(
                exc.status, EXIT_USAGE if exc.status < 500 else 1
            )
        except aiohttp.ClientConnectionError as exc:
            print(f"pitrix: cannot reach pitrixd at {args.url}: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from pitrix.cli.demo import run_demo

        return asyncio.run(run_demo(as_json=args.json, keep_on_failure=args.keep_on_failure))
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
