"""The bundled steps' HTTP client: one per process, made on first use.

Making an ``httpx.Client`` loads the CA bundle into a new SSL context, which here costs tens
of milliseconds of CPU, more than the request an escavador or the webhook executador then
makes; one kept client also reuses its connections. It is per process (a client must not
cross a fork: a prefork child makes its own) and shared by the threads or greenlets of that
process (httpx's connection pool takes its own locks). It keeps no cookies, so a step's
request carries nothing an earlier step's site set, as with a client per request.
"""

from __future__ import annotations

import os
import threading
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

_clients: dict[int, httpx.Client] = {}
_lock = threading.Lock()


def shared_client() -> httpx.Client:
    """This process's client (timeouts, headers and redirects are set per request)."""
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        with _lock:
            client = _clients.get(pid)
            if client is None:
                _clients.clear()  # a parent's, inherited across a fork: not this one's
                no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
                client = _clients[pid] = httpx.Client(cookies=no_cookies)
    return client
