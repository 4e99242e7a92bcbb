"""Help that teaches: every command says what it does with an example, every option has a
description, and a flag shows no value placeholder."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from whisperq.cli import app

runner = CliRunner()
# internal: systemd runs it on a worker instance, nobody types it
NO_EXAMPLE_NEEDED = {("mark-unhealthy",)}


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = dict(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_option_is_described_and_flags_take_no_placeholder(path):
    command = COMMANDS[path]
    options = [p for p in command.params if p.param_type_name == "option"]
    assert [p.opts[0] for p in options if not p.help] == []
    shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "160"})
    assert shown.exit_code == 0
    assert "<bool>" not in shown.output
    for flag in (p for p in options if p.is_flag):
        line = next(line for line in shown.output.splitlines() if flag.opts[0] + " " in line)
        assert "<" not in line.split(flag.opts[0], 1)[1].split("  ")[0], line


@pytest.mark.parametrize("path", sorted(set(COMMANDS) - NO_EXAMPLE_NEEDED), ids=" ".join)
def test_every_command_shows_an_example_of_itself(path):
    shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    example = next(line for line in shown.output.splitlines() if "Example:" in line)
    assert f"whisperq {' '.join(path)}" in example
