"""Dead letters by correlation id: ``dlq list --correlation-id``, ``dlq show`` and ``dlq
replay`` taking a request's id, and the same in Python, on every broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.failures import dead_letter_queues as dlq
from orchestrator.pipeline import PipelineHandle
from tests.conftest import dead_letters_for
from tests.support.brokers import BrokerUnderTest
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.broker
TIMEOUT = 60


def two_dead_letters(marker: Path) -> PipelineHandle:
    """One request whose two escavadores (a group) are both dead-lettered until ``marker``
    exists."""
    from orchestrator.pipeline import run_pipeline

    handle = run_pipeline(["falha", "falha"], {"fixed_marker": str(marker)})
    wait_until(lambda: len(dead_letters_for(handle.correlation_id)) == 2, timeout=TIMEOUT,
               message="both dead letters of the request")
    return handle


def test_list_show_and_replay_by_correlation_id(worker: WorkerProcess,
                                                on_broker: BrokerUnderTest,
                                                tmp_path: Path) -> None:
    marker = tmp_path / "fixed"
    handle = two_dead_letters(marker)
    other = two_dead_letters(tmp_path / "never")  # another request's: never touched
    cid = handle.correlation_id

    letters = dlq.list_dead_letters(correlation_id=cid)
    assert len(letters) == 2 and {letter.correlation_id for letter in letters} == {cid}
    assert dlq.list_dead_letters(correlation_id=cid, limit=1) == letters[:1]
    ids = [letter.id for letter in letters]
    assert [letter.id for letter in dlq.show_by_correlation(cid)] == ids
    assert [letter.id for letter in dlq.find(letters[1].id)] == [letters[1].id], "by id"
    assert [letter.id for letter in dlq.find(cid)] == [letter.id for letter in letters]

    runner = CliRunner()
    listed = runner.invoke(cli, ["dlq", "list", "--correlation-id", cid, "--json"])
    assert listed.exit_code == 0, listed.output
    entries = json.loads(listed.output)["entries"]
    assert sorted(entry["id"] for entry in entries) == sorted(letter.id for letter in letters)
    shown = runner.invoke(cli, ["dlq", "show", cid, "--json"])
    assert shown.exit_code == 0, shown.output
    assert [entry["id"] for entry in json.loads(shown.output)] == [letter.id for letter in letters]
    one = runner.invoke(cli, ["dlq", "show", letters[0].id, "--json"])
    assert json.loads(one.output)["id"] == letters[0].id, "an id still shows one letter"

    marker.write_text("fixed")
    replayed = runner.invoke(cli, ["dlq", "replay", cid, "--json"])
    assert replayed.exit_code == 0, replayed.output
    assert sorted(entry["id"] for entry in json.loads(replayed.output)["replayed"]) == \
        sorted(letter.id for letter in letters)
    from orchestrator.trace import timeline

    wait_until(lambda: timeline(cid).outcome == "succeeded", timeout=TIMEOUT,
               message="both replayed escavadores succeeded")
    assert not dead_letters_for(cid)
    assert len(dead_letters_for(other.correlation_id)) == 2, "the other request's stay"
    missing = runner.invoke(cli, ["dlq", "replay", cid])
    assert missing.exit_code == 1
    with pytest.raises(dlq.DeadLetterNotFound):
        dlq.show_by_correlation(cid)


def test_replay_by_correlation_id_in_python(worker: WorkerProcess, on_broker: BrokerUnderTest,
                                            tmp_path: Path) -> None:
    marker = tmp_path / "fixed"
    handle = two_dead_letters(marker)
    marker.write_text("fixed")
    moved = dlq.replay(correlation_id=handle.correlation_id)
    assert len(moved) == 2 and {m.correlation_id for m in moved} == {handle.correlation_id}
    wait_until(lambda: not dead_letters_for(handle.correlation_id), timeout=TIMEOUT,
               message="the request's DLQ entries gone")
    with pytest.raises(dlq.DeadLetterNotFound):
        dlq.replay(correlation_id=handle.correlation_id)
    with pytest.raises(ValueError):
        dlq.replay("an-id", correlation_id=handle.correlation_id)
