"""The ``metad`` backend: metad's instance API, long-polled for changes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pitrix.agent import metad_roster
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
        # The body of the last watch answer: the view at exactly the revision the watch returned.
        # The next read uses it instead of asking again (one request per change instead of one per
        # subtree); used once, then dropped.
        self._snapshot: tuple[int, str, Any] | None = None
        # The keys the last read asked for and the values it found: what a watch answer is
        # compared with when its version says nothing changed.
        self._read: tuple[list[str], dict[str, str]] | None = None

    @classmethod
    def from_config(cls, config: AgentConfig) -> MetadBackend:
        return cls(
            MetadClient(
                config.nodes,
                bind_address=config.bind_address,
                client_cert=config.client_cert,
                client_key=config.client_key,
                ca_file=config.client_cakeys,
                bootstrap_token=config.bootstrap_token,
                bootstrap_patience=config.bootstrap_patience,
                roster_file=config.state_dir / metad_roster.FILE_NAME,
            )
        )

    async def get_values(self, keys: list[str]) -> dict[str, str]:
        """One GET of the subtrees' common ancestor below the root (``/self`` for an agent's
        resources), else one GET per subtree; ``revision`` becomes the oldest revision among
        the answers.

        One GET: an agent's first round asked ``/self/cmd``, ``/self/health`` and ``/self/monitor``
        at once, and each request past the client's two idle connections was a TLS handshake of
        its own on metad, which with every agent of a burst starting together was a quarter of
        metad's CPU; ``/self`` is the answer metad makes cheapest. The oldest, with several,
        because a watch from it then fires for anything a younger answer reflects and an older
        one does not, at the cost of at most one redundant round.
        """
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is not None and all(_inside(k, snapshot[1]) for k in keys):
            version, base, body = snapshot
            self.revision = version
            # Only the subtrees asked for are flattened: the /self view holds every host of the
            # cluster, and most resources want a few keys of it.
            values: dict[str, str] = {}
            for path in minimal_keys(keys):
                values.update(_values(path, _subtree(body, base, path)))
            return self._remember(keys, _select(values, keys))
        paths = minimal_keys(keys) or ["/"]
        base = common_ancestor(paths)
        if len(paths) > 1 and base != "/":  # never the root: a Go metad's is every key it holds
            answer = await self.client.get(base)
            self.revision = answer.version
            values = {}
            for path in paths:
                values.update(_values(path, _subtree(answer.body, base, path)))
            return self._remember(keys, _select(values, keys))
        answers = await gather_answers(self.client, paths)
        values = {}
        for path, answer in zip(paths, answers, strict=True):
            values.update(_values(path, answer.body))
        self.revision = min(a.version for a in answers)
        return self._remember(keys, _select(values, keys))

    def _remember(self, keys: list[str], values: dict[str, str]) -> dict[str, str]:
        self._read = (keys, values)
        return values

    def _differs(self, path: str, keys: list[str], body: Any) -> bool:
        """Whether a watch answer holds other values for ``keys`` than the last read found.

        Go metad stamps a long-poll's answer with the version from before the wait, so its answer
        to a change carries the version the agent sent; only its body tells the change apart.
        """
        read = self._read
        if read is None or read[0] != keys:
            return False
        return _select(_values(path, body), keys) != read[1]

    async def watch(self, prefix: str, keys: list[str], last_index: int) -> int:
        """Long-poll ``prefix`` until metad reports a revision other than ``last_index``.

        With ``last_index`` 0 (nothing read yet) it returns the current revision at once, as confd.
        """
        path = prefix or "/"
        if last_index <= 0:
            answer = await self.client.get(path)
            self._snapshot = (answer.version, path, answer.body)
            return answer.version
        while True:
            started = time.monotonic()
            answer = await self.client.get(path, wait=True, prev_version=last_index)
            if answer.version != last_index or self._differs(path, keys, answer.body):
                # Older than our index: this metad's store is not the one we read from (restored
                # from a backup, or rebuilt on a fresh etcd), so our index means nothing there.
                # Either way the caller re-reads the whole view and resumes from its revision.
                # The same index with other values: a metad whose versions lag (Go metad's); the
                # round reads this answer, and the next poll, at the same index, learns the new one.
                self._snapshot = (answer.version, path, answer.body)
                return answer.version
            if time.monotonic() - started < MIN_POLL_SECONDS:
                # An unchanged answer that came back at once (a metad shutting down, or one that
                # does not hold long-polls): do not turn the long-poll into a busy loop.
                await asyncio.sleep(MIN_POLL_SECONDS)

    async def close(self) -> None:
        await self.client.close()


def common_ancestor(paths: list[str]) -> str:
    """The deepest path that holds each of ``paths`` (path-wise: ``/self/host`` and
    ``/self/hosts`` share ``/self``)."""
    split = [[part for part in path.split("/") if part] for path in paths]
    common: list[str] = []
    for parts in zip(*split, strict=False):
        if any(part != parts[0] for part in parts):
            break
        common.append(parts[0])
    return "/" + "/".join(common)


def _inside(key: str, base: str) -> bool:
    base = base.rstrip("/")
    return not base or key == base or key.startswith(base + "/")


def _subtree(body: Any, base: str, path: str) -> Any:
    """The node of ``body`` (the tree at ``base``) at ``path``; None when absent."""
    node = body
    for part in path[len(base.rstrip("/")) :].split("/"):
        if not part:
            continue
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
        if node is None:
            return None
    return node


def _values(path: str, body: Any) -> dict[str, str]:
    if body is None:
        return {}
    if isinstance(body, dict | list):
        return flatten(body, path)
    return {path: str(body)}


def _select(values: dict[str, str], keys: list[str]) -> dict[str, str]:
    return {k: v for k, v in values.items() if any(k.startswith(key) for key in keys)}
