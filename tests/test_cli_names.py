"""The operator's path: one name for a step in every command, one line for every failure.

The CLI runs as the operator runs it: the installed ``orchestrator`` program, in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.names import UnknownName, resolve_queue, resolve_step
from tests.support.brokers import BrokerUnderTest
from tests.support.workers import REPO, worker_env

ORCHESTRATOR_CLI = str(Path(sys.executable).with_name("orchestrator"))
QUEUES = ["escavador_youtube", "escavador_rss", "executador_arquivo", "escavador_dup",
          "executador_dup"]


def cli(env: dict[str, str], *args: str, stdin: str | None = None,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ORCHESTRATOR_CLI, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, check=False, input=stdin)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int,
                          *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("name", ["youtube", "escavador_youtube", "escavador_youtube.dlq",
                                  " youtube "])
def test_every_spelling_of_a_step_is_its_queue(name: str) -> None:
    assert resolve_queue(name, QUEUES) == "escavador_youtube"


def test_an_unknown_or_ambiguous_name_lists_what_would_do() -> None:
    with pytest.raises(UnknownName, match="known: escavador_youtube, escavador_rss"):
        resolve_queue("nope", QUEUES)
    with pytest.raises(UnknownName, match="escavador_dup, executador_dup"):
        resolve_queue("dup", QUEUES)
    assert resolve_queue("executador_dup", QUEUES) == "executador_dup"


def test_a_step_of_a_kind_takes_its_short_or_its_queue_name() -> None:
    assert resolve_step("escavador", "rss", QUEUES) == "escavador_rss"
    assert resolve_step("escavador", "escavador_rss", QUEUES) == "escavador_rss"
    with pytest.raises(UnknownName, match="unknown step 'escavador_arquivo'; known steps:"):
        resolve_step("escavador", "arquivo", QUEUES)


@pytest.mark.broker
@pytest.mark.parametrize("name", ["youtube", "escavador_youtube", "escavador_youtube.dlq"])
def test_dlq_commands_take_any_spelling(on_broker: BrokerUnderTest, name: str) -> None:
    env = worker_env(on_broker.url)
    declared = cli(env, "topology", "--declare", "--json")
    assert declared.returncode == 0, declared.stderr
    listed = cli(env, "dlq", "list", name, "--json")
    assert listed.returncode == 0, listed.stderr
    assert list(json.loads(listed.stdout)["counts"]) == ["escavador_youtube.dlq"]
    purged = cli(env, "dlq", "purge", "--queue", name, "--yes", "--json")
    assert purged.returncode == 0, purged.stderr
    assert list(json.loads(purged.stdout)["purged"]) == ["escavador_youtube.dlq"]


@pytest.mark.broker
def test_unknown_names_are_one_line_with_exit_code_2(on_broker: BrokerUnderTest) -> None:
    env = worker_env(on_broker.url)
    assert_one_line_error(cli(env, "dlq", "list", "nope"), 2, "unknown step 'nope'",
                          "escavador_youtube")
    assert_one_line_error(cli(env, "dlq", "purge", "--queue", "nope", "--yes"), 2, "known:")
    assert_one_line_error(cli(env, "dlq", "show", "some-id", "--queue", "nope"), 2, "known:")
    assert_one_line_error(cli(env, "run", "nope"), 2, "unknown step 'escavador_nope'")
    assert_one_line_error(cli(env, "run", "eco", "--execute", "nope"), 2,
                          "unknown step 'executador_nope'")


@pytest.mark.broker
def test_run_takes_the_payload_from_a_file_or_stdin(on_broker: BrokerUnderTest,
                                                    tmp_path: Path) -> None:
    env = worker_env(on_broker.url)
    big = {"text": "x" * 300_000}  # past what one argument may carry on Linux (128 KiB)
    payload_file = tmp_path / "payload.json"
    payload_file.write_text(json.dumps(big))
    for args, stdin in ((("--payload", f"@{payload_file}"), None),
                        (("--payload", "-"), json.dumps(big))):
        sent = cli(env, "run", "escavador_eco", *args, "--json", stdin=stdin)
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["steps"] == ["escavador_eco"]
    assert_one_line_error(cli(env, "run", "eco", "--payload", f"@{tmp_path / 'missing'}"), 2,
                          "cannot read")


def test_an_unexpected_failure_is_one_line_with_exit_code_1() -> None:
    env = worker_env("kafka://127.0.0.1:9092")
    result = cli(env, "topology", "--declare")
    assert result.returncode in (1, 2, 3), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_a_usage_error_is_one_line_too() -> None:
    env = worker_env("amqp://guest:guest@127.0.0.1:1//")
    assert_one_line_error(cli(env, "run"), 2, "give FONTES", "--from FILE",
                          "orchestrator run --help")
    assert_one_line_error(cli(env, "dlq", "purge"), 2, "--yes")
    assert_one_line_error(cli(env, "nope"), 2, "No such command")
    assert cli(env, "--help").returncode == 0


def test_piped_topology_keeps_every_name_whole() -> None:
    from orchestrator.topology import topology

    env = worker_env("amqp://guest:guest@127.0.0.1:1//")  # printing needs no broker
    shown = cli(env, "topology")
    assert shown.returncode == 0, shown.stderr
    assert "…" not in shown.stdout
    for spec in topology:
        assert spec.name in shown.stdout and spec.dlq in shown.stdout


def test_dlq_show_reads_as_text_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli.dlq import print_letter

    print_letter({"id": "abc", "queue": "escavador_eco", "dlq": "escavador_eco.dlq",
                  "reason": "failed", "task": "escavador_eco", "correlation_id": "c-1",
                  "attempts": 1, "last_error": "FinalError: [bad] input",
                  "content_type": "application/json", "body": {"k": [1, 2]},
                  "details": {"traceback": "Traceback (most recent call last):\n  x\n",
                              "first_failure_at": "t0", "last_failure_at": "t1"}})
    out = capsys.readouterr().out
    assert "reason:" in out and "failed" in out and "c-1" in out
    assert "FinalError: [bad] input" in out, "markup-like text is shown as it is"
    assert out.index("traceback:") < out.index("body:")
    assert '"k"' in out and not out.lstrip().startswith("{")


@pytest.mark.parametrize("url", ["nats://127.0.0.1:1", "amqp://guest:guest@127.0.0.1:1//",
                                 "redis-streams://127.0.0.1:1/0"])
def test_an_unreachable_broker_is_one_line_with_exit_code_3(url: str) -> None:
    assert_one_line_error(cli(worker_env(url), "dlq", "list"), 3, "cannot reach the broker")


@pytest.mark.broker
def test_a_wait_that_times_out_has_its_own_exit_code(on_broker: BrokerUnderTest,
                                                     tmp_path: Path) -> None:
    # atrasos retries after 3 s and 6 s before it fails: its result is pending for 9 s.
    payload = json.dumps({"attempts_file": str(tmp_path / "attempts.jsonl")})
    result = cli(worker_env(on_broker.url), "run", "atrasos", "--payload", payload,
                 "--wait", "--timeout", "1")
    assert_one_line_error(result, 4, "did not finish within 1 s")
