"""The CLI as a new user meets it: names for ids, jobs to come back to, flags anywhere, tables that
line up, help everywhere, and errors in pitrix's own words."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import yaml
from cli_helpers import ADMIN, Run

from pitrix.cli.config import CliConfigError, load_config
from pitrix.cli.main import UsageError, _cluster_table, _read_spec, build_parser
from pitrix.cli.tables import age, table
from pitrix.runtime.spec import SpecError, parse_spec

APP = {
    "name": "demo",
    "version": "1.0",
    "env": {"http_port": {"type": "integer", "default": 8080}},
    "endpoints": {"http": {"port": "env.http_port", "protocol": "http"}, "admin": {"port": 9000}},
    "roles": [{"name": "web", "count": 1, "image": "demo"}],
}
LONG = "a-cluster-name-longer-than-any-column-was"


def _subcommands(parser: argparse.ArgumentParser, path: str = "pitrix") -> list[tuple[str, bool]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest for choice in action._choices_actions}
            for name, child in action.choices.items():
                found.append((f"{path} {name}", name in helped))
                found += _subcommands(child, f"{path} {name}")
    return found


def test_every_subcommand_has_help() -> None:
    commands = _subcommands(build_parser())
    assert len(commands) > 30 and ("pitrix jobs wait", True) in commands
    assert [name for name, helped in commands if not helped] == []


@pytest.mark.parametrize(
    ("argv", "output", "url"),
    [
        (["clusters", "list", "-o", "json"], "json", None),
        (["-o", "json", "clusters", "list"], "json", None),
        (["-o", "json", "clusters", "list", "--output", "yaml"], "yaml", None),  # the later one wins
        (["--url", "h:1", "jobs", "wait", "c", "-o", "yaml"], "yaml", "h:1"),
        (["jobs", "list", "c", "--url", "h:2"], None, "h:2"),
    ],
)
def test_global_flags_anywhere(argv: list[str], output: str | None, url: str | None) -> None:
    args = build_parser().parse_args(argv)
    assert (args.output, args.url) == (output, url)


def test_pitrix_output_yaml_is_honoured_and_a_wrong_one_refused(tmp_path: Path) -> None:
    env = {"PITRIX_CONFIG": str(tmp_path / "none.toml")}
    (tmp_path / "none.toml").write_text("")
    assert load_config({**env, "PITRIX_OUTPUT": "yaml"}).output == "yaml"
    with pytest.raises(CliConfigError, match="PITRIX_OUTPUT: must be one of table, json, yaml, not 'xml'"):
        load_config({**env, "PITRIX_OUTPUT": "xml"})


def test_tables_align_long_cells_and_ages_read_as_people_say_them() -> None:
    lines = table(("ID", "NAME", "STATE"), [("cl-1", LONG, "active"), ("cl-2", "x", "failed")]).splitlines()
    states = zip(lines, ("STATE", "active", "failed"), strict=True)
    assert len({line.index(state) for line, state in states}) == 1
    assert [age(1000.0 - s, now=1000.0) for s in (5, 125, 7300, 200000)] == ["5s", "2m", "2h", "2d"]
    assert age(None) == "-"


def test_show_aligns_nodes_and_lists_endpoints() -> None:
    node = {"instance_id": "i-1", "ip": "127.100.0.2", "status": "running", "agent": None}
    cluster = {
        "id": "cl-1", "name": "x", "app": {"name": "a", "version": "1"}, "state": "active",
        "runtime": "r", "owner": "o",
        "nodes": [{**node, "node_id": "web-1"}, {**node, "node_id": "a-long-role-name-10"}],
        "endpoints": {"http": {"port": 80, "protocol": "http", "addresses": ["127.100.0.2:80"]}},
        "metadata": {"name": "m", "status": "ready", "members": ["10.0.0.1"], "condition": ""},
    }  # fmt: skip
    shown = _cluster_table(cluster)
    lines = shown.splitlines()
    assert len({line.index("i-1") for line in lines if "i-1" in line}) == 1, shown
    assert lines[-2:] == ["  endpoints:", "    http  http  127.100.0.2:80"], shown
    # Something wrong with the metadata cluster's members is said (nothing when all is well).
    stuck = {**cluster["metadata"], "condition": "quorum lost: 2 of 3 metadata members lost"}
    lines = _cluster_table({**cluster, "metadata": stuck}).splitlines()
    assert lines[-1] == "  metadata: quorum lost: 2 of 3 metadata members lost"


def test_spec_errors_in_our_words_with_did_you_mean() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({**APP, "roles": [{"name": "web", "image": "demo", "cuont": 2}], "verison": "2"})
    message = str(caught.value)
    assert "roles.0.cuont: unknown key; did you mean 'count'?" in message
    assert "verison: unknown key; did you mean 'version'?" in message
    assert "Extra inputs" not in message
    with pytest.raises(SpecError, match=r"roles.0.count: must be a whole number, not 'two'"):
        parse_spec({**APP, "roles": [{"name": "web", "image": "demo", "count": "two"}]})


def test_a_yaml_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "app.yaml"
    bad.write_text("name: demo\nroles: [\n")
    with pytest.raises(UsageError) as caught:
        _read_spec(bad)
    assert str(caught.value).startswith(f"{bad} is not valid YAML: line 3, column 1:")
    assert "<unicode string>" not in str(caught.value)


async def test_names_jobs_tables_and_errors_against_pitrixd(cli: Run, tmp_path: Path) -> None:
    spec = tmp_path / "app.yaml"
    spec.write_text(yaml.safe_dump(APP))
    assert (await cli("apps", "register", "-f", str(spec)))[0] == 0
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({**APP, "roles": [{"name": "web", "image": "demo", "cuont": 1}]}))
    code, _, err = await cli("apps", "register", "-f", str(typo))
    assert code == 2 and "did you mean 'count'?" in err and "Extra inputs" not in err, err
    code, _, err = await cli(
        "runtimes", "add", "dead", "--provider", "qingcloud", "--endpoint", "http://127.0.0.1:9",
        "--zone", "z1", "--set", "access_key_id=AK", "--set", "secret_access_key=SK", "--no-check",
        env={"PITRIX_TOKEN": ADMIN},
    )  # fmt: skip
    assert code == 0, err
    code, out, err = await cli("runtimes", "list", env={"PITRIX_TOKEN": ADMIN})
    assert code == 0 and out.split("\n")[0].split() == ["NAME", "PROVIDER", "ZONE", "ENDPOINT"], out

    # A name is unique per owner and stands for the id; a default name is numbered.
    create = ("clusters", "create", "--runtime", "dead", "--app", "demo", "--no-wait")
    code, out, err = await cli(*create, "--name", "shop", "-o", "json")  # -o after the subcommand
    assert code == 0, err
    cid = json.loads(out)["cluster_id"]
    code, _, err = await cli(*create, "--name", "shop")
    assert code == 5 and f"name: 'shop' is taken by cluster {cid}" in err and "[name]" in err, err
    code, _, err = await cli(*create, "--name", "cl-0123abcd")
    assert code == 2 and "must not look like a cluster id" in err, err
    for _ in range(2):  # named demo, then demo-2 (the listing below shows)
        assert (await cli(*create))[0] == 0
    assert (await cli(*create, "--name", LONG))[0] == 0

    # Re-attach to the create job by the cluster's name: it fails on the dead cloud (exit 1).
    code, out, err = await cli("jobs", "wait", "shop")
    assert code == 1 and f"{cid}: create (job " in out and "metadata" in out, (out, err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    code, out, err = await cli("jobs", "list", "shop")
    assert code == 0 and out.split("\n")[0].split() == ["JOB", "ACTION", "STATUS", "AGE", "TOOK", "ERROR"]
    assert out.split("\n")[1].split()[1:3] == ["create", "failed"], out
    code, out, err = await cli("jobs", "show", "shop", "-o", "yaml")
    job = yaml.safe_load(out)
    assert code == 0 and job["status"] == "failed" and job["steps"], out
    code, out, err = await cli("jobs", "show", "shop")
    assert code == 0 and out.startswith(f"job {job['id']} create on cluster {cid}: failed"), out

    code, out, err = await cli("-o", "json", "clusters", "show", "shop")
    assert code == 0 and json.loads(out)["id"] == cid, err
    assert json.loads(out)["endpoints"]["http"] == {
        "port": 8080,
        "protocol": "http",
        "from": "env.http_port",
        "addresses": [],
    }
    code, out, err = await cli("clusters", "show", "shop")
    assert code == 0 and re.search(r"endpoints:\n +admin +tcp +port 9000", out), out
    code, _, err = await cli("clusters", "show", "shpo")
    assert code == 4 and "did you mean 'shop'?" in err, err

    # Tables line up whatever the names' lengths, with an AGE; PITRIX_OUTPUT=yaml is honoured.
    code, out, err = await cli("clusters", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ID", "NAME", "STATE", "RUNTIME", "AGE", "NODES"], out
    assert len(lines) == 5 and len({line.index(" dead ") for line in lines[1:]}) == 1, out
    assert all(re.fullmatch(r"\d+[smhd]", line.split()[4]) for line in lines[1:]), out
    code, out, err = await cli("clusters", "list", env={"PITRIX_OUTPUT": "yaml"})
    names = {c["name"] for c in yaml.safe_load(out)["clusters"]}
    assert code == 0 and names == {"shop", "demo", "demo-2", LONG}, out

    # Refusals in our words: the lifecycle's verb as typed, a misspelt role's close name.
    code, _, err = await cli("clusters", "scale", "shop", "web", "2")
    assert code == 5 and "cannot scale out a cluster that is failed" in err, err
    code, _, err = await cli("clusters", "act", "shop", "resize", "--body", '{"roles": {"wbe": {"cpu": 2}}}')
    assert code in (2, 5) and "scale_out" not in err, err
