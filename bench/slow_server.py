"""A local HTTP server that answers every request after a fixed delay: an escavador's fetch.

The I/O-bound scenario's steps each make one real HTTP request to it, so a worker spends its
time waiting on a socket as an escavador waiting on a remote site does. asyncio, in a thread
of the bench process: thousands of waiting requests cost it almost nothing, so the server is
never what limits the rate being measured.
"""

from __future__ import annotations

import asyncio
import threading

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
            b"\r\n{\"ok\":true}")


class SlowServer:
    """``http://127.0.0.1:<port>/``, each answer ``delay`` seconds after its request."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._run, name="bench-slow-server", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> SlowServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the slow HTTP server did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one connection serves a worker thread's requests
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                await asyncio.sleep(self.delay)
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
