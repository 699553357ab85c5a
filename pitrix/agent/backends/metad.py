"""The ``metad`` backend: metad's instance API, long-polled for changes."""

from __future__ import annotations

import asyncio
import time

from pitrix.agent.backends import minimal_keys
from pitrix.agent.backends.flatten import flatten
from pitrix.agent.config import AgentConfig
from pitrix.agent.metad_client import MetadClient, gather_answers

MIN_POLL_SECONDS = 1.0


class MetadBackend:
    """Reads and watches the caller's own view (``/self``) through metad."""

    def __init__(self, client: MetadClient) -> None:
        self.client = client
        self.revision = 0

    @classmethod
    def from_config(cls, config: AgentConfig) -> MetadBackend:
        return cls(
            MetadClient(
                config.nodes,
                bind_address=config.bind_address,
                client_cert=config.client_cert,
                client_key=config.client_key,
                ca_file=config.client_cakeys,
            )
        )

    async def get_values(self, keys: list[str]) -> dict[str, str]:
        """One GET per subtree; ``revision`` becomes the oldest revision among the answers.

        The oldest, because a watch from it then fires for anything a younger answer reflects
        and an older one does not, at the cost of at most one redundant round.
        """
        paths = minimal_keys(keys) or ["/"]
        answers = await gather_answers(self.client, paths)
        values: dict[str, str] = {}
        for path, answer in zip(paths, answers, strict=True):
            if answer.body is None:
                continue
            if isinstance(answer.body, dict | list):
                values.update(flatten(answer.body, path))
            else:
                values[path] = str(answer.body)
        self.revision = min(a.version for a in answers)
        return {k: v for k, v in values.items() if any(k.startswith(key) for key in keys)}

    async def watch(self, prefix: str, keys: list[str], last_index: int) -> int:
        """Long-poll ``prefix`` until metad reports a revision after ``last_index``.

        With ``last_index`` 0 (nothing read yet) it returns the current revision at once, as confd.
        """
        path = prefix or "/"
        if last_index <= 0:
            return (await self.client.get(path)).version
        while True:
            started = time.monotonic()
            answer = await self.client.get(path, wait=True, prev_version=last_index)
            if answer.version > last_index:
                return answer.version
            if time.monotonic() - started < MIN_POLL_SECONDS:
                # An unchanged answer that came back at once (a metad shutting down, or one that
                # does not hold long-polls): do not turn the long-poll into a busy loop.
                await asyncio.sleep(MIN_POLL_SECONDS)

    async def close(self) -> None:
        await self.client.close()
