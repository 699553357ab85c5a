"""What an action is: its place in the lifecycle, its typed arguments, its checks, plan and commit.

An action is one file under ``pitrix/runtime/actions/`` and one line in the registry
(``actions/__init__.py``). The API, the lifecycle table, the supervisor and the web page's drawing
all read it from there, so adding an action touches nothing else.

The four moments of an action, in the order they happen:

- ``accept`` judges a request against the cluster as read and returns the typed arguments (or an
  ``InvalidRequest`` naming the field). The arguments are stored in the job, so a resumed plan
  works on exactly what was accepted.
- ``recheck`` runs again on the cluster's fresh read, just before the write that accepts it.
- ``plan`` lays out the named, idempotent steps the supervisor runs (and journals).
- ``commit`` says what the cluster record takes from a successful job (counts, env, ...), written
  in the same transaction as its end.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from pitrix.runtime.lifecycle import Edge
from pitrix.runtime.plan import Plan
from pitrix.runtime.records import Cluster, State
from pitrix.runtime.repository import Repository
from pitrix.runtime.wording import describe
from pitrix.sealing import Sealer

if TYPE_CHECKING:
    from pitrix.runtime.metadata import MetadataClusters
    from pitrix.runtime.steps.context import JobContext


class InvalidRequest(ValueError):
    """A request's content is wrong; the message names the field."""


class Args(BaseModel):
    """An action's arguments as the job stores them (``Job.args``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class NoArgs(Args):
    pass


A = TypeVar("A", bound=Args)


@dataclass(frozen=True)
class Desk:
    """What an action consults while judging a request: the records and the metadata services."""

    repo: Repository
    metadata: MetadataClusters
    sealer: Sealer


@dataclass(frozen=True)
class Accepted:
    """A request judged: which action runs (``scale`` chooses out or in) with which arguments."""

    action: Action[Any]
    args: Args


class Action(ABC, Generic[A]):
    name: ClassVar[str]  # the job's action, and the lifecycle's trigger
    running: ClassVar[State]  # the transitional state its plan runs in
    sources: ClassVar[tuple[State, ...]] = ("active",)
    done: ClassVar[State] = "active"
    rolled_back: ClassVar[State | None] = None  # where a clean rollback leaves the cluster
    # Whether every failure is a clean rollback: an action whose plan changes nothing pitrix keeps
    # (a custom service) leaves the cluster in ``rolled_back`` however its job fails.
    always_rolls_back: ClassVar[bool] = False
    # ``POST /v1/clusters/<id>/<verb>`` asks for it (None: it has a route of its own, or another
    # action of the same verb chooses it).
    verb: ClassVar[str | None] = None
    arguments: ClassVar[type[Args]] = NoArgs
    # What the API document says of the verb: a line, and the JSON schema of the request's body
    # (None: it takes none; ``body_required`` False: it may be left out).
    summary: ClassVar[str] = ""
    request_schema: ClassVar[dict[str, Any] | None] = None
    body_required: ClassVar[bool] = True

    @property
    def edge(self) -> Edge:
        return Edge(self.name, self.sources, self.running, self.done, self.rolled_back)

    def decode(self, stored: dict[str, Any]) -> A:
        """The job's stored arguments as this action's type."""
        return self.arguments.model_validate(stored)  # type: ignore[return-value]

    async def accept(self, desk: Desk, cluster: Cluster, body: dict[str, Any]) -> Accepted:
        """Judge a request's body (by default: the arguments model, errors naming the field)."""
        try:
            return Accepted(self, self.arguments.model_validate(body))
        except ValidationError as exc:
            raise InvalidRequest(describe(exc.errors()[0], self.arguments)) from None

    async def recheck(self, desk: Desk, cluster: Cluster) -> None:
        """Checks that must hold on the cluster's fresh read, inside the accepting write's lock."""

    @abstractmethod
    def plan(self, ctx: JobContext, args: A) -> Plan:
        """The steps, in layers; node sets come from ``args``, fixed when the action was accepted."""

    def commit(self, cluster: Cluster, args: A) -> dict[str, Any]:
        """What the cluster record takes from the job's success (besides its new state)."""
        return {}
