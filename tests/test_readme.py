"""The README stays true: its commands exist and its settings table lists every setting."""

from __future__ import annotations

from pathlib import Path

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


def test_every_cli_command_the_readme_shows_exists() -> None:
    runner = CliRunner()
    for command in (["run", "--help"], ["topology", "--help"], ["dev", "--help"],
                    ["dlq", "list", "--help"], ["dlq", "show", "--help"],
                    ["dlq", "replay", "--help"], ["dlq", "purge", "--help"],
                    ["metrics", "--help"], ["console", "--help"]):
        result = runner.invoke(cli, command)
        assert result.exit_code == 0, (command, result.output)
