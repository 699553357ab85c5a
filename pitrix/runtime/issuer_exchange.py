"""pitrixd's side of a metadata VM's issuer bootstrap (see ``pitrix.metad.issuer_bootstrap``).

Fetch the CSR the VM's metad offers, check it carries the proof of the token pitrixd gave that
VM, sign it with the installation's root, record the certificate and the token's consumption in
pitrixd's etcd, then hand the certificate over. Every step may be repeated: a restarted pitrixd
finds the certificate in the record and hands the same one over again.

The waiting port shows a throwaway certificate: nothing but the proofs is trusted, so the
connection is not verified (the CSR and the certificate are public; the token never travels).
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass

import aiohttp

from pitrix.metad.issuer_bootstrap import (
    PATH,
    certificate_proof,
    csr_proof,
    members_document,
    members_proof,
    peer_certificate_proof,
    peer_csr_proof,
    proven,
)


class ExchangeError(Exception):
    """The exchange cannot complete (a wrong proof, an expired token): asking again will not help."""


class NotReady(Exception):
    """The VM's metad is not waiting yet (still booting) or no longer (already serving)."""


def _unverified() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(frozen=True)
class Offer:
    """What a waiting metad offers: its issuer's CSR, and a member's peer CSR (empty: a lone one)."""

    csr: bytes
    peer_csr: bytes = b""


async def fetch_csr(base_url: str, token_sha256: str, timeout: float = 10.0) -> bytes:
    """The CSR the metad at ``base_url`` offers, once its proof checks out against the token."""
    return (await fetch_offer(base_url, token_sha256, timeout)).csr


async def fetch_offer(base_url: str, token_sha256: str, timeout: float = 10.0) -> Offer:
    """The CSRs the metad at ``base_url`` offers, once their proofs check out against the token."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(base_url + PATH, ssl=_unverified()) as response,
        ):
            text = await response.text()
            status = response.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise NotReady(f"{base_url}: {type(exc).__name__}: {exc}") from None
    if status != 200:
        raise NotReady(f"{base_url}: HTTP {status}: {text[:160]}")
    try:
        doc = json.loads(text)
        csr = str(doc["csr"]).encode() if "csr" in doc or "peer_csr" not in doc else b""
    except (ValueError, KeyError, TypeError):
        raise ExchangeError(f"{base_url}: the issuer bootstrap answered no CSR") from None
    # A joining member of several offers only its peer CSR: it takes its cluster's issuer.
    if csr and not proven(csr_proof(token_sha256.encode(), csr), doc.get("proof")):
        raise ExchangeError(f"{base_url}: the CSR's proof does not match the token this VM was given")
    peer = doc.get("peer_csr")
    if peer is None:
        return Offer(csr)
    peer_csr = str(peer).encode()
    if not proven(peer_csr_proof(token_sha256.encode(), peer_csr), doc.get("peer_proof")):
        raise ExchangeError(f"{base_url}: the peer CSR's proof does not match the token this VM was given")
    return Offer(csr, peer_csr)


async def push_certificate(
    base_url: str,
    token_sha256: str,
    cert_pem: bytes,
    timeout: float = 10.0,
    *,
    peer_cert_pem: bytes = b"",
    members: dict[str, str] | None = None,
    state: str = "new",
) -> None:
    """Hand the issuer's certificate over, with its proof; to a member of several also its peer
    certificate and the members' list (name → peer URL; ``state`` new or existing), each proven."""
    body: dict[str, object] = {}
    if cert_pem:  # empty for a joining member, which asked for its peer certificate only
        body = {"certificate": cert_pem.decode(), "proof": certificate_proof(token_sha256.encode(), cert_pem)}
    if peer_cert_pem:
        body["peer_certificate"] = peer_cert_pem.decode()
        body["peer_proof"] = peer_certificate_proof(token_sha256.encode(), peer_cert_pem)
    if members is not None:
        body["members"], body["state"] = members, state
        body["members_proof"] = members_proof(token_sha256.encode(), members_document(members, state))
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.put(base_url + PATH, json=body, ssl=_unverified()) as response,
        ):
            text = await response.text()
            status = response.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise NotReady(f"{base_url}: {type(exc).__name__}: {exc}") from None
    if status in (400, 403):
        raise ExchangeError(f"{base_url}: the issuer certificate was refused: HTTP {status}: {text[:200]}")
    if status not in (200, 409):  # 409: it already has it (an earlier push whose answer was lost)
        raise NotReady(f"{base_url}: HTTP {status}: {text[:160]}")


def expired(expires: float, now: float | None = None) -> bool:
    return bool(expires) and (time.time() if now is None else now) >= expires
