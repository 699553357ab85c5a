"""pitrix: the command line over pitrixd's admin API.

Exit codes scripts can use: 0 done, 1 the action's job failed (also when it was rolled back and
the cluster stays ``active``; stderr names the step and the reason) or pitrixd failed, 2 bad usage
or input, 3 the API could not be reached, 4 not found, 5 refused in the
cluster's current state, 6 not authenticated or not allowed (token missing, unknown or not admin),
7 stopped waiting at --timeout (the job goes on), 130 interrupted (Ctrl-C; a followed job goes on),
141 the reader of standard output went away (``pitrix ... | head``), quietly, as a tool killed by
SIGPIPE would (the shell reports 128 + 13). None of them comes with a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from pitrix import __version__
from pitrix.argparser import ArgumentParser
from pitrix.cli.config import CliConfigError, load_config
from pitrix.cli.credentials import (
    RUNTIME_ENV_PREFIX,
    CredentialsError,
    from_environment,
    read_credentials_file,
    warn_secret_arguments,
)
from pitrix.cli.names import AmbiguousName, UnknownCluster, resolve_cluster
from pitrix.cli.progress import ended_job, follow, job_failure, step_line
from pitrix.cli.tables import age, clock, table
from pitrix.cli.url import BadUrl, normalize_url

if TYPE_CHECKING:
    from pitrix.cli.client import ApiClient

# Only what --help, --version and a usage error need is imported above: the HTTP client, yaml and asyncio
# cost a command several times Python's own start, so the functions that use them import them.

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_AUTH = 1, 2, 3, 4, 5, 6
EXIT_TIMEOUT, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 7, 130, 141
COMMANDS = ("demo", "runtimes", "apps", "clusters", "backups", "jobs", "nodes", "replicas")


class UsageError(Exception):
    """A command's arguments or the files they name are wrong (exit 2, the message says which)."""


def _scale_body(args: argparse.Namespace) -> dict[str, Any]:
    """``scale CID ROLE TO`` or ``scale CID --role R [--count N] [--nodes a,b]``."""
    if args.role and args.role_flag and args.role != args.role_flag:
        raise UsageError(f"scale: role given twice ({args.role} and --role {args.role_flag})")
    role = args.role or args.role_flag
    if not role:
        raise UsageError("scale needs a role: ROLE TO, or --role ROLE")
    count = args.to if args.to is not None else args.count
    nodes = [n.strip() for n in (args.nodes or "").split(",") if n.strip()]
    if count is None and not nodes:
        raise UsageError("scale needs a count (TO or --count) or --nodes ID,ID")
    body: dict[str, Any] = {"role": role}
    if count is not None:
        body["count"] = count
    if nodes:
        body["nodes"] = nodes
    return body


def _print(data: Any, output: str, table: Callable[[Any], str]) -> None:
    print(table(data) if output == "table" else _dump(data, output))


def _dump(data: Any, output: str) -> str:
    """``-o json`` or ``-o yaml``: the API's answer as it is, for scripts."""
    if output == "yaml":
        import yaml

        return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False)).rstrip("\n")
    return json.dumps(data, indent=2)


def _clusters_table(data: dict[str, Any]) -> str:
    rows = [
        (
            c["id"],
            c["name"],
            c["state"],
            c["runtime"],
            age(c.get("created")),
            ", ".join(f"{role}={n}" for role, n in c["counts"].items()),
        )
        for c in data["clusters"]
    ]
    return table(("ID", "NAME", "STATE", "RUNTIME", "AGE", "NODES"), rows)


def _runtimes_table(data: dict[str, Any]) -> str:
    rows = [(r["name"], r["provider"], r.get("zone", ""), r.get("endpoint", "")) for r in data["runtimes"]]
    return table(("NAME", "PROVIDER", "ZONE", "ENDPOINT"), rows)


def _agent(node: dict[str, Any]) -> str:
    """The agent's report in a few words: alive or silent, health, applied revision."""
    agent = node.get("agent")
    if agent is None:
        return "agent: unknown"
    words = ["alive" if agent["reporting"] else "silent"]
    if agent.get("health"):
        words.append("healthy" if agent["health"]["ok"] else f"unhealthy ({agent['health'].get('error')})")
    if agent.get("applied_revision") is not None:
        words.append(
            f"applied r{agent['applied_revision']}" + ("" if agent.get("resources_ok") else " with errors")
        )
    return ", ".join(words)


def _cluster_table(c: dict[str, Any]) -> str:
    lines = [
        f"cluster {c['id']} ({c['name']}, app {c['app']['name']} {c['app']['version']})",
        f"  state: {c['state']}" + (f"  error: {c['last_error']}" if c.get("last_error") else ""),
        f"  runtime: {c['runtime']}  owner: {c['owner']}",
        "  nodes:",
    ]
    rows = [
        (
            f"    {n['node_id']}",
            n["instance_id"],
            n["ip"],
            n["status"],
            _agent(n) + (f"  volume {n['volume_id']}" if n.get("volume_id") else ""),
        )
        for n in c.get("nodes", [])
    ]
    lines += table(("", "", "", "", ""), rows).splitlines()[1:]  # aligned to the longest id
    lines += _endpoint_lines(c.get("endpoints") or {})
    metadata = c.get("metadata") or {}
    if metadata.get("condition"):
        lines.append(f"  metadata: {metadata['condition']}")
    services = c.get("custom_services") or {}
    if services:
        lines.append("  custom services:")
        for name, service in sorted(services.items()):
            about = f"  {service['description']}" if service.get("description") else ""
            lines.append(f"    {name:<16} roles: {', '.join(service['roles'])}{about}")
            for key, param in sorted(service.get("params", {}).items()):
                default = "" if param.get("default") is None else f" (default {param['default']})"
                lines.append(f"      -p {key}=<{param['type']}>{default}")
    job = c.get("job")
    if job:
        lines.append(f"  last job: {job['id']} {job['action']} {job['status']}")
        lines += [step_line(s) for s in job.get("steps", [])]
        lines += _results_lines(job.get("results") or {})
    return "\n".join(lines)


def _endpoint_lines(endpoints: dict[str, dict[str, Any]]) -> list[str]:
    """The app's endpoints: name, protocol, where to reach it (each node's address, else the
    port), and the parameter a port was read from."""
    if not endpoints:
        return []
    rows = []
    for name, e in sorted(endpoints.items()):
        port = f"port {e['port']}" if e["port"] else "none fixed"
        source = f"({e['from']})" if e.get("from") else ""
        rows.append((f"    {name}", e["protocol"], ", ".join(e.get("addresses", [])) or port, source))
    return ["  endpoints:", *(line.rstrip() for line in table(("", "", "", ""), rows).splitlines()[1:])]


def _results_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """Each node's outcome of a job that keeps them (a custom service): status, exit code, output."""
    lines = []
    for node_id, result in sorted(results.items()):
        code = result.get("exit_code")
        lines.append(f"    {node_id:<12} {result['status']:<10} exit {'-' if code is None else code}")
        lines += [f"      | {line}" for line in (result.get("output_tail") or "").rstrip().splitlines()[-10:]]
    return lines


async def _wait_job(client: ApiClient, cid: str, job: dict[str, Any], args: argparse.Namespace) -> int:
    from pitrix.cli.httpcore import HttpConnectionError, HttpPayloadError

    if args.no_wait:
        _print({"cluster_id": cid, "job": job}, args.output, lambda d: f"{cid}: job {job['id']} started")
        return 0
    show = args.output == "table"
    if show:
        print(f"{cid}: {job['action']} (job {job['id']})", flush=True)
    # Read by main() when Ctrl-C ends the wait, to say how to find the job again.
    args.following = (cid, job["id"])
    try:
        view = await follow(
            client,
            cid,
            job["id"],
            (lambda s: print(step_line(s), flush=True)) if show else None,
            timeout=args.timeout,
        )
        ended = await ended_job(client, cid, job["id"])
    # Before TimeoutError: a request pitrixd did not answer in time (HttpReadTimeout is both) is
    # pitrixd lost, not the --timeout the user gave (which may be none at all).
    except (HttpConnectionError, HttpPayloadError) as exc:
        print(
            f"pitrix: lost the connection to pitrixd at {args.url} ({exc}); {_job_goes_on(cid, job['id'])}",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    except TimeoutError:
        # No --timeout: what ran out was a request's own (pitrixd did not answer one in time).
        waited = (
            "pitrixd did not answer in time"
            if args.timeout is None
            else f"stopped waiting after {args.timeout:g}s"
        )
        print(f"pitrix: {waited}; {_job_goes_on(cid, job['id'])}", file=sys.stderr)
        return EXIT_TIMEOUT
    args.following = None
    if args.output != "table":
        print(_dump(view, args.output))
    else:
        print(f"{cid}: {view['state']}" + (f" ({view['last_error']})" if view.get("last_error") else ""))
        if ended.get("results"):
            print("\n".join(["  results:", *_results_lines(ended["results"])]))
    if ended["status"] == "successful":
        return 0
    print(
        f"pitrix: {job_failure(ended)} (job {job['id']}; cluster {cid} is {view['state']})",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _job_goes_on(cid: str, job_id: str) -> str:
    return f"job {job_id} on cluster {cid} goes on: `pitrix jobs wait {cid} {job_id}` follows it again"


def _replicas_table(data: dict[str, Any]) -> str:
    rows = [
        (
            r["id"] + (" *" if r.get("self") else ""),
            r.get("address") or "-",
            str(r["clusters_owned"]),
            str(r["jobs_running"]),
            f"{r['lease_age']:.0f}s",
        )
        for r in data["replicas"]
    ]
    return table(("REPLICA", "ADDRESS", "CLUSTERS", "JOBS", "LEASE AGE"), rows)


async def cmd_replicas(client: ApiClient, args: argparse.Namespace) -> int:
    """The live replicas as the answering one (marked *) sees them."""
    _print(await client.get("/v1/replicas"), args.output, _replicas_table)
    return 0


async def cmd_runtimes(client: ApiClient, args: argparse.Namespace) -> int:
    if args.action == "list":
        data = await client.get("/v1/runtimes")
        _print(data, args.output, _runtimes_table)
        return 0
    if args.action == "delete":
        await client.delete(f"/v1/runtimes/{args.name}")
        _print({"deleted": args.name}, args.output, lambda d: f"runtime {d['deleted']} deleted")
        return 0
    body = _runtime_settings(args)
    check = "false" if args.no_check else "true"
    if args.action == "update":
        data = await client.request("PATCH", f"/v1/runtimes/{args.name}", body, check=check)
        _print(data, args.output, lambda d: f"runtime {d['name']} updated")
        return 0
    body.update(name=args.name, provider=args.provider)
    body.setdefault("zone", "")
    body.setdefault("endpoint", "")
    data = await client.request("POST", "/v1/runtimes", body, check=check)
    _print(data, args.output, lambda d: f"runtime {d['name']} saved")
    return 0


def _runtime_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings `runtimes add/update` was given. Lowest first: the credentials file, the
    environment, then the command line (flags given, and --set, which warns for secrets: others can
    read a command line in ps)."""
    body: dict[str, Any] = {}
    if args.credentials_file:
        body.update(read_credentials_file(args.credentials_file))
    body.update(from_environment())
    body.update({k: v for k, v in (("zone", args.zone), ("endpoint", args.endpoint)) if v})
    for field in ("placement", "metadata_retention"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.heartbeat_interval is not None:
        body["heartbeat_interval"] = args.heartbeat_interval
    if args.network is not None:
        body["network"] = args.network
    if args.metadata_size is not None:
        body["metadata_size"] = args.metadata_size
    if args.metadata_image is not None:
        body["metadata_image"] = args.metadata_image
    given = _pairs(args.set, "--set", "KEY=VALUE")
    warn_secret_arguments(
        "--set",
        list(given),
        f"use --credentials-file or {RUNTIME_ENV_PREFIX}<KEY> in the environment instead",
    )
    body.update(given)
    return body


def _apps_table(data: dict[str, Any]) -> str:
    rows = [f"{'NAME':<20} {'VERSION':<12} {'OWNER':<12} {'SCOPE':<10} ROLES"]
    rows += [
        f"{a['name']:<20} {a['version']:<12} {a['owner']:<12} "
        f"{'published' if a.get('published') else 'own':<10} {', '.join(a['roles'])}"
        for a in data["apps"]
    ]
    return "\n".join(rows)


def _app_table(a: dict[str, Any]) -> str:
    how = "published by" if a.get("published") else "registered by"
    lines = [f"app {a['name']} {a['version']} ({how} {a['owner']})"]
    lines.append(f"  versions: {', '.join(a.get('versions', []))}")
    for role in a["spec"]["roles"]:
        lines.append(f"  role {role['name']}: {role.get('count', 1)} x {role['image']}")
    return "\n".join(lines)


def _import_table(data: dict[str, Any]) -> str:
    width = max((len(line["field"]) for line in data["report"]), default=5)
    rows = [
        f"{line['outcome']:<12} {line['field']:<{width}}  {line['note']}".rstrip() for line in data["report"]
    ]
    counts = {
        o: sum(1 for line in data["report"] if line["outcome"] == o)
        for o in ("mapped", "approximated", "dropped")
    }
    done = "converted (dry run, not registered)" if data["dry_run"] else "imported"
    rows.append(", ".join(f"{n} {o}" for o, n in counts.items()))
    rows.append(f"app {data['app']} {data['version']} {done}")
    return "\n".join(rows)


async def cmd_apps_import(client: ApiClient, args: argparse.Namespace) -> int:
    """``apps import DIR``: the package's files are read here and converted by pitrixd, which
    registers the app version as ``apps register`` does."""
    from pitrix.appcenter.errors import PackageError
    from pitrix.appcenter.files import read_dir

    try:
        files = read_dir(args.dir)
    except PackageError as exc:
        raise UsageError(f"{args.dir}: {exc}") from None
    body: dict[str, Any] = {"files": files, "dry_run": args.dry_run}
    images = _pairs(args.image, "--image", "ROLE=ID")
    if images:
        body["images"] = images
    for key in ("name", "version"):
        if getattr(args, f"app_{key}"):
            body[key] = getattr(args, f"app_{key}")
    publish = "true" if args.publish else None
    data = await client.request("POST", "/v1/apps/import", body, publish=publish)
    _print(data, args.output, _import_table)
    return 0


async def cmd_apps(client: ApiClient, args: argparse.Namespace) -> int:
    if args.action == "import":
        return await cmd_apps_import(client, args)
    if args.action == "list":
        _print(await client.get("/v1/apps"), args.output, _apps_table)
    elif args.action == "show":
        _print(await client.get(f"/v1/apps/{args.name}", version=args.version), args.output, _app_table)
    else:
        publish = "true" if args.publish else None
        data = await client.request("POST", "/v1/apps", _read_spec(args.file), publish=publish)
        done = "published" if args.publish else "registered"
        _print(data, args.output, lambda d: f"app {d['name']} {d['version']} {done}")
    return 0


def _read_spec(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: an app spec must be a mapping")
    return data


def _yaml_problem(exc: Exception) -> str:
    """A YAML error as ``line L, column C: what`` (PyYAML's own text names ``<unicode string>``)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else str(problem)


def _deploy_env(params_file: Path | None, items: list[str] | None) -> dict[str, Any]:
    """``-p params.yaml`` (the API's ``env``: ``{role: {key: value}, key: value}``), then each
    ``--env [ROLE.]KEY=VALUE`` over it: ``ROLE.KEY`` is a role's key (split at the first dot),
    a KEY without a dot a cluster-level one (a dotted cluster-level key goes in the file)."""
    env: dict[str, Any] = {}
    if params_file is not None:
        import yaml

        try:
            data = yaml.safe_load(params_file.read_text())
        except OSError as exc:
            raise UsageError(f"-p: cannot read {params_file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise UsageError(f"-p: {params_file} is not valid YAML: {_yaml_problem(exc)}") from None
        if data is not None and not isinstance(data, dict):
            raise UsageError(f"-p: {params_file} must be a mapping of role: {{key: value}} and key: value")
        env = {k: dict(v) if isinstance(v, dict) else v for k, v in (data or {}).items()}
    given = _pairs(items, "--env", "[ROLE.]KEY=VALUE")
    warn_secret_arguments("--env", list(given), "put secret values in a -p file instead")
    for name, value in given.items():
        role, dot, key = name.partition(".")
        if dot and key:
            values = env.get(role)
            env[role] = {**(values if isinstance(values, dict) else {}), key: value}
        else:
            env[name] = value
    return env


def _pairs(
    items: list[str] | None, flag: str, form: str, value_ok: Callable[[str], bool] = lambda _v: True
) -> dict[str, str]:
    """``KEY=VALUE`` arguments of a repeatable flag; one not of ``form`` ends the command with a message."""
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value_ok(value):
            raise UsageError(f"{flag} takes {form}, got {item!r}")
        pairs[key] = value
    return pairs


def _file_values(paths: dict[str, str], flag: str = "--set-file") -> dict[str, str]:
    """Each key's value read from its file (one trailing newline dropped): secrets stay off argv."""
    values = {}
    for key, path in paths.items():
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"{flag} {key}: cannot read {path}: {exc.strerror}") from None
        values[key] = text[:-1] if text.endswith("\n") else text
    return values


def _act_body(text: str | None) -> dict[str, Any] | None:
    """``--body``: a JSON object, or ``@PATH`` for one in a file."""
    if text is None:
        return None
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise UsageError(f"--body: cannot read {text[1:]}: {exc.strerror}") from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--body: not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise UsageError("--body: must be a JSON object")
    return body


async def cmd_clusters(client: ApiClient, args: argparse.Namespace) -> int:
    await _resolve_names(client, args)
    if args.action in CLUSTER_BACKUP_ACTIONS:  # backup: its own handler, below
        return await cmd_cluster_backups(client, args)
    if args.action == "tab":
        _print(await client.get(f"/v1/clusters/{args.cluster}/tabs/{args.name}"), args.output, tab_table)
        return 0
    if args.action == "list":
        _print(await client.get("/v1/clusters", all="1" if args.all else None), args.output, _clusters_table)
        return 0
    if args.action == "show":
        _print(await client.get(f"/v1/clusters/{args.cluster}"), args.output, _cluster_table)
        return 0
    if args.action == "create":
        counts = {role: int(n) for role, n in _pairs(args.count, "--count", "ROLE=N", str.isdigit).items()}
        body = {
            "runtime": args.runtime,
            "app": _read_spec(args.file) if args.file else args.app,
            "name": args.name or "",
            "counts": counts,
            "channel": args.channel,
            "links": _pairs(args.link, "--link", "NAME=CLUSTER"),
        }
        env = _deploy_env(args.params, args.env)
        if env:
            body["env"] = env
        data = await client.post("/v1/clusters", body)
        return await _wait_job(client, data["cluster"]["id"], data["job"], args)
    if args.action == "scale":
        data = await client.post(f"/v1/clusters/{args.cluster}/scale", _scale_body(args))
        return await _wait_job(client, args.cluster, data["job"], args)
    if args.action == "events":
        return await _events(client, args)
    if args.action == "update-env":
        given = _pairs(args.set, "--set", "KEY=VALUE")
        warn_secret_arguments("--set", list(given), "use --set-file KEY=PATH for a secret value instead")
        values = {**given, **_file_values(_pairs(args.set_file, "--set-file", "KEY=PATH"))}
        if not values:
            raise UsageError("update-env needs --set KEY=VALUE or --set-file KEY=PATH")
        env = {args.role: values} if args.role else dict(values)  # no role: cluster-level
        data = await client.post(f"/v1/clusters/{args.cluster}/env", {"env": env})
        return await _wait_job(client, args.cluster, data["job"], args)
    if args.action == "recover":
        nodes = {"nodes": args.node} if args.node else None
        data = await client.post(f"/v1/clusters/{args.cluster}/recover", nodes)
        return await _wait_job(client, args.cluster, data["job"], args)
    if args.action == "service":
        given = _pairs(args.param, "-p", "KEY=VALUE")
        warn_secret_arguments("-p", list(given), "use --param-file KEY=PATH for a secret value instead")
        params = {
            **given,
            **_file_values(_pairs(args.param_file, "--param-file", "KEY=PATH"), "--param-file"),
        }
        request: dict[str, Any] = {"name": args.service, "params": params}
        if args.role:
            request["roles"] = args.role
        if args.nodes:
            request["nodes"] = [n for n in args.nodes.split(",") if n]
        data = await client.post(f"/v1/clusters/{args.cluster}/service", request)
        return await _wait_job(client, args.cluster, data["job"], args)
    if args.action == "restart":
        body = {k: v for k, v in (("roles", args.role), ("nodes", args.node)) if v}
        data = await client.post(f"/v1/clusters/{args.cluster}/restart", body or None)
        return await _wait_job(client, args.cluster, data["job"], args)
    if args.action == "upgrade":
        return await _upgrade(client, args)
    if args.action == "links":
        return await _relink(client, args)
    if args.action == "resize":
        data = await client.post(f"/v1/clusters/{args.cluster}/resize", _resize_body(args))
        return await _wait_job(client, args.cluster, data["job"], args)
    if args.action == "act":
        data = await client.post(f"/v1/clusters/{args.cluster}/{args.verb}", _act_body(args.body))
        return await _wait_job(client, args.cluster, data["job"], args)
    if args.action in ("retry", "stop", "start"):
        data = await client.post(f"/v1/clusters/{args.cluster}/{args.action}")
        return await _wait_job(client, args.cluster, data["job"], args)
    data = await client.delete(f"/v1/clusters/{args.cluster}", {"force": True} if args.force else None)
    return await _wait_job(client, args.cluster, data["job"], args)


def tab_table(data: dict[str, Any]) -> str:
    """A display tab as aligned columns: its labels, then its rows (cells as text, none cut)."""
    labels = [str(label) for label in data["labels"]]
    rows = [["" if cell is None else str(cell) for cell in row] for row in data["data"]]
    rows = [row + [""] * (len(labels) - len(row)) for row in rows]
    widths = [max([len(labels[i])] + [len(row[i]) for row in rows]) for i in range(len(labels))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    out = [line([label.upper() for label in labels]), *(line(row) for row in rows)]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''}, from {data['node']})")
    return "\n".join(out)


# -- upgrade ---------------------------------------------------------------------------------------


def _upgrade_table(data: dict[str, Any]) -> str:
    """The dry run as lines: versions and policy, parameter changes, role changes, batches."""
    lines = [
        f"{data['app']} {data['from']} -> {data['to']}  policy {data['policy']}"
        f"  canary {data['canary']}  max_in_flight {data['max_in_flight']}"
    ]
    changes = data["params"]
    lines += [f"  + {name} = {value}" for name, value in changes["added"].items()]
    lines += [f"  - {name}" for name in changes["removed"]]
    lines += [f"  ~ {n} default {c['from']} -> {c['to']}" for n, c in changes["changed_defaults"].items()]
    lines += [f"  = {name} = {value} (given)" for name, value in changes["given"].items()]
    for role, diff in data["roles"].items():
        for what, change in diff.items():
            if isinstance(change, dict) and "from" in change:
                lines.append(f"  role {role} {what}: {change['from']} -> {change['to']}")
            elif isinstance(change, dict):
                shown = ", ".join(f"{k} {', '.join(v)}" for k, v in change.items() if v)
                lines.append(f"  role {role} {what}: {shown}")
            else:
                lines.append(f"  role {role} {what}: {change}")
    lines += [f"  {b['role']}:{b['name']}  {', '.join(b['nodes'])}" for b in data["batches"]]
    return "\n".join(lines)


async def _upgrade(client: ApiClient, args: argparse.Namespace) -> int:
    """``clusters upgrade CID --version V``: the job, or with ``--dry-run`` the diff only."""
    if args.dry_run:
        if args.env:
            raise UsageError("--dry-run shows the diff with the values kept; --env applies to the upgrade")
        data = await client.get(f"/v1/clusters/{args.cluster}/upgrade", version=args.version)
        _print(data, args.output, _upgrade_table)
        return 0
    body: dict[str, Any] = {"version": args.version}
    env = _deploy_env(None, args.env)
    if env:
        body["env"] = env
    data = await client.post(f"/v1/clusters/{args.cluster}/upgrade", body)
    return await _wait_job(client, args.cluster, data["job"], args)


# -- backups: pitrix clusters backup|backups|restore|backup-policy, pitrix backups show|delete ----------

CLUSTER_BACKUP_ACTIONS = ("backup", "backups", "restore", "backup-policy")


def _backups_table(data: dict[str, Any]) -> str:
    lines = [f"{'BACKUP':<14}{'STATUS':<10}{'CREATED':<22}{'APP':<24}{'SNAPSHOTS':<10}NAME"]
    for b in data["backups"]:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(b["created"]))
        app = f"{b['app']['name']} {b['app']['version']}"
        taken = sum(1 for s in b["snapshots"] if s.get("snapshot_id"))
        lines.append(
            f"{b['id']:<14}{b['status']:<10}{created:<22}{app:<24}{taken:<10}{b.get('name', '')}"
            + (" (scheduled)" if b.get("scheduled") else "")
        )
    return "\n".join(lines)


def _backup_table(b: dict[str, Any]) -> str:
    lines = [
        f"backup {b['id']} of cluster {b['cluster_id']} ({b.get('cluster_name', '')}): {b['status']}",
        f"  app {b['app']['name']} {b['app']['version']}, runtime {b['runtime']}, counts "
        + ", ".join(f"{r}={c}" for r, c in b["counts"].items()),
    ]
    if b.get("error"):
        lines.append(f"  error: {b['error']}")
    lines += [
        f"  {s['node_id']}: volume {s['volume_id']} -> {s.get('snapshot_id') or '(not taken)'}"
        for s in b["snapshots"]
    ]
    return "\n".join(lines)


async def cmd_cluster_backups(client: ApiClient, args: argparse.Namespace) -> int:
    if args.action == "backup":
        body: dict[str, Any] = {"params": _pairs(args.param, "-p", "KEY=VALUE")}
        if args.name:
            body["name"] = args.name
        data = await client.post(f"/v1/clusters/{args.cluster}/backup", body)
        return await _wait_job(client, args.cluster, data["job"], args)
    if args.action == "backups":
        _print(await client.get(f"/v1/clusters/{args.cluster}/backups"), args.output, _backups_table)
        return 0
    if args.action == "restore":
        counts = {role: int(n) for role, n in _pairs(args.count, "--count", "ROLE=N", str.isdigit).items()}
        request: dict[str, Any] = {"restore": {"backup": args.backup}}
        if args.name:
            request["name"] = args.name
        if counts:
            request["counts"] = counts
        data = await client.post("/v1/clusters", request)
        return await _wait_job(client, data["cluster"]["id"], data["job"], args)
    path = f"/v1/clusters/{args.cluster}/backup-policy"
    if args.off:
        _print(await client.delete(path), args.output, lambda d: f"{args.cluster}: no scheduled backups")
        return 0
    if args.every is None:
        _print(await client.get(path), args.output, _policy_line(args.cluster))
        return 0
    policy: dict[str, Any] = {"interval_hours": args.every}
    if args.keep is not None:
        policy["keep"] = args.keep
    _print(await client.put(path, policy), args.output, _policy_line(args.cluster))
    return 0


def _policy_line(cid: str) -> Callable[[Any], str]:
    return lambda p: f"{cid}: a backup every {p['interval_hours']:g} h, the newest {p['keep']} kept"


async def cmd_backups(client: ApiClient, args: argparse.Namespace) -> int:
    if args.action == "show":
        _print(await client.get(f"/v1/backups/{args.backup}"), args.output, _backup_table)
        return 0
    _print(
        await client.delete(f"/v1/backups/{args.backup}"), args.output, lambda d: f"{d['deleted']}: deleted"
    )
    return 0


def add_backup_parsers(sub: Any, clusters: Any) -> None:
    """``pitrix clusters backup|backups|restore|backup-policy`` and ``pitrix backups show|delete``."""
    backup = clusters.add_parser("backup", help="back the cluster up (the app's backup command, snapshots)")
    backup.add_argument("cluster")
    backup.add_argument("--name", help="a label for the backup")
    backup.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="a backup parameter")
    clusters.add_parser("backups", help="the cluster's backups").add_argument("cluster")
    restore = clusters.add_parser("restore", help="a new cluster from a backup (its app, counts, env)")
    restore.add_argument("backup", metavar="BACKUP")
    restore.add_argument("--name", help="the new cluster's name (default: the old one's + -restored)")
    restore.add_argument(
        "--count", action="append", metavar="ROLE=N", help="a role's count (backups of first nodes only)"
    )
    policy = clusters.add_parser(
        "backup-policy", help="scheduled backups: show, set (--every, --keep) or stop (--off)"
    )
    policy.add_argument("cluster")
    policy.add_argument("--every", type=float, metavar="HOURS", help="a backup every HOURS hours")
    policy.add_argument("--keep", type=int, metavar="N", help="scheduled backups kept (default: the app's)")
    policy.add_argument("--off", action="store_true", help="stop scheduled backups (the backups stay)")
    for action in ("backup", "restore"):
        clusters.choices[action].add_argument(
            "--no-wait", action="store_true", help="return once the action is accepted"
        )
        clusters.choices[action].add_argument(
            "--timeout", type=_seconds, metavar="SECONDS", help="stop waiting after SECONDS and exit 7"
        )
    backups = sub.add_parser("backups", help="backups by id (they outlive their cluster)").add_subparsers(
        dest="action", required=True
    )
    backups.add_parser("show", help="a backup's snapshots and state").add_argument("backup")
    backups.add_parser("delete", help="delete the backup's snapshots, then its record").add_argument("backup")


async def _relink(client: ApiClient, args: argparse.Namespace) -> int:
    """``pitrix clusters links CID NAME=CID NAME=``: an empty value removes the link."""
    changes: dict[str, str | None] = {}
    for name, value in _pairs(args.link, "links", "NAME=CLUSTER_ID").items():
        changes[name] = value or None
    data = await client.post(f"/v1/clusters/{args.cluster}/links", {"links": changes})
    return await _wait_job(client, args.cluster, data["job"], args)


def _resize_body(args: argparse.Namespace) -> dict[str, Any]:
    """``--role R`` with any of the sizes: the resize request for that one role."""
    sizes = {
        field: value
        for field, value in (
            ("cpu", args.cpu),
            ("memory", args.memory),
            ("instance_type", args.instance_type),
            ("volume_size", args.volume_size),
        )
        if value is not None
    }
    if not sizes:
        raise UsageError("resize needs one of --cpu, --memory, --instance-type, --volume-size")
    return {"roles": {args.role: sizes}}


def _event_time(kind: str, data: dict[str, Any]) -> float:
    """When what the event reports happened: the record's own time (a step's or job's end or
    start, a cluster's last update), else now (a node record keeps no time)."""
    if isinstance(data.get("time_unix"), (int, float)):  # when pitrixd saw it (kept events)
        return float(data["time_unix"])
    found = data.get(kind)
    record: dict[str, Any] = found if isinstance(found, dict) else {}
    for field in ("finished", "started", "updated", "created"):
        if isinstance(record.get(field), (int, float)):
            return float(record[field])
    return time.time()


def _event_line(kind: str, data: dict[str, Any]) -> str:
    return f"{clock(_event_time(kind, data))}  {_event_body(kind, data)}"


def _event_body(kind: str, data: dict[str, Any]) -> str:
    cid = data.get("cluster_id", "")
    if kind == "cluster":
        c = data["cluster"]
        error = f"  ({c['last_error']})" if c.get("last_error") else ""
        return f"{cid}  cluster  {c['state']}{error}"
    if kind == "step":
        s = data["step"]
        detail = s.get("error") or s.get("detail") or ""
        return f"{cid}  step     {s['name']} {s['status']}  {detail}".rstrip()
    if kind == "job":
        j = data["job"]
        return f"{cid}  job      {j['id']} {j['action']} {j['status']}"
    if kind == "node":
        n = data["node"]
        return f"{cid}  node     {n['node_id']} {n['status']} {n.get('ip', '')}".rstrip()
    return f"{cid}  {kind}"


def _event_out(kind: str, data: dict[str, Any], output: str) -> str:
    if output == "json":
        return json.dumps({"event": kind, **data})
    if output == "yaml":
        return "---\n" + _dump({"event": kind, **data}, "yaml")
    return _event_line(kind, data)


async def _events(client: ApiClient, args: argparse.Namespace) -> int:
    """Print the clusters' current state, then (with --follow) every change until interrupted."""
    from pitrix.cli.httpcore import HttpConnectionError, HttpPayloadError

    path = f"/v1/clusters/{args.cluster}/events" if args.cluster else "/v1/events"
    if not args.cluster and (args.since or args.lines):
        raise UsageError("--since and -n need a CLUSTER: only a cluster's events are kept")
    if args.cluster:
        query = urlencode({k: v for k, v in (("since", args.since), ("limit", args.lines)) if v})
        if not args.follow:
            kept = await client.get(path + (f"?{query}" if query else ""))
            for record in kept["events"]:
                print(_event_out(record["type"], record, args.output), flush=True)
            return 0
        path += "?follow=true" + (f"&{query}" if query else "")
    started = False
    try:
        async for kind, data in client.events(path):
            started = True
            if kind == "ready":
                if not args.follow:
                    return 0
                continue
            print(_event_out(kind, data, args.output), flush=True)
    except (HttpPayloadError, HttpConnectionError) as exc:
        if not started:
            raise
        reason = str(exc) or type(exc).__name__
    else:
        # pitrixd never ends a stream it means to keep: it ends them all when it stops.
        reason = "pitrixd ended the event stream"
    print(f"pitrix: lost the connection to pitrixd at {args.url}: {reason}", file=sys.stderr)
    return EXIT_UNREACHABLE


# -- names, jobs, global flags ---------------------------------------------------------------------


async def _resolve_names(client: ApiClient, args: argparse.Namespace) -> None:
    """A cluster argument (and link targets) may be the cluster's name: the id from here on."""
    if getattr(args, "cluster", None):
        args.cluster = await resolve_cluster(client, args.cluster)
    if getattr(args, "link", None) and args.action in ("create", "links"):
        args.link = [
            f"{name}={await resolve_cluster(client, ref)}" if sep and ref else item
            for item in args.link
            for name, sep, ref in [item.partition("=")]
        ]


def _jobs_table(data: dict[str, Any]) -> str:
    rows = [
        (
            j["id"],
            j["action"],
            j["status"],
            age(j.get("created")),
            f"{j['finished'] - j['created']:.1f}s" if j.get("finished") else "-",
            j.get("error") or "",
        )
        for j in sorted(data["jobs"], key=lambda j: j.get("created") or 0)
    ]
    return table(("JOB", "ACTION", "STATUS", "AGE", "TOOK", "ERROR"), rows)


def _job_table(j: dict[str, Any]) -> str:
    took = f", took {j['finished'] - j['created']:.1f}s" if j.get("finished") else ""
    lines = [
        f"job {j['id']} {j['action']} on cluster {j['cluster_id']}: {j['status']}",
        f"  started {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(j['created']))} UTC{took}",
    ]
    if j.get("error"):
        lines.append(f"  error: {j['error']}")
    lines += [step_line(s) for s in j.get("steps", [])]
    lines += _results_lines(j.get("results") or {})
    return "\n".join(lines)


async def cmd_jobs(client: ApiClient, args: argparse.Namespace) -> int:
    """``jobs list|show|wait CLUSTER [JOB]``: a cluster's job history, one job, or following one
    again (after Ctrl-C or --no-wait): its ended steps first, then the rest as they end."""
    args.cluster = await resolve_cluster(client, args.cluster)
    if args.action == "list":
        _print(await client.get(f"/v1/clusters/{args.cluster}/jobs"), args.output, _jobs_table)
        return 0
    job_id = args.job
    if job_id is None:
        job_id = (await client.get(f"/v1/clusters/{args.cluster}")).get("job_id")
        if not job_id:
            raise UsageError(f"cluster {args.cluster} has no job yet")
    job = await client.get(f"/v1/clusters/{args.cluster}/jobs/{job_id}")
    if args.action == "show":
        _print(job, args.output, _job_table)
        return 0
    args.no_wait = False
    return await _wait_job(client, args.cluster, job, args)


def add_jobs_parsers(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="a cluster's jobs: history, one job's steps, follow one again")
    actions = jobs.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="the cluster's jobs, oldest first").add_argument(
        "cluster", help="cluster id or name"
    )
    show = actions.add_parser("show", help="one job with its steps and timings (default: the latest)")
    wait = actions.add_parser("wait", help="follow a running job to its end (re-attach after Ctrl-C)")
    for parser in (show, wait):
        parser.add_argument("cluster", help="cluster id or name")
        parser.add_argument("job", nargs="?", help="job id (default: the cluster's latest job)")
    wait.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="stop waiting after SECONDS and exit 7; the job goes on (default: wait until it ends)",
    )


# -- nodes: logs and exec through the node's agent (pitrix/runtime/node_commands.py) -----------------


def _node_output(data: dict[str, Any]) -> str:
    """What the node printed on stdout, as is (its stderr goes to ours, see ``cmd_nodes``)."""
    return str(data.get("stdout", "")).rstrip("\n")


async def cmd_nodes(client: ApiClient, args: argparse.Namespace) -> int:
    """``nodes logs|exec CLUSTER NODE``: the node's stdout on ours, its stderr on ours, and for
    exec its exit code as ours (as ssh does); a command killed at its timeout exits 7."""
    args.cluster = await resolve_cluster(client, args.cluster)
    if args.action == "ssh":
        from pitrix.cli.node_ssh import ShellEnded, node_ssh, report

        try:
            return await node_ssh(client, args.cluster, args.node)
        except ShellEnded as exc:
            return report(exc)
    path = f"/v1/clusters/{args.cluster}/nodes/{args.node}/{args.action}"
    if args.action == "logs":
        data = await client.get(path, lines=args.lines, file=args.file)
    else:
        words = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if words[:1] and words[0].startswith("-") and "--" in words:
            raise UsageError(
                f"nodes exec: {words[0]} comes after NODE: give flags before CLUSTER, the command after --"
            )
        if not words:
            raise UsageError("nodes exec needs a command after --, e.g. nodes exec CLUSTER NODE -- uptime")
        body: dict[str, Any] = {"command": words}
        if args.timeout is not None:
            body["timeout"] = args.timeout
        wait = (args.timeout or 60.0) + 60.0  # the command's own timeout, then the report's grace
        data = await client.request("POST", path, body, wait_up_to=wait)
    if args.output != "table":
        _print(data, args.output, _node_output)
    else:
        if data.get("stdout"):
            sys.stdout.write(data["stdout"] if data["stdout"].endswith("\n") else data["stdout"] + "\n")
        if data.get("stderr"):
            sys.stderr.write(data["stderr"] if data["stderr"].endswith("\n") else data["stderr"] + "\n")
        if data.get("truncated"):
            print("pitrix: output cut to its last 4 KiB", file=sys.stderr)
    if data.get("timed_out"):
        print(f"pitrix: {args.action} on {args.node} was killed at its timeout", file=sys.stderr)
        return EXIT_TIMEOUT
    code = data.get("exit_code")
    return code if isinstance(code, int) and 0 <= code < 256 else EXIT_FAILED


def add_nodes_parsers(sub: Any) -> None:
    nodes = sub.add_parser(
        "nodes", help="look at one node: a log's tail, one command run by its agent, a shell"
    )
    actions = nodes.add_subparsers(dest="action", required=True)
    logs = actions.add_parser(
        "logs", help="the last lines of a log on the node (default: its agent's, /var/log/pitrix-agent.log)"
    )
    run = actions.add_parser(
        "exec", help="run one command on the node (cluster active; admins or its owner); exits with its code"
    )
    shell = actions.add_parser(
        "ssh",
        help="an interactive shell on the node through pitrixd (cluster active; admins or its owner); "
        "with stdin not a terminal, a pipe: echo hostname | pitrix nodes ssh CLUSTER NODE",
    )
    for parser in (logs, run, shell):
        parser.add_argument("cluster", help="cluster id or name")
        parser.add_argument("node", help="the node's id, e.g. web-1 (see clusters show)")
    logs.add_argument(
        "-n", "--lines", type=int, default=None, metavar="N", help="how many lines (default 100)"
    )
    logs.add_argument(
        "--file", metavar="PATH", help="an absolute path on the node instead of the agent's log"
    )
    run.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="kill the command after SECONDS (default 60, at most 600)",
    )
    run.add_argument(
        "argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="-- then the command and its arguments"
    )


# The flags that may come anywhere on the line: ``pitrix clusters list -o json`` as well as
# ``pitrix -o json clusters list``. Given after the subcommand they win; SUPPRESS keeps a
# subcommand that does not see them from resetting what was given before it.
GLOBAL_FLAGS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--url",), {"help": argparse.SUPPRESS}),
    (("--token",), {"help": argparse.SUPPRESS}),
    (("-o", "--output"), {"choices": ["table", "json", "yaml"], "help": "table (default), json or yaml"}),
)


def _globals_everywhere(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                taken = set(child._option_string_actions)
                for flags, options in GLOBAL_FLAGS:
                    if not taken.intersection(flags):
                        child.add_argument(*flags, default=argparse.SUPPRESS, **options)
                _globals_everywhere(child)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _runtime_setting_arguments(add: argparse.ArgumentParser) -> None:
    """The settings `runtimes add` and `runtimes update` take."""
    add.add_argument("--zone", default="")
    add.add_argument("--endpoint", default="")
    add.add_argument(
        "--placement",
        choices=["per-owner", "per-runtime"],
        help="one metadata cluster per owner (default), or one shared by the runtime's owners",
    )
    add.add_argument(
        "--metadata-retention",
        choices=["remove-when-unused", "keep"],
        help="remove a metadata cluster with its last cluster (default), or keep it",
    )
    add.add_argument(
        "--heartbeat-interval",
        type=float,
        metavar="SECONDS",
        help="seconds between agent heartbeats for nodes deployed from now on (default 2; "
        "a dead node is noticed after three)",
    )
    add.add_argument(
        "--network",
        metavar="ID",
        help="the network instances join: a QingCloud vxnet (default vxnet-0, the base network), "
        "an AWS subnet, an OpenStack network",
    )
    add.add_argument(
        "--metadata-size",
        type=int,
        choices=[1, 3, 5, 7],
        metavar="N",
        help="members of each metadata cluster made on the runtime: 1, 3 (default), 5 or 7; "
        "three survive the loss of one metadata VM; raised, ready clusters grow to it",
    )
    add.add_argument(
        "--metadata-image",
        metavar="IMAGE",
        help="the image metadata VMs boot, as the cloud names it (an AMI id on AWS); default pitrix-metadata",
    )
    add.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="provider setting; not for credentials, which others can read in ps (it warns)",
    )
    add.add_argument(
        "--credentials-file",
        metavar="PATH",
        help='provider settings and credentials as a flat TOML table (access_key_id = "..."), '
        f"- for standard input; also read: {RUNTIME_ENV_PREFIX}<KEY> from the environment",
    )
    add.add_argument(
        "--no-check",
        action="store_true",
        help="save without asking the cloud first (by default a read-only call must succeed)",
    )


def _command_of(argv: list[str]) -> str | None:
    """The command word on the line: the first word that is neither an option nor the value of
    one of the global options (abbreviated as argparse allows), e.g. ``clusters``."""
    valued = ("--url", "--token", "--output")
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "-o" or (len(word) > 2 and any(flag.startswith(word) for flag in valued)):
            skip = True
        elif word == "--":
            return None
        elif not word.startswith("-"):
            return word
    return None


class _Listed:
    """A command not on the line: listed with its help (for ``--help`` and an invalid choice's
    message), its arguments and subcommands not built (each parser argparse builds costs about a
    hundredth of a bare Python's start, and a command has dozens)."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        self._sub.add_parser(name, help=kwargs.get("help"))
        return _Unbuilt()


class _Unbuilt:
    """Takes every call a parser's building makes, and builds nothing."""

    def __getattr__(self, _name: str) -> _Unbuilt:
        return self

    def __call__(self, *_args: Any, **_kwargs: Any) -> _Unbuilt:
        return self

    def __getitem__(self, _key: object) -> _Unbuilt:
        return self


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Every command's parser; given ``argv``, only the parsers of the command on it (the others
    are listed by name and help only: the same help, usage errors and answers, at a third of the
    cost)."""
    parser = ArgumentParser(prog="pitrix", description="Deploy and run VM application clusters.")
    parser.add_argument(
        "--url",
        help="admin API: http://host:port, https://host:port or unix:/path; a bare host:port means "
        "http:// (else PITRIX_URL, else cli.toml url)",
    )
    parser.add_argument(
        "--token", help="API token; prefer PITRIX_TOKEN or cli.toml's token (argv is visible in ps)"
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=["table", "json", "yaml"],
        help="table (default), json or yaml (also after the subcommand)",
    )
    parser.add_argument("--version", action="version", version=f"pitrix {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    wanted = None if argv is None else _command_of(argv)
    # No argv: all of them. A word that is no command (or an option's value taken for one): all of
    # them too, so argparse says what it always said. No command at all: none of them.
    every = argv is None or (wanted is not None and wanted not in COMMANDS)

    def pick(command: str) -> Any:
        return sub if every or wanted == command else _Listed(sub)

    demo = pick("demo").add_parser(
        "demo", help="run the demo on a private simulator and pitrixd, then clean up"
    )
    demo.add_argument("--json", action="store_true", help="print the demo's account as JSON")
    demo.add_argument("--keep-on-failure", action="store_true", help="keep the demo's state dir if it fails")

    runtimes = (
        pick("runtimes")
        .add_parser("runtimes", help="cloud accounts pitrix deploys to")
        .add_subparsers(dest="action", required=True)
    )
    runtimes.add_parser("list", help="the runtimes (cloud accounts) clusters can be created on")
    add = runtimes.add_parser(
        "add", help="add or replace a runtime, once its cloud answered a read-only call with it"
    )
    add.add_argument("name")
    add.add_argument("--provider", required=True)
    update = runtimes.add_parser(
        "update", help="change some of a runtime's settings or credentials, keeping the others"
    )
    update.add_argument("name")
    for parser_ in (add, update):
        _runtime_setting_arguments(parser_)
    delete = runtimes.add_parser("delete", help="remove a runtime no cluster uses (refused otherwise)")
    delete.add_argument("name")

    apps = (
        pick("apps")
        .add_parser("apps", help="registered app packages (yours and published ones)")
        .add_subparsers(dest="action", required=True)
    )
    apps.add_parser("list", help="your apps and published ones, newest version of each")
    show_app = apps.add_parser("show", help="an app's roles and registered versions")
    show_app.add_argument("name")
    show_app.add_argument("--version", help="a registered version (default: the newest)")
    register = apps.add_parser(
        "register", help="register an app spec (a new version of an app, or a new app)"
    )
    register.add_argument("-f", "--file", type=Path, required=True, help="app spec (YAML)")
    register.add_argument(
        "--publish",
        action="store_true",
        help="admins: offer it to every owner (an owner's own app of the same name still comes first)",
    )
    imported = apps.add_parser(
        "import", help="import a QingCloud AppCenter package (config.json, cluster.json.mustache, locale/)"
    )
    imported.add_argument("dir", type=Path, help="the package's directory")
    imported.add_argument(
        "--image",
        action="append",
        metavar="ROLE=ID",
        help="the image of a role (* for every role) instead of the package's",
    )
    imported.add_argument(
        "--dry-run", action="store_true", help="convert and print the report; register nothing"
    )
    imported.add_argument(
        "--name", dest="app_name", help="the app's name (default: from the package's cluster name)"
    )
    imported.add_argument("--version", dest="app_version", help="the version to register (default 1.0.0)")
    imported.add_argument("--publish", action="store_true", help="admins: offer it to every owner")

    clusters = (
        pick("clusters")
        .add_parser("clusters", help="application clusters")
        .add_subparsers(dest="action", required=True)
    )
    listing = clusters.add_parser("list", help="your clusters with state, runtime, age and node counts")
    listing.add_argument("--all", action="store_true", help="include deleted clusters")
    clusters.add_parser("show", help="a cluster's nodes, agents, custom services and last job").add_argument(
        "cluster", help="cluster id or name"
    )
    create = clusters.add_parser("create", help="deploy an app as a new cluster (the name must be new)")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("-f", "--file", type=Path, help="app spec (YAML or JSON)")
    source.add_argument("--app", help="a registered app: NAME or NAME@VERSION")
    create.add_argument("--runtime", required=True)
    create.add_argument("--name")
    create.add_argument("--count", action="append", metavar="ROLE=N", help="override a role's node count")
    create.add_argument(
        "--channel",
        choices=("rest", "ssh"),
        default="rest",
        help="how the nodes' agents are booted: userdata (rest) or over SSH with pitrixd's key pair (ssh)",
    )
    create.add_argument(
        "--link",
        action="append",
        metavar="NAME=CLUSTER",
        help="see another of your clusters on this runtime under /self/links/NAME (repeatable)",
    )
    create.add_argument(
        "--env",
        action="append",
        metavar="[ROLE.]KEY=VALUE",
        help="a deploy-time parameter value: ROLE.KEY a role's, KEY a cluster-level one (repeatable)",
    )
    create.add_argument(
        "-p",
        "--params",
        type=Path,
        metavar="PARAMS.yaml",
        help="deploy-time parameter values: {role: {key: value}, key: value}; --env wins over it",
    )
    scale = clusters.add_parser(
        "scale", help="set a role's node count (ROLE TO), or scale in chosen nodes (--role R --nodes ...)"
    )
    scale.add_argument("cluster")
    scale.add_argument("role", nargs="?", help="the role (or --role)")
    scale.add_argument("to", nargs="?", type=int, help="the role's new node count (or --count)")
    scale.add_argument("--role", dest="role_flag", metavar="ROLE")
    scale.add_argument("--count", type=int, help="the role's new node count")
    scale.add_argument(
        "--nodes", metavar="ID,ID", help="scale in: the node ids that leave (e.g. web-2,web-4)"
    )
    for action, about in (
        ("retry", "run the failed job again from where it failed"),
        ("stop", "stop the cluster's VMs (its volumes and records stay)"),
        ("start", "start a stopped cluster"),
        ("delete", "delete the cluster's VMs and volumes"),
    ):
        clusters.add_parser(action, help=about).add_argument("cluster", help="cluster id or name")
    clusters.choices["delete"].add_argument(
        "--force",
        action="store_true",
        help="go on when the stop or destroy service fails or a node cannot be reached",
    )
    env = clusters.add_parser("update-env", help="change parameters of a role's nodes, or cluster-level ones")
    env.add_argument("cluster")
    env.add_argument("--role", help="the role whose parameters change (without it: cluster-level parameters)")
    env.add_argument("--set", action="append", metavar="KEY=VALUE")
    env.add_argument(
        "--set-file",
        action="append",
        metavar="KEY=PATH",
        help="the value of KEY is the content of PATH (for passwords: argv is visible to others)",
    )
    recover = clusters.add_parser("recover", help="replace silent (or the given) nodes")
    recover.add_argument("cluster")
    recover.add_argument("--node", action="append", help="a node id to replace (repeatable)")
    service = clusters.add_parser(
        "service", help="run one of the app's custom services (clusters show lists them)"
    )
    service.add_argument("cluster")
    service.add_argument("service", metavar="NAME", help="the custom service")
    service.add_argument(
        "-p", "--param", action="append", metavar="KEY=VALUE", help="a parameter (repeatable)"
    )
    service.add_argument(
        "--param-file",
        action="append",
        metavar="KEY=PATH",
        help="the value of KEY is the content of PATH (for passwords: argv is visible to others)",
    )
    service.add_argument("--role", action="append", help="only the nodes of this role (repeatable)")
    service.add_argument("--nodes", metavar="N1,N2", help="only these node ids, comma-separated")
    restart = clusters.add_parser(
        "restart", help="rolling restart, batch by batch, each batch gated on the nodes' health"
    )
    restart.add_argument("cluster")
    restart.add_argument("--role", action="append", help="a role to restart (repeatable; default: all)")
    restart.add_argument("--node", action="append", help="a node id to restart (repeatable; default: all)")
    upgrade = clusters.add_parser(
        "upgrade", help="move the cluster to another registered version of its app (see --dry-run)"
    )
    upgrade.add_argument("cluster")
    upgrade.add_argument("--version", required=True, help="a registered version of the cluster's app")
    upgrade.add_argument("--dry-run", action="store_true", help="show what would change; start nothing")
    upgrade.add_argument(
        "--env", action="append", metavar="[ROLE.]KEY=VALUE", help="a value for the new version (repeatable)"
    )
    upgrade.add_argument("--no-wait", action="store_true", help="return once the action is accepted")
    upgrade.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="stop waiting after SECONDS and exit 7; the job goes on (default: wait until it ends)",
    )
    links = clusters.add_parser(
        "links", help="add, change or remove the cluster's links: NAME=CLUSTER_ID sets, NAME= removes"
    )
    links.add_argument("cluster")
    links.add_argument("link", nargs="+", metavar="NAME=CLUSTER_ID|NAME=")
    resize = clusters.add_parser(
        "resize", help="vertical scaling: a role's cpu, memory, instance type or volume size, node by node"
    )
    resize.add_argument("cluster")
    resize.add_argument("--role", required=True, help="the role to resize")
    resize.add_argument("--cpu", type=int, help="vCPUs")
    resize.add_argument("--memory", type=int, metavar="MiB", help="memory in MiB")
    resize.add_argument("--instance-type", metavar="TYPE", help="the provider's instance type or flavor")
    resize.add_argument("--volume-size", type=int, metavar="GiB", help="the volume's new size (grow only)")
    act = clusters.add_parser(
        "act",
        help="ask for any action by its API verb (POST /v1/clusters/CLUSTER/VERB), e.g. one added lately",
    )
    act.add_argument("cluster")
    act.add_argument("verb", help="the action's verb (see /openapi.json), e.g. stop, scale, env")
    act.add_argument("--body", metavar="JSON|@PATH", help="the request's JSON object (default: none)")
    add_backup_parsers(pick("backups"), clusters)  # backup
    tab = clusters.add_parser("tab", help="run one of the app's display tabs and print its table")
    tab.add_argument("cluster")
    tab.add_argument("name", help="the tab's name (the app's display_tabs)")
    events = clusters.add_parser(
        "events",
        help="a cluster's kept events (or every cluster's current state), then changes with --follow",
    )
    events.add_argument("cluster", nargs="?", help="one cluster (default: every cluster you may see)")
    events.add_argument("-f", "--follow", action="store_true", help="keep printing changes")
    events.add_argument(
        "--since", metavar="WHEN", help="a cluster's events since then: 10m, 2h, 1d or an RFC 3339 time"
    )
    events.add_argument("-n", "--lines", type=int, metavar="N", help="only a cluster's last N kept events")
    waiting = (
        "create",
        "scale",
        "retry",
        "stop",
        "start",
        "delete",
        "update-env",
        "recover",
        "service",
        "restart",
        "act",
        "links",
        "resize",
    )
    for action in waiting:
        clusters.choices[action].add_argument(
            "--no-wait", action="store_true", help="return once the action is accepted"
        )
        clusters.choices[action].add_argument(
            "--timeout",
            type=_seconds,
            metavar="SECONDS",
            help="stop waiting after SECONDS and exit 7; the job goes on (default: wait until it ends)",
        )
    add_jobs_parsers(pick("jobs"))
    add_nodes_parsers(pick("nodes"))
    pick("replicas").add_parser(
        "replicas", help="the pitrixd replicas sharing the clusters: shares, jobs, leases"
    )
    _globals_everywhere(parser)
    return parser


def needs_event_loop(args: argparse.Namespace) -> bool:
    """Whether the command runs on asyncio: the one place that decides.

    Only what holds a session does: the demo (child processes, a cluster followed to its end) and
    ``nodes ssh`` (a WebSocket, stdin and the terminal at once). Every other command sends its
    requests one after another, a wait's long-polls and an event stream included, and runs on the
    blocking client without importing asyncio (half of a command's start-up otherwise).
    """
    return args.command == "demo" or (args.command, getattr(args, "action", None)) == ("nodes", "ssh")


async def run(args: argparse.Namespace, *, blocking: bool = False) -> int:
    """The command's handler with its errors as exit codes; ``blocking``: on the blocking client
    (then driven by ``pitrix.cli.blocking.run_blocking``, without an event loop)."""
    from pitrix.cli.client import ApiClient, ApiError
    from pitrix.cli.httpcore import HttpConnectionError, HttpPayloadError

    handlers: dict[str, Callable[[ApiClient, argparse.Namespace], Awaitable[int]]] = {
        "apps": cmd_apps,
        "runtimes": cmd_runtimes,
        "clusters": cmd_clusters,
        "backups": cmd_backups,
        "jobs": cmd_jobs,
        "nodes": cmd_nodes,
        "replicas": cmd_replicas,
    }
    async with ApiClient(args.url, args.token, blocking=blocking) as client:
        try:
            return await handlers[args.command](client, args)
        except UsageError as exc:
            print(f"pitrix: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except (CredentialsError, AmbiguousName) as exc:
            print(f"pitrix: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except UnknownCluster as exc:
            print(f"pitrix: {exc}", file=sys.stderr)
            return EXIT_NOT_FOUND
        except ApiError as exc:
            field = f" [{exc.field}]" if exc.field else ""
            print(f"pitrix: {exc}{field}", file=sys.stderr)
            return {401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_NOT_FOUND, 409: EXIT_CONFLICT}.get(
                exc.status, EXIT_USAGE if exc.status < 500 else EXIT_FAILED
            )
        except HttpConnectionError as exc:
            print(f"pitrix: cannot reach pitrixd at {args.url}: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except HttpPayloadError as exc:
            print(f"pitrix: lost the connection to pitrixd at {args.url}: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except TimeoutError:
            print(f"pitrix: pitrixd at {args.url} did not answer in time", file=sys.stderr)
            return EXIT_UNREACHABLE


def main(argv: list[str] | None = None) -> int:
    """Run one command; Ctrl-C and a closed standard output end it with an exit code, not a traceback."""
    args = argparse.Namespace(following=None)
    try:
        try:
            return _main(argv, args)
        finally:
            # Here (also after --help), so a closed pipe is noticed while it can still be handled.
            sys.stdout.flush()
    except KeyboardInterrupt:
        detail = f"; {_job_goes_on(*args.following)}" if args.following else ""
        print(f"pitrix: interrupted{detail}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Whatever is still buffered for stdout goes nowhere, so the interpreter's own flush at exit
        # cannot fail and print a second complaint.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None, args: argparse.Namespace) -> int:
    argv = sys.argv[1:] if argv is None else argv
    build_parser(argv).parse_args(argv, namespace=args)
    try:
        config = load_config()
    except CliConfigError as exc:
        print(f"pitrix: {exc}", file=sys.stderr)
        return EXIT_USAGE
    source = "--url" if args.url else "PITRIX_URL" if os.environ.get("PITRIX_URL") else "cli.toml url"
    try:
        args.url = normalize_url(args.url or config.url)
    except BadUrl as exc:
        print(f"pitrix: {source}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.token:
        warn_secret_arguments("--token", ["token"], "use PITRIX_TOKEN or cli.toml's token instead")
    args.token = args.token or config.token
    args.output = args.output or config.output
    if not needs_event_loop(args):
        from pitrix.cli.blocking import run_blocking

        return run_blocking(run(args, blocking=True))
    import asyncio

    if args.command == "demo":
        from pitrix.cli.demo import run_demo

        return asyncio.run(run_demo(as_json=args.json, keep_on_failure=args.keep_on_failure))
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
