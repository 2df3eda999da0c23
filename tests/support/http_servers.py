"""HTTP servers the tests start as processes (Flower, the metrics endpoint), stopped for sure."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import httpx

from tests.support.waiting import wait_until
from tests.support.workers import REPO

START_TIMEOUT = 60.0


@contextmanager
def http_server(command: list[str], *, env: dict[str, str], health_url: str,
                healthy: tuple[int, ...] = (200,), output: IO[Any] | int = subprocess.DEVNULL,
                what: str = "the server",
                exit_details: Callable[[], str] = lambda: "") -> Iterator[subprocess.Popen[Any]]:
    """Start ``command`` in its own process group, wait until ``health_url`` answers with a
    ``healthy`` status, and SIGTERM the whole group on the way out, whatever happened."""
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output,
                               stderr=subprocess.STDOUT, start_new_session=True)

    def up() -> bool:
        assert process.poll() is None, f"{what} exited: {exit_details()}"
        try:
            return httpx.get(health_url, timeout=5).status_code in healthy
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=START_TIMEOUT, message=what)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
