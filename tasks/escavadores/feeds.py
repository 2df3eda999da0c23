"""Fetching and parsing RSS 2.0 / Atom feeds, shared by the feed-based escavadores.

``escavador_youtube`` and ``escavador_rss`` differ only in how they find the feed URL and in
which entry field identifies an item; everything else (the HTTP GET, the size cap, the
"is this a feed at all?" check, the item shape) lives here once.

Errors follow the runtime's classification: HTTP errors are left as
:class:`httpx.HTTPStatusError` (5xx/429 retried, other 4xx final), network errors propagate
as retryable, and anything that retrying cannot fix (bad URL, not a feed, too big) is a
:class:`~orchestrator.failures.errors.FinalError`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import feedparser

from orchestrator.failures.errors import FinalError
from tasks.http_client import shared_client

MAX_FEED_BYTES = 10 * 1024 * 1024
"""Largest feed body read; a bigger one is not a feed we should hold in a worker's memory."""

USER_AGENT = "orchestrator-escavador/0.1 (feed collector)"
FEED_ACCEPT = (
    "application/atom+xml, application/rss+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"
)
DEFAULT_ID_KEYS: tuple[str, ...] = ("id", "link")


@dataclass(frozen=True)
class ParsedFeed:
    """A feed reduced to what the pipeline carries: its title and its items."""

    title: str | None
    items: list[dict[str, Any]]


def require_http_url(value: Any, field: str) -> str:
    """Return ``value`` if it is an absolute http(s) URL; FinalError otherwise.

    Checked before any request so a typo is dead-lettered at once instead of being retried.
    """
    if not isinstance(value, str) or not value.strip():
        raise FinalError(f"payload.{field}: required, an http(s) URL string")
    url = value.strip()
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise FinalError(f"payload.{field}: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FinalError(f"payload.{field}: must be an http:// or https:// URL, got {url!r}")
    return url


def parse_limit(value: Any) -> int | None:
    """The optional ``limit`` of a payload: None (no cap) or a non-negative int."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FinalError(f"payload.limit: must be a non-negative integer, got {value!r}")
    return value


def fetch_feed(url: str, timeout: float) -> bytes:
    """GET ``url`` (following redirects) and return the body, at most :data:`MAX_FEED_BYTES`.

    ``raise_for_status`` lets the runtime judge the status: 5xx/429 retry, other 4xx are final.
    """
    headers = {"User-Agent": USER_AGENT, "Accept": FEED_ACCEPT}
    with shared_client().stream("GET", url, timeout=timeout, follow_redirects=True,
                                headers=headers) as response:
        response.raise_for_status()
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_FEED_BYTES:
                raise FinalError(f"feed {url} is larger than {MAX_FEED_BYTES} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


def parse_feed(
    content: bytes,
    url: str,
    *,
    id_keys: Sequence[str] = DEFAULT_ID_KEYS,
    limit: int | None = None,
) -> ParsedFeed:
    """Parse an RSS 2.0 or Atom document into items ``{id, title, link, published}``.

    ``id_keys`` are the feedparser entry keys tried in order for the item id (YouTube puts its
    video id in ``yt_videoid``). Content is always passed as bytes: feedparser would *fetch* a
    string that looks like a URL, and bytes let it honour the XML encoding declaration.
    """
    parsed = feedparser.parse(content)
    feed = parsed.get("feed", {})
    title = _text(feed.get("title"))
    entries = parsed.get("entries", [])
    if not entries and not title and (parsed.get("bozo") or not parsed.get("version")):
        reason = parsed.get("bozo_exception")
        detail = f": {reason}" if reason else ""
        raise FinalError(f"{url} did not return a parseable RSS/Atom feed{detail}")
    items = [_item(entry, id_keys) for entry in entries]
    if limit is not None:
        items = items[:limit]
    return ParsedFeed(title=title, items=items)


def iso_utc(value: time.struct_time | None) -> str | None:
    """feedparser's UTC ``struct_time`` as ISO 8601 with a ``Z``, the envelope's time format."""
    if value is None:
        return None
    moment = datetime(*value[:6], tzinfo=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _item(entry: Any, id_keys: Sequence[str]) -> dict[str, Any]:
    identifier = next((_text(entry.get(key)) for key in id_keys if _text(entry.get(key))), None)
    published = entry.get("published_parsed") or entry.get("updated_parsed")
    return {
        "id": identifier,
        "title": _text(entry.get("title")),
        "link": _text(entry.get("link")),
        "published": iso_utc(published),
    }


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
