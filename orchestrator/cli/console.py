"""``orchestrator console``: the operator console in the browser (dead letters and traces).

No default password: ``ORCHESTRATOR_CONSOLE_PASSWORD`` gives it, or ``--generate-password``
makes one for this run and prints it (as dev mode does for Flower). Without either the
command refuses to start, in one line with exit code 2.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal

import click

from orchestrator.cli.common import EXIT_CONFIG, ServiceError, console
from orchestrator.console import auth

DEFAULT_PORT = 8080


@click.command("console")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True,
              help="HTTP port of the console.")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 inside a container).")
@click.option("--user", envvar=auth.USER_VARIABLE, default=auth.DEFAULT_USER,
              show_default=True, help=f"The operator's user name [{auth.USER_VARIABLE}].")
@click.option("--generate-password", "generate", is_flag=True,
              help=f"Make a password for this run and print it (instead of "
                   f"{auth.PASSWORD_VARIABLE}).")
def console_command(port: int, address: str, user: str, generate: bool) -> None:
    """Serve the operator console: dead letters per queue and reason, one in full, replay and
    purge with a confirmation, and a request's trace by correlation id."""
    password = auth.generate_password() if generate else os.environ.get(
        auth.PASSWORD_VARIABLE, "")
    try:
        credentials = auth.Credentials(user=user, password=password)
    except auth.NoPassword as exc:
        raise ServiceError(str(exc), EXIT_CONFIG) from None
    asyncio.run(_serve(credentials, port, address, generate))


async def _serve(credentials: auth.Credentials, port: int, address: str,
                 generated: bool) -> None:
    from orchestrator.console.app import make_app  # Tornado, the templates: only to serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    application = make_app(credentials, auth.cookie_secret())
    try:  # the port first: taken, it is said at once, before any broker connection is made
        server = application.listen(port, address=address, xheaders=False)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ServiceError(f"port {port} on {address} is in use: pick another with --port",
                               EXIT_CONFIG) from None
        raise ServiceError(f"cannot listen on {address} port {port}: {exc.strerror or exc}: "
                           "pick another --address or --port", EXIT_CONFIG) from None
    url = f"http://{address}:{port}"
    if generated:
        console.print(f"console on {url}  (user {credentials.user}, password "
                      f"{credentials.password}); Ctrl-C stops it", markup=False,
                      highlight=False)
    else:
        console.print(f"console on {url}  (user {credentials.user}); Ctrl-C stops it",
                      markup=False, highlight=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        server.stop()
        application.settings["executor"].shutdown(wait=False, cancel_futures=True)
