"""``orchestrator run``: send a pipeline, print its correlation id, optionally wait for it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from celery.exceptions import TimeoutError as CeleryTimeoutError

from orchestrator.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_TIMEOUT,
    ServiceError,
    bound_result_backend,
    check_result_backend,
    console,
    lost_backend,
    one_line,
    print_error,
    print_json,
    redis_failure,
)
from orchestrator.pipeline import (
    PipelineError,
    PipelineHandle,
    build_pipeline,
    dumps_envelopes,
    forget_pending,
)
from orchestrator.settings import get_settings


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _parse_options(pairs: tuple[str, ...], executadores: list[str]) -> dict[str, dict[str, Any]]:
    """``--option webhook.url=http://...`` -> ``{"webhook": {"url": "http://..."}}``."""
    options: dict[str, dict[str, Any]] = {name: {} for name in executadores}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name, dot, field = key.partition(".")
        if not sep or not dot or not field:
            raise click.BadParameter(f"{pair!r}: expected EXECUTADOR.KEY=VALUE",
                                     param_hint="--option")
        if name not in options:
            raise click.BadParameter(f"{pair!r}: {name!r} is not in --execute",
                                     param_hint="--option")
        options[name][field] = value
    return options


def _payload_text(value: str) -> str:
    """``--payload``'s JSON: given inline, ``@FILE`` or ``-`` (stdin), so a payload larger
    than the shell's argument limit can be sent."""
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {value[1:]!r}: {exc}",
                                     param_hint="--payload") from None
    return value


@click.command("run")
@click.argument("fontes", required=False)
@click.option("--payload", default="{}", show_default=True,
              help="JSON object for iniciar_coleta; @FILE reads it from FILE, - from stdin.")
@click.option("--execute", "execute", default=None, help="Executadores, comma-separated.")
@click.option("--option", "option_pairs", multiple=True,
              help="Executador option EXECUTADOR.KEY=VALUE (repeatable).")
@click.option("--correlation-id", default=None, help="Keep this correlation id (a UUID).")
@click.option("--wait", is_flag=True, help="Wait for the pipeline and print the final envelope.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait with --wait.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
@click.option("--from", "source", default=None, metavar="FILE",
              help="Start one pipeline per JSON line of FILE (- for stdin), confirmed in bulk: "
                   '{"collect": ..., "payload": {...}, "execute": ..., "correlation_id": ...}.')
def run_command(fontes: str | None, payload: str, execute: str | None,
                option_pairs: tuple[str, ...], correlation_id: str | None, wait: bool,
                timeout: float, as_json: bool, source: str | None) -> None:
    """Run escavador(es) FONTES (e.g. youtube or youtube,rss) then the executadores; or,
    with --from, every pipeline of a file."""
    if source is not None:
        _run_from(source, fontes, payload, execute, option_pairs, correlation_id, wait,
                  as_json)
        return
    if not fontes:
        raise click.UsageError("give FONTES (e.g. youtube), or --from FILE")
    try:
        payload_data = json.loads(_payload_text(payload))
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
    if not isinstance(payload_data, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--payload")
    executadores = _split(execute)
    options = _parse_options(option_pairs, executadores)
    handle = _send(_split(fontes), payload_data, options, correlation_id)
    if not wait:
        if as_json:
            print_json({"correlation_id": handle.correlation_id, "steps": list(handle.steps)})
        else:
            console.print(f"correlation_id: [bold]{handle.correlation_id}[/bold]")
        return
    if not as_json:
        console.print(f"correlation_id: [bold]{handle.correlation_id}[/bold] (waiting...)")
    try:
        envelopes = handle.wait(timeout=timeout)
    except CeleryTimeoutError:
        forget_pending(handle.result)
        _report(handle.correlation_id, as_json,
                f"pipeline {handle.correlation_id} did not finish within {timeout:g} s; it "
                "goes on running (its result stays in the result backend)")
        raise SystemExit(EXIT_TIMEOUT) from None
    except Exception as exc:  # the step's own exception travels back through the backend
        forget_pending(handle.result)
        lost = lost_backend(exc)
        if lost is not None:
            failure = _backend_failure(lost, f"pipeline {handle.correlation_id} was sent and "
                                             "goes on running")
            _report(handle.correlation_id, as_json, str(failure))
            raise SystemExit(failure.exit_code) from None
        _report(handle.correlation_id, as_json,
                f"pipeline {handle.correlation_id} failed: {type(exc).__name__}: {exc}")
        raise SystemExit(EXIT_FAILED) from None
    if as_json:
        click.echo(dumps_envelopes(envelopes))
    else:
        console.print_json(dumps_envelopes(envelopes))


def _send(fontes: list[str], payload: dict[str, Any], options: dict[str, dict[str, Any]],
          correlation_id: str | None) -> PipelineHandle:
    """Check the request, then the result backend, then send: nothing is sent that could not
    be followed (the result backend gives up within seconds, README "Triggering pipelines")."""
    from orchestrator.celery_app import app

    bound_result_backend(app)
    try:
        envelope, canvas, steps = build_pipeline(app, fontes, payload, options or None,
                                                 correlation_id)
    except PipelineError as exc:
        print_error(exc)
        raise SystemExit(EXIT_CONFIG) from None
    check_result_backend(app, note="nothing was sent")
    try:
        result = canvas.apply_async()
    except Exception as exc:  # Celery subscribes to the result before it publishes
        lost = lost_backend(exc)
        if lost is None:
            raise
        raise _backend_failure(lost, "nothing was sent") from None
    return PipelineHandle(str(envelope.correlation_id), result, steps)


def _run_from(source: str, fontes: str | None, payload: str, execute: str | None,
              option_pairs: tuple[str, ...], correlation_id: str | None, wait: bool,
              as_json: bool) -> None:
    """``--from``: each line carries its own request; the single-pipeline options do not
    apply (nor ``--wait``: a batch's results are followed by their correlation ids)."""
    given = [name for name, value in (("FONTES", fontes), ("--execute", execute),
                                      ("--option", option_pairs),
                                      ("--correlation-id", correlation_id), ("--wait", wait))
             if value] + (["--payload"] if payload != "{}" else [])
    if given:
        raise click.UsageError(f"--from takes each request from its lines: drop "
                               f"{', '.join(given)}")
    from orchestrator.celery_app import app
    from orchestrator.cli.run_batch import read_requests, run_from

    numbers, requests = read_requests(source)
    bound_result_backend(app)
    check_result_backend(app, note="nothing was sent")
    run_from(numbers, requests, as_json)


def _backend_failure(exc: BaseException, note: str) -> ServiceError:
    return redis_failure("the result backend", get_settings().result_backend, exc, note=note)


def _report(correlation_id: str, as_json: bool, message: str) -> None:
    """A failure after the pipeline was sent: the error line, or JSON with ``--json``."""
    if as_json:
        print_json({"correlation_id": correlation_id, "error": one_line(message)})
    else:
        print_error(message)
