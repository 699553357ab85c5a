"""Simulator images for AppCenter packages: the package's own image files, sandboxed.

An AppCenter package ships its image's files beside its ``config.json`` (in one of a few layouts,
below); on QingCloud they are baked into a VM image together with distribution packages. Here the
image is a directory the simulator copies into each VM's root, run sandboxed (the VM root is
``/``, the host's ``/usr`` and ``/etc`` beneath it, see :mod:`simulator.sandbox`), so the
distribution's binaries come from the host (Debian packages installed there) and only the
package's files, the shims and a few links are in the image.

Layouts read (every one found is used):

- ``ansible/files/**`` and ``ansible/roles/<role>/files/**``: the tree ansible copies to ``/``;
- ``confd/conf.d`` and ``confd/templates`` (a variant folder such as postgresql's ``Standalone``):
  to ``/etc/confd``;
- ``image/toml/*.toml``, ``image/tmpl/*``: to ``/etc/confd/conf.d`` and ``/etc/confd/templates``;
  the other files of ``image/`` to ``opt_dir`` (default ``/opt/<package name, lower case>``).

Template folders (``templates/<name>/NN.part.tmpl``) are joined into ``templates/<name>.tmpl`` in
name order, each part followed by a newline, after the ``confd_header`` files if given (the
packages take that header from a shared role); numbered parts lying beside the one template
source no file holds (``templates/NN.*.tmpl``, etcd's) are joined into it likewise. Top-level
``bin``, ``sbin``, ``lib``... of the tree go under ``usr/`` where the host's are merged-usr links
(a sandbox keeps the host's links). Scripts (``*.sh``) and files in a ``bin`` folder are made
executable, as the packages' builds do (a checkout does not always keep the mode).
"""

from __future__ import annotations

import os
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from simulator.images import SANDBOX_MARKER

SHIMS_DIR = Path(__file__).resolve().parent / "appcenter_shims"
# Where each shim goes in the image: over the host's command of the same path (the VM root's
# /usr is an overlay whose upper layer is the image's usr/), so absolute calls find it too.
SHIMS = {
    "systemctl": "usr/bin/systemctl",
    "service": "usr/sbin/service",
    "systemd-detect-virt": "usr/bin/systemd-detect-virt",
    "sysctl": "usr/sbin/sysctl",
    "logger": "usr/bin/logger",
}
# Shims an image takes only when asked (``--shim NAME``): each replaces a program a package's
# shared roles install from outside Debian, at the path those roles use.
OPTIONAL_SHIMS = {
    "caddy": {"opt/caddy/current/caddy": "caddy"},  # the caddy role's Caddy 1 binary
    "rsyslog": {"etc/systemd/system/rsyslog.service": "rsyslog.service"},  # appctl restarts it
    "zookeeper": {"opt/zookeeper/current/bin/zkEnv.sh": "zkEnv.sh"},  # a release tree's env
}
# Links an optional shim brings with it: Debian's programs where the package's roles put theirs.
OPTIONAL_LINKS = {
    "zookeeper": {
        "opt/zookeeper/current/bin/zkServer.sh": "/usr/share/zookeeper/bin/zkServer.sh",
        "opt/zookeeper/current/bin/zkCli.sh": "/usr/share/zookeeper/bin/zkCli.sh",
    },
}
FIRST_SYSTEM_ID = 900  # ids given to --user/--group names the host lacks (Debian: system range)
MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


class ImageError(Exception):
    """The package cannot become an image as asked."""


@dataclass
class ImageRecipe:
    """What goes into one image beyond the package's own files."""

    package: Path
    name: str
    opt_dir: str = ""  # where image/'s loose files go; default /opt/<package name>
    extra_trees: list[Path] = field(default_factory=list)  # more trees copied to / (a role's files/)
    confd_header: list[Path] = field(default_factory=list)  # prepended to joined template folders
    links: dict[str, str] = field(default_factory=dict)  # path in the image -> link target
    init_lines: list[str] = field(default_factory=list)  # for the README: what else was done
    shims: list[str] = field(default_factory=list)  # names from OPTIONAL_SHIMS
    users: list[str] = field(default_factory=list)  # NAME or NAME:GROUP[,GROUP...] (supplementary)
    groups: list[str] = field(default_factory=list)  # group names


def _accounts(dest: Path, users: list[str], groups: list[str], passwd: Path, group: Path) -> list[str]:
    """The image's /etc/passwd and /etc/group: the host's (the sandbox's lower /etc, which they
    replace) plus the accounts the package's ansible creates (``user:``/``group:`` tasks: a
    user gets a group of its own name and joins the groups named). No password is set: the
    packages' service users log in nowhere, so /etc/shadow stays the host's."""
    pw = [line.split(":") for line in passwd.read_text().splitlines() if line.count(":") == 6]
    gr = [line.split(":") for line in group.read_text().splitlines() if line.count(":") == 3]
    used_uids = {int(p[2]) for p in pw if p[2].isdigit()}
    used_gids = {int(g[2]) for g in gr if g[2].isdigit()}
    done: list[str] = []

    def free(used: set[int]) -> int:
        n = FIRST_SYSTEM_ID
        while n in used:
            n += 1
        used.add(n)
        return n

    def ensure_group(name: str) -> list[str]:
        for g in gr:
            if g[0] == name:
                return g
        entry = [name, "x", str(free(used_gids)), ""]
        gr.append(entry)
        done.append(f"group {name} ({entry[2]})")
        return entry

    for name in groups:
        ensure_group(name)
    for spec in users:
        name, _, extra = spec.partition(":")
        if not name:
            raise ImageError(f"--user: no name in {spec!r}")
        if not any(p[0] == name for p in pw):
            gid = ensure_group(name)[2]
            uid = str(free(used_uids))
            pw.append([name, "x", uid, gid, "Service User", "/nonexistent", "/usr/sbin/nologin"])
            done.append(f"user {name} ({uid})")
        for gname in filter(None, extra.split(",")):
            entry = ensure_group(gname)
            members = [m for m in entry[3].split(",") if m]
            if name not in members:
                entry[3] = ",".join([*members, name])
                done.append(f"{name} joins {gname}")
    etc = dest / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text("".join(":".join(p) + "\n" for p in pw))
    (etc / "group").write_text("".join(":".join(g) + "\n" for g in gr))
    return done


def _copy_tree(source: Path, dest: Path, done: list[str]) -> None:
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        parts = rel.parts
        if parts[0] in MERGED and os.path.islink("/" + parts[0]):
            rel = Path(os.readlink("/" + parts[0])).joinpath(*parts[1:])  # lib/x -> usr/lib/x
        target = dest / rel
        if path.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            target.symlink_to(os.readlink(path))
        elif path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            if path.suffix == ".sh" or target.parent.name == "bin":
                target.chmod(target.stat().st_mode | 0o755)  # the packages' builds make them so
        done.append(str(rel))


def _join_templates(templates: Path, header: list[Path]) -> list[str]:
    """``templates/<name>/*.tmpl`` into ``templates/<name>.tmpl`` (the folder is removed)."""
    joined: list[str] = []
    if not templates.is_dir():
        return joined
    for folder in sorted(p for p in templates.iterdir() if p.is_dir()):
        parts = [*header, *sorted(folder.glob("*.tmpl"))]
        with open(templates / f"{folder.name}.tmpl", "w") as out:
            for part in parts:
                out.write(part.read_text())
                out.write("\n")
        shutil.rmtree(folder)
        joined.append(f"{folder.name}.tmpl from {len(parts)} parts")
    return joined


def _join_loose_parts(confd: Path) -> list[str]:
    """Numbered parts (``templates/NN.*.tmpl``) beside the one template source no file holds:
    joined into it in name order, each part followed by a newline, as the packages' builds join
    them (etcd's ``make.sh.tmpl`` from ``01.header.sh.tmpl`` and ``02.app.env.tmpl``). With more
    than one source missing the parts are not guessed at: nothing is joined."""
    templates = confd / "templates"
    parts = sorted(p for p in templates.glob("[0-9][0-9].*.tmpl") if p.is_file())
    if not parts:
        return []
    missing = set()
    for toml in sorted((confd / "conf.d").glob("*.toml")):
        try:
            src = tomllib.loads(toml.read_text()).get("template", {}).get("src", "")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            continue
        if isinstance(src, str) and src and not (templates / src).exists():
            missing.add(src)
    if len(missing) != 1:
        return []
    [src] = missing
    with open(templates / src, "w") as out:
        for part in parts:
            out.write(part.read_text())
            out.write("\n")
    return [f"{src} from {len(parts)} parts ({', '.join(p.name for p in parts)})"]


def build_image(recipe: ImageRecipe, out_dir: Path) -> Path:
    """Write the image ``out_dir/<name>`` (replacing one of that name); returns its directory."""
    package = recipe.package
    if not package.is_dir():
        raise ImageError(f"package: {package} is not a directory")
    dest = out_dir / recipe.name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    done: list[str] = []
    sources = []
    for tree in [package / "ansible" / "files", *sorted((package / "ansible" / "roles").glob("*/files"))]:
        if tree.is_dir():
            _copy_tree(tree, dest, done)
            sources.append(str(tree.relative_to(package)))
    for sub in ("conf.d", "templates"):
        tree = package / "confd" / sub
        if tree.is_dir():
            _copy_tree(tree, dest / "etc" / "confd" / sub, done)
            sources.append(str(tree.relative_to(package)))
    image = package / "image"
    if image.is_dir():
        opt = recipe.opt_dir or f"/opt/{package.name.lower()}"
        for path in sorted(image.rglob("*")):
            if path.is_dir():
                continue
            rel = path.relative_to(image)
            if rel.parts[0] == "toml":
                target = dest / "etc/confd/conf.d" / rel.name
            elif rel.parts[0] == "tmpl":
                target = dest / "etc/confd/templates" / rel.name
            else:
                target = dest / opt.lstrip("/") / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            done.append(str(target.relative_to(dest)))
        sources.append("image")
    for tree in recipe.extra_trees:
        if not tree.is_dir():
            raise ImageError(f"extra tree: {tree} is not a directory")
        _copy_tree(tree, dest, done)
        sources.append(str(tree))
    if not sources:
        raise ImageError(f"package: no image files found in {package} (ansible/, confd/ or image/)")
    joined = _join_templates(dest / "etc/confd/templates", recipe.confd_header)
    joined += _join_loose_parts(dest / "etc/confd")
    for shim, where in SHIMS.items():
        target = dest / where
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SHIMS_DIR / shim, target)
        target.chmod(0o755)
    links = dict(recipe.links)
    for name in recipe.shims:
        if name not in OPTIONAL_SHIMS:
            raise ImageError(f"shim: unknown shim {name!r} (known: {', '.join(sorted(OPTIONAL_SHIMS))})")
        for where, shim in OPTIONAL_SHIMS[name].items():
            target = dest / where
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(SHIMS_DIR / shim, target)
            target.chmod(0o644 if where.endswith(".service") else 0o755)
        for where, pointing in OPTIONAL_LINKS.get(name, {}).items():
            links.setdefault("/" + where, pointing)
    accounts = []
    if recipe.users or recipe.groups:
        accounts = _accounts(dest, recipe.users, recipe.groups, Path("/etc/passwd"), Path("/etc/group"))
    for inside, pointing in links.items():
        link = dest / inside.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(pointing)
    marker = dest / SANDBOX_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("")
    readme = [
        f"# {recipe.name}",
        "",
        f"Built by scripts/appcenter-image from {package} ({', '.join(sources)}): {len(done)} files.",
        "Sandboxed (etc/pitrix-sim/sandbox): binaries come from the host's Debian packages.",
        f"Shims: {', '.join(f'/{w}' for w in SHIMS.values())}.",
    ]
    readme += [f"Shim {name}: {', '.join('/' + w for w in OPTIONAL_SHIMS[name])}." for name in recipe.shims]
    readme += [f"Account: {line}." for line in accounts]
    readme += [f"Joined template: {line}." for line in joined]
    readme += [f"Link: {inside} -> {target}." for inside, target in links.items()]
    readme += recipe.init_lines
    (dest / "README.md").write_text("\n".join(readme) + "\n")
    return dest
