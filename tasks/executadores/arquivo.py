"""``executador_arquivo``: append one JSON line per pipeline to a JSONL file under the data dir.

The write is idempotent on its own, not only through the runtime's result store: a worker
can die after writing but before the result is stored, and the redelivery must not add a
second line. So, under an exclusive ``flock`` (which also serialises concurrent workers and
threads), the file is scanned for the ``(correlation_id, step)`` key and the line is
appended only when it is absent, then flushed and fsynced before the step reports success.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path, PurePosixPath
from typing import IO, Any

from orchestrator.envelope import utc_now
from orchestrator.failures.errors import FinalError
from orchestrator.steps import StepContext, executador

DEFAULT_RELATIVE_PATH = "arquivo/resultados.jsonl"


def resolve_output_path(data_dir: Path, relative: Any) -> Path:
    """``data_dir / relative``, refusing anything that could escape the data directory.

    Pipelines choose the path, so an absolute path or ``..`` is refused (final) rather than
    letting a message write anywhere the worker can.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise FinalError("options.path: must be a non-empty relative path string")
    candidate = PurePosixPath(relative.strip())
    if candidate.is_absolute() or Path(relative).is_absolute():
        raise FinalError(f"options.path: {relative!r} is absolute; give a path under data_dir")
    if ".." in candidate.parts:
        raise FinalError(f"options.path: {relative!r} contains '..'")
    if not candidate.parts or candidate.name in ("", "."):
        raise FinalError(f"options.path: {relative!r} names no file")
    return Path(data_dir) / candidate


def append_once(
    path: Path, line: dict[str, Any], correlation_id: str, step: str
) -> tuple[bool, int]:
    """Append ``line`` unless a line for ``(correlation_id, step)`` exists; durable on return.

    Returns ``(written, lines_for_key)``. The lock is held for the scan and the append, so two
    writers for the same key cannot both see it absent.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            found, ends_with_newline = _scan(handle, correlation_id, step)
            if found:
                return False, found
            text = json.dumps(line, ensure_ascii=False, separators=(",", ":"))
            # A torn last line (a crash mid-write) must not swallow ours.
            prefix = b"" if ends_with_newline else b"\n"
            handle.write(prefix + text.encode("utf-8") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
            return True, 1
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _scan(handle: IO[bytes], correlation_id: str, step: str) -> tuple[int, bool]:
    """Count lines for the key; also say whether the file is empty or ends with a newline."""
    handle.seek(0)
    found = 0
    last = b"\n"
    for raw in handle:
        last = raw
        try:
            record = json.loads(raw)
        except ValueError:
            continue  # a torn or foreign line: not ours, keep scanning
        if (
            isinstance(record, dict)
            and record.get("correlation_id") == correlation_id
            and record.get("step") == step
        ):
            found += 1
    return found, last.endswith(b"\n")


@executador("arquivo")
def gravar_arquivo(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Record the pipeline's input envelopes as one JSON line, exactly once per pipeline.

    ``options.path`` (relative to ``ORCHESTRATOR_DATA_DIR``) picks another file.
    """
    relative = ctx.options.get("path", DEFAULT_RELATIVE_PATH)
    path = resolve_output_path(ctx.settings.data_dir, relative)
    line = {
        "correlation_id": ctx.correlation_id,
        "step": ctx.step,
        "written_at": utc_now().isoformat().replace("+00:00", "Z"),
        "entradas": [envelope.to_dict() for envelope in ctx.inputs],
    }
    written, count = append_once(path, line, ctx.correlation_id, ctx.step)
    if written:
        ctx.logger.info("wrote the pipeline's line to %s", path)
    else:
        ctx.logger.info("line for %s already in %s; not writing again", ctx.correlation_id, path)
    return {"arquivo": str(path), "written": written, "line_count_for_pipeline": count}
