"""Every failure of the ``orchestrator`` command is one line on stderr, with its exit code, and
in bounded time: the result backend unreachable, refusing the login, lost during ``--wait``;
a ``metrics`` port in use; an error message of several lines; ``dlq list`` at 100 columns.

The CLI runs as the operator runs it (see tests/test_cli_names.py), except for the rendering
and helper checks, which call the functions the commands use.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from rich.console import Console

from orchestrator.cli import common
from tests.support.brokers import BrokerUnderTest
from tests.support.waiting import wait_until
from tests.support.workers import REPO, WorkerProcess, worker_env
from tests.test_cli_names import ORCHESTRATOR_CLI, assert_one_line_error, cli

BOUND = 10.0
"""What "within a few seconds" means here: the CLI's start (~1 s on a loaded machine) plus
the README's bound on a result-backend attempt (3 s to connect, 3 s for the answer)."""
UNREACHABLE_BACKEND = "redis://127.0.0.1:1/0"
PAYLOAD = json.dumps({"channel_id": "x"})


def timed_cli(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = cli(env, *args)
    return result, time.monotonic() - started


# --- the result backend ---------------------------------------------------------------------


@pytest.mark.broker
@pytest.mark.parametrize("wait", [False, True], ids=["sent", "wait"])
def test_an_unreachable_result_backend_is_one_line_with_exit_code_3(
        on_broker: BrokerUnderTest, wait: bool) -> None:
    env = worker_env(on_broker.url, {"ORCHESTRATOR_RESULT_BACKEND": UNREACHABLE_BACKEND})
    result, took = timed_cli(env, "run", "youtube", "--payload", PAYLOAD,
                             *(["--wait", "--timeout", "60"] if wait else []))
    assert_one_line_error(result, 3, f"cannot reach the result backend {UNREACHABLE_BACKEND}: ",
                          "nothing was sent", "ORCHESTRATOR_RESULT_BACKEND")
    assert took < BOUND, f"gave up after {took:.1f} s"


class SilentServer:
    """Accepts TCP connections and never answers: a hung Redis, a firewall that swallows."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"

    def close(self) -> None:
        self.listener.close()


@pytest.fixture()
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.mark.broker
def test_a_result_backend_that_never_answers_is_given_up_in_bounded_time(
        on_broker: BrokerUnderTest, silent_server: SilentServer) -> None:
    env = worker_env(on_broker.url, {"ORCHESTRATOR_RESULT_BACKEND": silent_server.url})
    result, took = timed_cli(env, "run", "youtube", "--payload", PAYLOAD, "--wait")
    assert_one_line_error(result, 3, f"cannot reach the result backend {silent_server.url}: ",
                          "nothing was sent")
    assert took < BOUND, f"gave up after {took:.1f} s"


@pytest.mark.broker
@pytest.mark.parametrize("wait", [False, True], ids=["sent", "wait"])
def test_a_result_backend_refusing_the_password_is_one_line_with_exit_code_2(
        on_broker: BrokerUnderTest, wait: bool) -> None:
    # This Redis has no password: its default user takes any, so a user it does not know
    # is what makes the AUTH fail (redis-py: AuthenticationError, a ConnectionError).
    backend = "redis://nobody:wrongpass@127.0.0.1:6379/15"
    env = worker_env(on_broker.url, {"ORCHESTRATOR_RESULT_BACKEND": backend})
    result, took = timed_cli(env, "run", "youtube", "--payload", PAYLOAD,
                             *(["--wait", "--timeout", "60"] if wait else []))
    assert_one_line_error(result, 2, "the result backend redis://nobody:***@127.0.0.1:6379/15 ",
                          "authentication failed", "fix the credentials in "
                          "ORCHESTRATOR_RESULT_BACKEND")
    assert "wrongpass" not in result.stderr + result.stdout
    assert took < BOUND, f"gave up after {took:.1f} s"


class CuttableProxy:
    """A TCP proxy in front of the suite's Redis that a test cuts: the listening socket and
    every connection closed at once, as a Redis that goes away. It notes the client's
    ``SUBSCRIBE`` (Celery waiting for a result)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = int(self.listener.getsockname()[1])
        self.subscribed = threading.Event()
        self.cut_done = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut_done.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    break
                if from_client and b"SUBSCRIBE" in data:
                    self.subscribed.set()
                sink.sendall(data)
            except OSError:
                break
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.cut_done.set()
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


@pytest.fixture()
def backend_proxy(result_backend: str) -> Iterator[CuttableProxy]:
    parts = httpx.URL(result_backend)
    proxy = CuttableProxy((parts.host, parts.port or 6379))
    yield proxy
    proxy.cut()


@pytest.mark.broker
def test_a_result_backend_lost_during_a_wait_is_one_line_with_exit_code_3(
        on_broker: BrokerUnderTest, backend_proxy: CuttableProxy, result_backend: str,
        tmp_path: Path) -> None:
    db = httpx.URL(result_backend).path or "/0"
    backend = f"redis://127.0.0.1:{backend_proxy.port}{db}"
    env = worker_env(on_broker.url, {"ORCHESTRATOR_RESULT_BACKEND": backend})
    # atrasos's result is pending for 9 s (a worker retries it twice), or longer without one.
    payload = json.dumps({"attempts_file": str(tmp_path / "attempts.jsonl")})
    process = subprocess.Popen([ORCHESTRATOR_CLI, "run", "atrasos", "--payload", payload,
                                "--wait", "--timeout", "120"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: backend_proxy.subscribed.is_set() or process.poll() is not None,
                   timeout=60, message="the CLI waiting on its result")
        assert process.poll() is None, process.communicate()
        backend_proxy.cut()
        cut_at = time.monotonic()
        stdout, stderr = process.communicate(timeout=60)
        took = time.monotonic() - cut_at
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert_one_line_error(result, 3, f"cannot reach the result backend {backend}: ",
                          "was sent and goes on running")
    assert took < BOUND, f"gave up after {took:.1f} s"


@pytest.mark.broker
def test_dlq_replay_checks_the_result_backend_first(on_broker: BrokerUnderTest) -> None:
    env = worker_env(on_broker.url, {"ORCHESTRATOR_RESULT_BACKEND": UNREACHABLE_BACKEND})
    declared = cli(env, "topology", "--declare", "--json")
    assert declared.returncode == 0, declared.stderr
    result, took = timed_cli(env, "dlq", "replay", "--all")
    assert_one_line_error(result, 3, f"cannot reach the result backend {UNREACHABLE_BACKEND}",
                          "nothing was replayed")
    assert took < BOUND, f"gave up after {took:.1f} s"
    listed = cli(env, "dlq", "list", "--json")  # reading DLQs needs no result backend
    assert listed.returncode == 0, listed.stderr


# --- not the broker -------------------------------------------------------------------------


def test_metrics_on_a_port_in_use_says_so_with_exit_code_2() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        # The port is checked first: no broker is contacted (this one is not there anyway).
        env = worker_env("amqp://guest:guest@127.0.0.1:1//")
        result, took = timed_cli(env, "metrics", "--port", str(port), "--address", "127.0.0.1")
    assert_one_line_error(result, 2, f"port {port} on 127.0.0.1 is in use",
                          "pick another with --port")
    assert "broker" not in result.stderr
    assert took < BOUND


def run_fail_cleanly(exc: BaseException) -> int:
    with pytest.raises(SystemExit) as exited, common.fail_cleanly():
        raise exc
    return int(exited.value.code or 0)


@pytest.mark.parametrize("exc", [
    PermissionError(errno.EACCES, "Permission denied", "/data/out.json"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "/nowhere"),
    OSError(errno.EADDRINUSE, "Address already in use"),
], ids=["permission", "missing-file", "address-in-use"])
def test_an_oserror_that_is_no_connection_is_not_blamed_on_the_broker(
        exc: OSError, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(common.DEBUG_VARIABLE, raising=False)
    assert run_fail_cleanly(exc) == common.EXIT_FAILED
    err = capsys.readouterr().err
    assert "broker" not in err and type(exc).__name__ in err and exc.strerror in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    OSError(errno.EHOSTUNREACH, "No route to host"),
    socket.gaierror(-2, "Name or service not known"),
    TimeoutError("timed out"),
], ids=["refused", "no-route", "dns", "timeout"])
def test_a_connection_oserror_is_still_the_broker_with_exit_code_3(
        exc: OSError, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_fail_cleanly(exc) == common.EXIT_BROKER
    assert "cannot reach the broker" in capsys.readouterr().err


# --- one line -------------------------------------------------------------------------------


def http_404_error() -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:9/hook")
    try:
        httpx.Response(404, request=request).raise_for_status()
    except httpx.HTTPStatusError as exc:
        return exc
    raise AssertionError("a 404 raises")


def test_one_line_collapses_newlines_and_blanks() -> None:
    assert "\n" in str(http_404_error())  # why the helper exists
    assert common.one_line("a\n  b\r\n\tc  ") == "a b c"
    assert common.one_line(http_404_error()).endswith(
        "'http://127.0.0.1:9/hook' For more information check: "
        "https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/404")


def test_a_failed_step_of_several_lines_is_reported_on_one(
        capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli.run import _report

    exc = http_404_error()
    _report("c-1", False, f"pipeline c-1 failed: {type(exc).__name__}: {exc}")
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "404 Not Found" in err and "For more information check" in err
    _report("c-1", True, f"pipeline c-1 failed: {exc}")
    assert "\\n" not in json.loads(capsys.readouterr().out)["error"]


def test_an_error_is_printed_as_text_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli.run import _report

    _report("c-1", False, "FinalError: [bad] input, closing [/tag] too")
    assert capsys.readouterr().err.strip() == \
        "error: FinalError: [bad] input, closing [/tag] too"


class NotFoundHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(404)
        self.send_header("content-length", "9")
        self.end_headers()
        self.wfile.write(b"not found")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def webhook_404() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFoundHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


@pytest.mark.broker
def test_a_webhook_404_during_a_wait_is_one_line(on_broker: BrokerUnderTest,
                                                 worker: WorkerProcess,
                                                 webhook_404: str) -> None:
    result = cli(worker_env(on_broker.url), "run", "eco", "--execute", "webhook",
                 "--option", f"webhook.url={webhook_404}", "--wait", "--timeout", "90")
    assert_one_line_error(result, 1, "failed:", "404 Not Found", "For more information check")


# --- dlq list at 100 columns ----------------------------------------------------------------


def dead_letter_summaries() -> list[dict[str, Any]]:
    error = str(http_404_error())
    return [
        {"id": str(uuid.uuid4()), "queue": "executador_webhook", "reason": "delivery_limit",
         "task": "executador_webhook", "correlation_id": str(uuid.uuid4()), "attempts": 5,
         "last_error": f"HTTPStatusError: {error}", "age_seconds": 30 * 3600.0},
        {"id": str(uuid.uuid4()), "queue": "escavador_youtube", "reason": "failed",
         "task": "escavador_youtube", "correlation_id": str(uuid.uuid4()), "attempts": 3,
         "last_error": "FinalError: [bad] input [/x]", "age_seconds": 75.0},
        {"id": "sha-0123456789abcdef", "queue": "escavador_rss", "reason": "not_json",
         "task": None, "correlation_id": None, "attempts": None, "last_error": "",
         "age_seconds": None},
    ]


class FakeLetter:
    def __init__(self, summary: dict[str, Any]) -> None:
        self._summary = summary

    def summary(self) -> dict[str, Any]:
        return self._summary


def test_dlq_list_reads_at_100_columns_with_every_id_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.cli import dlq as dlq_cli

    summaries = dead_letter_summaries()
    screen = io.StringIO()
    monkeypatch.setattr(dlq_cli, "console", Console(file=screen, width=100, soft_wrap=True))
    monkeypatch.setattr(dlq_cli.dlq, "counts", lambda queue=None: {
        "executador_webhook.dlq": 1, "escavador_youtube.dlq": 1, "escavador_rss.dlq": 1})
    monkeypatch.setattr(dlq_cli.dlq, "list_dead_letters", lambda queue=None, limit=0: [
        FakeLetter(summary) for summary in summaries])
    result = CliRunner().invoke(dlq_cli.dlq_group, ["list"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = screen.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 100, screen.getvalue()
    for summary in summaries:
        for key in ("id", "correlation_id"):
            if summary[key]:
                assert any(summary[key] in line for line in lines), (key, screen.getvalue())
        assert any(summary["queue"] in line and summary["reason"] in line and
                   summary["id"] in line for line in lines), screen.getvalue()
    shown = screen.getvalue()
    assert "404 Not Found" in shown and "FinalError: [bad] input [/x]" in shown


def test_dlq_list_piped_stays_whole_and_json_keeps_everything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.cli import dlq as dlq_cli

    summaries = dead_letter_summaries()
    monkeypatch.setattr(dlq_cli.dlq, "counts", lambda queue=None: {"escavador_rss.dlq": 3})
    monkeypatch.setattr(dlq_cli.dlq, "list_dead_letters", lambda queue=None, limit=0: [
        FakeLetter(summary) for summary in summaries])
    result = CliRunner().invoke(dlq_cli.dlq_group, ["list", "--json"], catch_exceptions=False)
    assert json.loads(result.stdout)["entries"] == summaries


# --- the broker refusing the login ----------------------------------------------------------


@pytest.mark.broker
def test_a_broker_refusing_the_login_is_one_line_with_exit_code_2(
        on_broker: BrokerUnderTest) -> None:
    """RabbitMQ's ACCESS_REFUSED and Redis's failed AUTH are configuration, not an outage.
    (The suite's NATS has no authentication: any credentials are accepted there.)"""
    rest = on_broker.url.partition("://")[2]
    host = rest.rsplit("@", 1)[-1]
    url = {"amqp": f"amqp://guest:wrongpass@{host}",
           "redis-streams": f"redis-streams://nobody:wrongpass@{host}"}.get(on_broker.name)
    if url is None:
        assert on_broker.name == "nats"
        return
    result, took = timed_cli(worker_env(url), "dlq", "list")
    assert_one_line_error(result, 2, "refused the login",
                          "fix the credentials in ORCHESTRATOR_BROKER_URL")
    assert "wrongpass" not in result.stderr + result.stdout
    assert took < BOUND, f"gave up after {took:.1f} s"
