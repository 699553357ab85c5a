"""Boot scripts the runtime hands to new instances as userdata.

They are plain shell, written for a VM whose root may be a directory (the simulator) or ``/`` (a
real cloud): every path goes through ``$PITRIX_VM_ROOT``, which a real image leaves empty.
"""

from __future__ import annotations

import json


def agent_userdata(
    metad_urls: list[str],
    *,
    heartbeat_interval: float = 2.0,
    health_cmd: str = "",
    health_interval: float = 10.0,
) -> str:
    """Write the agent's config and start it in the background."""
    nodes = ", ".join(f'"{url}"' for url in metad_urls)
    health = (
        f"health_cmd = {json.dumps(health_cmd)}\nhealth_interval = {health_interval}\n" if health_cmd else ""
    )
    return f"""#!/bin/sh
# pitrix: configure and start pitrix-agent
set -e
ROOT="${{PITRIX_VM_ROOT:-}}"
mkdir -p "$ROOT/etc/pitrix" "$ROOT/var/log" "$ROOT/var/lib/pitrix-agent"
cat > "$ROOT/etc/pitrix/agent.toml" <<'PITRIX_EOF'
backend = "metad"
nodes = [{nodes}]
confdir = "/etc/confd"
prefix = "/self"
watch = true

[pitrix]
state_dir = "/var/lib/pitrix-agent"
heartbeat_interval = {heartbeat_interval}
{health}PITRIX_EOF
nohup pitrix-agent -config-file "$ROOT/etc/pitrix/agent.toml" >> "$ROOT/var/log/pitrix-agent.log" 2>&1 &
"""


def metad_userdata(*, instance_port: int = 8080, manage_port: int = 9611) -> str:
    """Start etcd and pitrix-metad on the metadata VM's own address."""
    ports = f"--instance-port {instance_port} --manage-port {manage_port}"
    return f"""#!/bin/sh
# pitrix: start the metadata service (embedded etcd + pitrix-metad)
set -e
ROOT="${{PITRIX_VM_ROOT:-}}"
IP="${{PITRIX_VM_IP:-$(hostname -I | cut -d' ' -f1)}}"
mkdir -p "$ROOT/var/lib/pitrix-metad" "$ROOT/var/log"
nohup pitrix-metad --listen-ip "$IP" {ports} --embedded-etcd \\
    --state-dir "$ROOT/var/lib/pitrix-metad" >> "$ROOT/var/log/pitrix-metad.log" 2>&1 &
"""
