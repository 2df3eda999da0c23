"""``orchestrator console`` in a real headless Chromium, over real HTTP, on every broker.

One console process per broker (``orchestrator console``, as an operator starts it), the
shared worker, and Debian's ``chromium`` driven by Playwright (``executable_path``: no browser
download). The operator's path is the issue's: log in, see a dead letter a real failing
pipeline produced, open it, replay it with the confirmation, paste its correlation id and see
the trace show the replay and the pipeline's success. With ``ORCHESTRATOR_SCREENSHOTS=DIR``
the pages are saved there (the README's screenshots: ``docs/console``).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kombu import Exchange, Producer

from orchestrator.celery_app import app
from orchestrator.console.auth import PASSWORD_VARIABLE, generate_password
from orchestrator.correlation import HEADER
from orchestrator.failures import dead_letter_queues as dlq
from orchestrator.pipeline import run_pipeline
from tests.conftest import IN_CI, dead_letters_for
from tests.support.brokers import BrokerUnderTest
from tests.support.http_servers import http_server
from tests.support.net import free_port
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, worker_env

pytestmark = pytest.mark.broker

CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 60
SCREENSHOTS = os.environ.get("ORCHESTRATOR_SCREENSHOTS")
ORCHESTRATOR_CLI = str(Path(shutil.which("orchestrator") or "orchestrator"))
USER = "operator"

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright is in the dev extra: pip install -e '.[dev]'")


@dataclass(frozen=True)
class Console:
    url: str
    password: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="module")
def console(broker: BrokerUnderTest, worker: WorkerProcess, log_dir: Path) -> Iterator[Console]:
    """``orchestrator console`` for this broker, with a password of the run's own."""
    port = free_port()
    password = generate_password()
    env = worker_env(broker.url, {PASSWORD_VARIABLE: password,
                                  "ORCHESTRATOR_CONSOLE_USER": USER})
    log_path = log_dir / f"console-{broker.name}.log"
    with log_path.open("w") as log, http_server(
            [ORCHESTRATOR_CLI, "console", "--port", str(port), "--address", "127.0.0.1"],
            env=env, health_url=f"http://127.0.0.1:{port}/healthcheck", output=log,
            what="orchestrator console", exit_details=lambda: log_path.read_text()):
        yield Console(f"http://127.0.0.1:{port}", password, log_path)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    context.set_default_timeout(TIMEOUT * 1000)
    yield context.new_page()
    context.close()


def log_in(page: Any, console: Console, password: str | None = None) -> None:
    page.goto(console.url + "/login")
    page.fill("#user", USER)
    page.fill("#password", console.password if password is None else password)
    page.click("button[type=submit]")


def screenshot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def reload_until(page: Any, url: str, condition: Callable[[], bool], message: str) -> None:
    """Load ``url`` until ``condition`` holds on the page (the console does not refresh)."""
    def loaded_and_true() -> bool:
        page.goto(url)
        return condition()

    try:
        wait_until(loaded_and_true, timeout=TIMEOUT, interval=0.5, message=message)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the page said:\n{page.inner_text('main')}") from None


@contextmanager
def logged_in_client(console: Console) -> Iterator[httpx.Client]:
    """An HTTP client with the console's session cookie (forms need the XSRF token)."""
    with httpx.Client(base_url=console.url, timeout=TIMEOUT) as client:
        token = xsrf_token(client.get("/login"))
        answer = client.post("/login", data={"_xsrf": token, "user": USER,
                                             "password": console.password, "next": "/"})
        assert answer.status_code == 302, answer.text
        yield client


def xsrf_token(response: httpx.Response) -> str:
    found = re.search(r'name="_xsrf" value="([^"]+)"', response.text)
    assert found, response.text
    return found.group(1)


def failing_pipeline(marker: Path) -> Any:
    """``falha -> eco`` that fails for good until ``marker`` exists; its dead letter."""
    handle = run_pipeline("falha", {"fixed_marker": str(marker)}, execute=["eco"])
    with pytest.raises(Exception, match="not fixed yet"):
        handle.wait(timeout=TIMEOUT)
    wait_until(lambda: dead_letters_for(handle.correlation_id), timeout=TIMEOUT,
               message="the dead letter")
    return handle


# -- logging in ---------------------------------------------------------------------------------

def test_pages_need_a_login_and_a_wrong_password_is_refused(
    console: Console, page: Any, on_broker: object
) -> None:
    page.goto(console.url + "/trace")
    assert page.url.startswith(console.url + "/login?next=%2Ftrace")

    log_in(page, console, password="not-the-password")
    assert "wrong user or password" in page.inner_text("[role=alert]")
    assert "/login" in page.url
    page.goto(console.url + "/")
    assert "/login" in page.url, "a refused login opened no session"

    page.fill("#user", USER)
    page.fill("#password", console.password)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Dead letters')")
    assert page.url == console.url + "/"
    assert USER in page.inner_text("header .user")

    page.click("header .logout button")
    page.wait_for_url(re.compile(r".*/login$"))
    page.goto(console.url + "/")
    assert "/login" in page.url, "logging out ended the session"


def test_forms_need_a_session_and_an_xsrf_token(console: Console, on_broker: object) -> None:
    with httpx.Client(base_url=console.url, timeout=TIMEOUT) as anonymous:
        token = xsrf_token(anonymous.get("/login"))
        refused = anonymous.post("/queue/purge", data={"_xsrf": token, "queue": "falha",
                                                       "confirm_queue": "escavador_falha"})
        assert refused.status_code == 403
    with logged_in_client(console) as client:
        forged = client.post("/queue/purge", data={"queue": "falha",
                                                   "confirm_queue": "escavador_falha"})
        assert forged.status_code == 403, "a POST without the XSRF token is refused"


# -- the operator's path ------------------------------------------------------------------------

def test_see_a_dead_letter_replay_it_and_see_the_pipeline_finish_in_its_trace(
    console: Console, page: Any, worker: WorkerProcess, on_broker: object, tmp_path: Path
) -> None:
    marker = tmp_path / "fixed"
    handle = failing_pipeline(marker)
    correlation_id = handle.correlation_id
    row = f"tr.letter[data-correlation-id='{correlation_id}']"

    log_in(page, console)
    page.wait_for_selector("h1:has-text('Dead letters')")
    reload_until(page, console.url + "/?queue=escavador_falha",
                 lambda: page.locator(row).count() == 1, "the dead letter in the list")
    assert "escavador_falha.dlq" in page.inner_text("table.counts")
    assert "failed" in page.inner_text("table.groups")
    cells = page.locator(row).inner_text()
    assert "failed" in cells and "not fixed yet" in cells
    screenshot(page, "dead_letters")

    page.click(f"{row} td.id a")
    page.wait_for_selector("h1:has-text('Dead letter')")
    details = page.inner_text("table.fields")
    assert correlation_id in details and "FinalError" in details
    assert "not fixed yet" in page.inner_text("pre.traceback")
    assert correlation_id in page.inner_text("pre.body"), "the envelope in the body"
    screenshot(page, "dead_letter")

    # The confirmation is checked by the server, not only by the browser's form.
    [letter] = dead_letters_for(correlation_id)
    with logged_in_client(console) as client:
        confirm_page = client.get("/letter/replay", params={"id": letter.id,
                                                           "queue": "escavador_falha"})
        assert confirm_page.status_code == 200, confirm_page.text
        unconfirmed = client.post("/letter/replay", data={
            "_xsrf": xsrf_token(confirm_page), "id": letter.id, "queue": "escavador_falha"})
        assert unconfirmed.status_code == 400 and "tick the box" in unconfirmed.text
    assert dead_letters_for(correlation_id), "an unconfirmed replay moved nothing"

    marker.write_text("fixed")
    page.click("a.action:has-text('Replay')")
    page.wait_for_selector("h1:has-text('Replay dead letter')")
    page.check("input[name=confirm]")
    page.click("button:has-text('Replay')")
    page.wait_for_selector("h1:has-text('Replayed 1 dead letter')")
    assert correlation_id in page.inner_text("table.letters")

    page.goto(console.url + "/")
    page.fill("#correlation_id", correlation_id)  # pasted into the box every page has
    page.click("header button:has-text('Trace')")
    page.wait_for_selector("h1:has-text('Trace')")

    def finished() -> bool:
        kinds = page.locator("table.timeline td.kind").all_inner_texts()
        return (page.text_content("#outcome") == "succeeded" and "replayed" in kinds
                and page.locator("tr.kind-succeeded:has-text('executador_eco')").count() > 0)

    reload_until(page, page.url, finished, "the trace to show the replay and the success")
    timeline = page.inner_text("table.timeline")
    assert "dead_lettered" in timeline and "escavador_falha" in timeline
    screenshot(page, "trace")

    [final] = handle.wait_replayed(timeout=TIMEOUT)
    assert str(final.correlation_id) == correlation_id
    assert not dead_letters_for(correlation_id)


def test_purging_a_queue_needs_its_name_typed(
    console: Console, page: Any, worker: WorkerProcess, on_broker: object
) -> None:
    handle = run_pipeline("falha", {"mode": "final"})
    with pytest.raises(Exception, match="final failure"):
        handle.wait(timeout=TIMEOUT)
    wait_until(lambda: dead_letters_for(handle.correlation_id), timeout=TIMEOUT,
               message="the dead letter")

    log_in(page, console)
    page.goto(console.url + "/queue/purge?queue=falha")
    page.fill("#confirm_queue", "escavador_eco")
    page.click("button:has-text('Purge')")
    assert "type the queue's name, escavador_falha" in page.inner_text("[role=alert]")
    assert dead_letters_for(handle.correlation_id), "a wrong name purged nothing"

    page.fill("#confirm_queue", "escavador_falha")
    page.click("button:has-text('Purge')")
    page.wait_for_selector("h1:has-text('Purged')")
    assert "escavador_falha.dlq" in page.inner_text("main")
    assert dlq.counts("falha") == {"escavador_falha.dlq": 0}


def test_foreign_bytes_are_shown_as_text_never_run(
    console: Console, page: Any, worker: WorkerProcess, on_broker: object
) -> None:
    marker = str(uuid.uuid4())
    body = b"<script>document.title='owned'</script><img src=x onerror=alert(1)>\xff\xfe\x00!"
    with app.connection_for_write() as connection:
        Producer(connection).publish(
            body, exchange=Exchange("orchestrator", type="topic", durable=True),
            routing_key="escavador_eco", content_type="application/json",
            content_encoding="utf-8",
            headers={"task": "escavador_eco", "id": str(uuid.uuid4()), HEADER: marker})
    [letter] = wait_until(lambda: dead_letters_for(marker), timeout=TIMEOUT,
                          message="the foreign message in the DLQ")

    log_in(page, console)
    page.goto(f"{console.url}/letter?id={letter.id}&queue=escavador_eco")
    page.wait_for_selector("pre.body")
    shown = page.inner_text("pre.body")
    assert "<script>document.title='owned'</script>" in shown
    assert "\\xff\\xfe\\x00!" in shown, "undecodable bytes and NUL written as escapes"
    assert "not UTF-8" in page.inner_text("main")
    assert page.title() != "owned"
    assert page.locator("main script, main img").count() == 0
    assert marker in page.inner_text("pre.headers")


def test_a_broker_that_cannot_be_reached_is_an_error_page(
    page: Any, broker: BrokerUnderTest, log_dir: Path
) -> None:
    port = free_port()
    password = generate_password()
    dead = {"amqp": "amqp://guest:secret-word@127.0.0.1:{}//",
            "redis-streams": "redis-streams://:secret-word@127.0.0.1:{}/0",
            "nats": "nats://127.0.0.1:{}"}[broker.name].format(free_port())
    env = worker_env(dead, {PASSWORD_VARIABLE: password, "ORCHESTRATOR_CONSOLE_USER": USER})
    with http_server([ORCHESTRATOR_CLI, "console", "--port", str(port)], env=env,
                     health_url=f"http://127.0.0.1:{port}/healthcheck",
                     what="orchestrator console on a dead broker"):
        unreachable = Console(f"http://127.0.0.1:{port}", password, log_dir / "unused")
        log_in(page, unreachable)
        page.wait_for_selector("section.failure")
        text = page.inner_text("main")
        assert "cannot reach the broker" in text and "secret-word" not in text
        assert "Traceback" not in page.content()
