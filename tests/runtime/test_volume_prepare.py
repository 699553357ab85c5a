"""The node-side volume prepare, run by sh as an agent runs it: on a directory-backed device (a
simulated VM) and on a real block device (a loop device: formatted, in fstab, mounted), twice."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitrix.runtime.spec import Volume
from pitrix.runtime.volume_prepare import prepare_command


def run(command: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PITRIX_VM_ROOT": str(root)}
    return subprocess.run(
        ["sh", "-c", command], cwd=root, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    vm_root = tmp_path / "root"
    (vm_root / "dev").mkdir(parents=True)
    (vm_root / "etc").mkdir()
    return vm_root


def test_a_directory_device_becomes_the_mount_point(root: Path, tmp_path: Path) -> None:
    volume_dir = tmp_path / "volume"
    volume_dir.mkdir()
    (root / "dev" / "vdb").symlink_to(volume_dir)
    command = prepare_command(Volume(size=1, mount_point="/srv/data"), ("/dev/disk/by-id/none", "/dev/vdb"))
    first = run(command, root)
    assert first.returncode == 0, first.stderr
    mount_point = root / "srv" / "data"
    assert mount_point.is_symlink() and mount_point.resolve() == volume_dir.resolve()
    (mount_point / "f").write_text("x")
    assert (volume_dir / "f").read_text() == "x"
    again = run(command, root)  # a repeated step changes nothing
    assert again.returncode == 0 and "already" in again.stdout
    assert (volume_dir / "f").read_text() == "x" and not (root / "etc" / "fstab").exists()


def test_a_mount_point_holding_data_is_refused(root: Path, tmp_path: Path) -> None:
    (tmp_path / "volume").mkdir()
    (root / "dev" / "vdb").symlink_to(tmp_path / "volume")
    (root / "data").mkdir()
    (root / "data" / "precious").write_text("keep")
    done = run(prepare_command(Volume(size=1), ("/dev/vdb",)), root)
    assert done.returncode == 1 and "not empty" in done.stderr
    assert (root / "data" / "precious").read_text() == "keep"


def test_no_device_fails_naming_the_paths(root: Path) -> None:
    done = run(prepare_command(Volume(size=1), ("/dev/vdz",), device_wait=0.5), root)
    assert done.returncode == 1 and "no device at /dev/vdz" in done.stderr


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    if os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
        pytest.skip("needs root, losetup and mkfs.ext4 for a loop device")
    image = tmp_path / "disk.img"
    with image.open("wb") as disk:
        disk.truncate(64 * 1024 * 1024)
    attached = subprocess.run(
        ["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=False
    )
    if attached.returncode != 0:
        pytest.skip(f"no loop device here: {attached.stderr.strip()}")
    device = attached.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "root" / "data")], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


def test_a_block_device_is_formatted_once_recorded_in_fstab_and_mounted(root: Path, loop_device: str) -> None:
    (root / "dev" / "vdb").symlink_to(loop_device)
    command = prepare_command(Volume(size=1, mount_options="noatime"), ("/dev/vdb",))
    first = run(command, root)
    assert first.returncode == 0, first.stderr
    assert "formatted" in first.stdout
    mount_point = root / "data"
    uuid = subprocess.run(
        ["blkid", "-p", "-s", "UUID", "-o", "value", loop_device], capture_output=True, text=True, check=True
    ).stdout.strip()
    fstab = (root / "etc" / "fstab").read_text()
    assert fstab == f"UUID={uuid} {mount_point} ext4 noatime,nofail 0 2\n"
    assert subprocess.run(["mountpoint", "-q", str(mount_point)], check=False).returncode == 0
    (mount_point / "kept").write_text("across reboots")

    # A reboot: unmounted; the prepare (or the boot's fstab) mounts it again, never reformatting.
    subprocess.run(["umount", str(mount_point)], check=True)
    again = run(command, root)
    assert again.returncode == 0, again.stderr
    assert "formatted" not in again.stdout
    assert (mount_point / "kept").read_text() == "across reboots"
    assert (root / "etc" / "fstab").read_text() == fstab  # one entry, not two
