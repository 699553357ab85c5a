"""The node-side half of a volume's growth: the command a node's agent runs once the cloud grew it.

It finds the device as the prepare does (``volume_prepare``: the first of the cloud's paths that
exists) and grows the filesystem on it to the device's size, online: ``resize2fs`` for ext4 (on
the device), ``xfs_growfs`` for xfs (on the mount point). A simulated VM's volume is a directory,
which has no filesystem of its own to grow: the command says so and prints the size the guest
sees (``/sys/block/<dev>/size``, in 512-byte sectors). Run again, it changes nothing (a filesystem
the size of its device is left as it is).
"""

from __future__ import annotations

import shlex

from pitrix.runtime.spec import Volume


def grow_command(volume: Volume, device_paths: tuple[str, ...]) -> str:
    """The command that grows ``volume``'s filesystem, found at one of ``device_paths``."""
    if not device_paths:
        raise ValueError("a volume to grow needs at least one device path")
    q = shlex.quote
    candidates = " ".join(q(p) for p in device_paths)
    return f"""set -eu
root="${{PITRIX_VM_ROOT:-/}}"; root="${{root%/}}"
mp="$root"{q(volume.mount_point)}
dev=""; name=""
for d in {candidates}; do
  if [ -e "$root$d" ]; then dev="$root$d"; name="$(basename "$d")"; break; fi
done
if [ -z "$dev" ]; then echo "volume: no device at" {candidates} >&2; exit 1; fi
if [ -d "$dev" ]; then
  sectors="$(cat "$root/sys/block/$name/size" 2>/dev/null || echo unknown)"
  echo "volume: $dev is a directory ($sectors sectors): nothing to grow"
  exit 0
fi
if [ ! -b "$dev" ]; then echo "volume: $dev is neither a block device nor a directory" >&2; exit 1; fi
dev="$(readlink -f "$dev")"
fstype="$(blkid -p -s TYPE -o value "$dev")"
case "$fstype" in
  ext2|ext3|ext4) resize2fs "$dev" ;;
  xfs) xfs_growfs "$mp" ;;
  *) echo "volume: cannot grow a $fstype filesystem on $dev" >&2; exit 1 ;;
esac
echo "volume: $fstype on $dev grown to $(blockdev --getsize64 "$dev") bytes"
"""
