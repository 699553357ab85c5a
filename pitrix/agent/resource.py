"""A template resource and its apply transaction (confd's resource.go, made safe).

``TemplateResource.process`` tells the whole story: render the values into a staged file beside
the destination, stop if it is already in place, let ``check_cmd`` judge the staged file, swap it
in atomically, run ``reload_cmd``, and if the reload fails put the previous file back and reload
again, so a bad configuration never stays live (in the appcenter profile the new file stays, as
confd leaves it: ``profiles``). Every outcome ends in an ``ApplyResult``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import grp
import os
import pwd
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pitrix.agent.config import AgentConfig
from pitrix.agent.durable import stage_beside
from pitrix.agent.errors import ResourceError
from pitrix.agent.log import Logger, get_logger
from pitrix.agent.render import RenderError, TemplateCache
from pitrix.agent.rootfs import under_root
from pitrix.agent.shell import command_env, run_shell

if TYPE_CHECKING:
    from pitrix.agent.parsecache import ParseCache

T = TypeVar("T")
_SRC_PLACEHOLDER = re.compile(r"\{\{\s*\.src\s*\}\}")
_KNOWN_KEYS = frozenset(
    {"src", "dest", "keys", "prefix", "owner", "uid", "group", "gid", "mode", "check_cmd", "reload_cmd"}
)


# The classes here are plain and slotted, not dataclasses: a dataclass compiles its generated
# methods at import (up to five per frozen class), paid by every agent start; equality and a
# repr, where something uses them, are written out.


class ApplyResult:
    """One resource's outcome in one apply round (what the status write-back reports)."""

    __slots__ = ("changed", "error", "name", "ok")

    def __init__(self, name: str, ok: bool, changed: bool = False, error: str | None = None) -> None:
        self.name = name
        self.ok = ok
        self.changed = changed
        self.error = error

    def __eq__(self, other: object) -> bool:
        if type(other) is not ApplyResult:
            return NotImplemented
        return (self.name, self.ok, self.changed, self.error) == (
            other.name,
            other.ok,
            other.changed,
            other.error,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.ok, self.changed, self.error))

    def __repr__(self) -> str:
        return (
            f"ApplyResult(name={self.name!r}, ok={self.ok!r}, changed={self.changed!r}, error={self.error!r})"
        )

    def record(self) -> dict[str, Any]:
        return {"ok": self.ok, "error": self.error}


class ApplyOptions:
    """The confd flags that change how a resource is applied."""

    __slots__ = (
        "env",
        "file_io_on_loop",
        "hook_timeout",
        "hosts_entry",
        "keep_stage_file",
        "noop",
        "restore_on_failed_reload",
        "sync_only",
    )

    def __init__(
        self,
        noop: bool = False,
        sync_only: bool = False,
        keep_stage_file: bool = False,
        hook_timeout: float = 60.0,
        env: dict[str, str] | None = None,
        file_io_on_loop: bool = False,
        restore_on_failed_reload: bool = True,
        hosts_entry: tuple[Path, str] | None = None,
    ) -> None:
        self.noop = noop
        self.sync_only = sync_only
        self.keep_stage_file = keep_stage_file
        self.hook_timeout = hook_timeout
        # What check_cmd and reload_cmd see (``shell.command_env``), made once: copying os.environ
        # for every command was a tenth of a small round's work. None: made per command.
        self.env = env
        # Where the blocking file work (render, write, fsync, rename) runs: in a worker thread, or
        # on the loop when the agent is alone in its process (see ``build_agent``).
        self.file_io_on_loop = file_io_on_loop
        # Whether a failed reload puts the previous file back and reloads again (native), or
        # leaves the new file in place as confd does (the appcenter profile: its templates
        # generate the scripts their reload runs, and a second reload of the old one restarts the
        # service again).
        self.restore_on_failed_reload = restore_on_failed_reload
        # The appcenter profile's metadata proxy: (the VM's /etc/hosts, the proxy's address). An
        # image whose template renders /etc/hosts (HBase's, Storm's) would drop the ``metadata``
        # line the agent put there; that resource's output keeps it, so the file stays in sync and
        # resolving.
        self.hosts_entry = hosts_entry

    @classmethod
    def from_config(cls, config: AgentConfig, *, file_io_on_loop: bool = False) -> ApplyOptions:
        env = command_env(config.root)
        hosts_entry = None
        if config.profile == "appcenter" and config.metadata_listen != "off":
            from pitrix.agent.profiles import parse_listen

            hosts_entry = (under_root(config.root, "/etc/hosts"), parse_listen(config.metadata_listen)[0])
        return cls(
            config.noop,
            config.sync_only,
            config.keep_stage_file,
            config.hook_timeout,
            env,
            file_io_on_loop,
            restore_on_failed_reload=config.profile != "appcenter",
            hosts_entry=hosts_entry,
        )

    async def file_io(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(*args)``, blocking file work, where these options say."""
        if self.file_io_on_loop:
            return work(*args)
        import asyncio  # not at the top: the one-shot driver (aio.run_inline) has no loop

        return await asyncio.to_thread(work, *args)


class _Step:
    """What the file part of an apply (``_prepare``) found and did."""

    __slots__ = ("in_sync", "previous", "staged", "text")

    def __init__(self, text: str, staged: Path | None, previous: _FileState | None, in_sync: bool) -> None:
        self.text = text
        self.staged = staged  # the staged file, when it is still beside the destination
        self.previous = previous
        self.in_sync = in_sync


class _FileState:
    """A destination file as it was: contents and the attributes confd compares."""

    __slots__ = ("data", "gid", "mode", "uid")

    def __init__(self, data: bytes, mode: int, uid: int, gid: int) -> None:
        self.data = data
        self.mode = mode
        self.uid = uid
        self.gid = gid


def _read_resource_toml(toml_path: Path) -> dict[str, Any]:
    """One conf.d file parsed (tomllib loaded here: a one-shot with a warm ``ParseCache`` never
    needs it)."""
    import tomllib

    try:
        with toml_path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ResourceError(f"{toml_path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ResourceError(f"{toml_path}: {exc.strerror}") from None


def join_key(*parts: str) -> str:
    """Go's ``path.Join("/", parts...)``: slash-separated, cleaned, always absolute."""
    joined = os.path.normpath("/" + "/".join(p for p in parts if p))
    return "/" + joined.lstrip("/")


class TemplateResource:
    """One ``conf.d/*.toml`` file, its paths resolved under the VM root."""

    __slots__ = (
        "_log",
        "check_cmd",
        "dest",
        "gid",
        "keys",
        "mode",
        "name",
        "prefix",
        "reload_cmd",
        "root",
        "src",
        "toml_path",
        "uid",
    )
    # What equality compares (the logger is not part of a resource's identity).
    _FIELDS = (
        "name",
        "toml_path",
        "src",
        "dest",
        "keys",
        "prefix",
        "root",
        "mode",
        "uid",
        "gid",
        "check_cmd",
        "reload_cmd",
    )

    def __init__(
        self,
        name: str,
        toml_path: Path,
        src: Path,
        dest: Path,
        keys: list[str],
        prefix: str,
        root: Path,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        check_cmd: str = "",
        reload_cmd: str = "",
    ) -> None:
        self.name = name
        self.toml_path = toml_path
        self.src = src
        self.dest = dest
        self.keys = keys
        self.prefix = prefix
        self.root = root
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.check_cmd = check_cmd
        self.reload_cmd = reload_cmd
        self._log: Logger = get_logger("pitrix.agent.resource", resource=self.name, dest=str(self.dest))

    def __eq__(self, other: object) -> bool:
        if type(other) is not TemplateResource:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._FIELDS)
        return f"TemplateResource({inner})"

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, toml_path: Path, config: AgentConfig, parsed: ParseCache | None = None) -> TemplateResource:
        """Read and validate one resource file; errors name the file and the key.

        ``parsed``: the TOML as the last run parsed it, while the file is unchanged (a one-shot).
        """
        where = str(toml_path)
        if parsed is None:
            data = _read_resource_toml(toml_path)
        else:
            data = parsed.get("toml", toml_path, functools.partial(_read_resource_toml, toml_path))
        table = data.get("template")
        if not isinstance(table, dict):
            raise ResourceError(f"{where}: missing [template] table")
        unknown = sorted(set(table) - _KNOWN_KEYS)
        if unknown:
            raise ResourceError(f"{where}: template.{unknown[0]}: unknown key")

        def text(key: str, required: bool = False) -> str:
            value = table.get(key, "")
            if not isinstance(value, str):
                raise ResourceError(f"{where}: template.{key}: must be a string")
            if required and not value:
                raise ResourceError(f"{where}: template.{key}: required")
            return value

        def number(key: str) -> int | None:
            value = table.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ResourceError(f"{where}: template.{key}: must be a non-negative integer")
            return value

        src = text("src", required=True)
        dest = text("dest", required=True)
        keys = table.get("keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ResourceError(f"{where}: template.keys: must be a list of strings")
        prefix = join_key(config.prefix, text("prefix"))
        uid = number("uid")
        gid = number("gid")
        owner, group = text("owner"), text("group")
        if owner:
            try:
                uid = pwd.getpwnam(owner).pw_uid
            except KeyError:
                raise ResourceError(f"{where}: template.owner: no such user {owner!r}") from None
        if group:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ResourceError(f"{where}: template.group: no such group {group!r}") from None
        return cls(
            name=toml_path.stem,
            toml_path=toml_path,
            src=under_root(config.template_dir, src),  # like Go's Join: "/x" stays inside
            dest=under_root(config.root, dest),
            keys=[join_key(prefix, k) for k in keys],
            prefix=prefix,
            root=config.root,
            mode=parse_mode(table.get("mode"), where),
            uid=uid,
            gid=gid,
            check_cmd=text("check_cmd"),
            reload_cmd=text("reload_cmd"),
        )

    def template_values(self, values: dict[str, str]) -> dict[str, str]:
        """The values as templates see them: selected by this resource's keys, prefix stripped."""
        out: dict[str, str] = {}
        for key, value in values.items():
            if any(key.startswith(k) for k in self.keys):
                rest = key[len(self.prefix) :] if key.startswith(self.prefix) else key
                out[join_key(rest)] = value
        return out

    # -- the transaction -------------------------------------------------------------------------

    async def process(
        self,
        values: dict[str, str],
        cache: TemplateCache,
        opts: ApplyOptions,
        *,
        before_reload: Callable[[], None] | None = None,
    ) -> ApplyResult:
        """Apply this resource for ``values`` (full keys); never raises for a failed apply.

        ``before_reload`` hears when the new file is in place and its reload_cmd about to run.
        """
        log = self._log
        staged: Path | None = None
        try:
            # When nothing has to judge the staged file first, the step that rendered it swaps it
            # in too: one worker-thread hop per apply where there are hops, not two.
            gated = opts.noop or bool(self.check_cmd and not opts.sync_only)
            keep = opts.hosts_entry[1] if opts.hosts_entry and opts.hosts_entry[0] == self.dest else None
            step = await opts.file_io(self._prepare, cache, values, not gated, opts.keep_stage_file, keep)
            staged = step.staged
            if step.in_sync:
                log.debug("in sync")
                return ApplyResult(self.name, ok=True)
            if opts.noop:
                await opts.file_io(self._show_diff, step.previous, step.text)
                log.warning("noop: destination not modified")
                return ApplyResult(self.name, ok=True, changed=True)
            if gated:
                assert step.staged is not None
                error = await self._check(step.staged, opts.hook_timeout, opts.env)
                if error:
                    log.error("check_cmd rejected the staged file", error=error)
                    return ApplyResult(self.name, ok=False, error=error)
                await opts.file_io(self._install, step.staged)
            staged = None
            log.info("destination updated")
            if not opts.sync_only and self.reload_cmd:
                if before_reload is not None:
                    before_reload()
                error = await self._reload_or_restore(step.previous, opts)
                if error:
                    log.error("reload failed", error=error)
                    return ApplyResult(self.name, ok=False, changed=True, error=error)
            return ApplyResult(self.name, ok=True, changed=True)
        except RenderError as exc:
            log.error("render failed", error=str(exc))
            return ApplyResult(self.name, ok=False, error=str(exc))
        except OSError as exc:
            error = f"{exc.filename or self.dest}: {exc.strerror or exc}"
            log.error("apply failed", error=error)
            return ApplyResult(self.name, ok=False, error=error)
        except Exception as exc:  # a bug here must fail this resource, not stop the agent
            log.exception("apply failed unexpectedly")
            return ApplyResult(self.name, ok=False, error=f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if staged is not None and not opts.keep_stage_file:
                with contextlib.suppress(FileNotFoundError):
                    staged.unlink()

    # -- the steps -------------------------------------------------------------------------------

    def _prepare(
        self,
        cache: TemplateCache,
        values: dict[str, str],
        swap: bool,
        keep_stage: bool,
        metadata_addr: str | None,
    ) -> _Step:
        """Render and compare with the destination; unless it is already in place, stage the new
        file beside it, and with ``swap`` put it in place too. Blocking (file system calls): it
        runs where ``ApplyOptions.file_io`` says. Not fsynced (``durable``: the first round after a
        start repairs what a power loss left)."""
        text = cache.render(self.src, self.template_values(values))
        if metadata_addr is not None:  # this is the VM's /etc/hosts: the proxy's name stays in it
            from pitrix.agent.hostsfile import hosts_text

            text = hosts_text(text, metadata_addr, "metadata") or text
        data = text.encode()
        previous = self._read_dest()
        attrs = self._target_attrs(previous)
        in_sync = previous is not None and (previous.mode, previous.uid, previous.gid) == attrs
        in_sync = in_sync and previous is not None and previous.data == data
        if in_sync and not keep_stage:
            return _Step(text, None, previous, in_sync=True)
        mode, uid, gid = attrs
        if previous is None:  # a destination that exists has its directory
            self.dest.parent.mkdir(parents=True, exist_ok=True)
        staged = stage_beside(self.dest, data, mode, (uid, gid), sync=False)
        if swap and not in_sync:
            try:
                self._install(staged)
            except BaseException:
                staged.unlink(missing_ok=True)
                raise
            return _Step(text, None, previous, in_sync=False)
        return _Step(text, staged, previous, in_sync)

    def _target_attrs(self, current: _FileState | None) -> tuple[int, int, int]:
        """Mode, uid, gid the destination must have, with confd's defaults: the agent's own user,
        and the mode the file has now (0644 for a new file)."""
        mode = self.mode
        if mode is None:
            mode = current.mode if current is not None else 0o644
        uid = self.uid if self.uid is not None else os.geteuid()
        gid = self.gid if self.gid is not None else os.getegid()
        return mode, uid, gid

    def _read_dest(self) -> _FileState | None:
        try:
            with self.dest.open("rb") as fh:
                st = os.fstat(fh.fileno())
                data = fh.read()
        except FileNotFoundError:
            return None
        return _FileState(data, st.st_mode & 0o7777, st.st_uid, st.st_gid)

    def _show_diff(self, previous: _FileState | None, text: str) -> None:
        old = previous.data.decode("utf-8", "replace") if previous else ""
        import difflib  # -noop only

        diff = difflib.unified_diff(
            old.splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=str(self.dest),
            tofile=f"{self.dest} (new)",
        )
        sys.stdout.write("".join(diff) or f"{self.dest}: mode or owner would change\n")
        sys.stdout.flush()

    async def _check(self, staged: Path, timeout: float, env: dict[str, str] | None) -> str | None:
        command = _SRC_PLACEHOLDER.sub(lambda _m: str(staged), self.check_cmd)
        result = await run_shell(command, root=self.root, timeout=timeout, env=env)
        if result.ok:
            return None
        return f"check_cmd failed ({result.describe()}): {result.output.strip()[-500:]}"

    def _install(self, staged: Path) -> None:
        """Atomically replace the destination; where rename cannot (a bind-mounted file), overwrite."""
        try:
            os.rename(staged, self.dest)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            self.dest.write_bytes(staged.read_bytes())
            staged.unlink()

    def _restore(self, previous: _FileState | None) -> None:
        if previous is None:
            self.dest.unlink(missing_ok=True)
            return
        owner = (previous.uid, previous.gid)
        path = stage_beside(self.dest, previous.data, previous.mode, owner, sync=False)
        self._install(path)

    async def _reload_or_restore(self, previous: _FileState | None, opts: ApplyOptions) -> str | None:
        timeout, env = opts.hook_timeout, opts.env
        result = await run_shell(self.reload_cmd, root=self.root, timeout=timeout, env=env)
        if result.ok:
            return None
        error = f"reload_cmd failed ({result.describe()}): {result.output.strip()[-500:]}"
        if not opts.restore_on_failed_reload:
            return f"{error}; new file left in place"
        await opts.file_io(self._restore, previous)
        again = await run_shell(self.reload_cmd, root=self.root, timeout=timeout, env=env)
        restored = "previous file restored" if previous is not None else "new file removed"
        if again.ok:
            return f"{error}; {restored} and reloaded"
        return f"{error}; {restored}, reload after restore also failed ({again.describe()})"


def parse_mode(value: Any, where: str) -> int | None:
    """``mode = "0644"`` (confd writes modes as octal strings); an integer is taken as is."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str):
        digits = value.strip().lower().removeprefix("0o")
        if not digits or any(c not in "01234567" for c in digits):
            raise ResourceError(f'{where}: template.mode: {value!r} is not an octal mode like "0644"')
        mode = int(digits, 8)
    else:
        raise ResourceError(f'{where}: template.mode: must be an octal string like "0644"')
    if not 0 <= mode <= 0o7777:
        raise ResourceError(f"{where}: template.mode: {value!r} out of range")
    return mode
