"""The sample steps against a real local HTTP server and a real data directory (no broker).

Each step's function is called directly (``task.step_spec.function``) with a hand-built
:class:`StepContext`, so these tests cover the steps' own behaviour: parsing, error
classification, the once-only file write and the webhook's headers.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from orchestrator.envelope import Envelope, EventType
from orchestrator.failures.errors import FinalError, is_retryable
from orchestrator.settings import Settings
from orchestrator.steps import StepContext
from tasks.escavadores.rss import coletar_rss
from tasks.escavadores.youtube import coletar_youtube
from tasks.executadores.arquivo import gravar_arquivo
from tasks.executadores.webhook import enviar_webhook

FEEDS = Path(__file__).parent / "feeds"
CHANNEL_ID = "UCabcdefghijklmnopqrstuv"


# --------------------------------------------------------------------------- local server


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class LocalServer:
    base_url: str
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def posts(self) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == "POST"]


def _make_handler(server_state: LocalServer) -> type[BaseHTTPRequestHandler]:
    youtube_xml = (FEEDS / "youtube.xml").read_bytes()
    rss_xml = (FEEDS / "rss.xml").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _record(self, body: bytes) -> None:
            with server_state.lock:
                server_state.requests.append(
                    Recorded(self.command, self.path, dict(self.headers.items()), body)
                )

        def _status_route(self, path: str) -> bool:
            parts = path.strip("/").split("/")
            if len(parts) >= 2 and parts[0] == "status":
                code = int(parts[1])
                self._send(code, f"status {code}".encode(), "text/plain")
                return True
            return False

        def do_GET(self) -> None:
            self._record(b"")
            url = urlsplit(self.path)
            if self._status_route(url.path):
                return
            if url.path == "/feeds/videos.xml":
                if parse_qs(url.query).get("channel_id") != [CHANNEL_ID]:
                    self._send(404, b"unknown channel", "text/plain")
                    return
                self._send(200, youtube_xml, "application/atom+xml; charset=UTF-8")
            elif url.path == "/rss.xml":
                self._send(200, rss_xml, "application/rss+xml")
            elif url.path == "/rss-with-cookie":
                self.send_response(200)
                self.send_header("Set-Cookie", "visitor=1; Path=/")
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("Content-Length", str(len(rss_xml)))
                self.end_headers()
                self.wfile.write(rss_xml)
            elif url.path == "/redirect-rss":
                self.send_response(301)
                self.send_header("Location", "/rss.xml")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif url.path == "/notafeed":
                self._send(200, b"<<< this is not xml at all", "text/plain")
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            self._record(body)
            path = urlsplit(self.path).path
            if self._status_route(path):
                return
            if path == "/hook":
                self._send(200, b'{"ok": true, "id": 7}', "application/json")
            elif path == "/hook-text":
                self._send(202, b"x" * 5000, "text/plain")
            else:
                self._send(404, b"not found", "text/plain")

    return Handler


@pytest.fixture(scope="module")
def http_server() -> Iterator[LocalServer]:
    state = LocalServer(base_url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server(http_server: LocalServer) -> LocalServer:
    with http_server.lock:
        http_server.requests.clear()
    return http_server


@pytest.fixture
def settings(server: LocalServer, tmp_path: Path) -> Settings:
    return Settings(
        youtube_base_url=server.base_url,
        data_dir=tmp_path,
        webhook_url=None,
        http_timeout=5.0,
    )


def make_ctx(
    settings: Settings,
    step: str,
    inputs: list[Envelope],
    options: dict[str, Any] | None = None,
) -> StepContext:
    correlation_id = str(inputs[0].correlation_id)
    return StepContext(
        correlation_id=correlation_id,
        step=step,
        task_id=str(uuid.uuid4()),
        attempt=1,
        inputs=tuple(inputs),
        options=options or {},
        idempotency_key=f"{correlation_id}:{step}",
        settings=settings,
        logger=logging.getLogger("tests.sample_steps"),
    )


def run_escavador(task: Any, settings: Settings, payload: dict[str, Any]) -> dict[str, Any]:
    envelope = Envelope.new(EventType.INICIAR_COLETA, payload)
    ctx = make_ctx(settings, task.name, [envelope])
    result: dict[str, Any] = task.step_spec.function(dict(envelope.payload), ctx)
    return result


def coleta(correlation_id: str | None = None, **payload: Any) -> Envelope:
    return Envelope.new(
        EventType.RESULTADO_COLETA,
        {"fonte": "rss", "items": [], "count": 0, **payload},
        correlation_id=correlation_id,
    )


def run_executador(
    task: Any,
    settings: Settings,
    inputs: list[Envelope],
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ctx = make_ctx(settings, task.name, inputs, options)
    payload = (
        dict(inputs[0].payload)
        if len(inputs) == 1
        else {"resultados": [e.to_dict() for e in inputs]}
    )
    result: dict[str, Any] = task.step_spec.function(payload, ctx)
    return result


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --------------------------------------------------------------------------- registration


@pytest.mark.parametrize(
    ("task", "name"),
    [
        (coletar_youtube, "escavador_youtube"),
        (coletar_rss, "escavador_rss"),
        (gravar_arquivo, "executador_arquivo"),
        (enviar_webhook, "executador_webhook"),
    ],
)
def test_steps_are_registered_under_their_queue_names(task: Any, name: str) -> None:
    assert task.name == name
    assert task.step_spec.queue == name
    assert callable(task.step_spec.function)


# --------------------------------------------------------------------------- youtube


def test_youtube_parses_the_channel_feed(server: LocalServer, settings: Settings) -> None:
    result = run_escavador(coletar_youtube, settings, {"channel_id": CHANNEL_ID})

    assert result["fonte"] == "youtube"
    assert result["channel_id"] == CHANNEL_ID
    assert result["channel_title"] == "Canal de Teste"
    assert result["feed_url"] == (f"{server.base_url}/feeds/videos.xml?channel_id={CHANNEL_ID}")
    assert result["count"] == 2
    assert result["items"] == [
        {
            "id": "vid00000001",
            "title": "Primeiro vídeo",
            "link": "https://www.youtube.com/watch?v=vid00000001",
            "published": "2025-10-14T12:00:00Z",
        },
        {
            "id": "vid00000002",
            "title": "Segundo vídeo",
            "link": "https://www.youtube.com/watch?v=vid00000002",
            "published": "2025-10-13T12:30:15Z",  # -03:00 converted to UTC
        },
    ]
    json.dumps(result)  # must travel in a JSON message


def test_youtube_payload_base_url_overrides_settings(
    server: LocalServer, settings: Settings
) -> None:
    settings = settings.model_copy(
        update={"youtube_base_url": f"http://127.0.0.1:{refused_port()}"}
    )
    result = run_escavador(
        coletar_youtube, settings, {"channel_id": CHANNEL_ID, "base_url": server.base_url}
    )
    assert result["count"] == 2
    assert result["feed_url"].startswith(server.base_url)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"channel_id": ""},
        {"channel_id": 42},
        {"channel_id": "not-a-channel"},
        {"channel_id": "UC../../etc/passwd123456"},
        {"channel_id": CHANNEL_ID, "base_url": "ftp://example.org"},
        {"channel_id": CHANNEL_ID, "limit": -1},
    ],
)
def test_youtube_bad_payload_is_final(
    server: LocalServer, settings: Settings, payload: dict[str, Any]
) -> None:
    with pytest.raises(FinalError) as info:
        run_escavador(coletar_youtube, settings, payload)
    assert not is_retryable(info.value)
    assert server.requests == []  # refused before any request


def test_youtube_server_error_is_retryable(server: LocalServer, settings: Settings) -> None:
    payload = {"channel_id": CHANNEL_ID, "base_url": f"{server.base_url}/status/500"}
    with pytest.raises(httpx.HTTPStatusError) as info:
        run_escavador(coletar_youtube, settings, payload)
    assert info.value.response.status_code == 500
    assert is_retryable(info.value)


def test_youtube_unknown_channel_404_is_final(settings: Settings) -> None:
    other = "UC" + "z" * 22
    with pytest.raises(httpx.HTTPStatusError) as info:
        run_escavador(coletar_youtube, settings, {"channel_id": other})
    assert info.value.response.status_code == 404
    assert not is_retryable(info.value)


# --------------------------------------------------------------------------- rss


def test_rss_parses_items(server: LocalServer, settings: Settings) -> None:
    url = f"{server.base_url}/rss.xml"
    result = run_escavador(coletar_rss, settings, {"url": url})

    assert result["fonte"] == "rss"
    assert result["feed_url"] == url
    assert result["feed_title"] == "Blog de Exemplo"
    assert result["count"] == 3
    assert [item["id"] for item in result["items"]] == [
        "post-1",
        "post-2",
        "https://blog.example.org/posts/3",  # no guid: the link identifies the item
    ]
    assert [item["title"] for item in result["items"]] == [
        "Post um",
        "Post dois",
        "Post três (sem guid)",
    ]
    assert result["items"][0]["link"] == "https://blog.example.org/posts/1"
    assert [item["published"] for item in result["items"]] == [
        "2025-10-14T12:00:00Z",
        "2025-10-13T11:15:30Z",
        "2025-10-12T00:00:00Z",
    ]


def test_rss_limit_caps_items(server: LocalServer, settings: Settings) -> None:
    result = run_escavador(coletar_rss, settings, {"url": f"{server.base_url}/rss.xml", "limit": 2})
    assert result["count"] == 2
    assert [item["id"] for item in result["items"]] == ["post-1", "post-2"]


def test_rss_reads_an_atom_feed_and_follows_redirects(
    server: LocalServer, settings: Settings
) -> None:
    atom_url = f"{server.base_url}/feeds/videos.xml?channel_id={CHANNEL_ID}"
    atom = run_escavador(coletar_rss, settings, {"url": atom_url})
    assert atom["feed_title"] == "Canal de Teste"
    assert atom["items"][0]["id"] == "yt:video:vid00000001"  # generic: the Atom entry id

    redirected = run_escavador(coletar_rss, settings, {"url": f"{server.base_url}/redirect-rss"})
    assert redirected["count"] == 3


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"url": ""},
        {"url": "ftp://example.org/feed"},
        {"url": "file:///etc/passwd"},
        {"url": "not a url"},
        {"url": "https://example.org/feed", "limit": "10"},
        {"url": "https://example.org/feed", "limit": True},
    ],
)
def test_rss_bad_payload_is_final(
    server: LocalServer, settings: Settings, payload: dict[str, Any]
) -> None:
    with pytest.raises(FinalError):
        run_escavador(coletar_rss, settings, payload)
    assert server.requests == []


def test_rss_body_that_is_not_a_feed_is_final(server: LocalServer, settings: Settings) -> None:
    with pytest.raises(FinalError, match="parseable RSS/Atom feed"):
        run_escavador(coletar_rss, settings, {"url": f"{server.base_url}/notafeed"})


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (404, False), (403, False)]
)
def test_rss_http_errors_are_classified_by_status(
    server: LocalServer, settings: Settings, status: int, retryable: bool
) -> None:
    with pytest.raises(httpx.HTTPStatusError) as info:
        run_escavador(coletar_rss, settings, {"url": f"{server.base_url}/status/{status}"})
    assert info.value.response.status_code == status
    assert is_retryable(info.value) is retryable


def test_rss_connection_refused_is_retryable(settings: Settings) -> None:
    url = f"http://127.0.0.1:{refused_port()}/rss.xml"
    with pytest.raises(httpx.TransportError) as info:
        run_escavador(coletar_rss, settings, {"url": url})
    assert is_retryable(info.value)


# --------------------------------------------------------------------------- arquivo


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_arquivo_writes_one_line_per_pipeline(settings: Settings, tmp_path: Path) -> None:
    envelope = coleta(items=[{"id": "a", "title": "ção"}], count=1)

    first = run_executador(gravar_arquivo, settings, [envelope])
    second = run_executador(gravar_arquivo, settings, [envelope])

    path = tmp_path / "arquivo" / "resultados.jsonl"
    assert first == {"arquivo": str(path), "written": True, "line_count_for_pipeline": 1}
    assert second == {"arquivo": str(path), "written": False, "line_count_for_pipeline": 1}
    lines = read_lines(path)
    assert len(lines) == 1
    line = lines[0]
    assert line["correlation_id"] == str(envelope.correlation_id)
    assert line["step"] == "executador_arquivo"
    assert line["written_at"].endswith("Z")
    assert line["entradas"] == [envelope.to_dict()]


def test_arquivo_two_pipelines_two_lines(settings: Settings, tmp_path: Path) -> None:
    one, two = coleta(), coleta()
    run_executador(gravar_arquivo, settings, [one])
    run_executador(gravar_arquivo, settings, [two])
    run_executador(gravar_arquivo, settings, [one])

    lines = read_lines(tmp_path / "arquivo" / "resultados.jsonl")
    assert [line["correlation_id"] for line in lines] == [
        str(one.correlation_id),
        str(two.correlation_id),
    ]


def test_arquivo_chord_inputs_go_in_one_line(settings: Settings, tmp_path: Path) -> None:
    correlation_id = str(uuid.uuid4())
    inputs = [coleta(correlation_id, fonte="rss"), coleta(correlation_id, fonte="youtube")]
    result = run_executador(gravar_arquivo, settings, inputs)

    assert result["written"] is True
    lines = read_lines(tmp_path / "arquivo" / "resultados.jsonl")
    assert len(lines) == 1
    assert lines[0]["entradas"] == [e.to_dict() for e in inputs]


def test_arquivo_concurrent_calls_write_once(settings: Settings, tmp_path: Path) -> None:
    envelope = coleta()
    barrier = threading.Barrier(8)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=5)
            results.append(run_executador(gravar_arquivo, settings, [envelope]))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert errors == []
    assert sorted(r["written"] for r in results) == [False] * 7 + [True]
    assert len(read_lines(tmp_path / "arquivo" / "resultados.jsonl")) == 1


def test_arquivo_custom_relative_path(settings: Settings, tmp_path: Path) -> None:
    result = run_executador(gravar_arquivo, settings, [coleta()], {"path": "outro/saida.jsonl"})
    assert result["arquivo"] == str(tmp_path / "outro" / "saida.jsonl")
    assert len(read_lines(tmp_path / "outro" / "saida.jsonl")) == 1


def test_arquivo_survives_a_torn_last_line(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "arquivo" / "resultados.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"correlation_id": "x", "st')  # a crash mid-write, no newline
    envelope = coleta()

    assert run_executador(gravar_arquivo, settings, [envelope])["written"] is True
    assert run_executador(gravar_arquivo, settings, [envelope])["written"] is False
    raw = path.read_text("utf-8").splitlines()
    assert len(raw) == 2
    assert json.loads(raw[1])["correlation_id"] == str(envelope.correlation_id)


@pytest.mark.parametrize("bad_path", ["../x", "a/../../x", "/tmp/x", "", ".", 42])
def test_arquivo_refuses_paths_outside_data_dir(
    settings: Settings, tmp_path: Path, bad_path: Any
) -> None:
    with pytest.raises(FinalError):
        run_executador(gravar_arquivo, settings, [coleta()], {"path": bad_path})
    assert not (tmp_path.parent / "x").exists()


# --------------------------------------------------------------------------- webhook


def test_webhook_posts_the_envelope_with_headers(server: LocalServer, settings: Settings) -> None:
    envelope = coleta(items=[{"id": "1"}], count=1)
    url = f"{server.base_url}/hook"
    result = run_executador(enviar_webhook, settings, [envelope], {"url": url})

    assert result == {"url": url, "status_code": 200, "response": {"ok": True, "id": 7}}
    [post] = server.posts()
    assert post.path == "/hook"
    headers = {k.lower(): v for k, v in post.headers.items()}
    assert headers["x-correlation-id"] == str(envelope.correlation_id)
    assert headers["idempotency-key"] == f"{envelope.correlation_id}:executador_webhook"
    assert headers["content-type"] == "application/json"
    assert json.loads(post.body) == envelope.to_dict()


def test_webhook_posts_a_list_for_several_inputs(server: LocalServer, settings: Settings) -> None:
    correlation_id = str(uuid.uuid4())
    inputs = [coleta(correlation_id, fonte="rss"), coleta(correlation_id, fonte="youtube")]
    run_executador(enviar_webhook, settings, inputs, {"url": f"{server.base_url}/hook"})

    [post] = server.posts()
    assert json.loads(post.body) == [e.to_dict() for e in inputs]


def test_webhook_falls_back_to_settings_url_and_truncates_text(
    server: LocalServer, settings: Settings
) -> None:
    settings = settings.model_copy(update={"webhook_url": f"{server.base_url}/hook-text"})
    result = run_executador(enviar_webhook, settings, [coleta()])

    assert result["status_code"] == 202
    assert result["response"] == "x" * 1000
    assert len(server.posts()) == 1


@pytest.mark.parametrize(
    "options", [{}, {"url": ""}, {"url": "ftp://example.org/hook"}, {"url": "/hook"}, {"url": 5}]
)
def test_webhook_without_a_usable_url_is_final(
    server: LocalServer, settings: Settings, options: dict[str, Any]
) -> None:
    with pytest.raises(FinalError):
        run_executador(enviar_webhook, settings, [coleta()], options)
    assert server.posts() == []


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (404, False)])
def test_webhook_http_errors_are_classified(
    server: LocalServer, settings: Settings, status: int, retryable: bool
) -> None:
    options = {"url": f"{server.base_url}/status/{status}"}
    with pytest.raises(httpx.HTTPStatusError) as info:
        run_executador(enviar_webhook, settings, [coleta()], options)
    assert is_retryable(info.value) is retryable


# --------------------------------------------------------------------------- the HTTP client


def test_the_steps_share_one_client_per_process_that_keeps_no_cookies(
    server: LocalServer, settings: Settings
) -> None:
    """Making a client costs more CPU than the request (an SSL context), so the steps keep
    one per process, for every thread; and a site's cookie does not follow the next step."""
    from tasks.http_client import shared_client

    from_a_thread: list[httpx.Client] = []
    thread = threading.Thread(target=lambda: from_a_thread.append(shared_client()))
    thread.start()
    thread.join()
    assert from_a_thread == [shared_client()]
    url = f"{server.base_url}/rss-with-cookie"
    for _ in range(2):
        assert run_escavador(coletar_rss, settings, {"url": url})["count"] == 3
    fetches = [request for request in server.requests if request.path == "/rss-with-cookie"]
    assert len(fetches) == 2
    assert "cookie" not in {name.lower() for name in fetches[1].headers}
