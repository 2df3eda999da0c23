"""Reading a Prometheus text exposition the way a scraper does, for the metrics tests."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.http_servers import http_server
from tests.support.net import free_port

ORCHESTRATOR_CLI = str(Path(sys.executable).with_name("orchestrator"))
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample line: (name, labels, value)."""
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        found.append((match.group(1), labels, float(match.group(3))))
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of ``name`` whose labels include ``labels``."""
    for found, have, number in samples(text):
        if found == name and all(have.get(k) == v for k, v in labels.items()):
            return number
    return None


def scrape(url: str) -> str:
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    return response.text


@contextmanager
def metrics_endpoint(env: dict[str, str], *extra: str) -> Iterator[str]:
    """A running ``orchestrator metrics`` on a free port; yields its /metrics URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with http_server([ORCHESTRATOR_CLI, "metrics", "--port", str(port), *extra], env=env,
                     health_url=url, what="the metrics endpoint"):
        yield url
