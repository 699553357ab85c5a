"""The ssh channel's fallback command path: a lifecycle command run over SSH for a silent agent.

Only for nodes whose agent is known silent (metad holds no heartbeat for it: its lease ran out),
and the command is then never handed to that agent: it is removed from the node's metadata before
it runs over SSH, so an agent that comes back does not run it a second time. The result is written
where agents write theirs (``/_pitrix/status/<cid>/<iid>/cmd/<id>``), so whoever waits on results
sees no difference but ``"via": "ssh"``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from pitrix.metad import keyspace
from pitrix.metad.client import MetadManagementClient
from pitrix.providers.base import Instance
from pitrix.ssh import SshError, SshSessions

OUTPUT_TAIL = 4096


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _beat_at(heartbeat: Any) -> float:
    """When a heartbeat report was written (epoch seconds; 0 if it cannot be read)."""
    try:
        stamp = json.loads(heartbeat)["time"] if isinstance(heartbeat, str) else heartbeat["time"]
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except (KeyError, TypeError, ValueError):
        return 0.0


async def silent_agents(
    metad: MetadManagementClient, cluster_id: str, instance_ids: list[str], *, since: float = 0.0
) -> set[str]:
    """Instances whose agent has no heartbeat in metad now (asked directly, not from a replayed view).

    With ``since``, a heartbeat written before then counts as none: after a stop and start, a full
    VM's agent is dead although its last heartbeat stays until its lease runs out.
    """
    silent = set()
    for iid in instance_ids:
        status = await metad.get_data(keyspace.instance_status(cluster_id, iid))
        beat = status.get(keyspace.HEARTBEAT) if isinstance(status, dict) else None
        if beat is None or (since and _beat_at(beat) < since):
            silent.add(iid)
    return silent


async def run_over_ssh(
    ssh: SshSessions,
    metad: MetadManagementClient,
    cluster_id: str,
    instance: Instance,
    command_id: str,
    cmd: str,
    timeout: float,
) -> dict[str, Any]:
    """Run ``cmd`` on the instance and record its result as its agent would have."""
    key = keyspace.command_result(cluster_id, instance.instance_id, command_id)
    done = await metad.get_data(key)
    if isinstance(done, str):  # a re-run of the step: the command ran (over SSH) already
        record: dict[str, Any] = json.loads(done)
        if record.get("status") in ("successful", "failed"):
            return record
    await metad.delete_data(keyspace.cmd(cluster_id, instance.instance_id))  # never also the agent
    started, began = _now(), time.monotonic()
    try:
        code, output = await ssh.run(instance, cmd, timeout=timeout)
    except SshError as exc:
        code, output = None, f"over SSH: {exc}"
    record = {
        "status": "successful" if code == 0 else "failed",
        "exit_code": code,
        "started": started,
        "finished": _now(),
        "seconds": round(time.monotonic() - began, 3),
        "output_tail": output[-OUTPUT_TAIL:],
        "via": "ssh",
    }
    await metad.put_data(key, json.dumps(record))
    return record
