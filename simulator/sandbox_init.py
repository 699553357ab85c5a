"""A sandboxed VM's first process: it builds the VM's view of the machine, then is its init.

Run by the simulator as ``python -I -S sandbox_init.py CONFIG_JSON`` (standard library only: it
is started with the interpreter isolated, so it starts fast and imports nothing of the project).
Two processes come of it:

- the *launcher* (the process the simulator started, in the host's PID namespace) unshares a
  mount, UTS, IPC and PID namespace, lays the VM's root out (below), forks the init, writes the
  init's host pid to ``<work>/init.pid``, and exits with the status of the VM's userdata once the
  init reports it, so the simulator awaits userdata exactly as it does for an ordinary VM;
- the *init* (PID 1 of the VM's namespace) mounts ``/proc``, chroots into the VM root, runs the
  userdata with ``sh`` and then reaps whatever the VM leaves behind (daemons that double-fork end
  up as its children, so they stay in the VM's process tree, and a marker-less one is still
  found as a descendant of a marked process). On SIGTERM it passes the signal to every process
  of the VM and exits when none is left; if it dies, the kernel kills the whole namespace.

The root seen inside: the VM's own directory as ``/``; for each of the host's system
directories (``/usr``, ``/etc``, and ``/bin``, ``/lib``... when they are directories rather than
merged-usr links) an overlay whose lower layer is the host's (never written) and whose upper
layer is the VM's own directory of that name, so an image adds or replaces files there (its
``/etc/confd``, its shims in ``/usr/bin``) and the VM's writes stay in the VM; the host's
links recreated as links; fresh ``/proc`` (the VM's processes only; the simulator's
``cpuinfo``/``meminfo`` bound over it), ``/run`` and ``/dev/shm``; the host's null, zero,
random... device nodes in the VM's own ``/dev`` (which also holds attached volumes' entries);
the directories Python and the project need bound read-only at their host paths, and any
read-write binds asked for (the simulator's volume directory). The network stays the host's: the
VM keeps its own loopback address. Bind entries of the VM's ``/etc/fstab`` (attached volumes'
mount points) are mounted last, as a machine mounts its disks at boot.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}
SETUP_FAILED = 125

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


class SetupError(Exception):
    """The VM's view could not be built (said on the VM's userdata log)."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        errno = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _bind(source: str, target: str, *, read_only: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    elif not os.path.lexists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _inside(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _system_dirs(root: str, work: str) -> set[str]:
    """Overlay or link the host's system directories; the names that are now the host's."""
    covered = set()
    for name in SYSTEM_DIRS:
        host = "/" + name
        mine = os.path.join(root, name)
        if os.path.islink(host):
            target = os.readlink(host)
            if os.path.islink(mine) and os.readlink(mine) == target:
                pass
            elif os.path.lexists(mine):
                raise SetupError(f"the image holds /{name}, but the host's /{name} is a link to {target}")
            else:
                os.symlink(target, mine)
        elif os.path.isdir(host):
            upper = os.path.realpath(mine)
            os.makedirs(upper, exist_ok=True)
            scratch = os.path.join(work, f"overlay-{name}")
            shutil.rmtree(scratch, ignore_errors=True)
            os.makedirs(scratch)
            for path in (host, upper, scratch):
                if "," in path or ":" in path:
                    raise SetupError(f"overlay paths cannot hold ',' or ':': {path}")
            _mount("overlay", mine, "overlay", 0, f"lowerdir={host},upperdir={upper},workdir={scratch}")
        else:
            continue
        covered.add(host)
    return covered


def _devices(root: str) -> None:
    dev = os.path.join(root, "dev")
    os.makedirs(dev, exist_ok=True)
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            _bind("/dev/" + name, os.path.join(dev, name), read_only=False)
    for name, target in DEV_LINKS.items():
        path = os.path.join(dev, name)
        if not os.path.lexists(path):
            os.symlink(target, path)
    shm = os.path.join(dev, "shm")
    os.makedirs(shm, exist_ok=True)
    _mount("shm", shm, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")


def _run_and_tmp(root: str) -> None:
    run = os.path.join(root, "run")
    os.makedirs(run, exist_ok=True)
    _mount("run", run, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    os.makedirs(os.path.join(run, "lock"), exist_ok=True)
    var = os.path.join(root, "var")
    os.makedirs(var, exist_ok=True)
    for name, target in (("run", "/run"), ("lock", "/run/lock")):
        path = os.path.join(var, name)
        if not os.path.lexists(path):
            os.symlink(target, path)
    for tmp in (os.path.join(root, "tmp"), os.path.join(var, "tmp")):
        os.makedirs(tmp, exist_ok=True)
        os.chmod(tmp, 0o1777)


def _binds(root: str, paths: list[str], covered: set[str], *, read_only: bool) -> None:
    done: list[str] = []
    for path in sorted({os.path.normpath(p) for p in paths}, key=len):
        if not os.path.exists(path):
            continue
        if any(path == c or path.startswith(c + "/") for c in covered | set(done)):
            continue  # already visible: under a system directory or a bind made here
        _bind(path, _inside(root, path), read_only=read_only)
        done.append(path)


def _fstab_binds(root: str, shared: list[str]) -> None:
    """Mount the VM's ``/etc/fstab`` bind entries, as a machine mounts its disks at boot: an
    attached volume's mount point is such an entry (the node-side prepare writes it), the
    source its device entry (a link to the volume's directory). A source that is gone (the
    volume was detached) is left out, as ``nofail`` says; so is one resolving outside the VM's
    root and the read-write directories it already sees (a link in the VM must not bring a
    host directory in); other entries are not this VM's."""
    allowed = [os.path.realpath(p) for p in [root, *shared]]
    try:
        with open(os.path.join(root, "etc", "fstab")) as fstab:
            lines = fstab.read().splitlines()
    except OSError:
        return
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[0].startswith("#") or "bind" not in fields[3].split(","):
            continue
        source = os.path.realpath(_inside(root, fields[0]))
        target = _inside(root, fields[1])
        if not any(source == a or source.startswith(a + "/") for a in allowed):
            continue
        if not os.path.isdir(source) or os.path.islink(target):
            continue
        os.makedirs(target, exist_ok=True)
        _mount(source, target, None, MS_BIND)


def _hardware(root: str, work: str) -> list[tuple[str, str]]:
    """The simulator's ``proc/cpuinfo``/``meminfo``, saved before ``/proc`` hides them."""
    saved = []
    for name in ("cpuinfo", "meminfo"):
        source = os.path.join(root, "proc", name)
        if os.path.isfile(source):
            copy = os.path.join(work, name)
            shutil.copyfile(source, copy)
            saved.append((copy, name))
    return saved


def _build(config: dict[str, object]) -> list[tuple[str, str]]:
    root = str(config["root"])
    work = str(config["work"])
    os.makedirs(work, exist_ok=True)
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    name = str(config.get("hostname") or "localhost").encode()
    _check(_libc.sethostname(name, len(name)), "sethostname")
    covered = _system_dirs(root, work)
    _devices(root)
    _run_and_tmp(root)
    _binds(root, [str(p) for p in config.get("read_only", [])], covered, read_only=True)  # type: ignore[attr-defined]
    _binds(root, [str(p) for p in config.get("read_write", [])], covered, read_only=False)  # type: ignore[attr-defined]
    _fstab_binds(root, [str(p) for p in config.get("read_write", [])])  # type: ignore[attr-defined]
    return _hardware(root, work)


def _init(config: dict[str, object], hardware: list[tuple[str, str]], report: int) -> None:
    """PID 1 of the VM: finish the view, start userdata, report its status, reap until told to stop."""
    root = str(config["root"])
    proc = os.path.join(root, "proc")
    os.makedirs(proc, exist_ok=True)
    _mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for copy, name in hardware:
        _mount(copy, os.path.join(proc, name), None, MS_BIND)
    # The kernel's settings are the host's (one kernel): read-only, as a container has them.
    for sub in ("sys", "sysrq-trigger"):
        path = os.path.join(proc, sub)
        if not os.path.exists(path):
            continue
        _mount(path, path, None, MS_BIND | MS_REC)
        _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    os.chroot(root)
    os.chdir("/")
    signal.signal(signal.SIGTERM, lambda *_: None)  # PID 1 is sent only signals it handles
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    waited = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    userdata = str(config.get("userdata") or "")
    child = 0
    if userdata and os.path.exists(userdata):
        child = os.posix_spawn(
            "/bin/sh",
            ["sh", userdata],
            dict(os.environ),
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
            setsid=True,
            setsigmask=(),
        )
    else:
        os.write(report, b"none")
        os.close(report)
    stopping = False
    while True:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                if stopping:
                    os._exit(0)
                break
            if pid == 0:
                break
            if pid == child:
                os.write(report, str(os.waitstatus_to_exitcode(status)).encode())
                os.close(report)
                child = 0
        info = signal.sigwaitinfo(waited)
        if info.si_signo in (signal.SIGTERM, signal.SIGINT) and not stopping:
            stopping = True
            try:
                os.kill(-1, signal.SIGTERM)  # every other process of this namespace
            except ProcessLookupError:
                os._exit(0)


def main() -> None:
    config = json.loads(sys.argv[1])
    ready = int(str(config.get("ready_fd", -1)))
    try:
        hardware = _build(config)
    except (SetupError, OSError) as exc:
        print(f"sandbox: {exc}", file=sys.stderr, flush=True)
        if ready >= 0:
            os.write(ready, f"sandbox: {exc}".encode())
        os._exit(SETUP_FAILED)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        if ready >= 0:
            os.close(ready)
        try:
            _init(config, hardware, write)
        except BaseException as exc:  # PID 1 must not unwind into the launcher's code
            print(f"sandbox init: {exc!r}", file=sys.stderr, flush=True)
            os._exit(SETUP_FAILED)
        os._exit(0)
    os.close(write)
    pidfile = os.path.join(str(config["work"]), "init.pid")
    with open(pidfile + ".tmp", "w") as out:
        out.write(f"{pid}\n")
    os.replace(pidfile + ".tmp", pidfile)
    if ready >= 0:
        os.write(ready, b"ready")
        os.close(ready)
    said = b""
    while chunk := os.read(read, 64):
        said += chunk
    if said == b"none":
        os._exit(0)
    if said:
        os._exit(int(said) & 0xFF if int(said) >= 0 else 128 - int(said))
    _, status = os.waitpid(pid, 0)  # the init died before userdata ended
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
