"""etcd membership of a metadata cluster, asked of the metad's own etcd member.

Only a metad holds a client certificate for its etcd, so pitrixd replaces a lost member through
this: list the members, remove the lost one, add the new one's peer URL. Each answer is what a
re-run needs to find its work done: removing a member that is not listed (any more) and adding a
peer URL already listed succeed without changing anything.

etcd refuses a membership change while its members have not been connected for a few seconds
("unhealthy cluster"), and while a quorum is missing: :class:`Busy`, which the manage API answers
503 so that the caller asks again within its deadline.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aetcd
import aetcd.rpc as rpc

from pitrix.store import Store, StoreError


class MembershipError(Exception):
    """A membership change etcd refused for good (the message says why)."""


class Busy(MembershipError):
    """etcd cannot change its membership now (no quorum, or members connected too recently)."""


class BadPeerURL(ValueError):
    """A peer URL that is not ``https://<ip>:<port>``."""


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str  # empty until an added member has started and joined
    peer_urls: list[str]
    client_urls: list[str]

    @property
    def started(self) -> bool:
        return bool(self.name) and bool(self.client_urls)

    def as_json(self, leader: int, local: int) -> dict[str, Any]:
        return {
            "id": f"{self.id:x}",
            "name": self.name,
            "peer_urls": self.peer_urls,
            "client_urls": self.client_urls,
            "started": self.started,
            "leader": self.id == leader,
            "local": self.id == local,
        }


def check_peer_url(url: object) -> str:
    """``url`` if it is ``https://<ip>:<port>`` (what every member's peer URL looks like)."""
    if not isinstance(url, str):
        raise BadPeerURL("must be a string https://<ip>:<port>")
    parts = urlsplit(url)
    try:
        port = parts.port
        ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        raise BadPeerURL(f"{url!r} is not https://<ip>:<port>") from None
    if parts.scheme != "https" or not port or parts.path not in ("", "/") or parts.query:
        raise BadPeerURL(f"{url!r} is not https://<ip>:<port>")
    return f"https://{parts.netloc}"


def _refused(what: str, exc: StoreError) -> MembershipError:
    text = str(exc)
    lowered = text.lower()
    if any(m in lowered for m in ("unhealthy cluster", "unavailable", "no leader", "timed out", "deadline")):
        return Busy(f"{what}: etcd cannot change its members now ({text}); ask again shortly")
    return MembershipError(f"{what}: {text}")


async def members(store: Store) -> tuple[list[Member], int, int]:
    """The members, the leader's id and the id of the member beside this metad."""

    async def invoke(client: aetcd.Client) -> tuple[Any, Any]:
        listed = await client.clusterstub.MemberList(rpc.MemberListRequest(), timeout=store.timeout)
        status = await client.maintenancestub.Status(rpc.StatusRequest(), timeout=store.timeout)
        return listed, status

    try:
        listed, status = await store.call("member list", invoke)
    except StoreError as exc:
        raise _refused("member list", exc) from None
    found = [Member(m.ID, m.name, sorted(m.peerURLs), sorted(m.clientURLs)) for m in listed.members]
    return found, int(status.leader), int(status.header.member_id)


async def remove(store: Store, name: str = "", peer_url: str = "") -> Member | None:
    """Remove the member named ``name`` (or with ``peer_url``); None if no such member is listed."""
    current, _, local = await members(store)
    target = next(
        (m for m in current if (name and m.name == name) or (peer_url and peer_url in m.peer_urls)), None
    )
    if target is None:
        return None
    if target.id == local:
        shown = target.name or f"{target.id:x}"
        raise MembershipError(f"member {shown} is this metad's own: ask another member")

    async def invoke(client: aetcd.Client) -> None:
        await client.clusterstub.MemberRemove(rpc.MemberRemoveRequest(ID=target.id), timeout=store.timeout)

    try:
        await store.call("member remove", invoke, idempotent=False)
    except StoreError as exc:
        if "member not found" in str(exc).lower():
            return None  # removed meanwhile (an earlier attempt's answer was lost)
        raise _refused("member remove", exc) from None
    return target


async def add(store: Store, peer_url: str) -> tuple[list[Member], bool]:
    """Add a member at ``peer_url``: the members afterwards, and whether this call added it."""
    current, _, _ = await members(store)
    if any(peer_url in m.peer_urls for m in current):
        return current, False

    async def invoke(client: aetcd.Client) -> Any:
        request = rpc.MemberAddRequest(peerURLs=[peer_url])
        return await client.clusterstub.MemberAdd(request, timeout=store.timeout)

    try:
        await store.call("member add", invoke, idempotent=False)
    except StoreError as exc:
        if "peerurl exists" in str(exc).lower():
            return (await members(store))[0], False
        raise _refused("member add", exc) from None
    return (await members(store))[0], True
