"""Sandboxed VMs: the simulator's side (starting one, entering one).

An ordinary simulated VM is a directory and processes whose absolute paths are the host's; an
image marked sandboxed (``etc/pitrix-sim/sandbox``, see :mod:`simulator.images`) gets a VM whose
processes see its root as ``/`` (``simulator/sandbox_init.py`` builds that view and is the VM's
init). Inside, ``PITRIX_VM_ROOT`` is ``/`` and ``HOME`` is ``/root``, as on a real instance.

The network namespace stays the host's, so the VM keeps its own loopback address and reaches
metad; processes keep the ``PITRIX_VM_ID`` marker, so :mod:`simulator.processes` finds and kills
them as it does any VM's (and whatever the marker misses dies with the namespace's init).
Building the view needs root (mount and PID namespaces, overlays): CI and the development
machines run as root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from simulator.processes import MARKER, Spawned

INIT_SCRIPT = Path(__file__).resolve().parent / "sandbox_init.py"
NET_SOURCE = Path(__file__).resolve().parent / "sandbox_net.c"
NET_LIBRARY = "libpitrix-sandbox-net.so"
WORK_DIR = "sandbox"  # under the VM's home (beside its root): overlay scratch, the init's pid
HOSTS = "etc/hosts"
BASE_DIRS = ("var/log", "var/lib", "var/cache", "var/spool", "var/opt", "opt")
HOSTNAME = "etc/hostname"


class NotRunning(RuntimeError):
    """The sandboxed VM has no live init to enter."""


def python_paths() -> list[str]:
    """What a Python process of this project needs to see at its host path inside the VM: the
    interpreter's prefixes, the virtualenv, every import path (a source tree on PYTHONPATH)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(p for p in sys.path if p and os.path.isabs(p))
    paths.update(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.isabs(p))
    paths.add(str(Path(__file__).resolve().parent.parent))  # the source tree holding simulator/
    return sorted(p for p in paths if os.path.exists(p))


def inside_environ(environ: dict[str, str], preload: str = "") -> dict[str, str]:
    """A VM's environment as seen from inside its sandbox: its root is ``/`` (and ``preload``, the
    address library, is loaded into its dynamically linked programs)."""
    inside = environ | {"PITRIX_VM_ROOT": "/", "HOME": "/root"}
    if preload:
        inside["LD_PRELOAD"] = preload
    return inside


def net_library(cache: Path) -> str:
    """``sandbox_net.c`` compiled (once per source change) into ``cache``; "" without a C compiler
    (then a VM that listens on 0.0.0.0 takes the port on every address of the host).

    Blocking: call it in a worker thread. Concurrent boots may compile it at once: each writes
    its own file and renames it into place.
    """
    library = cache / NET_LIBRARY
    if library.exists() and library.stat().st_mtime >= NET_SOURCE.stat().st_mtime:
        return str(library)
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return ""
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f"{NET_LIBRARY}.{os.getpid()}.{threading.get_ident()}"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(NET_SOURCE), "-ldl"],
        check=True,
        capture_output=True,
    )
    os.replace(partial, library)
    return str(library)


def prepare_root(root: Path, instance_id: str, ip: str, shared_dirs: tuple[str, ...] = ()) -> None:
    """The files a machine has of its own, when the image brings none: ``/etc/hosts`` naming the
    VM (the host's would show through the overlay otherwise) and ``/etc/hostname``. The shared
    directories are bound at boot, so they must exist by then."""
    for sub in BASE_DIRS:  # as a machine has them (a userdata's `umask 077; mkdir -p` makes 0700)
        (root / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
    for shared in shared_dirs:
        Path(shared).mkdir(parents=True, exist_ok=True)
    hosts = root / HOSTS
    if not hosts.exists():
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text(f"127.0.0.1\tlocalhost\n{ip}\t{instance_id}\n")
    hostname = root / HOSTNAME
    if not hostname.exists():
        hostname.write_text(instance_id + "\n")


READY_FD = 3  # the launcher says "ready" (or why not) on this descriptor


class SetupFailed(RuntimeError):
    """The sandbox could not be built: the VM does not boot."""


def spawn_sandboxed(
    *,
    root: Path,
    home: Path,
    hostname: str,
    env: dict[str, str],
    log: Path,
    userdata: str,
    read_write: list[str],
    read_only: tuple[str, ...] = (),
) -> tuple[Spawned, int]:
    """Start the VM's launcher (it exits with userdata's status; the VM's init lives on), and
    the read end of the pipe it reports on (see :func:`wait_ready`).

    ``userdata`` is a path inside the VM ("" for none); ``read_write`` are host directories the
    VM sees at the same path (the simulator's volumes, which attached devices link to).
    """
    config = {
        "root": str(root),
        "work": str(home / WORK_DIR),
        "hostname": hostname,
        "userdata": userdata,
        "read_only": python_paths() + list(read_only),
        "read_write": read_write,
        "ready_fd": READY_FD,
    }
    read, write = os.pipe()
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-I", "-S", str(INIT_SCRIPT), json.dumps(config)],
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
                (os.POSIX_SPAWN_DUP2, 1, 2),
                (os.POSIX_SPAWN_DUP2, write, READY_FD),
            ],
            setsid=True,
        )
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)
    return Spawned(pid), read


def wait_ready(read: int) -> None:
    """Block until the launcher says the VM's init runs; raise with its reason if it failed.
    (Blocking: call it in a worker thread.)"""
    said = b""
    try:
        while chunk := os.read(read, 4096):
            said += chunk
            if said == b"ready":
                return
    finally:
        os.close(read)
    raise SetupFailed(said.decode(errors="replace") or "sandbox: the launcher exited before the VM was up")


def init_pid(home: Path, instance_id: str) -> int:
    """The host pid of the VM's init, checked to be alive and this VM's (a pid can be reused)."""
    try:
        pid = int((home / WORK_DIR / "init.pid").read_text())
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (OSError, ValueError):
        raise NotRunning("the VM's init is not running") from None
    if f"{MARKER}={instance_id}".encode() not in environ.split(b"\0"):
        raise NotRunning("the VM's init is not running")
    return pid


def enter_command(home: Path, instance_id: str) -> list[str]:
    """The argv prefix that runs a command inside the VM: its namespaces, root and working
    directory (``nsenter``, util-linux)."""
    pid = init_pid(home, instance_id)
    return ["nsenter", f"--target={pid}", "--mount", "--uts", "--ipc", "--pid", "--root", "--wd", "--"]
