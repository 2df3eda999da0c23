"""Peak resident memory of a process tree, read from ``/proc`` (no extra dependency).

A prefork worker is a main process plus its pool children; its footprint is the sum of their
``VmHWM`` (peak RSS), read before the worker is stopped.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def _parent_of(stat_text: str) -> int:
    # The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    fields = stat_text.rsplit(")", 1)[1].split()
    return int(fields[1])


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found: list[int] = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = _parent_of((entry / "stat").read_text())
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        if parent == pid:
            found.append(int(entry.name))
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree = [pid]
    index = 0
    while index < len(tree):
        tree.extend(children(tree[index]))
        index += 1
    return tree


def peak_rss_kib(pid: int) -> int:
    """``VmHWM`` of one process in KiB (0 if it is gone)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def tree_peak_rss_bytes(pid: int) -> int:
    """Sum of the peak RSS of ``pid`` and its descendants, in bytes."""
    return sum(peak_rss_kib(p) for p in process_tree(pid)) * 1024
