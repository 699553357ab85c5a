"""One issuer for every member of a metadata cluster of several, kept in the cluster's own etcd.

Agents trust, and metad's instance port accepts, exactly one issuer per metadata cluster: an
instance's certificate signed through one member must be good at every other, and a member that
replaces a lost one must sign as the others do. The first member bootstraps the issuer with
pitrixd (``pitrix.metad.issuer_bootstrap``) and publishes it here; a member that joins asks
pitrixd for its peer certificate only, joins the etcd cluster and takes the issuer from there.

The key travels only between the cluster's own members, over etcd's peer mutual TLS, and rests in
the etcd that already holds everything the issuer protects; only a metad holds a client
certificate for it. Its key is outside ``/``, so the metadata mirror (and with it both APIs,
management included) never sees it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from pitrix import pki
from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.paths import write_private
from pitrix.store import Store

KEY = "~issuer"  # not under "/": the mirror reads "/" only


class ShareError(Exception):
    """The cluster's issuer could not be published or found in time; the message says which."""


async def share(store: Store, cert_file: Path, key_file: Path, *, mine: bool, timeout: float) -> None:
    """Make the issuer files hold the cluster's issuer.

    ``mine``: this member bootstrapped an issuer; it becomes the cluster's unless the cluster has
    one already (a first member made again), which is then adopted. Otherwise wait (up to
    ``timeout``) for the first member to publish it.
    """
    log = get_logger("pitrix.metad.issuer-share")
    if mine:
        pair = {
            "cert": (await asyncio.to_thread(cert_file.read_bytes)).decode(),
            "key": (await asyncio.to_thread(key_file.read_bytes)).decode(),
        }
        if await store.create(KEY, json.dumps(pair).encode()):
            log.info("issuer published to the cluster")
            return
    deadline = time.monotonic() + timeout
    backoff = Backoff(0.05, 1.0)
    while (kv := await store.get(KEY)) is None:
        if time.monotonic() > deadline:
            raise ShareError(f"the cluster's issuer did not appear in its etcd within {timeout:.0f}s")
        await asyncio.sleep(backoff.next())
    try:
        pair = json.loads(kv.value)
        issuer = pki.CertificateAuthority(
            pki.cert_from_pem(pair["cert"].encode()), pki.key_from_pem(pair["key"].encode())
        )
    except (ValueError, KeyError, TypeError, AttributeError, pki.PKIError) as exc:
        raise ShareError(f"the cluster's issuer in its etcd is unreadable: {exc}") from None
    await asyncio.to_thread(write_private, key_file, pki.key_to_pem(issuer.key))
    await asyncio.to_thread(write_private, cert_file, issuer.cert_pem)
    log.info("issuer taken from the cluster")
