"""Who may use the console: one operator account, a signed session cookie, no default password.

The password comes from the environment (``ORCHESTRATOR_CONSOLE_PASSWORD``) or is generated
at start (``orchestrator console --generate-password``, dev mode), never from a default: a
console that can replay and purge dead letters must not open with a password anybody knows.
The session cookie is signed with a secret made per start unless one is configured
(``ORCHESTRATOR_CONSOLE_COOKIE_SECRET``), so a restart signs everybody out, which is the safe
way round.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass, field

PASSWORD_VARIABLE = "ORCHESTRATOR_CONSOLE_PASSWORD"
USER_VARIABLE = "ORCHESTRATOR_CONSOLE_USER"
COOKIE_SECRET_VARIABLE = "ORCHESTRATOR_CONSOLE_COOKIE_SECRET"

DEFAULT_USER = "admin"
SESSION_COOKIE = "orchestrator_console"
SESSION_HOURS = 12
"""How long one login lasts (the signed cookie carries its own timestamp)."""
MIN_PASSWORD_CHARS = 8
"""A shorter password is refused at start: it would fall to guessing through the form."""


class NoPassword(ValueError):
    """The console was asked to start without a password, or with one too short."""


def generate_password() -> str:
    """A password for one run (dev mode, ``--generate-password``): 16 URL-safe characters."""
    return secrets.token_urlsafe(12)


@dataclass(frozen=True)
class Credentials:
    """The one operator account; compared in constant time."""

    user: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.password:
            raise NoPassword(f"the console has no default password: set {PASSWORD_VARIABLE} "
                             "or start it with --generate-password")
        if len(self.password) < MIN_PASSWORD_CHARS:
            raise NoPassword(f"{PASSWORD_VARIABLE} is shorter than {MIN_PASSWORD_CHARS} "
                             "characters")
        if not self.user:
            raise NoPassword("the console user is empty: give --user or "
                             f"{USER_VARIABLE}")

    def accept(self, user: str, password: str) -> bool:
        """True for the right user and password (both compared, always, in constant time)."""
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return user_ok and password_ok


def cookie_secret() -> str:
    """The configured cookie secret, or a new one for this run."""
    return os.environ.get(COOKIE_SECRET_VARIABLE) or secrets.token_urlsafe(32)


def safe_next(target: str | None) -> str:
    """Where to go after the login: a path on this site only (never ``//host`` or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
