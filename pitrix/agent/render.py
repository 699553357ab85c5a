"""Rendering one template resource's source with its values, through the Go-template engine.

Parsed templates are kept per source file while it is unchanged (``filecache``), so a watch
round that re-applies a resource re-executes its template but does not re-parse it. A parsed
template is immutable: each render passes its own key space's functions to ``execute``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitrix.agent.filecache import FileCache

if TYPE_CHECKING:  # the engine is imported on the first render, not at the agent's start
    from pitrix.agent.config import AgentConfig
    from pitrix.gotemplate import Template


class RenderError(Exception):
    """The template could not be read, parsed or executed; the message names the file and place."""


class TemplateCache:
    """Parsed templates of one agent, by source path."""

    def __init__(self, compare: str = "go") -> None:
        self._parsed: FileCache[Template] = FileCache()
        # "yunify": confd-yunify's number-aware comparisons win over Go's builtins, and its getv
        # takes an empty default for none (the appcenter profile, or template_compare).
        self._extra: dict[str, Callable[..., Any]] | None = None
        if compare == "yunify":
            from pitrix.gotemplate.yunify import COMPARE_FUNCS

            self._extra = COMPARE_FUNCS

    @classmethod
    def for_config(cls, config: AgentConfig) -> TemplateCache:
        """The cache an agent with ``config`` renders with."""
        return cls(config.template_compare or "go")

    def render(self, src: Path, values: dict[str, str]) -> str:
        """Execute ``src`` against ``values`` (keys as templates see them: prefix already stripped)."""
        from pitrix.agent.confdfuncs import bound_funcs, yunify_getv
        from pitrix.agent.memkv import MemKV
        from pitrix.gotemplate import TemplateError, parse_confd

        try:
            st = src.stat()
        except OSError as exc:
            raise RenderError(f"template {src}: {exc.strerror}") from None

        def read_and_parse() -> Template:
            try:
                text = src.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise RenderError(f"template {src}: {exc}") from None
            return parse_confd(text, name=src.name)

        try:
            parsed, _ = self._parsed.get(src, st, read_and_parse)
            kv = MemKV(values)
            funcs = bound_funcs(kv)
            if self._extra is not None:
                funcs.update(self._extra)
                funcs["getv"] = yunify_getv(kv)
            return parsed.execute(None, funcs=funcs)
        except TemplateError as exc:
            raise RenderError(f"template {src.name}: {exc}") from None
        except RenderError:
            raise
        except Exception as exc:  # an engine bug must fail this resource, not the agent
            raise RenderError(f"template {src.name}: internal error: {type(exc).__name__}: {exc}") from exc
