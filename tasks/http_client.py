"""The bundled steps' HTTP client: one per process, made on first use.

Making an ``httpx.Client`` loads the CA bundle into a new SSL context, which here costs tens
of milliseconds of CPU, more than the request an escavador or the webhook executador then
makes; one kept client also reuses its connections. It is per process (a client must not
cross a fork: a prefork child makes its own) and shared by the threads or greenlets of that
process (httpx's connection pool takes its own locks). It keeps no cookies, so a step's
request carries nothing an earlier step's site set, as with a client per request.
"""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from orchestrator.per_process import PerProcess


def _client_keeping_no_cookies() -> httpx.Client:
    return httpx.Client(cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])))


_client: PerProcess[httpx.Client] = PerProcess(_client_keeping_no_cookies)


def shared_client() -> httpx.Client:
    """This process's client (timeouts, headers and redirects are set per request)."""
    return _client.get()
