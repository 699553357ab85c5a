"""The runtime's CA in etcd, and the boot scripts that hand instances their agent's files.

The scripts are run by a real ``sh`` against a scratch VM root, as a VM's first boot runs them.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import tomllib
from pathlib import Path

from cryptography import x509

from pitrix import pki
from pitrix.runtime.authority import CA_KEY, MANAGEMENT_CA_KEY, Authority, issuer_from_pem, management_context
from pitrix.runtime.spec import parse_spec
from pitrix.runtime.steps.identity import metad_order
from pitrix.runtime.userdata import (
    AGENT_CA,
    AGENT_CERT,
    AGENT_CONFIG,
    AGENT_KEY,
    METAD_MANAGEMENT_CA,
    METAD_ROOT_CA,
    METAD_STATE,
    METAD_TOKEN,
    MetadTrust,
    agent_files,
    agent_userdata,
    metad_userdata,
)
from pitrix.sealing import Sealer
from pitrix.store import Store


async def test_every_replica_signs_with_the_one_root(store: Store) -> None:
    sealer = Sealer.generate()
    first, second = await asyncio.gather(Authority.load(store, sealer), Authority.load(store, sealer))
    assert first.ca_pem() == second.ca_pem()
    again = await Authority.load(store, sealer)
    assert again.ca_pem() == first.ca_pem()
    kv = await store.get(CA_KEY)
    assert kv is not None and b"PRIVATE KEY" not in kv.value  # sealed at rest
    opened = pki.CertificateAuthority.from_pem(sealer.unseal(kv.value, CA_KEY))
    assert opened.cert_pem == first.ca_pem()


async def test_a_metadata_issuer_chains_to_the_root_and_signs_a_runtime_client(store: Store) -> None:
    authority = await Authority.load(store, Sealer.generate())
    issuer = authority.new_issuer("alice", "sim")
    authority.root.verify(issuer.cert)
    restored = issuer_from_pem(issuer.to_pem().decode())
    assert restored.cert_pem == issuer.cert_pem
    leaf = restored.issue_instance("i-1", "alice", "cl-1")
    assert (leaf.subject.cn, leaf.subject.o, leaf.subject.ou) == ("i-1", "alice", "cl-1")
    ctx = management_context(restored)
    assert ctx.verify_mode.name == "CERT_REQUIRED"  # a client that checks metad's certificate


async def run_script(script: str, root: Path) -> None:
    env = dict(os.environ, PITRIX_VM_ROOT=str(root), PITRIX_VM_IP="127.0.0.1", PATH="/usr/bin:/bin")
    process = await asyncio.create_subprocess_exec(
        "sh", "-c", script, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_rest_userdata_writes_the_config_the_ca_and_the_token(tmp_path: Path) -> None:
    ca = pki.CertificateAuthority.create()
    files = agent_files(
        ["https://127.0.0.9:8080"],
        ca_pem=ca.cert_pem,
        bootstrap_token="tok-123",
        health_cmd="test -f /ok",
        health_interval=5.0,
    )
    await run_script(agent_userdata(files), tmp_path)
    for path, data in files.items():
        assert (tmp_path / path.lstrip("/")).read_bytes().rstrip(b"\n") == data.rstrip(b"\n")
    config = tomllib.loads((tmp_path / AGENT_CONFIG.lstrip("/")).read_text())
    assert config["nodes"] == ["https://127.0.0.9:8080"]
    assert (config["client_cakeys"], config["client_cert"], config["client_key"]) == (
        AGENT_CA,
        AGENT_CERT,
        AGENT_KEY,
    )
    assert config["pitrix"]["bootstrap_token"] == "tok-123"
    assert config["pitrix"]["health_cmd"] == "test -f /ok"
    assert not (tmp_path / AGENT_KEY.lstrip("/")).exists()  # fetched by the agent, never in userdata
    # The token (one-time, but until used it buys a certificate) and the agent's state: owner only.
    assert mode(tmp_path / AGENT_CONFIG.lstrip("/")) == 0o600
    assert mode(tmp_path / "var/lib/pitrix-agent") == 0o700


async def test_pushed_certificates_replace_the_token_and_the_key_stays_private(tmp_path: Path) -> None:
    ca = pki.CertificateAuthority.create()
    leaf = ca.issue_instance("i-1", "alice", "cl-1")
    files = agent_files(
        ["https://127.0.0.9:8080"],
        ca_pem=ca.cert_pem,
        bootstrap_token="unused",
        cert_pem=leaf.cert_pem,
        key_pem=leaf.key_pem,
    )
    await run_script(agent_userdata(files), tmp_path)
    config = tomllib.loads((tmp_path / AGENT_CONFIG.lstrip("/")).read_text())
    assert "bootstrap_token" not in config["pitrix"]
    assert mode(tmp_path / AGENT_KEY.lstrip("/")) == 0o600
    assert mode(tmp_path / AGENT_CONFIG.lstrip("/")) == 0o600
    x509.load_pem_x509_certificate((tmp_path / AGENT_CERT.lstrip("/")).read_bytes())


async def test_plain_userdata_has_no_tls_settings(tmp_path: Path) -> None:
    await run_script(agent_userdata(agent_files(["http://127.0.0.9:8080"])), tmp_path)
    config = tomllib.loads((tmp_path / AGENT_CONFIG.lstrip("/")).read_text())
    assert "client_cert" not in config and "bootstrap_token" not in config["pitrix"]


async def test_metad_userdata_carries_no_private_key(tmp_path: Path) -> None:
    """Public certificates and a one-time token: the issuer's key is made on the VM."""
    root = pki.CertificateAuthority.create()
    management = root.issue_subordinate("pitrix management")
    script = metad_userdata(MetadTrust(root.cert_pem, management.cert_pem, "tok-1"))
    assert "PRIVATE KEY" not in script
    # Run everything but the last command (starting metad is the simulator tests' business).
    head = script[: script.index("nohup pitrix-metad")]
    await run_script(head, tmp_path)
    assert (tmp_path / METAD_TOKEN.lstrip("/")).read_text() == "tok-1\n"
    assert mode(tmp_path / METAD_TOKEN.lstrip("/")) == 0o600
    assert mode(tmp_path / METAD_STATE.lstrip("/")) == 0o700
    assert (tmp_path / METAD_ROOT_CA.lstrip("/")).read_bytes() == root.cert_pem
    assert (tmp_path / METAD_MANAGEMENT_CA.lstrip("/")).read_bytes() == management.cert_pem
    assert f'--issuer-bootstrap-token-file "$ROOT"{METAD_TOKEN}' in script
    assert "--tls-cert" not in script and "--issuer-key" not in script


async def test_the_management_ca_is_one_per_installation(store: Store) -> None:
    sealer = Sealer.generate()
    authority = await Authority.load(store, sealer)
    first, second = await asyncio.gather(
        authority.management_ca(store, sealer), authority.management_ca(store, sealer)
    )
    assert first.cert_pem == second.cert_pem
    authority.root.verify(first.cert)
    kv = await store.get(MANAGEMENT_CA_KEY)
    assert kv is not None and b"PRIVATE KEY" not in kv.value  # sealed, like the root


def test_the_root_signs_a_metads_own_key_as_a_leaf_only_issuer() -> None:
    authority = Authority(pki.CertificateAuthority.create())
    key = pki.generate_key()
    csr = pki.make_csr(key, pki.Subject("anything", "evil", "x"))
    cert = x509.load_pem_x509_certificate(authority.sign_issuer(csr, "alice", "sim"))
    authority.root.verify(cert)
    issuer = pki.CertificateAuthority(cert, key)  # a CA for the key its metad made
    assert issuer.subject.cn == "pitrix metadata alice/sim"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0


async def test_app_templates_arrive_byte_for_byte_and_the_agent_renders_them(tmp_path: Path) -> None:
    """A role's templates reach the VM with the agent's files and render as any confd resource."""
    role = parse_spec(
        {
            "name": "app",
            "roles": [
                {
                    "name": "web",
                    "image": "img",
                    "templates": [
                        {"name": "motd", "dest": "/etc/app/motd", "keys": ["/env"], "mode": "0600",
                         "text": 'port={{getv "/env/port"}}'},
                        {"name": "raw", "dest": "/etc/app/raw", "text": "a\n\n\nPITRIX_EOF\n\n"},
                    ],
                }
            ],
        }
    ).roles[0]  # fmt: skip
    files = agent_files(["https://127.0.0.9:8080"], templates=role.templates)
    await run_script(agent_userdata(files), tmp_path)
    for path, data in files.items():
        if "/confd/" in path:  # byte for byte: a template's trailing newlines are its output
            assert (tmp_path / path.lstrip("/")).read_bytes() == data, path
    assert (tmp_path / "etc/confd/templates/app-raw.tmpl").read_bytes() == b"a\n\n\nPITRIX_EOF\n\n"

    (tmp_path / "data.yaml").write_text("env:\n  port: '8080'\n")
    agent = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("pitrix-agent")), "-onetime", "-backend", "file",
        "-file", str(tmp_path / "data.yaml"), "-prefix", "/",  # flags name host paths, as confd's
        env=dict(os.environ, PITRIX_VM_ROOT=str(tmp_path)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await agent.communicate()
    assert agent.returncode == 0, output.decode()
    assert (tmp_path / "etc/app/motd").read_text() == "port=8080"
    assert mode(tmp_path / "etc/app/motd") == 0o600
    assert (tmp_path / "etc/app/raw").read_bytes() == b"a\n\n\nPITRIX_EOF\n\n"


def test_nodes_start_at_different_metad_members_and_keep_every_one() -> None:
    urls = [f"https://127.0.0.{n}:8080" for n in (1, 2, 3)]
    firsts = set()
    for n in range(1, 31):
        order = metad_order(urls, "cl-1", f"web-{n}")
        assert sorted(order) == sorted(urls) and order == metad_order(urls, "cl-1", f"web-{n}")
        firsts.add(order[0])
    assert firsts == set(urls)  # 30 nodes do not all lean on member 0
    assert metad_order(urls[:1], "cl-1", "web-1") == urls[:1]
