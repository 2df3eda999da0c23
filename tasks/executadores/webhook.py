"""``executador_webhook``: POST the pipeline's input envelope(s) to an HTTP endpoint.

Delivery is at least once (a worker may die after the POST, before its result is stored), so
every request carries ``Idempotency-Key`` (one value per pipeline and step) for the receiver
to drop repeats, and ``X-Correlation-ID`` to tie its logs to ours. With OpenTelemetry tracing
on, ``opentelemetry-instrumentation-httpx`` adds the W3C ``traceparent`` of a client span in
the step's trace (see :mod:`orchestrator.observability.otel`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from orchestrator.failures.errors import FinalError
from orchestrator.steps import StepContext, executador
from tasks.http_client import shared_client

MAX_TEXT_CHARS = 1000
MAX_JSON_BYTES = 64 * 1024
"""A JSON reply larger than this is returned as truncated text: results travel in messages."""

USER_AGENT = "orchestrator-executador/0.1 (webhook)"


def webhook_url(ctx: StepContext) -> str:
    """The pipeline's ``options.url``, else ``ORCHESTRATOR_WEBHOOK_URL``; http(s) only."""
    url = ctx.options.get("url") or ctx.settings.webhook_url
    if not url:
        raise FinalError(
            "no webhook url: set options.url in the pipeline or ORCHESTRATOR_WEBHOOK_URL"
        )
    if not isinstance(url, str):
        raise FinalError(f"webhook url must be a string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise FinalError(f"webhook url is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FinalError("webhook url must be an absolute http:// or https:// URL")
    return url


def response_summary(response: httpx.Response) -> Any:
    """The reply body for the result: parsed JSON when it is (small) JSON, else short text."""
    content_type = response.headers.get("content-type", "").lower()
    if "json" in content_type and len(response.content) <= MAX_JSON_BYTES:
        try:
            return response.json()
        except ValueError:
            pass
    return response.text[:MAX_TEXT_CHARS]


@executador("webhook")
def enviar_webhook(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """POST the input envelope (a JSON list of them for several inputs) to the webhook URL.

    5xx/429 and network errors are retried by the runtime, other 4xx are final; a missing or
    non-http(s) URL is final before any request is made.
    """
    url = webhook_url(ctx)
    envelopes = [envelope.to_dict() for envelope in ctx.inputs]
    body: Any = envelopes[0] if len(envelopes) == 1 else envelopes
    headers = {
        "X-Correlation-ID": ctx.correlation_id,
        "Idempotency-Key": ctx.idempotency_key,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    ctx.logger.info("posting %d envelope(s) to the webhook", len(envelopes))
    response = shared_client().post(url, json=body, headers=headers,
                                    timeout=ctx.settings.http_timeout)
    response.raise_for_status()
    return {"url": url, "status_code": response.status_code, "response": response_summary(response)}
