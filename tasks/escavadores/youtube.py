"""``escavador_youtube``: the latest videos of a YouTube channel, from its public Atom feed.

The feed (``/feeds/videos.xml?channel_id=...``) needs no API key and lists the channel's
most recent videos (YouTube serves about 15). The base URL is configurable
(``ORCHESTRATOR_YOUTUBE_BASE_URL``, or ``base_url`` in the payload) so tests and mirrors can
stand in for youtube.com.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from orchestrator.failures.errors import FinalError
from orchestrator.steps import StepContext, escavador
from tasks.escavadores.feeds import fetch_feed, parse_feed, parse_limit, require_http_url

CHANNEL_ID_RE = re.compile(r"^UC[A-Za-z0-9_-]{22}$")
"""YouTube channel ids are ``UC`` + 22 URL-safe base64 characters."""

YOUTUBE_ID_KEYS = ("yt_videoid", "id", "link")


def youtube_feed_url(base_url: str, channel_id: str) -> str:
    """The Atom feed URL of ``channel_id`` under ``base_url``."""
    query = urlencode({"channel_id": channel_id})
    return f"{base_url.rstrip('/')}/feeds/videos.xml?{query}"


@escavador("youtube")
def coletar_youtube(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Collect a channel's latest videos: ``{"channel_id": "UC..."}`` in, its items out.

    A missing or malformed channel id is final (retrying cannot fix it); HTTP and network
    errors propagate for the runtime to classify.
    """
    channel_id = payload.get("channel_id")
    if not isinstance(channel_id, str) or not channel_id.strip():
        raise FinalError("payload.channel_id: required (a YouTube channel id, UC...)")
    channel_id = channel_id.strip()
    if not CHANNEL_ID_RE.match(channel_id):
        raise FinalError(
            f"payload.channel_id: {channel_id!r} is not a YouTube channel id "
            "('UC' followed by 22 letters, digits, '_' or '-')"
        )
    base_url = require_http_url(payload.get("base_url", ctx.settings.youtube_base_url), "base_url")
    limit = parse_limit(payload.get("limit"))
    feed_url = youtube_feed_url(base_url, channel_id)

    ctx.logger.info("fetching YouTube feed of channel %s", channel_id)
    content = fetch_feed(feed_url, ctx.settings.http_timeout)
    feed = parse_feed(content, feed_url, id_keys=YOUTUBE_ID_KEYS, limit=limit)
    return {
        "fonte": "youtube",
        "channel_id": channel_id,
        "channel_title": feed.title,
        "feed_url": feed_url,
        "items": feed.items,
        "count": len(feed.items),
    }
