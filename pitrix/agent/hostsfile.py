"""One name in the VM's ``/etc/hosts``: how an AppCenter image finds ``http://metadata/``.

AppCenter images reach their metadata at the host name ``metadata``; the agent's proxy listens on
an address of the VM, so the VM must resolve that name to it. The line is added once and kept:
a second run finds it in place and writes nothing, a line naming ``metadata`` elsewhere (an
earlier listen address) is replaced, every other line stays as it was.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from pitrix.agent.durable import stage_beside
from pitrix.agent.rootfs import under_root

HOSTS_FILE = "/etc/hosts"


def _names(line: str) -> list[str]:
    fields = line.split("#", 1)[0].split()
    return fields[1:] if len(fields) > 1 else []


def hosts_text(current: str, addr: str, name: str) -> str | None:
    """``current`` with ``addr name`` in it; None when it is there already (and nowhere else)."""
    lines = current.splitlines()
    wanted = f"{addr} {name}"
    mapped = [i for i, line in enumerate(lines) if name in _names(line)]
    if len(mapped) == 1 and lines[mapped[0]].split("#", 1)[0].split()[0] == addr:
        return None
    kept: list[str] = []
    for i, line in enumerate(lines):
        if i not in mapped:
            kept.append(line)
            continue
        # Another address for the name: the name leaves that line; the line stays if it names others.
        fields = line.split("#", 1)[0].split()
        others = [n for n in fields[1:] if n != name]
        if others:
            kept.append(" ".join([fields[0], *others]))
    kept.append(wanted)
    return "\n".join(kept) + "\n"


def ensure_entry(root: Path, addr: str, name: str = "metadata") -> bool:
    """Make ``<root>/etc/hosts`` map ``name`` to ``addr``; whether the file was written.

    Replaced atomically where it can be; a hosts file that is a bind mount (a sandboxed VM's own
    ``/etc/hosts``) cannot be renamed over and is rewritten in place. Raises OSError.
    """
    path = under_root(root, HOSTS_FILE)
    try:
        st = path.stat()
        current = path.read_text(encoding="utf-8", errors="surrogateescape")
        mode = st.st_mode & 0o7777
    except FileNotFoundError:
        current, mode = "", 0o644
    text = hosts_text(current, addr, name)
    if text is None:
        return False
    data = text.encode("utf-8", "surrogateescape")
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = stage_beside(path, data, mode)
    try:
        os.replace(staged, path)
    except OSError as exc:
        staged.unlink(missing_ok=True)
        if exc.errno != errno.EBUSY:
            raise
        path.write_bytes(data)
    return True
