"""``orchestrator dev`` as a user runs it: no broker configured, nothing but Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from orchestrator.devmode.embedded_broker import RESULTS_DB, EmbeddedBroker

ORCHESTRATOR_CLI = str(Path(sys.executable).with_name("orchestrator"))


def run_dev(data_dir: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    result = subprocess.run([ORCHESTRATOR_CLI, "dev", "--demo", "--once", "--json",
                             "--data-dir", str(data_dir)], env=env, cwd=data_dir.parent,
                            capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_dev_demo_runs_a_pipeline_on_the_embedded_broker_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "dev"
    first = run_dev(data_dir)
    services = first["services"]
    assert isinstance(services, dict)
    assert "embedded Valkey" in services["broker"]
    assert services["broker"].startswith("redis-streams://127.0.0.1:")
    assert "flower" in services and "worker" in services
    demo = first["demo"]
    assert isinstance(demo, dict)
    assert demo["steps"] == ["escavador_youtube", "executador_arquivo"]
    assert demo["final"]["tipo_evento"] == "resultado_execucao"
    assert demo["final"]["correlation_id"] == demo["correlation_id"]

    second = run_dev(data_dir)
    lines = (data_dir / "arquivo" / "resultados.jsonl").read_text().splitlines()
    ids = [json.loads(line)["correlation_id"] for line in lines]
    assert ids == [demo["correlation_id"], second["demo"]["correlation_id"]]  # type: ignore[index]

    broker = EmbeddedBroker(data_dir / "valkey").start()
    try:
        results = redis.Redis.from_url(broker.result_backend.rsplit("/", 1)[0] + f"/{RESULTS_DB}")
        assert len(results.keys("celery-task-meta-*")) >= 4, "both runs' results survived"
    finally:
        broker.stop()
