"""What an operator does: the CLI against a running worker, and Flower showing the tasks."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator.devmode.feed_server import SAMPLE_CHANNEL_ID
from orchestrator.settings import get_settings
from tests.support.brokers import BrokerUnderTest
from tests.support.http_servers import http_server
from tests.support.net import free_port
from tests.support.waiting import wait_until
from tests.support.workers import REPO, WorkerProcess, worker_env

pytestmark = pytest.mark.broker
ORCHESTRATOR_CLI = str(Path(sys.executable).with_name("orchestrator"))


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ORCHESTRATOR_CLI, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_cli_run_youtube_then_arquivo_writes_one_line_with_the_correlation_id(
    worker: WorkerProcess, on_broker: BrokerUnderTest
) -> None:
    result = cli(worker.env, "run", "youtube", "--payload",
                 json.dumps({"channel_id": SAMPLE_CHANNEL_ID}), "--execute", "arquivo",
                 "--wait", "--json")
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout)
    correlation_id = final["correlation_id"]
    assert final["tipo_evento"] == "resultado_execucao"
    path = Path(get_settings().data_dir) / "arquivo" / "resultados.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    mine = [line for line in lines if line["correlation_id"] == correlation_id]
    assert len(mine) == 1
    [collected] = mine[0]["entradas"]
    assert collected["tipo_evento"] == "resultado_coleta"
    assert collected["payload"]["channel_id"] == SAMPLE_CHANNEL_ID
    assert collected["payload"]["count"] >= 1


def test_cli_dlq_commands_round_trip(worker: WorkerProcess, on_broker: BrokerUnderTest) -> None:
    failed = cli(worker.env, "run", "falha", "--payload", '{"mode": "final"}', "--wait", "--json")
    assert failed.returncode == 1
    correlation_id = json.loads(failed.stdout)["correlation_id"]

    def listed() -> list[dict[str, object]]:
        out = cli(worker.env, "dlq", "list", "escavador_falha", "--json")
        assert out.returncode == 0, out.stderr
        return [e for e in json.loads(out.stdout)["entries"]
                if e["correlation_id"] == correlation_id]

    [entry] = wait_until(listed, timeout=60, message="the dead letter in `dlq list`")
    assert entry["reason"] == "failed" and entry["attempts"] == 1
    shown = cli(worker.env, "dlq", "show", str(entry["id"]), "--json")
    assert shown.returncode == 0, shown.stderr
    full = json.loads(shown.stdout)
    assert full["details"]["exception_type"] == "FinalError"
    assert "Traceback" in full["details"]["traceback"]
    replayed = cli(worker.env, "dlq", "replay", str(entry["id"]), "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["replayed"][0]["correlation_id"] == correlation_id
    # it fails again (the payload still asks for it) and comes back, once
    [again] = wait_until(listed, timeout=60, message="the replayed message failing again")
    assert again["id"] == entry["id"]
    purged = cli(worker.env, "dlq", "purge", "--queue", "escavador_falha", "--yes", "--json")
    assert purged.returncode == 0, purged.stderr
    assert listed() == []



@pytest.fixture()
def flower(broker: BrokerUnderTest, log_dir: Path) -> Iterator[str]:
    port = free_port()
    env = worker_env(broker.url, {"FLOWER_BASIC_AUTH": "operador:segredo"})
    url = f"http://127.0.0.1:{port}"
    log_path = log_dir / "flower.log"
    with log_path.open("w") as log, http_server(
            [sys.executable, "-m", "celery", "-A", "orchestrator", "flower", f"--port={port}",
             "--address=127.0.0.1"], env=env, health_url=url + "/healthcheck",
            healthy=(200, 401), output=log, what="Flower listening",
            exit_details=log_path.read_text):
        yield url


def test_flower_lists_the_pipeline_tasks_behind_basic_auth(
    worker: WorkerProcess, on_broker: BrokerUnderTest, flower: str
) -> None:
    """Flower's task list comes from the worker's events: run pipelines until the events
    receiver (started asynchronously by Flower) has seen one whole pipeline."""
    from orchestrator.pipeline import run_pipeline

    assert httpx.get(flower + "/api/workers", timeout=5).status_code == 401
    auth = ("operador", "segredo")
    seen: dict[str, dict[str, object]] = {}

    def pipeline_listed() -> set[str]:
        handle = run_pipeline("eco", {"flower": True}, execute=["eco"])
        handle.wait(timeout=60)
        task_ids = {handle.result.id, handle.result.parent.id}

        def listed() -> set[str]:
            response = httpx.get(flower + "/api/tasks", auth=auth, timeout=10)
            assert response.status_code == 200
            tasks = response.json()
            if not task_ids <= set(tasks):
                return set()
            if any(not tasks[task_id].get("name") for task_id in task_ids):
                return set()  # the receiver joined mid-pipeline and missed task-received
            seen.update(tasks)
            return task_ids

        try:
            return wait_until(listed, timeout=5, message="the tasks in Flower")
        except AssertionError:
            return set()

    task_ids = wait_until(pipeline_listed, timeout=90, interval=0.5,
                          message="Flower listing a pipeline's tasks")
    assert {seen[task_id]["name"] for task_id in task_ids} == {"escavador_eco",
                                                                "executador_eco"}
    assert all(seen[task_id]["state"] == "SUCCESS" for task_id in task_ids)
    # Flower shows the correlation id, never the payload: also for the step the worker
    # published (the chain's next step).
    for task_id in task_ids:
        shown = str(seen[task_id].get("args"))
        assert "correlation_id=" in shown and "flower" not in shown, shown
    # Nor the envelope a step returned: its kind.
    assert {seen[task_id].get("result") for task_id in task_ids} == {
        "<envelope resultado_coleta>", "<envelope resultado_execucao>"}
