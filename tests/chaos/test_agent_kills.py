"""Agent faults: pitrix-agent SIGKILLed at random moments, mid-reload and mid-command, under a
stream of metadata writes and commands, with an etcd compaction during its watch.

A real etcd (private: it gets compacted), a real `pitrix-metad` and a real `pitrix-agent` process
on its own loopback address. The reload_cmd checks the live file is whole before it counts it, and
takes a while, so kills land inside reloads; commands take a while too, so kills land inside them.
At the end: the live file holds the last value (no change missed), no reload ever saw a broken or
an older file than one before it, and no command id ever started twice.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from pathlib import Path

import pytest
from agent_world import one_vm_world
from chaos_ops import Tally

from bench.propagation import Fifo

pytestmark = pytest.mark.timeout(1200)

RELOAD = (
    "line=$(cat etc/v.conf); case \"$line\" in v=*' end') ;; *) line=BROKEN ;; esac; sleep 0.05; "
    'echo "$line" >> var/log/reloads; echo "$line" > {fifo}'
)
CMD = "echo start {id} >> var/log/cmds; sleep 0.2; echo end {id} >> var/log/cmds"


def agent_root(root: Path, url: str, fifo: Path) -> None:
    for sub in ("etc/confd/conf.d", "etc/confd/templates", "etc/pitrix", "var/log"):
        (root / sub).mkdir(parents=True)
    (root / "etc/confd/templates/v.tmpl").write_text('v={{getv "/env/v"}} end\n')
    reload_cmd = RELOAD.format(fifo=fifo).replace("\\", "\\\\").replace('"', '\\"')
    (root / "etc/confd/conf.d/v.toml").write_text(
        f'[template]\nsrc = "v.tmpl"\ndest = "/etc/v.conf"\nkeys = ["/env"]\nreload_cmd = "{reload_cmd}"\n'
    )
    (root / "etc/pitrix/agent.toml").write_text(
        f'backend = "metad"\nnodes = ["{url}"]\nprefix = "/self"\nwatch = true\n\n'
        '[pitrix]\nstate_dir = "/var/lib/pitrix-agent"\nheartbeat_interval = 3600\n'
    )


async def test_agent_killed_mid_reload_and_mid_command(tmp_path: Path, long_form: bool) -> None:
    writes, kills = (400, 40) if long_form else (30, 3)
    tally = Tally()
    fifo = Fifo(tmp_path / "reloads.fifo")
    root = tmp_path / "vm"
    async with one_vm_world(tmp_path) as world:
        store, manage = world.store, world.manage
        agent_root(root, world.instance_url, fifo.path)
        agent = await world.start_agent(root)
        compacted = False
        try:
            for v in range(1, writes + 1):
                revision = await manage.put_data("/clusters/cb/env/w", {"v": str(v)})
                tally.operations += 1
                if v % 5 == 0:
                    await manage.put_data(
                        "/clusters/cb/cmd/i-0", {"id": f"c{v}", "cmd": CMD.format(id=f"c{v}")}
                    )
                    tally.operations += 1
                if v == writes // 2:
                    await store.compact(revision)
                    compacted = True
                if tally.kills < kills and random.random() < kills / writes:
                    await agent.kill()  # SIGKILL: no chance to tidy up
                    tally.kills += 1
                    agent = await world.start_agent(root)
                # A random gap between writes (pacing, not waiting for anything), so that kills land
                # in reloads and commands at different points.
                await asyncio.sleep(random.uniform(0, 0.08))
            async with asyncio.timeout(60):
                while await fifo.lines.get() != f"v={writes} end":
                    pass
        finally:
            await agent.stop()
            fifo.close()
    seen = (root / "var/log/reloads").read_text().split("\n")[:-1]
    values = [int(line.split()[0][2:]) for line in seen if line != "BROKEN"]
    broken = seen.count("BROKEN")
    backwards = sum(1 for a, b in itertools.pairwise(values) if b < a)
    starts = Counter(
        line.split()[1]
        for line in (root / "var/log/cmds").read_text().splitlines()
        if line.startswith("start")
    )
    twice = {cmd: n for cmd, n in starts.items() if n > 1}
    lost = broken + backwards + len(twice) + ((root / "etc/v.conf").read_text() != f"v={writes} end\n")
    print(
        "\n"
        + tally.line("agent-kills", tally.kills + compacted, lost)
        + f" reloads={len(seen)} commands_started={len(starts)} compacted={compacted}"
    )
    assert broken == 0, f"{broken} reloads saw a broken file"
    assert backwards == 0, f"an older config went live after a newer one: {values}"
    assert not twice, f"commands started twice: {twice}"
    assert (root / "etc/v.conf").read_text() == f"v={writes} end\n"
