"""Helpers shared by the CLI commands: clean one-line errors, JSON output, the console."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import click
from kombu.exceptions import OperationalError
from rich.console import Console

from orchestrator.names import UnknownName
from orchestrator.settings import get_settings, redact_url

PIPED_WIDTH = 10_000
"""Output that goes to a pipe or a file is not cut to fit a terminal: Rich would assume 80
columns and shorten names (``executador_we…``), and ``| grep`` would miss them."""

# soft_wrap: never break a line for the terminal width (errors stay one line, names whole).
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else PIPED_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)

EXIT_FAILED = 1
"""The operation failed: a pipeline failed, a dead letter is not there, an unexpected error."""
EXIT_CONFIG = 2
"""Usage, configuration or a name no step has (as click's own usage errors)."""
EXIT_BROKER = 3
"""The broker (or result backend) cannot be reached."""

EXIT_TIMEOUT = 4
"""``run --wait`` gave up waiting: the pipeline may still finish."""
EXIT_INTERRUPTED = 130
"""Ctrl-C, as shells report it."""

DEBUG_VARIABLE = "ORCHESTRATOR_DEBUG"


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
    except (click.ClickException, click.exceptions.Abort):
        raise  # the entry point prints them
    except UnknownName as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_CONFIG)
    except (OSError, OperationalError, ConnectionError) as exc:
        err_console.print(
            f"[red]error:[/red] cannot reach the broker {broker_for_humans()}: {exc}"
        )
        sys.exit(EXIT_BROKER)
    except (KeyError, ValueError, ImportError) as exc:
        if isinstance(exc, KeyError) and "transport" not in str(exc).lower():
            _unexpected(exc)
        err_console.print(f"[red]error:[/red] configuration: {exc}")
        sys.exit(EXIT_CONFIG)
    except Exception as exc:
        if type(exc).__name__ == "NotFound":  # a queue the broker does not have (AMQP 404)
            err_console.print(f"[red]error:[/red] {exc}; the topology is declared when a "
                              "worker starts, or by `orchestrator topology --declare`")
            sys.exit(EXIT_FAILED)
        _unexpected(exc)


def _unexpected(exc: BaseException) -> NoReturn:
    """Anything else: one line naming it (the traceback with ORCHESTRATOR_DEBUG=1)."""
    if os.environ.get(DEBUG_VARIABLE, "").lower() in ("1", "true", "yes"):
        raise exc
    err_console.print(f"[red]error:[/red] {type(exc).__name__}: {exc} "
                      f"(set {DEBUG_VARIABLE}=1 for the traceback)")
    sys.exit(EXIT_FAILED)
