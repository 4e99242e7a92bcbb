"""`whisperq config ...`: the CLI's configuration file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from whisperq.cli.app import config_app, err
from whisperq.settings import load_settings
from whisperq.stacks import from_stack as stack_config
from whisperq.stacks import local as local_stack


@config_app.command("from-stack")
def config_from_stack(
    stack: Annotated[
        str | None, typer.Argument(help="Pulumi stack (default: the selected one).")
    ] = None,
    project_dir: Annotated[Path, typer.Option("--dir", help="The Pulumi project folder.")] = Path(
        "infra_pulumi"
    ),
    outputs_file: Annotated[
        Path | None,
        typer.Option("--outputs", help="Read `pulumi stack output --json` from this file instead."),
    ] = None,
) -> None:
    """Write bucket, queues and region from `pulumi up`'s outputs into the config file,
    so `whisperq submit` needs nothing else.

    Example: `whisperq config from-stack dev` (or `--outputs outputs.json`)
    """
    settings = load_settings()
    if outputs_file is not None:
        outputs = stack_config.read_outputs_file(outputs_file)
    else:
        outputs = stack_config.read_stack_outputs(stack, project_dir)
    values = stack_config.settings_from_outputs(outputs)
    stack_config.write_config(settings.config_file, values)
    err.print(f"Wrote {', '.join(values)} to {settings.config_file}", highlight=False)
    if local_stack.read_state(settings) is not None:
        err.print("The local stack is up and takes precedence: `whisperq local down` to use AWS.")
