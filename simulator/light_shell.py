"""The shell of a light-mode VM: a handful of commands answered in-process, no process started.

Light mode exists so one machine can hold thousands of VMs; a real ``sh`` per SSH session would
defeat that. The command set is what probes and file pushes need: ``true``, ``false``, ``echo``,
``hostname``, ``pwd``, ``id``, ``uname``, ``cat FILE...``, ``cat > FILE`` / ``cat >> FILE`` (the
client's stdin), ``mkdir -p DIR``, ``touch FILE``, ``chmod MODE FILE``, ``exit N``; several joined
with ``;`` or ``&&``. Paths are under the VM root and cannot leave it; ``$PITRIX_VM_ROOT`` is the
root itself (empty, as on a real image), ``$PITRIX_VM_ID`` and ``$PITRIX_VM_IP`` the VM's.
``[nohup] pitrix-agent -config-file FILE ...`` starts the VM's in-process agent (redirections and
a trailing ``&`` are accepted and mean nothing: it is in the background by nature), as pitrixd's
SSH bootstrap does. Anything else answers ``not found`` with status 127, as ``sh`` would.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

MAX_INPUT = 64 * 1024 * 1024  # a file pushed with ``cat >`` is held in memory once
VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Z_][A-Z0-9_]*)(?::-[^}]*)?\}|(?P<bare>[A-Z_][A-Z0-9_]*))")

# Starts the VM's agent from the config at this path (inside the VM); the error text, or "".
StartAgent = Callable[[str], Awaitable[str]]


class _Out(Protocol):
    def write(self, data: bytes) -> None: ...


class _In(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class _Process(Protocol):
    @property
    def stdin(self) -> _In: ...
    @property
    def stdout(self) -> _Out: ...
    @property
    def stderr(self) -> _Out: ...


def _under(root: Path, name: str) -> Path:
    """``name`` inside the VM root (absolute names are relative to the root, as in a chroot)."""
    path = (root / name.lstrip("/")).resolve()
    if path != root.resolve() and root.resolve() not in path.parents:
        raise PermissionError(f"{name}: outside the VM")
    return path


async def _read_all(stdin: _In) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while data := await stdin.read(65536):
        size += len(data)
        if size > MAX_INPUT:
            raise ValueError("input too large")
        chunks.append(data)
    return b"".join(chunks)


def _split(command: str) -> list[tuple[str, list[str]]]:
    """``a; b && c`` → [(";", a), ("&&", b), ...]: each part with the operator that precedes it."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    parts: list[tuple[str, list[str]]] = []
    joiner, current = ";", list[str]()
    for token in lexer:
        if token in (";", "&&"):
            parts.append((joiner, current))
            joiner, current = token, []
        else:
            current.append(token)
    parts.append((joiner, current))
    return [(j, words) for j, words in parts if words]


def _expand(word: str, variables: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        return variables.get(match.group("braced") or match.group("bare"), "")

    return VARIABLE.sub(value, word)


async def run_light(
    command: str,
    process: _Process,
    root: Path,
    instance_id: str,
    *,
    ip: str = "",
    start_agent: StartAgent | None = None,
) -> int:
    """Run ``command`` in the emulated shell; returns its exit status."""
    variables = {"PITRIX_VM_ROOT": "", "PITRIX_VM_ID": instance_id, "PITRIX_VM_IP": ip}
    try:
        parts = [(j, [_expand(w, variables) for w in words]) for j, words in _split(command)]
    except ValueError as exc:
        process.stderr.write(f"sh: syntax error: {exc}\n".encode())
        return 2
    status = 0
    for joiner, words in parts:
        if joiner == "&&" and status != 0:
            continue
        if words[0] == "exit":
            return int(words[1]) if len(words) > 1 and words[1].isdigit() else status
        status = await _one(words, process, root, instance_id, start_agent)
    return status


async def _one(
    words: list[str], process: _Process, root: Path, instance_id: str, start_agent: StartAgent | None
) -> int:
    if words[0] == "nohup" and len(words) > 1:
        words = words[1:]
    name, args = words[0], words[1:]
    out, err = process.stdout, process.stderr
    try:
        if name == "true":
            return 0
        if name == "false":
            return 1
        if name == "echo":
            out.write((" ".join(args) + "\n").encode())
            return 0
        if name == "hostname":
            out.write(f"{instance_id}\n".encode())
            return 0
        if name == "pwd":
            out.write(b"/\n")
            return 0
        if name == "id":
            out.write(b"uid=0(root) gid=0(root) groups=0(root)\n")
            return 0
        if name == "uname":
            out.write(b"Linux\n")
            return 0
        if name == "cat":
            return await _cat(args, process, root)
        if name == "mkdir" and args[:1] == ["-p"] and len(args) > 1:
            for arg in args[1:]:
                await asyncio.to_thread(_under(root, arg).mkdir, parents=True, exist_ok=True)
            return 0
        if name == "touch" and args:
            for arg in args:
                await asyncio.to_thread(_under(root, arg).touch)
            return 0
        if name == "chmod" and len(args) == 2 and re.fullmatch(r"[0-7]{3,4}", args[0]):
            await asyncio.to_thread(_under(root, args[1]).chmod, int(args[0], 8))
            return 0
        if name == "pitrix-agent" and start_agent is not None:
            return await _agent(args, process, root, start_agent)
    except (OSError, ValueError) as exc:
        err.write(f"{name}: {exc}\n".encode())
        return 1
    err.write(f"sh: 1: {name}: not found\n".encode())
    return 127


async def _agent(args: list[str], process: _Process, root: Path, start_agent: StartAgent) -> int:
    if len(args) < 2 or args[0] not in ("-config-file", "--config-file"):
        process.stderr.write(b"pitrix-agent: usage: pitrix-agent -config-file FILE\n")
        return 2
    _under(root, args[1])  # inside the VM, or PermissionError
    error = await start_agent(args[1])
    if error:
        process.stderr.write(f"pitrix-agent: {error}\n".encode())
        return 1
    return 0


async def _cat(args: list[str], process: _Process, root: Path) -> int:
    if len(args) == 2 and args[0] in (">", ">>"):
        data = await _read_all(process.stdin)
        target = _under(root, args[1])
        mode = "ab" if args[0] == ">>" else "wb"

        def write() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open(mode) as fh:
                fh.write(data)

        await asyncio.to_thread(write)
        return 0
    if not args:
        process.stdout.write(await _read_all(process.stdin))
        return 0
    status = 0
    for name in args:
        try:
            process.stdout.write(await asyncio.to_thread(_under(root, name).read_bytes))
        except OSError as exc:
            process.stderr.write(f"cat: {name}: {exc.strerror or exc}\n".encode())
            status = 1
    return status
