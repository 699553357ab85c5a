"""Running a plan: layer by layer, steps of a layer together, every step journaled.

A step already journaled as done is skipped, which is what makes a restarted daemon resume at the
first unfinished step; a step journaled as started but not done runs again (steps are idempotent).
That idempotence also lets a step that failed with a retryable cloud error run again in place
(``RetryPolicy``), each attempt journaled so progress shows the retry and its reason.

``LostOwnership`` (a fenced journal write refused, or a step told the same) is no failure of the
job: another replica owns the cluster and resumes the job from the journal. The plan ends at once
(the other steps of the layer are cancelled), nothing more is journaled, and the error goes to the
caller. Nor is ``StoreUnavailable`` from a step (pitrixd's own etcd gave no answer: a member died,
a reconnect cut a request off): the step is left as started, and the caller runs the job again
from its journal, as after a crash.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pitrix.logs import get_logger
from pitrix.runtime.journal import Journal, ended, starting
from pitrix.runtime.ownership import LostOwnership
from pitrix.runtime.plan import Plan, Step
from pitrix.runtime.records import StepRecord
from pitrix.runtime.retrying import RetryPolicy
from pitrix.store import StoreUnavailable

DEFAULT_RETRY = RetryPolicy()


class StepFailed(Exception):
    """A step raised or timed out; the plan stops and the job fails with this message."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step {step}: {message}")
        self.step = step


Progress = Callable[[StepRecord], Awaitable[None]]


async def execute(
    plan: Plan, journal: Journal, progress: Progress | None = None, retry: RetryPolicy = DEFAULT_RETRY
) -> None:
    """Run the plan's steps not journaled as done, layer by layer.

    A layer's start records are written in one transaction, and the end record of a layer of one
    step goes with the next layer's starts (or alone after the last layer): a create's plan is a
    chain of one-step layers, and a transaction for each record was two round trips of etcd per
    step. A layer of several steps journals each end as it comes, so progress shows a finished
    step at once. A crash before the end record is written leaves the step started, as a crash
    at its last line always did: it runs again (steps are idempotent).
    """
    log = get_logger("pitrix.executor", cluster_id=journal.cluster_id, job_id=journal.job_id)
    done = {name for name, record in (await journal.records()).items() if record.status == "done"}
    carried: list[StepRecord] = []  # the end record of the last layer's only step, not yet written
    for number, layer in enumerate(plan.layers, start=1):
        todo = [step for step in layer if step.name not in done]
        if not todo:
            continue
        log.debug("layer", layer=number, steps=[s.name for s in todo])
        starts = [starting(step.name) for step in todo]
        await journal.write_all([*carried, *starts])
        if progress:
            for record in [*carried, *starts]:
                await progress(record)
        carried = []
        ends = carried if len(todo) == 1 else None
        errors = await _run_layer(
            [
                _run(step, record, journal, progress, retry, ends)
                for step, record in zip(todo, starts, strict=True)
            ]
        )
        for error in errors:
            if not isinstance(error, StepFailed):
                raise error
        if errors:
            raise errors[0]
    await journal.write_all(carried)
    if progress:
        for record in carried:
            await progress(record)


async def _run_layer(runs: list[Coroutine[Any, Any, None]]) -> list[BaseException]:
    """Run a layer's steps together; their errors, in step order, once all have ended.

    A failed step lets its siblings finish (each journals its own outcome), but a lost ownership
    stops them all at once: this replica may not act on the cluster any more.
    """
    tasks = [asyncio.ensure_future(run) for run in runs]
    try:
        pending: set[asyncio.Future[None]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = None if task.cancelled() else task.exception()
                if isinstance(error, LostOwnership):
                    raise error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return [error for task in tasks if (error := task.exception()) is not None]


async def _run(
    step: Step,
    record: StepRecord,
    journal: Journal,
    progress: Progress | None,
    retry: RetryPolicy,
    ends: list[StepRecord] | None,
) -> None:
    """Run a step whose start ``record`` is journaled; its end is journaled here, or, given
    ``ends``, put there for the caller to write with the next layer's starts."""
    bound = get_logger(
        "pitrix.executor", cluster_id=journal.cluster_id, job_id=journal.job_id, step=step.name
    )
    began = time.monotonic()
    deadline = asyncio.timeout(step.timeout)
    attempt = 1
    try:
        async with deadline:
            while True:
                try:
                    detail = await step.run()
                    break
                except LostOwnership:
                    raise
                except Exception as exc:
                    cause = retry.again(exc, attempt)
                    if cause is None:
                        raise
                    pause = retry.delay(attempt)
                    attempt += 1
                    bound.warning(
                        "step retrying",
                        attempt=attempt,
                        attempts=retry.attempts,
                        code=cause.code,
                        error=str(exc),
                        delay=round(pause, 3),
                    )
                    record = await journal.retrying(record, attempt, retry.attempts, str(exc))
                    if progress:
                        await progress(record)
                    await asyncio.sleep(pause)
    except (asyncio.CancelledError, LostOwnership, StoreUnavailable):
        raise  # not the step's failure: nothing is journaled (see the module's docstring)
    except Exception as exc:  # a step's own failure ends the plan, recorded with its reason
        if deadline.expired():
            message = f"timed out after {step.timeout:.0f}s"
        elif isinstance(exc, TimeoutError):
            message = f"gave up waiting after {time.monotonic() - began:.0f}s: {exc or 'no answer in time'}"
        else:
            message = str(exc) or type(exc).__name__
        if attempt > 1:
            message += f" (after {attempt} attempts)"
        bound.error("step failed", error=message, exc_info=not isinstance(exc, StepFailed))
        record = await journal.failed(record, message)
        if progress:
            await progress(record)
        raise StepFailed(step.name, message) from exc
    bound.info("step done", seconds=round(time.monotonic() - began, 3), detail=detail or None)
    if ends is not None:
        ends.append(ended(record, detail))
        return
    record = await journal.finished(record, detail)
    if progress:
        await progress(record)
