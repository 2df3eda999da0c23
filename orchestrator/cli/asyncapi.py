"""``orchestrator asyncapi``: the deployment's AsyncAPI 3.0 document, for other teams' clients."""

from __future__ import annotations

import json

import click


@click.command("asyncapi")
@click.option("--broker-url", default=None,
              help="Describe this broker instead of the configured one (no connection made).")
def asyncapi_command(broker_url: str | None) -> None:
    """Print the AsyncAPI document of every step queue, its DLQ and the envelope's schema."""
    from orchestrator.asyncapi import document
    from orchestrator.celery_app import app

    click.echo(json.dumps(document(broker_url or str(app.conf.broker_url)), indent=2))
