"""The crash check every pool must pass: a worker SIGKILLed between a step's side effect and
its ack leaves the step to another worker, which completes the pipeline exactly once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from orchestrator.settings import get_settings
from tests.support.waiting import wait_until


def assert_a_killed_step_completes_exactly_once(kill: Callable[[], None],
                                                start_another: Callable[[], object],
                                                tmp_path: Path, timeout: float) -> None:
    """``escavador_lento`` then ``executador_arquivo``: one side effect, one line written."""
    from orchestrator.pipeline import run_pipeline

    effects = tmp_path / "effects"
    handle = run_pipeline("lento", {"seconds": 0.5, "after_seconds": 2,
                                    "started_marker": str(tmp_path / "started"),
                                    "effects_file": str(effects)}, execute=["arquivo"])
    wait_until(effects.exists, timeout=timeout, message="the side effect")
    kill()  # after the side effect, before the ack
    start_another()
    [final] = handle.wait(timeout=timeout)
    assert str(final.correlation_id) == handle.correlation_id
    assert effects.read_text().splitlines() == [f"{handle.correlation_id}:escavador_lento"]
    lines = (Path(get_settings().data_dir) / "arquivo" / "resultados.jsonl").read_text()
    mine = [line for line in lines.splitlines()
            if json.loads(line)["correlation_id"] == handle.correlation_id]
    assert len(mine) == 1
