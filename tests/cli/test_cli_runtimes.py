"""``runtimes add`` asks the cloud before it saves; ``runtimes update/delete``; a cluster made on
wrong credentials is deleted once its runtime is fixed."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from cli_helpers import ADMIN, Run

from pitrix.runtime.keys import runtime_key
from pitrix.runtime.records import Runtime
from pitrix.sealing import Sealer
from pitrix.store import Store
from simulator.cloud import Simulator

ADMIN_ENV = {"PITRIX_TOKEN": ADMIN}
APP = {"name": "tiny", "version": "1.0", "roles": [{"name": "web", "count": 1, "image": "plain"}]}


def credentials(path: Path, sim: Simulator, **changes: str) -> str:
    """The file ``pitrix-sim --credentials-file`` writes, with ``changes``."""
    settings = {k: v for k, v in sim.runtime().items() if k != "provider"} | changes
    path.write_text("".join(f'{k} = "{v}"\n' for k, v in settings.items()))
    path.chmod(0o600)
    return str(path)


async def add(cli: Run, name: str, path: str, *flags: str) -> tuple[int, str, str]:
    """``pitrix runtimes add NAME --provider qingcloud --credentials-file PATH FLAGS`` as an admin,
    with one metadata VM (HA is not what these tests show)."""
    return await cli(
        "runtimes", "add", name, *flags, "--metadata-size", "1",
        "--provider", "qingcloud", "--credentials-file", path, env=ADMIN_ENV,
    )  # fmt: skip


async def names(cli: Run) -> list[str]:
    code, out, err = await cli("-o", "json", "runtimes", "list", env=ADMIN_ENV)
    assert code == 0, err
    return [r["name"] for r in json.loads(out)["runtimes"]]


async def test_add_asks_the_cloud_and_says_what_is_wrong(cli: Run, sim: Simulator, tmp_path: Path) -> None:
    good = credentials(tmp_path / "good.toml", sim)
    code, out, err = await add(cli, "sim", good)
    assert (code, out.strip()) == (0, "runtime sim saved"), err

    wrong_key = credentials(tmp_path / "key.toml", sim, secret_access_key="not-the-secret")
    code, _, err = await add(cli, "bad", wrong_key)
    assert code == 2 and "credentials:" in err and "nothing was saved" in err, err
    assert "not-the-secret" not in err

    wrong_place = credentials(tmp_path / "place.toml", sim, endpoint="http://127.0.0.1:9")
    code, _, err = await add(cli, "bad", wrong_place)
    assert code == 2 and "endpoint:" in err and "cannot connect to http://127.0.0.1:9" in err, err

    # The network: a vxnet the cloud does not have is caught before saving; one it has is kept.
    code, _, err = await add(cli, "bad", good, "--network", "vxnet-typo")
    assert code == 2 and "network: " in err and "vxnet vxnet-typo does not exist" in err, err
    sim.fleet.vxnets.create("vxnet-apps")
    code, _, err = await cli("runtimes", "update", "sim", "--network", "vxnet-apps", env=ADMIN_ENV)
    assert code == 0, err
    code, out, err = await cli("-o", "json", "runtimes", "list", env=ADMIN_ENV)
    assert [(r["name"], r["network"]) for r in json.loads(out)["runtimes"]] == [("sim", "vxnet-apps")], err

    code, _, err = await add(cli, "bad", wrong_place, "--no-check")
    assert code == 0, err
    assert await names(cli) == ["bad", "sim"]


async def test_a_cluster_on_wrong_credentials_goes_once_the_runtime_is_fixed(
    cli: Run, sim: Simulator, store: Store, sealer: Sealer, tmp_path: Path
) -> None:
    wrong = credentials(tmp_path / "wrong.toml", sim, secret_access_key="not-the-secret")
    code, _, err = await add(cli, "sim", wrong, "--no-check")
    assert code == 0, err
    spec = tmp_path / "app.yaml"
    spec.write_text(yaml.safe_dump(APP))
    code, _, err = await cli("clusters", "create", "--runtime", "sim", "-f", str(spec), "--name", "tiny")
    assert code == 1, err  # the cloud refused the key: the job failed
    code, out, err = await cli("-o", "json", "clusters", "list")
    (cid,) = [c["id"] for c in json.loads(out)["clusters"]]

    code, _, err = await cli("runtimes", "delete", "sim", env=ADMIN_ENV)
    assert code == 5 and f"used by clusters {cid}" in err, err
    code, _, err = await cli("runtimes", "update", "sim", "--no-check", "--placement", "bogus", env=ADMIN_ENV)
    assert code == 2 and "--placement" in err
    code, _, err = await cli("runtimes", "update", "sim", "--no-check", "--metadata-size", "2", env=ADMIN_ENV)
    assert code == 2 and "--metadata-size" in err, err
    code, out, err = await cli(
        "runtimes", "update", "sim", "--no-check", "--metadata-size", "3", env=ADMIN_ENV
    )
    assert code == 0, err
    kv = await store.get(runtime_key("sim"))
    assert kv is not None and Runtime.opened(kv.value, sealer)[0].metadata_size == 3
    code, _, err = await cli(
        "runtimes", "update", "sim", "--no-check", "--metadata-image", "ami-0abc1234", env=ADMIN_ENV
    )
    assert code == 0, err
    kv = await store.get(runtime_key("sim"))
    assert kv is not None and Runtime.opened(kv.value, sealer)[0].metadata_image == "ami-0abc1234"
    code, _, err = await cli(
        "runtimes", "update", "sim", "--no-check", "--metadata-image", "pitrix-metadata", env=ADMIN_ENV
    )
    assert code == 0, err
    code, out, err = await cli(
        "runtimes", "update", "sim", "--no-check", "--metadata-size", "1", env=ADMIN_ENV
    )
    assert code == 0, err

    # Only the secret changes: endpoint, zone and the key id stay as they were.
    fixed = tmp_path / "fixed.toml"
    fixed.write_text(f'secret_access_key = "{sim.runtime()["secret_access_key"]}"\n')
    code, out, err = await cli("runtimes", "update", "sim", "--credentials-file", str(fixed), env=ADMIN_ENV)
    assert (code, out.strip()) == (0, "runtime sim updated"), err
    kv = await store.get(runtime_key("sim"))
    assert kv is not None
    runtime, _ = Runtime.opened(kv.value, sealer)
    assert sim.runtime().items() <= runtime.model_dump().items()

    code, _, err = await cli("clusters", "delete", cid)
    assert code == 0, err
    code, out, err = await cli("runtimes", "delete", "sim", env=ADMIN_ENV)
    assert (code, out.strip()) == (0, "runtime sim deleted"), err
    assert await names(cli) == []
    code, _, err = await cli("runtimes", "delete", "sim", env=ADMIN_ENV)
    assert code == 4 and "does not exist" in err
