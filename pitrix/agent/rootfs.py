"""Paths inside a VM's root.

A simulated VM's root is a directory on the host; a real VM's root is ``/``. The agent resolves
every path that comes from the VM's own configuration under that root, so the same config and
the same images work in both places and nothing a VM does touches the host's ``/etc``.
"""

from __future__ import annotations

import os
from pathlib import Path


def under_root(root: Path, path: str | os.PathLike[str]) -> Path:
    """``path`` as seen from inside the VM, mapped to the host.

    Relative paths are relative to the root (commands run with it as cwd); ``..`` never climbs
    above the root.
    """
    inside = os.path.normpath("/" + os.fspath(path))
    # normpath keeps a leading "//" (POSIX allows it to mean something else); strip them all.
    return root / inside.lstrip("/")


def default_root() -> Path:
    """``$PITRIX_VM_ROOT`` when the agent runs inside a simulated VM, ``/`` otherwise."""
    return Path(os.environ.get("PITRIX_VM_ROOT") or "/")
