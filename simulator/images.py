"""Where VM images come from: directories named by image id.

Extra image directories are searched before the packaged ones so an operator can shadow a bundled
image with their own build of it.
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGED_IMAGES = Path(__file__).resolve().parent / "images"
# An image holding this file cannot work without its processes (the metadata VM's etcd and metad):
# a light fleet still boots it as a full VM, so a light simulator can host pitrixd's clusters.
FULL_VM_MARKER = "etc/pitrix-sim/full-vm"
# An image holding this file runs sandboxed (simulator/sandbox.py): its VM's processes see the VM
# root as ``/`` with the host's system directories beneath, as AppCenter images expect a whole
# machine. Sandboxed VMs are always full VMs (a light simulator boots them with processes too).
SANDBOX_MARKER = "etc/pitrix-sim/sandbox"
IMAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ImageNotFound(LookupError):
    """No directory holds this image."""


class ImageCatalog:
    def __init__(self, extra_dirs: list[Path] | None = None) -> None:
        self.dirs = [Path(d) for d in extra_dirs or []] + [PACKAGED_IMAGES]

    def find(self, image_id: str) -> Path:
        if not IMAGE_ID.match(image_id):
            raise ImageNotFound(f"image_id {image_id!r} is not a valid image name")
        for base in self.dirs:
            candidate = base / image_id
            if candidate.is_dir():
                return candidate
        raise ImageNotFound(f"image [{image_id}] not found in {', '.join(str(d) for d in self.dirs)}")

    @staticmethod
    def needs_processes(image_dir: Path) -> bool:
        return (image_dir / FULL_VM_MARKER).is_file() or ImageCatalog.sandboxed(image_dir)

    @staticmethod
    def sandboxed(image_dir: Path) -> bool:
        return (image_dir / SANDBOX_MARKER).is_file()

    def names(self) -> list[str]:
        found: set[str] = set()
        for base in self.dirs:
            if base.is_dir():
                found.update(p.name for p in base.iterdir() if p.is_dir() and IMAGE_ID.match(p.name))
        return sorted(found)
