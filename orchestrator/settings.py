"""Settings from ``ORCHESTRATOR_*`` environment variables, validated once by pydantic-settings.

Every knob an operator may turn lives here, with a safe default, so the README's settings
table and the code cannot drift apart (the table is generated from this model's fields).
Credentials arrive through the environment only and are never logged: :func:`redact_url`
is what any message that names a broker must use.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The orchestrator's configuration; see the README table for every variable."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore")

    broker_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672//",
        description="Broker URL: amqp://, redis-streams:// or nats:// (credentials only here).",
    )
    result_backend: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Celery result backend URL (chords and --wait need one).",
    )
    broker_transport_options: dict[str, Any] = Field(
        {},
        description="Extra Kombu transport options, JSON (e.g. NATS creds_file, ack_wait).",
    )
    step_modules: list[str] = Field(
        ["tasks"],
        description="Packages whose modules declare escavadores/executadores (JSON list).",
    )
    soft_time_limit: float = Field(
        300.0, description="Default soft time limit of a step, in seconds (failure path)."
    )
    time_limit: float = Field(
        360.0, description="Default hard time limit of a step, in seconds (process killed)."
    )
    max_retries: int = Field(3, description="Default retries of a step before dead-lettering.")
    retry_backoff: float = Field(2.0, description="First retry delay in seconds (doubles).")
    retry_backoff_max: float = Field(300.0, description="Largest retry delay in seconds.")
    retry_jitter: bool = Field(True, description="Randomise retry delays (full jitter).")
    delivery_limit: int = Field(
        5,
        description="Times a message may come back unfinished (worker crash, hard time limit) "
        "before it is dead-lettered (RabbitMQ x-delivery-limit semantics).",
    )
    prefetch_multiplier: int = Field(
        1, description="Messages reserved per worker process (1 suits long and short tasks)."
    )
    max_message_bytes: int = Field(
        1_048_576, description="Largest message body accepted, in bytes; larger ones go to the DLQ."
    )
    idempotency_ttl: int = Field(
        7 * 24 * 3600, description="Seconds a step's stored result guards against repeats."
    )
    idempotency_url: str | None = Field(
        None, description="Redis URL of the idempotency store (default: the result backend)."
    )
    data_dir: Path = Field(
        Path("./data"), description="Where executador_arquivo writes and dev mode keeps data."
    )
    youtube_base_url: str = Field(
        "https://www.youtube.com", description="Base URL of the YouTube feed endpoint."
    )
    webhook_url: str | None = Field(
        None, description="Default URL for executador_webhook when a pipeline gives none."
    )
    http_timeout: float = Field(15.0, description="Timeout of outgoing HTTP requests, seconds.")
    result_expires: int = Field(86400, description="Seconds results stay in the backend.")
    events: bool = Field(
        True, description="Publish every step result and dead letter as a plain event "
        "(README, 'Wire protocol')."
    )
    events_confirm: bool = Field(
        False, description="Each step sends its event and waits for the broker's confirm "
        "before its ack (slower; default: batched, not confirmed)."
    )
    events_max_len: int = Field(
        10_000, description="Events kept per Redis event stream and per NATS event subject."
    )
    events_max_age: float = Field(
        86400.0, description="Seconds the NATS events stream keeps an event."
    )
    escavador_pool: str = Field(
        "threads", description="Celery pool of the escavadores' worker in dev mode and "
        "docker-compose: I/O-bound steps wait on HTTP (README, 'I/O-bound steps')."
    )
    escavador_concurrency: int = Field(
        16, ge=1, description="Steps the escavadores' worker runs at once (dev mode, "
        "docker-compose)."
    )
    events_flush_interval: float = Field(
        0.05, ge=0, description="Seconds an unconfirmed event may wait to be sent with the "
        "next ones, off the step's path (0: each at once, by the step)."
    )
    trace_enabled: bool = Field(
        True, description="Keep each request's timeline in Redis for `orchestrator trace` "
        "(README, 'Where is request X?')."
    )
    trace_retention: int = Field(
        3 * 86400, ge=1, description="Seconds a request's timeline is kept after its last "
        "event."
    )
    trace_max_events: int = Field(
        1000, ge=1, description="Events kept per request (the newest; a request that retries "
        "forever stays bounded)."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()


def redact_url(url: str) -> str:
    """Hide the password of a URL so it can appear in logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
