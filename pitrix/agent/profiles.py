"""The agent's compatibility profiles: what changes when a VM runs a QingCloud AppCenter image.

``native`` is pitrix's own behaviour. ``appcenter`` makes the agent behave as an AppCenter VM's
confd and metadata service did, so the images' own scripts and templates run unchanged:

- a plain-HTTP metadata proxy at ``metadata_listen`` (``metadata_proxy``), named ``metadata`` in
  the VM's ``/etc/hosts``, because the images' scripts ``curl http://metadata/self/...``;
- templates compare with confd-yunify's number-aware ``eq/ne/lt/le/gt/ge`` (``yunify_compare``);
- a resource named ``cmd.info`` is skipped: the images carry one whose reload runs ``/self/cmd``,
  which the agent's own command runner runs already (each command would run twice);
- a failed reload leaves the new file in place, as confd does: the images' templates generate
  scripts that the reload runs, and putting the old file back and reloading again restarts the
  service a second time for nothing.

Only the standard library here: every agent start resolves its profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pitrix.agent.errors import ConfigError

if TYPE_CHECKING:
    from pitrix.agent.config import AgentConfig

PROFILES = ("native", "appcenter")
COMPARES = ("go", "yunify")
# Where the proxy listens when the VM has no address of its own in the environment: a loopback
# address nothing else of pitrix uses, so port 80 there is free on a shared host.
FALLBACK_LISTEN_HOST = "127.0.0.88"
METADATA_PORT = 80
LISTEN_OFF = "off"
# The resource AppCenter images carry to run /self/cmd from confd (conf.d/cmd.info.toml).
CMD_INFO_RESOURCE = "cmd.info"


def resolve_profile(cfg: AgentConfig, environ: Mapping[str, str]) -> None:
    """Check the profile settings of ``cfg`` and fill in their defaults."""
    profile = cfg.profile
    if profile not in PROFILES:
        raise ConfigError(f"profile: unknown profile {profile!r} (expected one of {', '.join(PROFILES)})")
    appcenter = profile == "appcenter"
    compare = cfg.template_compare or ("yunify" if appcenter else "go")
    if compare not in COMPARES:
        raise ConfigError(
            f"template_compare: unknown comparison {compare!r} (expected one of {', '.join(COMPARES)})"
        )
    cfg.template_compare = compare
    listen = cfg.metadata_listen
    if not appcenter:
        if listen and listen != LISTEN_OFF:
            raise ConfigError("metadata_listen: the metadata proxy runs in the appcenter profile only")
        cfg.metadata_listen = LISTEN_OFF
        return
    if not listen:
        host = environ.get("PITRIX_VM_IP") or FALLBACK_LISTEN_HOST
        listen = f"{host}:{METADATA_PORT}"
    if listen != LISTEN_OFF:
        parse_listen(listen)
    cfg.metadata_listen = listen


def parse_listen(listen: str) -> tuple[str, int]:
    """``"ADDR:PORT"`` (an IPv4 address: the VM names it in /etc/hosts) → (addr, port)."""
    import ipaddress

    host, sep, port_text = listen.rpartition(":")
    where = f"metadata_listen: {listen!r}"
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"{where} must be ADDR:PORT, e.g. 127.0.0.88:80")
    try:
        addr = ipaddress.IPv4Address(host)
    except ValueError:
        raise ConfigError(f"{where}: {host!r} is not an IPv4 address") from None
    port = int(port_text)  # 0: an ephemeral port (tests), as the socket gives it
    if not 0 <= port < 65536:
        raise ConfigError(f"{where}: port {port} out of range")
    if addr.is_unspecified:
        # 0.0.0.0 would serve this VM's metadata to anyone who can reach it.
        raise ConfigError(f"{where}: the proxy must listen on one address of the VM, not all of them")
    return str(addr), port


def is_appcenter(cfg: AgentConfig) -> bool:
    return cfg.profile == "appcenter"
