"""A light VM's pitrix-agent: the real agent (``pitrix.agent.build_agent``), run as a task here.

A light VM has no processes, so its agent cannot be one; running the very same agent code in the
simulator's loop keeps what it renders, reports and heartbeats identical to a full VM's. Its
config is the VM's ``etc/pitrix/agent.toml``, read with the VM's environment so it binds to the
VM's address (metad knows instances by their source address). Lifecycle commands and reload
commands it runs are real ``sh`` processes, as they are for a full VM's agent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from pitrix.aio import cancel_and_wait
from pitrix.logs import get_logger

if TYPE_CHECKING:
    from pitrix.agent.agent import Agent

CONFIG_PATH = "etc/pitrix/agent.toml"
STOP_TIMEOUT = 10.0


class LightAgent:
    def __init__(self, agent: Agent, instance_id: str) -> None:
        self.agent = agent
        self.instance_id = instance_id
        self.task = asyncio.create_task(self._run(), name=f"light-agent-{instance_id}")

    @classmethod
    async def start_if_configured(
        cls, root: Path, environ: dict[str, str], config_path: str = CONFIG_PATH
    ) -> LightAgent | None:
        """Start the VM's agent if its root holds a config; a bad config fails the boot, naming it."""
        path = root / config_path.lstrip("/")
        if not path.is_file():
            return None
        # only here: a simulator whose VMs run no in-process agent never loads the agent's stack
        from pitrix.agent.agent import build_agent
        from pitrix.agent.config import load_config

        config = await asyncio.to_thread(load_config, root, path, None, environ)
        return cls(build_agent(config, announce=lambda _info: None), environ["PITRIX_VM_ID"])

    async def _run(self) -> None:
        log = get_logger("simulator.light_agent", instance_id=self.instance_id)
        try:
            await self.agent.run_forever()
        except Exception:
            log.exception("light_agent.failed")
        finally:
            await self.agent.close()

    async def stop(self) -> None:
        self.agent.stop()
        done, _ = await asyncio.wait([self.task], timeout=STOP_TIMEOUT)
        if not done:
            await cancel_and_wait(self.task)


async def start_once(
    current: LightAgent | None, cut_off: bool, root: Path, environ: dict[str, str], config: str
) -> tuple[LightAgent | None, str]:
    """What a light VM's ``pitrix-agent -config-file CONFIG`` does: the VM's agent (the one already
    running, or a new one) and the command's error text ("" when it succeeded).

    One agent per VM, as a second real one would fail to take its state dir; a bad config is the
    command's failure, not the SSH server's. Shared by the simulator's own light VMs and by those
    its light workers run (``--light-workers``).
    """
    if current is not None and not current.task.done():
        return current, ""
    if cut_off:
        return current, "the VM's agent is cut off (fault)"
    try:
        agent = await LightAgent.start_if_configured(root, environ, config)
    except Exception as exc:
        return current, f"{config}: {exc}"
    if agent is None:
        return current, f"{config}: no such file"
    return agent, ""
