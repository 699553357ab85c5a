"""The admin API's address as users type it, checked before any request is made.

A bare ``host:port`` is taken as ``http://host:port`` (what ``curl`` does, and what people paste);
anything else must be ``http://``, ``https://`` or ``unix:/path``, so a typo ends the command with
a message naming where the address came from, not with a traceback from the HTTP library.
"""

from __future__ import annotations

from urllib.parse import urlsplit  # not yarl: the CLI checks the address before it imports aiohttp


class BadUrl(ValueError):
    """The address cannot be used; the message says why."""


def normalize_url(raw: str) -> str:
    """The address to use, ``http://`` added to a bare ``host:port``; raises :class:`BadUrl`."""
    text = raw.strip()
    if not text:
        raise BadUrl("is empty")
    if text.startswith("unix:"):
        if not text[len("unix:") :].startswith("/"):
            raise BadUrl(f"{raw!r}: a unix socket is unix:/absolute/path")
        return text
    if "://" not in text:
        text = "http://" + text
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise BadUrl(f"{raw!r}: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise BadUrl(f"{raw!r}: scheme must be http, https or unix")
    if not url.hostname:
        raise BadUrl(f"{raw!r}: no host")
    if port is None:
        raise BadUrl(f"{raw!r}: no port")
    if url.query or url.fragment:
        raise BadUrl(f"{raw!r}: no query or fragment allowed")
    return text.rstrip("/")
