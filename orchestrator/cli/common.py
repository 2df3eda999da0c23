"""Helpers shared by the CLI commands: clean one-line errors, JSON output, the console."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from kombu.exceptions import OperationalError
from rich.console import Console

from orchestrator.settings import get_settings, redact_url

# soft_wrap: never break a line for the terminal width (errors stay one line, names whole).
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

EXIT_CONFIG = 2
EXIT_BROKER = 3


def broker_for_humans() -> str:
    return redact_url(get_settings().broker_url)


def print_json(data: Any) -> None:
    """Machine-readable output goes to stdout as plain JSON (no colour, no wrapping)."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


@contextlib.contextmanager
def fail_cleanly() -> Iterator[None]:
    """Turn the usual operational failures into one red line and a distinct exit code."""
    try:
        yield
    except (OSError, OperationalError, ConnectionError) as exc:
        err_console.print(
            f"[red]error:[/red] cannot reach the broker {broker_for_humans()}: {exc}"
        )
        sys.exit(EXIT_BROKER)
    except (KeyError, ValueError, ImportError) as exc:
        if isinstance(exc, KeyError) and "transport" not in str(exc).lower():
            raise
        err_console.print(f"[red]error:[/red] configuration: {exc}")
        sys.exit(EXIT_CONFIG)
