"""A local HTTP server for the bundled sample YouTube feed.

``orchestrator dev --demo`` must work on a machine with no internet, so the demo pipeline's
escavador fetches a real Atom feed over real HTTP from this server instead of youtube.com.
Tests use it the same way.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

SAMPLE_CHANNEL_ID = "UCabcdefghijklmnopqrstuv"


def sample_feed() -> bytes:
    """The bundled Atom feed (a YouTube channel's ``videos.xml``)."""
    return resources.files("orchestrator.devmode").joinpath("sample_youtube.xml").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    feed = b""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the dev console shows the orchestrator's logs, not access logs."""

    def do_GET(self) -> None:
        if self.path.startswith("/feeds/videos.xml"):
            self._send(200, self.feed, "application/atom+xml; charset=utf-8")
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class SampleFeedServer:
    """Serves ``/feeds/videos.xml`` on 127.0.0.1 in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("SampleFeedHandler", (_Handler,), {"feed": sample_feed()})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="sample-feed-server")

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SampleFeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
