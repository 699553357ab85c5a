"""Rendering one template resource's source with its values, through the Go-template engine.

Parsed templates are kept per source file while it is unchanged (``filecache``), so a watch
round that re-applies a resource re-executes its template but does not re-parse it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pitrix.agent.filecache import FileCache


class RenderError(Exception):
    """The template could not be read, parsed or executed; the message names the file and place."""


@dataclass
class _Parsed:
    template: Any
    funcs: dict[str, Any]


@dataclass
class TemplateCache:
    """Parsed templates of one agent, by source path."""

    _parsed: FileCache[_Parsed] = field(default_factory=FileCache)

    def render(self, src: Path, values: dict[str, str]) -> str:
        """Execute ``src`` against ``values`` (keys as templates see them: prefix already stripped)."""
        from pitrix.agent.template import TemplateError, parse
        from pitrix.agent.template.confd import MemKV, confd_funcs

        try:
            st = src.stat()
        except OSError as exc:
            raise RenderError(f"template {src}: {exc.strerror}") from None
        fresh = confd_funcs(MemKV(values))

        def read_and_parse() -> _Parsed:
            try:
                text = src.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise RenderError(f"template {src}: {exc}") from None
            funcs = dict(fresh)
            return _Parsed(parse(text, name=src.name, funcs=funcs), funcs)

        try:
            parsed, made = self._parsed.get(src, st, read_and_parse)
            if not made:
                # The parsed template keeps a reference to its function map; re-point the
                # functions at this round's values instead of parsing again.
                parsed.funcs.update(fresh)
            return str(parsed.template.execute(None))
        except TemplateError as exc:
            raise RenderError(f"template {src.name}: {exc}") from None
        except RenderError:
            raise
        except Exception as exc:  # an engine bug must fail this resource, not the agent
            raise RenderError(f"template {src.name}: internal error: {type(exc).__name__}: {exc}") from exc
