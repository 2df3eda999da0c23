"""One way to name a step everywhere: short name, queue name or DLQ name.

An operator types what they see: ``youtube`` (what ``orchestrator run`` takes),
``escavador_youtube`` (what Flower, the topology and the logs show) or
``escavador_youtube.dlq`` (what ``orchestrator dlq list`` shows). Every command resolves the
name here to the step's queue, and a name that matches nothing, or more than one step, is
refused with the names that would have matched.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.topology import DLQ_SUFFIX, StepKind, queue_name

KINDS: tuple[StepKind, ...] = ("escavador", "executador")


class UnknownName(ValueError):
    """A name that is no step's (or more than one step's); the message lists the known."""


def resolve_queue(name: str, queues: Iterable[str]) -> str:
    """The step queue ``name`` means, among ``queues`` (the topology's names)."""
    known = list(queues)
    wanted = name.strip()
    if wanted.endswith(DLQ_SUFFIX):
        wanted = wanted[: -len(DLQ_SUFFIX)]
    if wanted in known:
        return wanted
    matches = [queue for queue in known if queue in {f"{kind}_{wanted}" for kind in KINDS}]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UnknownName(f"{name!r} names more than one step ({', '.join(matches)}); "
                          "give the queue name")
    raise UnknownName(f"unknown step {name!r}; known: {', '.join(known) or '(none)'}")


def resolve_step(kind: StepKind, name: str, queues: Iterable[str]) -> str:
    """The queue of the ``kind`` step ``name`` (``youtube`` or ``escavador_youtube``)."""
    steps = sorted(queue for queue in queues if queue.startswith(tuple(f"{k}_" for k in KINDS)))
    prefix = f"{kind}_"
    wanted = name.strip()
    queue = queue_name(kind, wanted[len(prefix):] if wanted.startswith(prefix) else wanted)
    if queue not in steps:
        raise UnknownName(f"unknown step {queue!r}; known steps: {', '.join(steps)}")
    return queue
