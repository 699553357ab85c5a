"""Running a plan: layer by layer, steps of a layer together, every step journaled.

A step already journaled as done is skipped, which is what makes a restarted daemon resume at the
first unfinished step; a step journaled as started but not done runs again (steps are idempotent).
That idempotence also lets a step that failed with a retryable cloud error run again in place
(``RetryPolicy``), each attempt journaled so progress shows the retry and its reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from pitrix.logs import get_logger
from pitrix.runtime.journal import Journal
from pitrix.runtime.plan import Plan, Step
from pitrix.runtime.records import StepRecord
from pitrix.runtime.retrying import RetryPolicy

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
    log = get_logger("pitrix.executor", cluster_id=journal.cluster_id, job_id=journal.job_id)
    done = {name for name, record in (await journal.records()).items() if record.status == "done"}
    for number, layer in enumerate(plan.layers, start=1):
        todo = [step for step in layer if step.name not in done]
        if not todo:
            continue
        log.debug("layer", layer=number, steps=[s.name for s in todo])
        results = await asyncio.gather(
            *(_run(step, journal, progress, retry) for step in todo), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, StepFailed):
                raise error
        if errors:
            raise errors[0]


async def _run(step: Step, journal: Journal, progress: Progress | None, retry: RetryPolicy) -> None:
    bound = get_logger(
        "pitrix.executor", cluster_id=journal.cluster_id, job_id=journal.job_id, step=step.name
    )
    record = await journal.started(step.name)
    if progress:
        await progress(record)
    began = time.monotonic()
    deadline = asyncio.timeout(step.timeout)
    attempt = 1
    try:
        async with deadline:
            while True:
                try:
                    detail = await step.run()
                    break
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
    except asyncio.CancelledError:
        raise
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
    record = await journal.finished(record, detail)
    bound.info("step done", seconds=round(time.monotonic() - began, 3), detail=detail or None)
    if progress:
        await progress(record)
