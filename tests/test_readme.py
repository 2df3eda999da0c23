"""The README stays true: its commands exist and its settings table lists every setting."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    for name in Settings.model_fields:
        assert f"| `ORCHESTRATOR_{name.upper()}` |" in README, name


def test_the_readme_starts_with_the_two_commands() -> None:
    head = README.split("```", 2)[1]
    assert "orchestrator dev --demo" in head
    assert "pytest" in head


def shown_commands() -> set[tuple[str, ...]]:
    """Every ``orchestrator <command> [<word>]`` in the README's code blocks (comments and
    ``celery -A orchestrator …`` aside)."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", README, re.S)
    shown = set()
    for line in "\n".join(blocks).splitlines():
        code = line.split("#", 1)[0]
        for match in re.finditer(r"(?<![\w/.-])(?<!-A )orchestrator ([a-z]+)(?: ([a-z]+)\b)?",
                                 code):
            shown.add(tuple(part for part in match.groups() if part))
    return shown


def test_every_cli_command_the_readme_shows_exists() -> None:
    shown = shown_commands()
    assert {("dev",), ("trace",), ("console",), ("dlq", "replay")} <= shown
    runner = CliRunner()
    for words in sorted(shown):
        command = cli.commands.get(words[0])
        assert command is not None, words
        if isinstance(command, click.Group):  # a group is always shown with its subcommand
            assert len(words) == 2 and words[1] in command.commands, words
        else:
            words = words[:1]  # the next word is an argument (orchestrator run youtube)
        result = runner.invoke(cli, [*words, "--help"])
        assert result.exit_code == 0, (words, result.output)
