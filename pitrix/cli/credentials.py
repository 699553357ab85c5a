"""Secrets for the CLI from a file or the environment, never from its arguments.

Every user on a host can read every process' arguments (``ps``, ``/proc/<pid>/cmdline``), so a
cloud credential or a password parameter passed as ``--set secret_access_key=...`` is published.
A runtime's settings come from, lowest first: ``--credentials-file`` (a flat TOML table, or ``-``
for standard input), the environment (``PITRIX_RUNTIME_<KEY>``, e.g.
``PITRIX_RUNTIME_SECRET_ACCESS_KEY``), then ``--set``, which still works but warns when a key
looks secret.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

RUNTIME_ENV_PREFIX = "PITRIX_RUNTIME_"
# A key holding one of these words is taken for a secret (as pitrixd seals and hides it).
SECRET_WORDS = ("secret", "password", "token", "key", "credential")


class CredentialsError(Exception):
    """A credentials file cannot be used; the message names it and says why."""


def looks_secret(key: str) -> bool:
    return any(word in key.lower() for word in SECRET_WORDS)


def read_credentials_file(path: str, stdin: TextIO | None = None) -> dict[str, Any]:
    """The flat TOML table in ``path`` (``-``: standard input): ``access_key_id = "..."`` lines."""
    import tomllib  # here: the CLI imports this module for every command, --help too

    source = "standard input" if path == "-" else path
    try:
        text = (stdin or sys.stdin).read() if path == "-" else Path(path).read_text()
    except FileNotFoundError:
        raise CredentialsError(f"--credentials-file: {source} does not exist") from None
    except OSError as exc:
        raise CredentialsError(f"--credentials-file: {source} cannot be read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The parser's message quotes no value, only where it stopped.
        raise CredentialsError(
            f'--credentials-file: {source} is not TOML (key = "value" lines): {exc}'
        ) from None
    for key, value in data.items():
        if isinstance(value, dict | list):
            raise CredentialsError(f"--credentials-file: {source}: {key} must be a single value")
    return data


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Runtime settings given as ``PITRIX_RUNTIME_<KEY>`` (the key in lower case)."""
    env = os.environ if environ is None else environ
    return {
        name[len(RUNTIME_ENV_PREFIX) :].lower(): value
        for name, value in env.items()
        if name.startswith(RUNTIME_ENV_PREFIX) and len(name) > len(RUNTIME_ENV_PREFIX)
    }


def warn_secret_arguments(flag: str, keys: list[str], hint: str) -> None:
    """Say on stderr that secret-looking ``keys`` given on the command line are visible to others."""
    secret = sorted(k for k in keys if looks_secret(k))
    if secret:
        print(
            f"pitrix: warning: {flag} {', '.join(secret)}: a command line is visible to every user "
            f"of this host (ps); {hint}",
            file=sys.stderr,
        )
