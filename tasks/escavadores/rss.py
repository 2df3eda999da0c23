"""``escavador_rss``: the items of any RSS 2.0 or Atom feed, by URL."""

from __future__ import annotations

from typing import Any

from orchestrator.steps import StepContext, escavador
from tasks.escavadores.feeds import fetch_feed, parse_feed, parse_limit, require_http_url


@escavador("rss")
def coletar_rss(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Collect a feed's items: ``{"url": "https://...", "limit": 20}`` in (limit optional).

    A bad URL, a bad limit or a body that is no feed is final; HTTP and network errors
    propagate for the runtime to classify (5xx/429 and timeouts are retried).
    """
    url = require_http_url(payload.get("url"), "url")
    limit = parse_limit(payload.get("limit"))

    ctx.logger.info("fetching feed %s", url)
    content = fetch_feed(url, ctx.settings.http_timeout)
    feed = parse_feed(content, url, limit=limit)
    return {
        "fonte": "rss",
        "feed_url": url,
        "feed_title": feed.title,
        "items": feed.items,
        "count": len(feed.items),
    }
