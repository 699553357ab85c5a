"""Findings 3 and 4: what a VM's files give away.

A bootstrap token is worth one certificate, once: replayed after the agent used it, metad refuses
it; and the files that hold it (the agent's config, the userdata the cloud keeps) are readable by
their owner only. No userdata, of an instance or of a metadata VM, carries a private key: keys are
born on the VM that uses them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import stat
from pathlib import Path

import pytest

from pitrix import pki

from .deployment import (
    AGENT_CONFIG,
    AGENT_KEY,
    INSTANCE_PORT,
    USERDATA,
    Deployment,
    Node,
    assert_4xx,
    attempt,
    no_verify,
)

pytestmark = pytest.mark.e2e

TOKEN = re.compile(r"""bootstrap_token\s*=\s*["']([^"']+)["']""")
HEREDOC = re.compile(r"<<'?(\w+)'?\n(.*?)\n\1\n", re.S)


def bootstrap_tokens(node: Node) -> set[str]:
    """Every bootstrap token a process on the node can find in its agent's config or its userdata."""
    found: set[str] = set()
    for path in (AGENT_CONFIG, USERDATA):
        try:
            found.update(TOKEN.findall(node.file(path).read_text(errors="replace")))
        except OSError:
            continue
    return found


def files_containing(root: Path, needle: bytes) -> list[Path]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    hits.append(path)
            except OSError:
                continue
    return hits


def decoded_payloads(script: str) -> list[str]:
    """The script itself and every here-document body, base64-decoded where it decodes."""
    texts = [script]
    for _, body in HEREDOC.findall(script):
        try:
            texts.append(base64.b64decode("".join(body.split()), validate=True).decode(errors="replace"))
        except (binascii.Error, ValueError):
            continue
    return texts


@pytest.mark.parametrize("label", ["a1", "a2"])
async def test_a_used_bootstrap_token_is_refused(deployment: Deployment, label: str) -> None:
    """Replayed from the node's own address (the only one metad accepts it from), after the agent
    has its certificate: no second certificate."""
    node = deployment.nodes[label]
    holder = "alice" if label == "a1" else "shared"
    metad = deployment.metadata[holder]
    assert node.file("etc/pitrix/agent.crt").exists(), "the agent has not bootstrapped"
    csr = pki.make_csr(pki.generate_key(), pki.Subject(cn=node.instance_id)).decode()
    for token in sorted(bootstrap_tokens(node)):
        outcome = await attempt(
            node.ip,
            "POST",
            f"https://{metad.ip}:{INSTANCE_PORT}/self/bootstrap",
            tls=no_verify(),
            body=json.dumps({"token": token, "csr": csr}),
            headers={"Content-Type": "application/json"},
        )
        assert_4xx(outcome, f"replayed bootstrap token of {node.instance_id}", ("BEGIN CERTIFICATE",))


@pytest.mark.parametrize("label", ["a1", "b1", "a2", "b2"])
async def test_files_holding_a_token_or_key_are_private(deployment: Deployment, label: str) -> None:
    node = deployment.nodes[label]
    secrets = [node.file(AGENT_KEY)]
    for token in bootstrap_tokens(node):
        secrets += files_containing(node.root, token.encode())
    exposed = {
        str(path.relative_to(node.root)): oct(stat.S_IMODE(path.stat().st_mode))
        for path in secrets
        if path.exists() and path.stat().st_mode & 0o077
    }
    assert not exposed, f"readable beyond their owner on {node.instance_id}: {exposed}"


@pytest.mark.parametrize("holder", ["alice", "bob", "shared"])
async def test_metadata_userdata_carries_no_private_key(deployment: Deployment, holder: str) -> None:
    vm = deployment.metadata[holder]
    for text in decoded_payloads(vm.userdata()):
        assert "PRIVATE KEY" not in text, f"{vm.name}'s userdata carries a private key"


@pytest.mark.parametrize("holder", ["alice", "shared"])
async def test_metadata_vm_keys_are_private(deployment: Deployment, holder: str) -> None:
    """Whatever keys the metadata VM holds (made there, or written there) are its owner's alone."""
    vm = deployment.metadata[holder]
    exposed = {
        str(path.relative_to(vm.root)): oct(stat.S_IMODE(path.stat().st_mode))
        for path in files_containing(vm.root / "etc", b"PRIVATE KEY")
        + files_containing(vm.root / "var/lib/pitrix-metad", b"PRIVATE KEY")
        if path.stat().st_mode & 0o077
    }
    assert not exposed, f"private keys readable beyond their owner on {vm.name}: {exposed}"


async def test_instance_userdata_carries_no_private_key(deployment: Deployment) -> None:
    for node in deployment.nodes.values():
        for text in decoded_payloads(node.file(USERDATA).read_text(errors="replace")):
            assert "PRIVATE KEY" not in text, f"{node.instance_id}'s userdata carries a private key"
