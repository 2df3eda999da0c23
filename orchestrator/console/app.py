"""The console's pages and forms (Tornado): routes, the login gate, confirmations, errors.

Every page but ``/login`` and ``/healthcheck`` needs the signed session cookie (a GET without
it goes to the login page; a POST gets 403); every POST carries Tornado's XSRF token; replay
and purge are two steps, a page that says what will happen and a form that must be confirmed
(a checkbox for one dead letter, the queue's name typed for a whole queue). Work that touches
the broker runs on one worker thread (:mod:`orchestrator.console.operations`), one operation
at a time, so a slow broker slows the console without blocking its loop. Every template
value is HTML-escaped by Tornado; dead-letter parts are made printable and bounded first
(:mod:`orchestrator.console.render`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import tornado.web

from orchestrator.console import operations, render
from orchestrator.console.auth import SESSION_COOKIE, SESSION_HOURS, Credentials, safe_next
from orchestrator.console.errors import explain

HERE = Path(__file__).resolve().parent
LOGIN_FAILURE_DELAY = 1.0
"""Seconds a wrong password waits for its answer: guessing through the form is slow."""
MAX_ID_CHARS = 200
"""Longer ids and correlation ids typed into the console are refused, not looked up."""

log = logging.getLogger("orchestrator.console")
T = TypeVar("T")

SECURITY_HEADERS = {
    # No script, no frames, no foreign resource: a dead letter's bytes cannot run here.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class BadInput(ValueError):
    """A form or query value the console refuses (400), with the reason."""


class Page(tornado.web.RequestHandler):
    """What every console page shares: the session, the worker thread, the error page."""

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)

    def get_current_user(self) -> str | None:
        value = self.get_signed_cookie(SESSION_COOKIE, max_age_days=SESSION_HOURS / 24)
        return value.decode() if value else None

    @property
    def credentials(self) -> Credentials:
        credentials: Credentials = self.settings["credentials"]
        return credentials

    async def blocking(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``work(*args, **kwargs)`` on the console's worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.settings["executor"],
                                          functools.partial(work, *args, **kwargs))

    def text_argument(self, name: str, required: bool = False) -> str | None:
        value = (self.get_argument(name, "") or "").strip()
        if not value:
            if required:
                raise BadInput(f"{name} is missing")
            return None
        if len(value) > MAX_ID_CHARS:
            raise BadInput(f"{name} is longer than {MAX_ID_CHARS} characters")
        return value

    def render_page(self, template: str, status: int = 200, **values: Any) -> None:
        self.set_status(status)
        values.setdefault("correlation_id", "")
        self.render(template, render=render, **values)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        if isinstance(exc, BadInput):
            status, title, message = 400, "Bad request", str(exc)
        elif isinstance(exc, tornado.web.HTTPError) or exc is None:
            status, title = status_code, self._reason
            message = (exc.log_message if isinstance(exc, tornado.web.HTTPError)
                       and exc.log_message else self._reason)
            if status_code == 403 and "_xsrf" in (message or ""):
                message = "the form had expired or came from elsewhere: reload the page and " \
                          "try again"
        else:
            error = explain(exc)
            status, title, message = error.status, error.title, error.message
        self.clear()
        self.set_default_headers()
        self.render_page("error.html", status=status, title=title, message=message,
                         code=status)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if value is not None and not isinstance(value, BadInput | tornado.web.HTTPError) \
                and explain(value).expected:
            log.warning("%s %s: %s", self.request.method, self.request.path,
                        explain(value).message)
            return
        super().log_exception(typ, value, tb)


class HealthHandler(tornado.web.RequestHandler):
    """``OK`` for healthchecks and dev mode's readiness (says nothing about the broker)."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write("OK")


class LoginHandler(Page):
    def get(self) -> None:
        if self.current_user:
            self.redirect(safe_next(self.get_argument("next", None)))
            return
        self.render_page("login.html", error=None, next=safe_next(self.get_argument("next", None)))

    async def post(self) -> None:
        user = self.get_body_argument("user", "")
        password = self.get_body_argument("password", "")
        target = safe_next(self.get_body_argument("next", None))
        if not self.credentials.accept(user, password):
            log.warning("refused a login for user %r from %s", user[:MAX_ID_CHARS],
                        self.request.remote_ip)
            await asyncio.sleep(LOGIN_FAILURE_DELAY)
            self.render_page("login.html", status=403, error="wrong user or password",
                             next=target)
            return
        self.set_signed_cookie(SESSION_COOKIE, self.credentials.user, expires_days=None,
                               httponly=True, samesite="Strict")
        self.redirect(target)


class LogoutHandler(Page):
    def post(self) -> None:
        self.clear_cookie(SESSION_COOKIE)
        self.redirect("/login")


class DeadLettersHandler(Page):
    @tornado.web.authenticated
    async def get(self) -> None:
        queue = self.text_argument("queue")
        reason = self.text_argument("reason")
        found = await self.blocking(operations.overview, queue, reason)
        self.render_page("dead_letters.html", overview=found)


class LetterHandler(Page):
    @tornado.web.authenticated
    async def get(self) -> None:
        letter_id = self.text_argument("id", required=True)
        queue = self.text_argument("queue")
        found = await self.blocking(operations.letter, letter_id, queue)
        self.render_page("dead_letter.html", letter=found, summary=found.summary())


class ReplayOneHandler(Page):
    """Replay one dead letter: a confirmation page, then the confirmed form."""

    @tornado.web.authenticated
    async def get(self) -> None:
        letter_id = self.text_argument("id", required=True)
        queue = self.text_argument("queue")
        found = await self.blocking(operations.letter, letter_id, queue)
        self.render_page("confirm.html", action="replay_one", summary=found.summary(),
                         queue=found.queue, error=None)

    @tornado.web.authenticated
    async def post(self) -> None:
        letter_id = self.text_argument("id", required=True)
        queue = self.text_argument("queue")
        if self.get_body_argument("confirm", "") != "yes":
            found = await self.blocking(operations.letter, letter_id, queue)
            self.render_page("confirm.html", status=400, action="replay_one",
                             summary=found.summary(), queue=found.queue,
                             error="tick the box to confirm the replay")
            return
        moved = await self.blocking(operations.replay_one, letter_id, queue)
        log.info("%s replayed dead letter %s", self.current_user, letter_id)
        self.render_page("done.html", action="replay", moved=moved, purged=None, queue=queue)


class QueueActionHandler(Page):
    """Replay or purge a whole queue's DLQ: the queue's name must be typed to confirm."""

    action = "replay_all"

    @tornado.web.authenticated
    async def get(self) -> None:
        queue = await self.blocking(operations.queue_of,
                                    self.text_argument("queue", required=True))
        counts = await self.blocking(operations.waiting, queue)
        self.render_page("confirm.html", action=self.action, summary=None, queue=queue,
                         count=counts, error=None)

    @tornado.web.authenticated
    async def post(self) -> None:
        queue = await self.blocking(operations.queue_of,
                                    self.text_argument("queue", required=True))
        if self.get_body_argument("confirm_queue", "").strip() != queue:
            counts = await self.blocking(operations.waiting, queue)
            self.render_page("confirm.html", status=400, action=self.action, summary=None,
                             queue=queue, count=counts,
                             error=f"type the queue's name, {queue}, to confirm")
            return
        if self.action == "purge":
            purged = await self.blocking(operations.purge, queue)
            log.info("%s purged %s", self.current_user, purged)
            self.render_page("done.html", action="purge", moved=[], purged=purged, queue=queue)
        else:
            moved = await self.blocking(operations.replay_all, queue)
            log.info("%s replayed %d dead letter(s) of %s", self.current_user, len(moved), queue)
            self.render_page("done.html", action="replay", moved=moved, purged=None,
                             queue=queue)


class PurgeHandler(QueueActionHandler):
    action = "purge"


class TraceHandler(Page):
    @tornado.web.authenticated
    async def get(self) -> None:
        correlation_id = self.text_argument("correlation_id")
        found = None
        if correlation_id:
            found = await self.blocking(operations.trace, correlation_id)
        self.render_page("trace.html", correlation_id=correlation_id or "", trace=found)


class NotFoundHandler(Page):
    def prepare(self) -> None:
        raise tornado.web.HTTPError(404, "no such page")


def make_app(credentials: Credentials, cookie_secret: str,
             executor: ThreadPoolExecutor | None = None) -> tornado.web.Application:
    """The console's Tornado application (listening is the caller's)."""
    return tornado.web.Application(
        [
            (r"/healthcheck", HealthHandler),
            (r"/login", LoginHandler),
            (r"/logout", LogoutHandler),
            (r"/", DeadLettersHandler),
            (r"/letter", LetterHandler),
            (r"/letter/replay", ReplayOneHandler),
            (r"/queue/replay", QueueActionHandler),
            (r"/queue/purge", PurgeHandler),
            (r"/trace", TraceHandler),
        ],
        default_handler_class=NotFoundHandler,
        template_path=str(HERE / "templates"),
        static_path=str(HERE / "static"),
        login_url="/login",
        cookie_secret=cookie_secret,
        xsrf_cookies=True,
        xsrf_cookie_kwargs={"httponly": True, "samesite": "Strict"},
        autoescape="xhtml_escape",
        compress_response=True,
        credentials=credentials,
        executor=executor or ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="console-broker"),
    )
