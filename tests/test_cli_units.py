"""The command line without a broker: argument checks, topology output, clean broker errors."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrator.celery_app import app
from orchestrator.cli import cli
from orchestrator.topology import topology

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_lists_the_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "topology", "dlq"):
        assert f"  {command} " in result.output
    assert invoke("-h").output == result.output


def test_dlq_help_lists_its_commands() -> None:
    result = invoke("dlq", "--help")
    assert result.exit_code == 0
    for command in ("list", "show", "replay", "purge"):
        assert f"  {command} " in result.output


def test_topology_json_lists_every_step_queue_with_its_dead_letter_pair() -> None:
    result = invoke("topology", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["declared"] is False
    rows = {row["queue"]: row for row in data["queues"]}
    steps = {name for name in app.tasks if name.startswith(("escavador_", "executador_"))}
    assert set(rows) == steps == set(topology.names())
    for name in ("escavador_youtube", "escavador_rss", "executador_arquivo",
                 "executador_webhook"):
        assert name in rows
    for name, row in rows.items():
        assert row["dead_letter_queue"] == f"{name}.dlq"
        assert row["dead_letter_exchange"] == f"{name}.dlx"
        assert row["kind"] == name.split("_", 1)[0]
        assert row["arguments"]["x-dead-letter-exchange"] == f"{name}.dlx"
        assert row["arguments"]["x-dead-letter-routing-key"] == f"{name}.dlq"
        assert row["arguments"]["x-delivery-limit"] == row["delivery_limit"]
        assert row["arguments"]["x-queue-type"] == "quorum"


def test_topology_table() -> None:
    result = invoke("topology")
    assert result.exit_code == 0, result.output
    assert "Topology" in result.output
    assert "escavador_rss" in result.output
    assert "dead-letter" in result.output


def test_run_refuses_a_payload_that_is_not_json() -> None:
    result = invoke("run", "youtube", "--payload", "not json")
    assert result.exit_code == 2
    assert "not JSON" in result.output
    assert "--payload" in result.output


@pytest.mark.parametrize("payload", ["[1]", "1", '"text"', "null"])
def test_run_refuses_a_payload_that_is_not_an_object(payload: str) -> None:
    result = invoke("run", "youtube", "--payload", payload)
    assert result.exit_code == 2
    assert "must be a JSON object" in result.output


def test_run_refuses_an_option_for_an_executador_not_in_execute() -> None:
    result = invoke("run", "youtube", "--option", "webhook.url=x")
    assert result.exit_code == 2
    assert "'webhook' is not in --execute" in result.output
    result = invoke("run", "youtube", "--execute", "arquivo", "--option", "webhook.url=x")
    assert result.exit_code == 2
    assert "'webhook' is not in --execute" in result.output


@pytest.mark.parametrize("pair", ["webhook", "webhook=x", "webhook.=x", "url=x"])
def test_run_refuses_a_malformed_option(pair: str) -> None:
    result = invoke("run", "youtube", "--execute", "webhook", "--option", pair)
    assert result.exit_code == 2
    assert "EXECUTADOR.KEY=VALUE" in result.output


def test_dlq_purge_needs_yes() -> None:
    result = invoke("dlq", "purge")
    assert result.exit_code == 2
    assert "--yes" in result.output
    result = invoke("dlq", "purge", "--queue", "escavador_youtube")
    assert result.exit_code == 2
    assert "--yes" in result.output


@pytest.mark.parametrize("args", [(), ("some-id", "--all")])
def test_dlq_replay_needs_exactly_one_of_id_or_all(args: tuple[str, ...]) -> None:
    result = invoke("dlq", "replay", *args)
    assert result.exit_code == 2
    assert "give a dead-letter ID or --all" in result.output


# --- the console script, as an operator runs it ---------------------------------------------
#
# ``dlq list`` against a closed port takes ~7 s (kombu's connection retries), so both scripts
# are started when this module is imported, at collection, and run while the other tests do.


def console_script() -> str:
    beside = Path(sys.executable).parent / "orchestrator"
    if beside.exists():
        return str(beside)
    found = shutil.which("orchestrator")
    assert found, "the orchestrator console script is not installed"
    return found


class ScriptRun:
    """``orchestrator ARGS`` with ``broker_url``, started at once, awaited on :meth:`result`."""

    def __init__(self, broker_url: str, *args: str) -> None:
        env = dict(os.environ)
        env.pop("COLUMNS", None)  # what a pipe or a log collector sees: no terminal width
        env.pop("LINES", None)
        env.update({
            "ORCHESTRATOR_BROKER_URL": broker_url,
            "PYTHONPATH": str(PROJECT_ROOT),
            "NO_COLOR": "1",
        })
        self.process = subprocess.Popen(
            [console_script(), *args], env=env, cwd=PROJECT_ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        atexit.register(self._stop)
        self._result: tuple[int, str, str] | None = None

    def result(self) -> tuple[int, str, str]:
        """Exit code, stdout, stderr."""
        if self._result is None:
            stdout, stderr = self.process.communicate(timeout=60)
            self._result = (self.process.returncode, stdout, stderr)
        return self._result

    def _stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


UNREACHABLE = ScriptRun("amqp://guest:guest@127.0.0.1:1//", "dlq", "list")
UNKNOWN_TRANSPORT = ScriptRun("foo://x", "dlq", "list")


def test_unreachable_broker_is_one_redacted_line_and_exit_3() -> None:
    code, stdout, stderr = UNREACHABLE.result()
    assert code == 3, stderr
    assert "Traceback" not in stderr
    assert "guest:guest" not in stderr + stdout
    assert "guest:***@127.0.0.1:1" in stderr
    assert "cannot reach the broker" in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"the error must be one line, got {lines!r}"


def test_unknown_transport_is_one_configuration_line_and_exit_2() -> None:
    code, _, stderr = UNKNOWN_TRANSPORT.result()
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"the error must be one line, got {lines!r}"
    assert "configuration" in lines[0]
