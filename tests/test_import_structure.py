"""The package's structure: no import circle, and no Celery app behind a leaf module.

A circle held together by function-level imports is still a circle (the order of first use
decides whether it works), so every ``import`` statement counts, wherever it stands.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.workers import REPO

PACKAGES = ("orchestrator", "tasks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, anywhere in it (``from a import b`` counts as
    ``a.b`` when that is a module, else ``a``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in known:
                found.add(name)
                break
    return found


def import_graph() -> dict[str, set[str]]:
    paths = [path for package in PACKAGES for path in (REPO / package).rglob("*.py")]
    known = {module_name(path) for path in paths}
    return {module_name(path): imports_of(path, known) - {module_name(path)} for path in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_imports_have_no_circle() -> None:
    graph = import_graph()
    assert "orchestrator.steps" in graph and graph["orchestrator.celery_app"]
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph) or [])}"


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


LEAVES = ["orchestrator.envelope", "orchestrator.topology", "orchestrator.headers",
          "orchestrator.step_spec", "orchestrator.steps", "orchestrator.step_task",
          "orchestrator.transports.redis_streams", "orchestrator.transports.nats_jetstream",
          "orchestrator.transports.dead_lettering", "orchestrator.failures.dead_letter_queues",
          "orchestrator.failures.dead_letter", "tasks.escavadores.youtube",
          "tasks.executadores.arquivo"]


@pytest.mark.parametrize("module", LEAVES)
def test_importing_a_leaf_module_builds_no_celery_app(module: str) -> None:
    code = f"import sys, {module}; print('orchestrator.celery_app' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
