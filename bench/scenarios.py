"""The measurements, each written once and run for either side, and their statistics.

Every function starts from empty queues and its own worker and stops that worker before it
returns, so consecutive measurements (plain, orchestrator, plain, ...) do not share state.
Each returns a flat ``{metric: number}`` dict; NaN marks a value that could not be measured.
Percentiles and medians are written out so the method is known (linear interpolation).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import accounting
from bench.side import Side
from bench.workers import BenchTimeout, WorkerSpec, running, running_group, wait_for_count

Metrics = dict[str, float]

MIN_RATE = 20.0
"""Slowest drain (messages/s) the overall timeout allows before calling a run failed."""
STALL_TIMEOUT = 60.0
"""A drain that makes no progress for this long has lost its remaining messages."""
MAX_CONSECUTIVE_FAILURES = 3


@dataclass(frozen=True)
class Context:
    """What every measurement needs besides the side."""

    redis_url: str
    log_dir: Path
    sample_timeout: float
    warmup: int


def _publish_all(side: Side, run_id: str, count: int,
                 extra: dict[str, Any] | None = None) -> float:
    """Publish ``count`` flagged messages (with ``extra`` in each payload); returns the
    seconds it took."""
    deadline = time.monotonic() + 120.0 + count / MIN_RATE
    with side.publishing():
        start = time.perf_counter()
        for number in range(count):
            side.publish({**accounting.flagged_payload(run_id, number), **(extra or {})})
            if number % 256 == 0 and time.monotonic() > deadline:
                raise BenchTimeout(f"publishing {count} messages took too long "
                                   f"({number} sent)")
        return time.perf_counter() - start


PUBLISH_CHUNK = 250
"""Messages one side publishes before the other side takes its turn (``publish`` scenario)."""


def measure_publish_interleaved(sides: tuple[Side, ...], count: int) -> dict[str, Metrics]:
    """``count`` publishes per side, taken in turns of :data:`PUBLISH_CHUNK` (order flipped
    every turn), into queues nobody consumes, emptied before and after.

    Publishing is CPU-bound here and this machine's CPU speed drifts by a third within a
    minute: two sides measured a minute apart (as in ``throughput``) differ by that drift,
    two sides in alternating turns of a quarter second see the same CPU.
    """
    for side in sides:
        side.reset_queues()
    run_id = uuid.uuid4().hex[:12]
    elapsed = {side.name: 0.0 for side in sides}
    order = list(sides)
    sent = 0
    while sent < count:
        chunk = min(PUBLISH_CHUNK, count - sent)
        for side in order:
            with side.publishing():
                start = time.perf_counter()
                for number in range(sent, sent + chunk):
                    side.publish(accounting.flagged_payload(run_id, number))
                elapsed[side.name] += time.perf_counter() - start
        order.reverse()
        sent += chunk
    for side in sides:
        side.reset_queues()
    return {name: {"publish_per_s": count / seconds if seconds > 0 else math.nan}
            for name, seconds in elapsed.items()}


IO_CONCURRENCY = 16
"""Requests in flight per side in the I/O-bound scenario, the same for every system."""
IO_PROCESSES = 2
"""Worker processes per side in the I/O-bound scenario: one per core, as Dramatiq's
``--processes 2 --threads 8`` runs (a threaded Celery worker is one core for Python)."""


def io_bound(spec: WorkerSpec) -> WorkerSpec:
    """Celery workers as the README runs escavador queues: the threads pool, one worker per
    core with :data:`IO_CONCURRENCY` threads between them. The ``io`` scenario's steps and the
    ``threaded`` scenario's no-op ones (the throughput drain on this pool instead of the
    shipped prefork ``-c 2``) run on it. Dramatiq's own worker is threaded already."""
    if spec.command is not None:
        return spec
    return replace(spec, pool="threads", concurrency=IO_CONCURRENCY // IO_PROCESSES,
                   processes=IO_PROCESSES)


def measure_io_drain(side: Side, count: int, ctx: Context, url: str) -> Metrics:
    """Like :func:`measure_drain`, each message's step making one HTTP request to ``url``
    (a server answering after 20 ms), on an I/O-bound worker."""
    return measure_drain(side, count, ctx, extra={accounting.FETCH: url}, spec=io_bound)


def measure_drain(side: Side, count: int, ctx: Context, *,
                  extra: dict[str, Any] | None = None,
                  spec: Callable[[WorkerSpec], WorkerSpec] | None = None) -> Metrics:
    """Publish ``count`` messages into an idle queue, then drain them with one worker.

    The drain clock starts when the worker logs "ready" and stops when the ledger holds
    ``count`` distinct ids; the worker's peak RSS is read before it stops. Duplicates are
    read after it stopped, so a redelivery during shutdown is still caught.
    """
    run_id = uuid.uuid4().hex[:12]
    ledger = accounting.Ledger(ctx.redis_url, run_id)
    try:
        side.reset_queues()
        publish_s = _publish_all(side, run_id, count, extra)
        worker_spec = side.worker_spec()
        with running_group(spec(worker_spec) if spec else worker_spec, ctx.log_dir) as worker:
            ready_at = worker.wait_ready()
            cpu_at_ready = worker.cpu_seconds()

            def processed_while_alive() -> int:
                worker.check_alive()  # a dead worker fails the run now, not after a stall
                return ledger.processed()

            outcome = wait_for_count(processed_while_alive, count, stall_timeout=STALL_TIMEOUT,
                                     overall_timeout=120.0 + count / MIN_RATE)
            drain_s = outcome.finished_at - ready_at if outcome.complete else math.nan
            worker_cpu_s = worker.cpu_seconds() - cpu_at_ready
            rss = worker.peak_rss_bytes()
            worker.check_alive()
        processed = ledger.processed()
        metrics: Metrics = {
            "publish_s": publish_s,
            "publish_per_s": count / publish_s if publish_s > 0 else math.nan,
            "drain_s": drain_s,
            "drain_per_s": count / drain_s if drain_s > 0 else math.nan,
            "peak_rss_mb": rss / 2**20,
            "worker_cpu_ms_per_task": worker_cpu_s * 1000 / count,
            "lost": float(count - processed),
            "duplicates": float(ledger.duplicates()),
        }
        dead = side.dead_lettered()
        if dead is not None:
            metrics["dead_lettered"] = float(dead)
        return metrics
    finally:
        ledger.clear()
        ledger.close()


def _sample_latency(run: Callable[[float], None], samples: int, ctx: Context) -> Metrics:
    for _ in range(ctx.warmup):
        run(ctx.sample_timeout)
    times_ms: list[float] = []
    failed = consecutive = 0
    last_error: Exception | None = None
    for _ in range(samples):
        start = time.perf_counter()
        try:
            run(ctx.sample_timeout)
        except Exception as exc:
            failed += 1
            consecutive += 1
            last_error = exc
            if consecutive >= MAX_CONSECUTIVE_FAILURES:
                raise RuntimeError(f"{consecutive} samples failed in a row: {exc}") from exc
            continue
        consecutive = 0
        times_ms.append((time.perf_counter() - start) * 1000.0)
    if last_error is not None and not times_ms:
        raise RuntimeError(f"every sample failed: {last_error}")
    return {
        "p50_ms": percentile(times_ms, 50),
        "p99_ms": percentile(times_ms, 99),
        "mean_ms": sum(times_ms) / len(times_ms) if times_ms else math.nan,
        "samples": float(len(times_ms)),
        "failed": float(failed),
    }


def measure_chain(side: Side, samples: int, ctx: Context) -> Metrics:
    """4-step chains sent one at a time to an idle worker: send to last step's result."""
    side.reset_queues()
    with running(side.worker_spec(), ctx.log_dir) as worker:
        worker.wait_ready()
        with side.publishing():
            metrics = _sample_latency(side.run_chain, samples, ctx)
        worker.check_alive()
    return metrics


def measure_fanout(side: Side, samples: int, ctx: Context) -> Metrics:
    """Chords of ten into one, sent one at a time: send to the body's result."""
    side.reset_queues()
    with running(side.worker_spec(), ctx.log_dir) as worker:
        worker.wait_ready()
        with side.publishing():
            metrics = _sample_latency(side.run_fanout, samples, ctx)
        worker.check_alive()
    return metrics


FAILOVER_HOLD_SECONDS = 120.0
"""How long the first delivery sleeps: far longer than any broker's failover."""


def measure_failover(side: Side, ctx: Context) -> Metrics:
    """One message held by worker A's step; worker B ready; A SIGKILLed (the whole process
    group, as a crash or an OOM kill would): seconds from the kill until B has run it."""
    import redis

    run_id = uuid.uuid4().hex[:12]
    ledger = accounting.Ledger(ctx.redis_url, run_id)
    client = redis.Redis.from_url(ctx.redis_url)
    key = accounting.started_key(run_id)
    try:
        side.reset_queues()
        payload = {**accounting.flagged_payload(run_id, 0),
                   accounting.HOLD: {"key": key, "seconds": FAILOVER_HOLD_SECONDS}}
        with running(side.worker_spec(), ctx.log_dir) as first:
            first.wait_ready()
            with side.publishing():
                side.publish(payload)
            wait_for_count(lambda: int(client.exists(key)), 1, stall_timeout=60,
                           overall_timeout=60)
            if not client.exists(key):
                raise BenchTimeout("the failover message never started")
            with running(side.worker_spec(), ctx.log_dir) as second:
                second.wait_ready()
                killed_at = time.monotonic()
                first.kill()
                outcome = wait_for_count(ledger.processed, 1, stall_timeout=90,
                                         overall_timeout=90)
                second.check_alive()
        seconds = outcome.finished_at - killed_at if outcome.complete else math.nan
        return {"failover_s": seconds, "lost": float(1 - ledger.processed()),
                "duplicates": float(ledger.duplicates())}
    finally:
        client.delete(key)
        client.close()
        ledger.clear()
        ledger.close()


# -- statistics --------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), interpolating between ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The median of the finite values; NaN when there are none."""
    finite = [v for v in values if not math.isnan(v)]
    return percentile(finite, 50.0)


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when either is missing or the denominator is 0."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return math.nan
    return numerator / denominator
