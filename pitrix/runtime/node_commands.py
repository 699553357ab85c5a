"""Looking at one node: the tail of a log file on it, or one command run on it (``nodes logs/exec``).

Both go the way display tabs go (``pitrix.runtime.tabs.run_on_node``): one command in the node's
command slot, run by its agent under ``sh -c`` with the VM root as working directory, its result
record read back. What comes back is bounded by the agent: the last 4 KiB of stdout and of stderr
(``MAX_OUTPUT``), so a log's ``lines`` are the last lines that fit in them.

The requests are checked here, each refusal naming its field, before anything reaches a node.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pitrix.runtime.actions.base import InvalidRequest
from pitrix.runtime.steps.published import MAX_OUTPUT, stdout_of
from pitrix.runtime.userdata import AGENT_LOG

DEFAULT_LINES = 100
MAX_LINES = 10_000
LOGS_TIMEOUT = 20.0
DEFAULT_EXEC_TIMEOUT = 60.0
MAX_EXEC_TIMEOUT = 600.0
MAX_COMMAND = 8192  # characters of a command line: it travels through metad as one value
MAX_PATH = 1024


class NodeCommandFailed(Exception):
    """No result came back from the node in time (a 502: the node, not the request, is at fault)."""


@dataclass(frozen=True)
class NodeCommand:
    """What runs on the node: ``kind`` (logs, exec), the shell text and its timeout."""

    kind: str
    cmd: str
    timeout: float
    shown: str  # for the audit line: the file read, or the command as given

    def command_id(self) -> str:
        return f"{self.kind}-{secrets.token_hex(8)}"


def _int(raw: str, field: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{field}: {raw[:40]!r} is not a whole number") from None
    if not low <= value <= high:
        raise InvalidRequest(f"{field}: must be from {low} to {high}, got {value}")
    return value


def _path(raw: str) -> str:
    if not raw.startswith("/"):
        raise InvalidRequest(f"file: must be an absolute path on the node, got {raw[:80]!r}")
    if len(raw) > MAX_PATH or "\0" in raw or "\n" in raw:
        raise InvalidRequest(f"file: at most {MAX_PATH} characters, no NUL or newline")
    if ".." in raw.split("/"):
        raise InvalidRequest("file: must not hold '..' segments")
    return raw


def logs_request(query: Mapping[str, str]) -> NodeCommand:
    """``?lines=N&file=PATH`` (default: the last 100 lines of the agent's log, ``AGENT_LOG``).

    The path is inside the VM: its root (``$PITRIX_VM_ROOT``, empty on a real image) prefixes it,
    as the agent's own userdata does.
    """
    unknown = sorted(set(query) - {"lines", "file"})
    if unknown:
        raise InvalidRequest(f"{unknown[0][:40]}: unknown parameter (known: lines, file)")
    lines = _int(query.get("lines", str(DEFAULT_LINES)), "lines", 1, MAX_LINES)
    path = _path(query.get("file", AGENT_LOG))
    target = f'"${{PITRIX_VM_ROOT:-}}"{shlex.quote(path)}'
    cmd = (
        f"f={target}; "
        f'if [ ! -r "$f" ]; then echo {shlex.quote(path + ": no such readable file on this node")} >&2; '
        "exit 66; fi; "
        f'tail -n {lines} "$f"'
    )
    return NodeCommand("logs", cmd, LOGS_TIMEOUT, path)


def exec_request(body: Mapping[str, Any]) -> NodeCommand:
    """``{"command": ["ls", "-l"] | "shell text", "timeout": seconds}``: an argument list is quoted
    word by word; a string is run as shell text (pipes and all)."""
    unknown = sorted(set(body) - {"command", "timeout"})
    if unknown:
        raise InvalidRequest(f"{unknown[0][:40]}: unknown field (known: command, timeout)")
    command = body.get("command")
    if isinstance(command, list) and command and all(isinstance(word, str) for word in command):
        text = shlex.join(command)
    elif isinstance(command, str) and command.strip():
        text = command
    else:
        raise InvalidRequest("command: must be a non-empty list of strings (argv) or a non-empty string")
    if len(text) > MAX_COMMAND or "\0" in text:
        raise InvalidRequest(f"command: at most {MAX_COMMAND} characters, no NUL")
    raw = body.get("timeout", DEFAULT_EXEC_TIMEOUT)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 1 <= raw <= MAX_EXEC_TIMEOUT:
        raise InvalidRequest(f"timeout: must be a number of seconds from 1 to {MAX_EXEC_TIMEOUT:g}")
    return NodeCommand("exec", text, float(raw), text)


def result_view(node_id: str, command: NodeCommand, result: dict[str, Any]) -> dict[str, Any]:
    """The API's answer: the node, the exit code (null when the command was killed at its
    timeout), and the tails of stdout and stderr with whether they were cut."""
    stdout = str(stdout_of(result))  # an older agent reports the merged output only
    stderr = str(result.get("stderr_tail") or "")
    return {
        "node": node_id,
        "kind": command.kind,
        "status": result.get("status"),
        "exit_code": result.get("exit_code"),
        "timed_out": result.get("status") == "failed" and result.get("exit_code") is None,
        "stdout": stdout,
        "stderr": stderr,
        "truncated": len(stdout.encode()) >= MAX_OUTPUT or len(stderr.encode()) >= MAX_OUTPUT,
        "started": result.get("started"),
        "finished": result.get("finished"),
    }
