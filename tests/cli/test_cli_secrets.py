"""The CLI takes credentials from a file or the environment, and warns when one is on its argv."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import ADMIN, Run

from pitrix.runtime.keys import runtime_key
from pitrix.runtime.records import Runtime
from pitrix.sealing import Sealer
from pitrix.store import Store

ADMIN_ENV = {"PITRIX_TOKEN": ADMIN}


async def stored(store: Store, sealer: Sealer, name: str) -> dict[str, object]:
    kv = await store.get(runtime_key(name))
    assert kv is not None
    assert b"file-secret" not in kv.value and b"env-secret" not in kv.value  # sealed at rest
    runtime, clear = Runtime.opened(kv.value, sealer)
    assert not clear
    return runtime.model_dump()


async def test_runtime_credentials_from_a_file_then_the_environment(
    cli: Run, store: Store, sealer: Sealer, tmp_path: Path
) -> None:
    creds = tmp_path / "dead.toml"
    creds.write_text(
        'endpoint = "http://127.0.0.1:9"\nzone = "z1"\n'
        'access_key_id = "FILEKEY"\nsecret_access_key = "file-secret"\n'
    )
    creds.chmod(0o600)
    code, _, err = await cli(
        "runtimes",
        "add",
        "dead",
        "--no-check",
        "--provider",
        "qingcloud",
        "--credentials-file",
        str(creds),
        env=ADMIN_ENV,
    )
    assert (code, err) == (0, ""), err
    runtime = await stored(store, sealer, "dead")
    assert (runtime["endpoint"], runtime["zone"]) == ("http://127.0.0.1:9", "z1")
    assert (runtime["access_key_id"], runtime["secret_access_key"]) == ("FILEKEY", "file-secret")

    # The environment beats the file; flags beat both.
    env = {**ADMIN_ENV, "PITRIX_RUNTIME_SECRET_ACCESS_KEY": "env-secret"}
    code, _, err = await cli(
        "runtimes", "add", "dead", "--no-check", "--provider", "qingcloud", "--credentials-file", str(creds),
        "--zone", "z2", env=env,
    )  # fmt: skip
    assert (code, err) == (0, ""), err
    runtime = await stored(store, sealer, "dead")
    assert (runtime["access_key_id"], runtime["secret_access_key"], runtime["zone"]) == (
        "FILEKEY",
        "env-secret",
        "z2",
    )


async def test_a_secret_on_the_command_line_warns(cli: Run, store: Store, sealer: Sealer) -> None:
    code, _, err = await cli(
        "runtimes", "add", "dead", "--no-check", "--provider", "qingcloud", "--endpoint", "http://127.0.0.1:9",
        "--zone", "z1", "--set", "access_key_id=AK", "--set", "secret_access_key=argv-secret", env=ADMIN_ENV,
    )  # fmt: skip
    assert code == 0, err
    assert "warning: --set access_key_id, secret_access_key" in err and "--credentials-file" in err
    assert "argv-secret" not in err
    assert (await stored(store, sealer, "dead"))["secret_access_key"] == "argv-secret"


async def test_a_bad_credentials_file_is_refused_naming_it(cli: Run, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    code, _, err = await cli(
        "runtimes",
        "add",
        "dead",
        "--no-check",
        "--provider",
        "qingcloud",
        "--credentials-file",
        str(missing),
        env=ADMIN_ENV,
    )
    assert code == 2 and f"--credentials-file: {missing} does not exist" in err
    broken = tmp_path / "broken.toml"
    broken.write_text("secret_access_key = unquoted-secret\n")
    code, _, err = await cli(
        "runtimes",
        "add",
        "dead",
        "--no-check",
        "--provider",
        "qingcloud",
        "--credentials-file",
        str(broken),
        env=ADMIN_ENV,
    )
    assert code == 2 and f"{broken} is not TOML" in err and "unquoted-secret" not in err


async def test_update_env_takes_a_value_from_a_file(cli: Run, tmp_path: Path) -> None:
    code, _, err = await cli(
        "clusters", "update-env", "cl-00000000", "--role", "web", "--set-file", f"pw={tmp_path / 'nope'}"
    )
    assert code != 0 and "--set-file pw: cannot read" in err
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    code, _, err = await cli(
        "clusters", "update-env", "cl-00000000", "--role", "web", "--set-file", f"pw={secret}"
    )
    assert code == 4 and "does not exist" in err  # read, sent, and the (unknown) cluster answered
