"""A cluster named by its id or by its name, resolved on the client from the list the API gives.

Names are unique per owner (the API refuses a second one), and no name looks like an id, so an
argument of the id's form is used as it is (no extra request) and any other is looked up among
the clusters the caller may see. An admin sees every owner's clusters: a name two owners use is
refused as ambiguous, naming the ids.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pitrix.cli.client import ApiClient

CLUSTER_ID = re.compile(r"cl-[0-9a-f]{8}")


class UnknownCluster(LookupError):
    """No cluster has that id or name (exit 4); the message may suggest a close name."""


class AmbiguousName(ValueError):
    """Several visible clusters (of different owners) share the name (exit 2: give the id)."""


async def resolve_cluster(client: ApiClient, ref: str) -> str:
    """The id of the cluster ``ref`` names (an id, or a name among the visible clusters)."""
    if CLUSTER_ID.fullmatch(ref):
        return ref
    clusters = (await client.get("/v1/clusters"))["clusters"]
    found = [c for c in clusters if c["name"] == ref]
    if len(found) == 1:
        return str(found[0]["id"])
    if found:
        ids = ", ".join(f"{c['id']} ({c['owner']})" for c in found)
        raise AmbiguousName(f"{ref!r} names several clusters: {ids}; give the id")
    import difflib  # here: only a name that matches nothing needs it

    close = difflib.get_close_matches(ref, [c["name"] for c in clusters], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; `pitrix clusters list` shows yours"
    raise UnknownCluster(f"cluster {ref!r} does not exist (no id or name matches){hint}")
