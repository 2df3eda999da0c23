"""The console's login rules, and ``orchestrator console`` refusing to start without a password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.console.auth import (
    PASSWORD_VARIABLE,
    Credentials,
    NoPassword,
    generate_password,
    safe_next,
)

ORCHESTRATOR_CLI = str(Path(sys.executable).with_name("orchestrator"))


@pytest.mark.parametrize("password", ["", "short"])
def test_there_is_no_default_nor_a_short_password(password: str) -> None:
    with pytest.raises(NoPassword):
        Credentials("admin", password)


def test_only_the_right_user_and_password_are_accepted() -> None:
    credentials = Credentials("ops", "correct horse")
    assert credentials.accept("ops", "correct horse")
    assert not credentials.accept("ops", "correct hors")
    assert not credentials.accept("admin", "correct horse")
    assert not credentials.accept("", "")
    assert "correct horse" not in repr(credentials)


def test_generated_passwords_differ_and_are_long_enough() -> None:
    first, second = generate_password(), generate_password()
    assert first != second and len(first) >= 16
    Credentials("dev", first)


@pytest.mark.parametrize(("target", "expected"), [
    (None, "/"), ("", "/"), ("/trace?correlation_id=x", "/trace?correlation_id=x"),
    ("//evil.example/", "/"), ("https://evil.example/", "/"), ("/\\evil.example", "/"),
])
def test_after_the_login_only_a_path_on_this_site(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_the_command_refuses_to_start_without_a_password_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_VARIABLE}
    done = subprocess.run([ORCHESTRATOR_CLI, "console", "--port", "1"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and PASSWORD_VARIABLE in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
