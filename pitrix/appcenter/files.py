"""Which files of a package directory an import reads; light, so the CLI reads them cheaply."""

from __future__ import annotations

import re
from pathlib import Path

from pitrix.appcenter.errors import PackageError

CONFIG = "config.json"
CLUSTER = "cluster.json.mustache"
PACKAGE_FILES = (CONFIG, CLUSTER)
LOCALE = re.compile(r"^locale/([A-Za-z0-9_-]{1,16})\.json$")


def read_dir(path: Path) -> dict[str, str]:
    """The files of a package directory the importer reads (PackageError when one is unreadable);
    a byte-order mark some editors write is dropped."""
    files: dict[str, str] = {}
    names = [*PACKAGE_FILES, *(f"locale/{p.name}" for p in sorted((path / "locale").glob("*.json")))]
    for rel in names:
        try:
            files[rel] = (path / rel).read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            if rel in PACKAGE_FILES:
                raise PackageError(f"{rel}: missing from {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PackageError(f"{rel}: cannot read it: {exc}") from None
    return files
