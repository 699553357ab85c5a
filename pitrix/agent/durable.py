"""Files the agent writes so that a crash at any moment leaves the old file or the new one, whole.

Rendered configs, the command ledger and the agent's key and certificate all go through here:
write a hidden sibling, fsync it, give it its final owner and mode, then rename it over the target
(rename is atomic within a directory) and fsync the directory so the rename itself survives.
"""

from __future__ import annotations

import os
from pathlib import Path

# Random characters in a staged file's name; tries before giving up on finding a free one.
_NAME_BYTES = 6
_ATTEMPTS = 100


def _create_hidden(dest: Path) -> tuple[int, Path]:
    """A new file ``.<dest name>.<random>`` beside ``dest``, created 0600 and exclusively.

    What ``tempfile.mkstemp`` does, without importing tempfile (with shutil, random, bz2 and lzma:
    a tenth of a one-shot render's start).
    """
    for _ in range(_ATTEMPTS):
        path = dest.with_name(f".{dest.name}.{os.urandom(_NAME_BYTES).hex()}")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        return fd, path
    raise FileExistsError(f"{dest.parent}: no free name for a staged copy of {dest.name}")


def stage_beside(dest: Path, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> Path:
    """A synced hidden copy of ``data`` in ``dest``'s directory, with its final attributes.

    The copy is created 0600, so a key is never readable by others even for a moment.
    """
    fd, path = _create_hidden(dest)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if owner is not None:
            st = path.stat()
            if (st.st_uid, st.st_gid) != owner:
                os.chown(path, *owner)
        os.chmod(path, mode)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see the module's docstring)."""
    staged = stage_beside(path, data, mode)
    try:
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)
