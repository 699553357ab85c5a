"""Where the CLI finds pitrixd and its token: flags, then environment, then the config file.

The file (``$PITRIX_CONFIG``, else ``$XDG_CONFIG_HOME/pitrix/cli.toml``, else
``~/.config/pitrix/cli.toml``) holds ``url``, ``token`` and
``output`` (table, json or yaml, as ``PITRIX_OUTPUT``); it is optional, but a file
that exists and is wrong stops the CLI with an error naming the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

DEFAULT_URL = "http://127.0.0.1:9610"
KEYS = {"url", "token", "output"}
OUTPUTS = ("table", "json", "yaml")


class CliConfigError(Exception):
    """The CLI's config file is unreadable or wrong; the message names the file and key."""


class CliConfig(NamedTuple):
    """A NamedTuple, not a dataclass: the dataclasses module costs every command a fifth of
    Python's own start (it imports inspect), for nothing a tuple does not do."""

    url: str = DEFAULT_URL
    token: str | None = None
    output: str = "table"


def config_path(env: Mapping[str, str]) -> Path:
    if env.get("PITRIX_CONFIG"):
        return Path(env["PITRIX_CONFIG"])
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "pitrix" / "cli.toml"


def load_config(env: Mapping[str, str] | None = None) -> CliConfig:
    env = os.environ if env is None else env
    path = config_path(env)
    data: dict[str, object] = {}
    if path.exists():
        import tomllib  # only when there is a file: its parser costs every command otherwise

        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise CliConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise CliConfigError(f"{path}: not valid TOML: {exc}") from None
    elif env.get("PITRIX_CONFIG"):
        raise CliConfigError(f"{path}: PITRIX_CONFIG names a file that does not exist")
    for key, value in data.items():
        if key not in KEYS:
            raise CliConfigError(f"{path}: {key}: unknown key (known: {', '.join(sorted(KEYS))})")
        if not isinstance(value, str):
            raise CliConfigError(f"{path}: {key}: must be a string")
    if data.get("output", "table") not in OUTPUTS:
        raise CliConfigError(f"{path}: output: must be one of {', '.join(OUTPUTS)}")
    if env.get("PITRIX_OUTPUT") and env["PITRIX_OUTPUT"] not in OUTPUTS:
        raise CliConfigError(
            f"PITRIX_OUTPUT: must be one of {', '.join(OUTPUTS)}, not {env['PITRIX_OUTPUT']!r}"
        )
    return CliConfig(
        url=env.get("PITRIX_URL") or str(data.get("url", DEFAULT_URL)),
        token=env.get("PITRIX_TOKEN") or (str(data["token"]) if "token" in data else None),
        output=env.get("PITRIX_OUTPUT") or str(data.get("output", "table")),
    )
