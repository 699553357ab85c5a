"""``pitrix-agent -onetime`` on the file backend without an event loop.

A one-shot render is what cloud-init and cron run on every VM; confd does it in ~0.03 CPU-s. Here
importing asyncio (and the OpenSSL it loads) alone cost twice a bare interpreter's start and
9 MiB. When the round has nothing to wait on (the file backend is read in this thread, and no
resource runs a check_cmd or reload_cmd), every resource's unchanged ``TemplateResource.process``
runs to its end without ever suspending, so it is driven here by ``run_inline``, with no loop and
no asyncio. Any other one-shot round, and every long-running mode, runs on the loop
(``Agent.run_onetime``); ``main`` asks ``runs_inline`` which one.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from pitrix.agent.confdir import load_resources
from pitrix.agent.config import AgentConfig
from pitrix.agent.errors import AgentError
from pitrix.agent.log import get_logger
from pitrix.agent.parsecache import ParseCache
from pitrix.agent.render import TemplateCache
from pitrix.agent.report import LogReporter
from pitrix.agent.resource import ApplyOptions, ApplyResult, TemplateResource

T = TypeVar("T")


class NeedsLoop(RuntimeError):
    """A coroutine driven by ``run_inline`` waited on something only an event loop can give."""


def run_inline(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end in this thread, with no event loop: it must never suspend."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise NeedsLoop("a one-shot round waited on I/O: it needs the event loop")


def runs_inline(config: AgentConfig) -> bool:
    """Whether this config is a one-shot round ``run`` can take (else ``Agent.run_onetime``)."""
    return config.onetime and config.backend == "file"


def _waits(resources: list[TemplateResource], config: AgentConfig) -> bool:
    """Whether any resource runs a command (``process`` awaits it on the loop; -noop and
    -sync-only run none)."""
    return not (config.sync_only or config.noop) and any(r.check_cmd or r.reload_cmd for r in resources)


def run(config: AgentConfig) -> int | None:
    """One round over every resource: 0 when all are ok, 1 when any failed (confd's -onetime).

    None, having done nothing, when a resource runs a command: the caller runs the round on the
    loop instead. Mirrors ``Agent.apply_round`` for a first round: resources that fail to load
    are reported failed, the others applied, and the report goes to the log.
    """
    from pitrix.agent.backends.file import FileBackend

    parsed = ParseCache.in_dir(config.state_dir)
    resources, load_errors = load_resources(config, parsed)
    if _waits(resources, config):
        return None
    log = get_logger("pitrix.agent", backend=config.backend, prefix=config.prefix)
    keys = sorted({k for r in resources for k in r.keys})
    backend = FileBackend.from_config(config)
    backend.parsed = parsed
    try:
        values = backend.read_values(keys) if keys else {}
    except AgentError as exc:
        log.error("backend error", error=str(exc))
        return 1
    finally:
        parsed.save()
    results: dict[str, ApplyResult] = {}
    for name, error in load_errors.items():
        log.error("resource not loaded", resource=name, error=error)
        results[name] = ApplyResult(name, ok=False, error=error)
    cache = TemplateCache.for_config(config)
    options = ApplyOptions.from_config(config, file_io_on_loop=True)
    for resource in resources:
        results[resource.name] = run_inline(resource.process(values, cache, options))
    report = {name: r.record() for name, r in sorted(results.items())}
    run_inline(LogReporter().applied(0, report))
    return 0 if all(r.ok for r in results.values()) else 1
