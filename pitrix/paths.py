"""Where pitrix keeps state on disk.

Root keeps state in /var/lib/pitrix like any system daemon; an ordinary user gets the XDG state
directory so the demo and the tests run without privileges. Every component takes an explicit
override so tests can give each run its own directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_state_dir(component: str = "") -> Path:
    """The state directory for ``component`` (``""`` for the top level)."""
    override = os.environ.get("PITRIX_STATE_DIR")
    if override:
        base = Path(override)
    elif os.geteuid() == 0:
        base = Path("/var/lib/pitrix")
    else:
        xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        base = Path(xdg) / "pitrix"
    return base / component if component else base


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` (and parents) private to the current user."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, readable by the current user only.

    The temporary file is created 0600, so not even a moment passes in which another user could
    open it (a chmod after the write would leave that moment); it reaches the disk before the
    rename, so a crash leaves the old file or the new one, never an empty one.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
