"""The Typer app, its consoles, and the one place errors become messages and exit codes.

Commands raise :class:`~whisperq.errors.WhisperqError` (or let boto3's errors and invalid
settings escape); :class:`WhisperqGroup` turns each into one line on stderr and the
error's exit code, for every command and sub-command alike.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)
from rich.console import Console
from typer.core import TyperGroup, TyperOption

from whisperq import __version__
from whisperq.errors import EXIT_ERROR, ConfigError, WhisperqError
from whisperq.settings import Settings, load_settings
from whisperq.stacks import local as local_stack

out = Console()
err = Console(stderr=True)


def print_error(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)


class WhisperqGroup(TyperGroup):
    """Runs a command; whisperq's own errors and AWS's become one line and an exit code."""

    # ctx: typer's vendored click Context, a private class: typed loosely on purpose.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except WhisperqError as error:
            print_error(str(error))
            raise typer.Exit(error.exit_code) from None
        except (BotoCoreError, ClientError) as error:
            print_error(explain_aws_error(error, _target_settings()))
            raise typer.Exit(EXIT_ERROR) from None


# typer 0.29 prints a flag's type as "<bool>" in help, which reads as if the flag took a
# value (`--force <bool>`): a flag shows no type, as before 0.29.
_typed = TyperOption.display_type_rich


def _flag_shows_no_type(self: TyperOption, ctx: Any) -> str | None:
    return None if self.is_flag else _typed(self, ctx)


TyperOption.display_type_rich = _flag_shows_no_type  # type: ignore[method-assign]


# markdown: help paragraphs are re-flowed to the terminal's width (docstrings' own line
# breaks do not show), and `code` reads as code.
_APP_OPTIONS: dict[str, Any] = {
    "no_args_is_help": True,
    "rich_markup_mode": "markdown",
    "cls": WhisperqGroup,
}
app = typer.Typer(
    help="Batch speech-to-text: audio to S3, one job per file on SQS, transcripts back in S3.",
    add_completion=False,
    **_APP_OPTIONS,
)
local_app = typer.Typer(
    help="The embedded local stack: S3 + SQS (moto server) on 127.0.0.1 and worker processes.",
    **_APP_OPTIONS,
)
app.add_typer(local_app, name="local")
config_app = typer.Typer(help="The CLI's configuration file.", **_APP_OPTIONS)
app.add_typer(config_app, name="config")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print as JSON, for scripts.")]


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print ``message`` as an error; the caller raises what this returns."""
    print_error(message)
    return typer.Exit(code)


def settings_for_storage() -> Settings:
    """Settings for a command that talks to the bucket and queue: configured and, when the
    local stack is the target, still running."""
    settings = load_settings()
    settings.require_storage()
    if local_stack.is_stale(settings):
        raise ConfigError(local_stack.MOTO_GONE)
    return settings


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def duration_text(seconds: float) -> str:
    """Seconds, minutes or hours and minutes, whichever reads best."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def _version(value: bool) -> None:
    if value:
        out.print(f"whisperq {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Batch speech-to-text on S3, SQS and spot workers."""


def _target_settings() -> Settings | None:
    """For naming the target in an AWS error; None if the settings themselves are bad."""
    try:
        return load_settings()
    except WhisperqError:
        return None


def explain_aws_error(error: Exception, settings: Settings | None) -> str:
    """One line a person can act on, for the errors S3 and SQS calls end in."""
    target = settings.target if settings else "AWS"
    if isinstance(error, NoCredentialsError):
        return (
            f"No AWS credentials for {target}: set AWS_PROFILE or run `aws configure`, "
            "or use the embedded stack (`whisperq local up`)."
        )
    if isinstance(error, EndpointConnectionError):
        return f"Cannot reach {target} ({error}). Check the network or the endpoint."
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "?")
        message = error.response.get("Error", {}).get("Message", str(error))
        if code == "NoSuchBucket" and settings:
            return f"Bucket {settings.bucket!r} does not exist on {target}."
        if code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist") and settings:
            return f"Queue {settings.queue_url!r} does not exist on {target}."
        return f"{code} from {target}: {message}"
    return f"{type(error).__name__}: {error}"
