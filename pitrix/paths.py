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
