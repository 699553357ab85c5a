"""What an instance boots with: the agent's files, and the boot scripts that write them.

The same files reach an instance two ways: written by its userdata (channel ``rest``) or pushed
over SSH (channel ``ssh``), so :func:`agent_files` is the one place that says what they are.
Scripts are plain shell, written for a VM whose root may be a directory (the simulator) or ``/``
(a real cloud): every path goes through ``$PITRIX_VM_ROOT``, which a real image leaves empty.
"""

from __future__ import annotations

import base64
import json
import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from pitrix.runtime.records import DEFAULT_HEARTBEAT_INTERVAL
from pitrix.runtime.spec import Template

AGENT_CONFIG = "/etc/pitrix/agent.toml"
AGENT_CA = "/etc/pitrix/ca.pem"
AGENT_CERT = "/etc/pitrix/agent.crt"
AGENT_KEY = "/etc/pitrix/agent.key"
AGENT_LOG = "/var/log/pitrix-agent.log"
CONFD_DIR = "/etc/confd"
METAD_DIR = "/etc/pitrix-metad"
METAD_STATE = "/var/lib/pitrix-metad"
METAD_ROOT_CA = f"{METAD_DIR}/root-ca.pem"
METAD_MANAGEMENT_CA = f"{METAD_DIR}/management-ca.pem"
METAD_TOKEN = f"{METAD_DIR}/issuer-bootstrap.token"
METAD_PEERS_CA = f"{METAD_DIR}/etcd-peers-ca.pem"
# Written 0600: keys, and the files holding a bootstrap token until it is used.
SECRET_FILES = frozenset({AGENT_CONFIG, AGENT_KEY, METAD_TOKEN})
AGENT_STATE = "/var/lib/pitrix-agent"


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def agent_files(
    metad_urls: list[str],
    *,
    ca_pem: bytes = b"",
    bootstrap_token: str = "",
    cert_pem: bytes = b"",
    key_pem: bytes = b"",
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
    health_cmd: str = "",
    health_interval: float = 10.0,
    templates: Sequence[Template] = (),
    profile: str = "native",
) -> dict[str, bytes]:
    """The agent's config (and its TLS material) by absolute path inside the VM.

    ``profile``: the app's compatibility profile; "appcenter" turns on the agent's AppCenter
    behaviour (its plain-HTTP metadata proxy among it, at the agent's default address).

    With ``ca_pem`` the agent speaks mutual TLS: it either gets its certificate here (``cert_pem``,
    ``key_pem``: pushed over SSH once the instance id is known) or fetches it from metad with a
    one-time ``bootstrap_token`` (userdata, written before the cloud names the instance).
    """
    nodes = ", ".join(_toml(url) for url in metad_urls)
    lines = [
        'backend = "metad"',
        f"nodes = [{nodes}]",
        f"confdir = {_toml(CONFD_DIR)}",
        'prefix = "/self"',
        "watch = true",
    ]
    files: dict[str, bytes] = {}
    if ca_pem:
        lines += [
            f"client_cakeys = {_toml(AGENT_CA)}",
            f"client_cert = {_toml(AGENT_CERT)}",
            f"client_key = {_toml(AGENT_KEY)}",
        ]
        files[AGENT_CA] = ca_pem
        if cert_pem and key_pem:
            files[AGENT_CERT] = cert_pem
            files[AGENT_KEY] = key_pem
    lines += [
        "",
        "[pitrix]",
        'state_dir = "/var/lib/pitrix-agent"',
        f"heartbeat_interval = {heartbeat_interval}",
    ]
    if ca_pem and bootstrap_token and not cert_pem:
        lines.append(f"bootstrap_token = {_toml(bootstrap_token)}")
    if health_cmd:
        lines += [f"health_cmd = {_toml(health_cmd)}", f"health_interval = {health_interval}"]
    if profile != "native":
        lines.append(f"profile = {_toml(profile)}")
    files[AGENT_CONFIG] = ("\n".join(lines) + "\n").encode()
    for template in templates:
        files.update(template_files(template))
    return files


def template_files(template: Template) -> dict[str, bytes]:
    """An app template as the agent reads it: its confd resource and its source."""
    name = f"app-{template.name}"
    resource = [
        "[template]",
        f"src = {_toml(name + '.tmpl')}",
        f"dest = {_toml(template.dest)}",
        f"keys = [{', '.join(_toml(k) for k in template.keys)}]",
        f"mode = {_toml(template.mode)}",
    ]
    if template.check_cmd:
        resource.append(f"check_cmd = {_toml(template.check_cmd)}")
    if template.reload_cmd:
        resource.append(f"reload_cmd = {_toml(template.reload_cmd)}")
    return {
        f"{CONFD_DIR}/conf.d/{name}.toml": ("\n".join(resource) + "\n").encode(),
        f"{CONFD_DIR}/templates/{name}.tmpl": template.text.encode(),
    }


def _write_files(files: dict[str, bytes]) -> str:
    """Shell that writes ``files`` under ``$ROOT`` byte for byte (secrets readable by their owner only).

    A text ending in one newline goes in a here-document, readable in the userdata; anything else
    (an app template, whose trailing newlines are output) goes base64-encoded.
    """
    parents = sorted({posixpath.dirname(path) for path in files})
    dirs = " ".join(f'"$ROOT"{shlex.quote(p)}' for p in parents)
    out = [f"mkdir -p {dirs}"]
    for path, data in files.items():
        target = shlex.quote(path)
        umask = "077" if path in SECRET_FILES else "022"
        if _plain(data):
            writer, body = "cat", data.decode().rstrip("\n")
        else:
            writer, body = "base64 -d", base64.encodebytes(data).decode().rstrip("\n")
        out.append(f"(umask {umask}; {writer} > \"$ROOT\"{target}) <<'PITRIX_EOF'\n{body}\nPITRIX_EOF")
    return "\n".join(out)


def write_files_script(files: dict[str, bytes]) -> str:
    """The shell that writes ``files`` under ``$ROOT`` (upgrade: a version's templates by command)."""
    return _write_files(files)


def _plain(data: bytes) -> bool:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return False
    return text.endswith("\n") and not text.endswith("\n\n") and "PITRIX_EOF" not in text


def agent_start_command() -> str:
    """Start the agent in the background (the VM's root prefixes every path)."""
    return f'nohup pitrix-agent -config-file "$ROOT"{AGENT_CONFIG} >> "$ROOT"{AGENT_LOG} 2>&1 &'


def agent_userdata(files: dict[str, bytes], extra: str = "") -> str:
    """Write the agent's files (see :func:`agent_files`), run ``extra`` (shell, e.g.
    :func:`ssh_identity_script`) and start the agent in the background."""
    return f"""#!/bin/sh
# pitrix: configure and start pitrix-agent
set -e
ROOT="${{PITRIX_VM_ROOT:-}}"
umask 022
mkdir -p "$ROOT/etc/pitrix" "$ROOT/var/log"
(umask 077; mkdir -p "$ROOT{AGENT_STATE}")
{_write_files(files)}
{extra}
{agent_start_command()}
"""


SSH_DIR = "/root/.ssh"


def ssh_identity_script(name: str, private_pem: bytes, public_line: str) -> str:
    """Shell that gives root the key pair ``name`` (``id_rsa``: ``$ROOT/root/.ssh/id_rsa`` and
    ``.pub``) and authorizes its public key, once: ``authorized_keys`` keeps the lines it had (the
    cloud's own key pair among them) and gains this one unless it holds it already."""
    directory = f'"$ROOT"{shlex.quote(SSH_DIR)}'
    private = f'"$ROOT"{shlex.quote(f"{SSH_DIR}/{name}")}'
    public = f'"$ROOT"{shlex.quote(f"{SSH_DIR}/{name}.pub")}'
    authorized = f'"$ROOT"{shlex.quote(f"{SSH_DIR}/authorized_keys")}'
    line = shlex.quote(public_line)
    body = private_pem.decode().rstrip("\n")
    return f"""(umask 077; mkdir -p {directory})
chmod 700 {directory}
(umask 077; cat > {private}) <<'PITRIX_EOF'
{body}
PITRIX_EOF
printf '%s\\n' {line} > {public}
(umask 077; touch {authorized})
grep -qxF {line} {authorized} || printf '%s\\n' {line} >> {authorized}"""


@dataclass(frozen=True)
class MetadTrust:
    """What a metadata VM boots with for mutual TLS: public certificates and a one-time token."""

    root_ca_pem: bytes  # the installation's root: the issuer pitrixd signs must chain to it
    management_ca_pem: bytes  # the only CA whose clients reach the management port
    token: str  # buys the issuer's certificate once (issuer bootstrap), then is worthless


@dataclass(frozen=True)
class MetadMembership:
    """A member of a metadata cluster of several: how its metad's etcd joins the others.

    The members' list (their addresses) comes later, with the certificates: the cloud names the
    addresses only once it runs every member.
    """

    name: str  # this member's name in etcd (m0, m1, ...)
    peers_ca_pem: bytes  # pitrixd's etcd peers CA (public): what every peer's certificate is from
    cluster_token: str  # the cluster's etcd token, also the CN its peers' certificates carry
    joins: bool  # not the first member: it takes the cluster's issuer instead of making one


def metad_userdata(
    trust: MetadTrust | None = None,
    *,
    instance_port: int = 8080,
    manage_port: int = 9611,
    member: MetadMembership | None = None,
) -> str:
    """Start etcd and pitrix-metad on the metadata VM's own address.

    With ``trust``, metad speaks mutual TLS: it makes its issuer's key itself, gets the issuer's
    certificate from pitrixd with the one-time token (``pitrix.metad.issuer_bootstrap``), then
    issues its own server certificate for the address the cloud gave the VM (unknown when this
    script is written) and signs its instances' certificates. No private key is in here.
    """
    flags = f"--instance-port {instance_port} --manage-port {manage_port}"
    files = ""
    if trust is None:
        # settings.metadata_tls = false: pitrixd reaches the management API at the VM's address
        # without a certificate, so it must stay open there (and instances can use it too).
        flags += " --legacy-source-ip --insecure-open-management-api"
    else:
        files = _write_files(
            {
                METAD_ROOT_CA: trust.root_ca_pem,
                METAD_MANAGEMENT_CA: trust.management_ca_pem,
                METAD_TOKEN: (trust.token + "\n").encode(),
            }
        )
        flags += (
            f' --issuer-bootstrap-token-file "$ROOT"{METAD_TOKEN} --root-ca "$ROOT"{METAD_ROOT_CA}'
            f' --management-ca "$ROOT"{METAD_MANAGEMENT_CA}'
        )
        if member is not None:
            files += "\n" + _write_files({METAD_PEERS_CA: member.peers_ca_pem})
            flags += (
                f' --etcd-member {shlex.quote(member.name)} --etcd-peer-ca "$ROOT"{METAD_PEERS_CA}'
                f" --etcd-cluster-token {shlex.quote(member.cluster_token)}"
                f" --etcd-peer-cn {shlex.quote(member.cluster_token)}"
            )
            if member.joins:
                flags += " --issuer-from-cluster"
    return f"""#!/bin/sh
# pitrix: start the metadata service (embedded etcd + pitrix-metad)
set -e
ROOT="${{PITRIX_VM_ROOT:-}}"
IP="${{PITRIX_VM_IP:-$(hostname -I | cut -d' ' -f1)}}"
umask 022
mkdir -p "$ROOT/var/log" "$ROOT{METAD_DIR}"
(umask 077; mkdir -p "$ROOT{METAD_STATE}")
{files}
nohup pitrix-metad --listen-ip "$IP" {flags} --embedded-etcd \\
    --state-dir "$ROOT{METAD_STATE}" >> "$ROOT/var/log/pitrix-metad.log" 2>&1 &
"""
