"""The roster: every member's instance API URL of a metadata cluster, as its agents should know it.

pitrixd publishes it (``pitrix.runtime.metadata_roster``) whenever the cluster's members change;
metad serves it read-only to identified instances at :data:`PATH` and names its digest in
:data:`HEADER` on every instance-API answer, so an agent whose nodes are other members learns it
from an answer it gets anyway, and asks for the list only then (an agent in step asks nothing).
The list is kept in canonical order (member 0 first); each agent turns it with :func:`rotated`,
the rule the runtime used for the ``nodes`` it deployed
(``pitrix.runtime.steps.identity.metad_order``), so the long-polls stay spread over the members.

Only the standard library (and ``keyspace``, which spells the layout) is imported: the agent
uses this module too, and not even all of that: hashlib's import initialises OpenSSL's digests
(~0.7 MiB of a watching agent's resident memory, for one short digest per roster), so the digest
is CPython's own SHA-256, and the rotation's CRC-32 is binascii's (zlib's, without loading zlib).
"""

from __future__ import annotations

import binascii
import importlib
import json
from collections.abc import Callable
from typing import Any

from pitrix.metad import keyspace

# The etcd subtree pitrixd writes (both leaves in one transaction): the list as one JSON leaf,
# and its digest, which metad puts in a header without parsing anything. The instance API path
# that serves the list is the same string, outside /self.
KEY = f"{keyspace.INTERNAL}/roster"
URLS = "urls"
DIGEST = "digest"
DIGEST_KEY = f"{KEY}/{DIGEST}"
PATH = KEY
HEADER = "X-Pitrix-Roster"
# More members than etcd clusters have (7) with room for a replacement in flight; a longer list is
# not a roster.
MAX_URLS = 16
MAX_URL_LENGTH = 512


def _builtin_sha256() -> Callable[[bytes], Any]:
    """hashlib.sha256 from CPython's builtin module (``_sha256`` up to 3.11, ``_sha2`` since),
    hashlib's only where neither is built in. Looked up once, at import."""
    for name in ("_sha256", "_sha2"):
        try:
            return importlib.import_module(name).sha256
        except ImportError:
            continue
    import hashlib

    return hashlib.sha256


_SHA256 = _builtin_sha256()


def digest(urls: list[str]) -> str:
    """What names a set of members whatever its order (each agent holds its own rotation)."""
    return str(_SHA256("\n".join(sorted(urls)).encode()).hexdigest())[:16]


def document(urls: list[str]) -> dict[str, str]:
    """The roster as stored under :data:`KEY`."""
    return {URLS: json.dumps(list(urls), separators=(",", ":")), DIGEST: digest(urls)}


def published(doc: Any) -> list[str] | None:
    """The URLs of a stored roster (:func:`document`'s shape), None if ``doc`` is not a whole one."""
    if not isinstance(doc, dict) or not isinstance(doc.get(URLS), str):
        return None
    try:
        urls = json.loads(doc[URLS])
    except ValueError:
        return None
    if not valid(urls) or doc.get(DIGEST) != digest(urls):
        return None
    return list(urls)


def valid(urls: object) -> bool:
    """Whether ``urls`` is a roster: 1..MAX_URLS distinct http(s) URLs."""
    if not isinstance(urls, list) or not 0 < len(urls) <= MAX_URLS:
        return False
    if not all(isinstance(u, str) and 0 < len(u) <= MAX_URL_LENGTH for u in urls):
        return False
    return len(set(urls)) == len(urls) and all(u.startswith(("http://", "https://")) for u in urls)


def rotated(urls: list[str], cluster_id: str, node_id: str) -> list[str]:
    """``urls`` starting at the member a hash of ``<cluster_id>/<node_id>`` picks: the same rule
    as the runtime's ``metad_order``, so a node keeps its place in the spread after a change."""
    if len(urls) < 2 or not node_id:
        return list(urls)
    first = binascii.crc32(f"{cluster_id}/{node_id}".encode()) % len(urls)
    return urls[first:] + urls[:first]
