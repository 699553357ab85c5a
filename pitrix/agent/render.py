"""Rendering one template resource's source with its values, through the Go-template engine.

Parsed templates are cached per source file (keyed on its modification time and size), so a
watch round that re-applies a resource re-executes its template but does not re-parse it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class RenderError(Exception):
    """The template could not be read, parsed or executed; the message names the file and place."""


@dataclass
class _Cached:
    stamp: tuple[int, int]
    template: Any
    funcs: dict[str, Any]


@dataclass
class TemplateCache:
    """Parsed templates of one agent, by source path."""

    _entries: dict[Path, _Cached] = field(default_factory=dict)

    def render(self, src: Path, values: dict[str, str]) -> str:
        """Execute ``src`` against ``values`` (keys as templates see them: prefix already stripped)."""
        from pitrix.agent.template import TemplateError, parse
        from pitrix.agent.template.confd import MemKV, confd_funcs

        try:
            st = src.stat()
        except OSError as exc:
            raise RenderError(f"template {src}: {exc.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        kv = MemKV(values)
        fresh = confd_funcs(kv)
        entry = self._entries.get(src)
        try:
            if entry is None or entry.stamp != stamp:
                try:
                    text = src.read_text()
                except (OSError, UnicodeDecodeError) as exc:
                    raise RenderError(f"template {src}: {exc}") from None
                funcs = dict(fresh)
                template = parse(text, name=src.name, funcs=funcs)
                entry = _Cached(stamp, template, funcs)
                self._entries[src] = entry
            else:
                # The parsed template keeps a reference to its function map; re-point the
                # functions at this round's values instead of parsing again.
                entry.funcs.update(fresh)
            return str(entry.template.execute(None))
        except TemplateError as exc:
            raise RenderError(f"template {src.name}: {exc}") from None
        except RenderError:
            raise
        except Exception as exc:  # an engine bug must fail this resource, not the agent
            raise RenderError(f"template {src.name}: internal error: {type(exc).__name__}: {exc}") from exc
