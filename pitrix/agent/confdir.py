"""The conf.d directory: which template resources there are, each file parsed once per change.

A watch round asks for the resources every time (confd re-reads conf.d each round too, so a file
dropped in is picked up without a restart), but parsing TOML every round is most of a small
round's work: a file is parsed again only when it changed (``filecache``). Listing the directory
and a stat per file are cheap enough for the event loop, so no worker-thread hop is paid either.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pitrix.agent.config import AgentConfig
from pitrix.agent.errors import ResourceError
from pitrix.agent.filecache import FileCache
from pitrix.agent.resource import TemplateResource

if TYPE_CHECKING:
    from pitrix.agent.parsecache import ParseCache


def resource_files(config: AgentConfig) -> list[tuple[Path, os.stat_result]]:
    """``conf.d/*.toml`` in name order with their stat, skipping hidden (``.``) and disabled
    (``_``) files; a missing conf.d has none."""
    found = []
    try:
        with os.scandir(config.resource_dir) as entries:
            for entry in entries:
                if not entry.name.endswith(".toml") or entry.name.startswith((".", "_")):
                    continue
                try:
                    if entry.is_file():
                        found.append((Path(entry.path), entry.stat()))
                except FileNotFoundError:  # removed since the listing: it is simply not there
                    continue
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(found, key=lambda pair: pair[0].name)


class ConfDir:
    """One agent's view of conf.d, parsed files kept while they are unchanged."""

    def __init__(self, config: AgentConfig, parsed: ParseCache | None = None) -> None:
        self._config = config
        self._persisted = parsed  # across runs (a one-shot): see parsecache
        self._parsed: FileCache[TemplateResource] = FileCache()
        self._cmd_info_logged = False

    def load(self) -> tuple[list[TemplateResource], dict[str, str]]:
        """Every resource that loads, and an error per file that does not (so one bad file does
        not stop the others from being applied). A file in error is read again every round."""
        resources: list[TemplateResource] = []
        errors: dict[str, str] = {}
        files = resource_files(self._config)
        if self._config.profile == "appcenter":
            files = self._without_cmd_info(files)
        for path, st in files:
            try:
                load = functools.partial(TemplateResource.load, path, self._config)
                if self._persisted is not None:
                    load = functools.partial(load, parsed=self._persisted)
                resource, _made = self._parsed.get(path, st, load)
            except ResourceError as exc:
                errors[path.stem] = str(exc)
                continue
            resources.append(resource)
        self._parsed.keep_only({path for path, _st in files})
        return resources, errors

    def _without_cmd_info(
        self, files: list[tuple[Path, os.stat_result]]
    ) -> list[tuple[Path, os.stat_result]]:
        """AppCenter images carry conf.d/cmd.info.toml, whose reload runs the command in
        /self/cmd: the agent's own command runner runs it already, so applying it too would run
        each lifecycle command twice."""
        from pitrix.agent.profiles import CMD_INFO_RESOURCE

        kept = [(path, st) for path, st in files if path.stem != CMD_INFO_RESOURCE]
        if len(kept) != len(files) and not self._cmd_info_logged:
            self._cmd_info_logged = True
            from pitrix.agent.log import get_logger

            get_logger("pitrix.agent").info(
                "resource skipped: the agent's command runner runs /self/cmd itself",
                resource=CMD_INFO_RESOURCE,
                profile="appcenter",
            )
        return kept


def load_resources(
    config: AgentConfig, parsed: ParseCache | None = None
) -> tuple[list[TemplateResource], dict[str, str]]:
    """conf.d parsed once (``-onetime`` and checks), nothing kept in this process; ``parsed``
    keeps the TOML for the next run."""
    return ConfDir(config, parsed).load()
