"""The node-side half of a volume: the shell command a node's agent runs to make it usable.

pitrixd sends it like any service command (so it runs as the agent runs everything: in the VM's
root, with ``PITRIX_VM_ROOT`` set, its result reported back). It finds the device among the paths
the cloud gave (the first that exists; it waits a while for a device that lags its attachment) and
tells the two kinds of device apart by testing the path:

- a block device (a real VM): formatted only when blkid finds no filesystem on it (a reattached
  volume keeps its data), recorded in ``/etc/fstab`` by UUID with ``nofail`` (so it is mounted again
  at every boot, and a missing volume never stops a boot), then mounted;
- a directory (a simulated VM, whose device entry links to the volume's directory): the mount point
  becomes a symlink to the device entry, which lives in the VM's root and so survives its stop and
  start, and dangles once the volume is detached;
- a directory in a sandboxed simulated VM (the command runs at the VM's own ``/``, the image holds
  ``/etc/pitrix-sim/sandbox``): a bind mount in the VM's mount namespace, recorded in its
  ``/etc/fstab`` (``bind,nofail``; the sandbox mounts such entries at each boot), because a link
  is not what a package expects of a disk: ``chown -R user /data`` changes only the link, and a
  daemon running as that user cannot write its data.

Run again, it changes nothing: an existing fstab entry, a mounted mount point or a link already in
place are left as they are.
"""

from __future__ import annotations

import shlex

from pitrix.runtime.spec import Volume

DEVICE_WAIT = 60.0  # seconds for the guest to show an attached device (looked for twice a second)
MKFS = {"ext4": "mkfs.ext4 -q", "xfs": "mkfs.xfs -q"}
# What a sandboxed simulator image holds (simulator.images.SANDBOX_MARKER; the runtime does not
# import the simulator): there a directory device is bind-mounted rather than linked.
SANDBOX_MARKER = "/etc/pitrix-sim/sandbox"


def prepare_command(
    volume: Volume, device_paths: tuple[str, ...], *, device_wait: float = DEVICE_WAIT
) -> str:
    """The command that formats (if blank) and mounts ``volume`` found at one of ``device_paths``."""
    if not device_paths:
        raise ValueError("a volume to prepare needs at least one device path")
    tries = max(1, int(device_wait * 2))
    q = shlex.quote
    options = volume.mount_options or "defaults"
    candidates = " ".join(q(p) for p in device_paths)
    return f"""set -eu
root="${{PITRIX_VM_ROOT:-/}}"; root="${{root%/}}"
mp="$root"{q(volume.mount_point)}
dev=""; tries=0
while [ -z "$dev" ]; do
  for d in {candidates}; do
    if [ -e "$root$d" ]; then dev="$root$d"; break; fi
  done
  if [ -z "$dev" ]; then
    tries=$((tries + 1))
    if [ "$tries" -ge {tries} ]; then echo "volume: no device at" {candidates} >&2; exit 1; fi
    sleep 0.5
  fi
done
if [ -d "$dev" ] && [ -z "$root" ] && [ -e {q(SANDBOX_MARKER)} ]; then
  if [ -L "$mp" ]; then rm -f "$mp"; fi
  if [ -e "$mp" ] && [ ! -d "$mp" ]; then echo "volume: $mp exists and is not a directory" >&2; exit 1; fi
  mkdir -p "$mp"
  if mountpoint -q "$mp"; then
    echo "volume: $mp is mounted already"
  elif [ -n "$(ls -A "$mp")" ]; then
    echo "volume: $mp exists and is not empty" >&2; exit 1
  else
    mount --bind "$dev" "$mp"
    echo "volume: $dev bound at $mp"
  fi
  if ! grep -q "^$dev $mp none " /etc/fstab 2>/dev/null; then
    printf '%s %s none bind,nofail 0 0\n' "$dev" "$mp" >> /etc/fstab
  fi
  exit 0
fi
if [ -d "$dev" ]; then
  if [ -L "$mp" ]; then
    if [ "$(readlink "$mp")" = "$dev" ]; then echo "volume: $mp is $dev already"; exit 0; fi
    rm -f "$mp"
  elif [ -d "$mp" ]; then
    rmdir "$mp" 2>/dev/null || {{ echo "volume: $mp exists and is not empty" >&2; exit 1; }}
  elif [ -e "$mp" ]; then
    echo "volume: $mp exists and is not a directory" >&2; exit 1
  fi
  mkdir -p "$(dirname "$mp")"
  ln -s "$dev" "$mp"
  echo "volume: $mp is $dev"
  exit 0
fi
if [ ! -b "$dev" ]; then echo "volume: $dev is neither a block device nor a directory" >&2; exit 1; fi
dev="$(readlink -f "$dev")"
set +e; blkid -p "$dev" >/dev/null 2>&1; probed=$?; set -e
if [ "$probed" -eq 2 ]; then
  {MKFS[volume.filesystem]} "$dev"
  echo "volume: formatted $dev as {volume.filesystem}"
elif [ "$probed" -ne 0 ]; then
  echo "volume: blkid cannot read $dev (exit $probed)" >&2; exit 1
fi
fstype="$(blkid -p -s TYPE -o value "$dev")"
uuid="$(blkid -p -s UUID -o value "$dev")"
mkdir -p "$mp"
if ! grep -q "^UUID=$uuid " "$root/etc/fstab" 2>/dev/null; then
  printf 'UUID=%s %s %s %s 0 2\\n' "$uuid" "$mp" "$fstype" {q(options + ",nofail")} >> "$root/etc/fstab"
fi
if ! mountpoint -q "$mp"; then
  # A root other than / (a harness's) has an fstab of its own.
  if [ -n "$root" ]; then mount --fstab "$root/etc/fstab" "$mp"; else mount "$mp"; fi
fi
echo "volume: $dev ($fstype) mounted at $mp"
"""
