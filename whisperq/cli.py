"""The ``whisperq`` command line.

Exit codes: 0 success; 1 an error, or (``wait``) some jobs failed; 2 bad usage, or
(``wait``) the timeout passed first.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import typer
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from whisperq import __version__, keys, local_stack, storage, tracking
from whisperq.progress import ProgressHooks
from whisperq.settings import ConfigError, Settings

app = typer.Typer(
    help="Batch speech-to-text: audio to S3, one job per file on SQS, transcripts back in S3.",
    no_args_is_help=True,
    add_completion=False,
)
local_app = typer.Typer(
    help="The embedded local stack: S3 + SQS (moto server) on 127.0.0.1 and worker processes.",
    no_args_is_help=True,
)
app.add_typer(local_app, name="local")
config_app = typer.Typer(help="The CLI's configuration file.", no_args_is_help=True)
app.add_typer(config_app, name="config")

out = Console()
err = Console(stderr=True)

EXIT_FAILED = 1
EXIT_TIMEOUT = 2


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        settings = Settings()
        settings.require_storage()
    except ConfigError as error:
        raise _fail(str(error)) from None
    if local_stack.is_stale(settings):
        raise _fail(
            "The local stack was started but is no longer running (a reboot?). "
            "Run `whisperq local up` to start it afresh, or `whisperq local down` to go back "
            "to the configured AWS target."
        )
    return settings


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def _version(value: bool) -> None:
    if value:
        out.print(f"whisperq {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Batch speech-to-text on S3, SQS and spot workers."""


# --- submit ---------------------------------------------------------------------------


def _progress() -> Progress:
    """Progress bars on stderr, so stdout stays clean for --json and batch ids."""
    return Progress(
        TextColumn("{task.description:<11}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


class _RichHooks(ProgressHooks):
    """Draws each stage of a library call as its own bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def stage(self, name: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, visible=False)
        self.task = self.progress.add_task(name, total=total)

    def advance(self, amount: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, amount)


@app.command()
def submit(
    paths: list[str] = typer.Argument(
        ..., help="Audio files, directories (searched recursively) or quoted globs."
    ),
    batch: str | None = typer.Option(
        None, "--batch", "-b", help="Batch name (default: a new timestamped id)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Upload and queue files whose content is already in the batch."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Upload audio and queue one transcription job per file; prints the batch id.

    Relative paths are kept (calls/a/x.wav and calls/b/x.wav stay apart). Files whose
    content is already in the batch are skipped unless --force. Inside directories,
    files without an audio extension are skipped and counted.
    """
    from whisperq.submit import SubmitError
    from whisperq.submit import submit as run_submit

    settings = _settings()
    try:
        with _progress() as progress:
            report = run_submit(
                settings, paths, batch=batch, force=force, hooks=_RichHooks(progress)
            )
    except (SubmitError, keys.InvalidKeyError) as error:
        raise _fail(str(error)) from None
    if as_json:
        _print_json(report.as_dict())
        return
    err.print(
        f"Queued {len(report.queued)} file(s), {report.bytes_uploaded / 1e6:.1f} MB, "
        f"{report.audio_seconds / 60:.1f} min of audio on {settings.target}."
    )
    if report.duplicates:
        err.print(f"Skipped {len(report.duplicates)} already in the batch (--force to redo).")
    if report.skipped_non_audio:
        err.print(f"Skipped {report.skipped_non_audio} non-audio file(s) found in directories.")
    out.print(report.batch)


# --- status / wait / results ----------------------------------------------------------


@app.command()
def status(
    batch: str | None = typer.Argument(None, help="One batch (default: every batch)."),
    failed: bool = typer.Option(False, "--failed", help="List failed files with reasons."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Per batch: submitted, done, failed, pending, audio hours done; and the queue."""
    settings = _settings()
    s3 = storage.client(settings, "s3")
    names = [batch] if batch else tracking.list_batches(settings, s3)
    statuses = []
    for name in names:
        found = tracking.batch_status(settings, s3, name)
        if found is None:
            raise _fail(f"No batch named {name!r} on {settings.target}.")
        statuses.append(found)
    queue = storage.queue_counts(settings)
    failures = {
        item.batch: tracking.failure_records(settings, s3, item) if failed else []
        for item in statuses
    }

    if as_json:
        batches = [item.as_dict() for item in statuses]
        if failed:
            for data in batches:
                data["failures"] = [
                    record.model_dump(mode="json") for record in failures[data["batch"]]
                ]
        _print_json({"target": settings.target, "batches": batches, "queue": queue.__dict__})
        return
    table = Table(title=f"whisperq batches on {settings.target}")
    for column in ("batch", "submitted", "done", "failed", "pending", "audio h done"):
        table.add_column(column, justify="left" if column == "batch" else "right")
    for item in statuses:
        table.add_row(
            item.batch,
            str(item.submitted),
            f"[green]{item.done}[/]",
            f"[red]{item.failed}[/]" if item.failed else "0",
            str(item.pending),
            f"{item.audio_hours_done:.2f}",
        )
    out.print(table)
    dead = "n/a" if queue.dead_lettered is None else str(queue.dead_lettered)
    out.print(f"queue: {queue.visible} waiting, {queue.in_flight} in flight, {dead} dead-lettered")
    for name, records in failures.items():
        if records:
            failed_table = Table(title=f"failed in {name}", show_lines=True)
            failed_table.add_column("file")
            failed_table.add_column("reason")
            for record in records:
                failed_table.add_row(record.path, record.reason)
            out.print(failed_table)
    if queue.dead_lettered:
        out.print(
            "Dead-lettered jobs: `whisperq dlq` lists them; `whisperq retry BATCH` re-queues."
        )


@app.command()
def wait(
    batch: str = typer.Argument(..., help="The batch to wait for."),
    timeout: float = typer.Option(
        0, "--timeout", help="Give up after this many seconds (0 = never)."
    ),
    interval: float = typer.Option(5.0, "--interval", min=0.2, help="Seconds between polls."),
) -> None:
    """Show live progress until the batch is finished.

    Exits 0 when every job succeeded, 1 when any failed (naming them), 2 on timeout.
    """
    settings = _settings()
    s3 = storage.client(settings, "s3")
    deadline = time.monotonic() + timeout if timeout > 0 else None
    progress = Progress(
        TextColumn(f"[bold]{batch}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
    )
    with progress:
        task = progress.add_task(batch, total=None, detail="")
        while True:
            current = tracking.batch_status(settings, s3, batch)
            if current is None:
                raise _fail(f"No batch named {batch!r} on {settings.target}.")
            progress.update(
                task,
                total=current.submitted,
                completed=current.done + current.failed,
                detail=f"{current.failed} failed" if current.failed else "",
            )
            if current.finished:
                break
            if deadline is not None and time.monotonic() >= deadline:
                progress.stop()
                err.print(
                    f"Timed out after {timeout:g}s: {current.pending} of {current.submitted} "
                    "still pending."
                )
                raise typer.Exit(EXIT_TIMEOUT)
            time.sleep(interval)
    if current.failed:
        err.print(f"[red]{current.failed} of {current.submitted} failed:[/]")
        for path in current.failed_paths:
            err.print(f"  {path}  (reason in {keys.error_key(batch, path)})", highlight=False)
        raise typer.Exit(EXIT_FAILED)
    err.print(f"[green]All {current.done} done.[/]")


@app.command()
def results(
    batch: str = typer.Argument(..., help="The batch to download."),
    out_dir: Path = typer.Option(Path("transcripts"), "--out", "-o", help="Where to write."),
    formats: str = typer.Option(
        ",".join(keys.RESULT_FORMATS), "--format", "-f", help="Comma-separated: json,srt,vtt,txt."
    ),
) -> None:
    """Download a batch's transcripts, mirroring the submitted relative paths."""
    from whisperq.download import download_results

    chosen = [item.strip() for item in formats.split(",") if item.strip()]
    unknown = sorted(set(chosen) - set(keys.RESULT_FORMATS))
    if unknown or not chosen:
        raise _fail(
            f"Unknown format(s) {unknown}; choose from {', '.join(keys.RESULT_FORMATS)}.", 2
        )
    settings = _settings()
    if tracking.load_manifest(settings, storage.client(settings, "s3"), batch) is None:
        raise _fail(f"No batch named {batch!r} on {settings.target}.")
    with _progress() as progress:
        report = download_results(settings, batch, out_dir, chosen, _RichHooks(progress))
    err.print(f"{len(report.files)} file(s) written under {out_dir}/", highlight=False)
    if report.errors:
        err.print(f"[red]{report.errors} failure record(s) among them (*.error.json).[/]")


@app.command()
def retry(
    batch: str = typer.Argument(..., help="The batch whose failed jobs to run again."),
    as_json: bool = typer.Option(False, "--json", help="Print what was re-queued as JSON."),
) -> None:
    """Re-queue a batch's failed files and its dead-lettered jobs."""
    from whisperq import deadletter
    from whisperq.submit import SubmitError, requeue_failed

    settings = _settings()
    try:
        failed = requeue_failed(settings, batch)
    except SubmitError as error:
        raise _fail(str(error)) from None
    moved = deadletter.redrive(settings, batch)[0] if settings.dlq_url else []
    if as_json:
        dead = [letter.as_dict() for letter in moved]
        _print_json({"batch": batch, "failed": failed, "dead_lettered": dead})
        return
    err.print(
        f"Re-queued {len(failed)} failed file(s) and {len(moved)} dead-lettered job(s) of {batch}."
    )


@app.command()
def dlq(
    redrive: bool = typer.Option(False, "--redrive", help="Move the jobs back to the queue."),
    batch: str | None = typer.Option(None, "--batch", "-b", help="Only this batch's jobs."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Show the dead-letter queue: jobs SQS gave up on after maxReceiveCount deliveries."""
    from whisperq import deadletter

    settings = _settings()
    left = 0
    try:
        if redrive:
            letters, left = deadletter.redrive(settings, batch)
        else:
            letters = [
                letter
                for letter in deadletter.peek(settings)
                if batch is None or (letter.job is not None and letter.job.batch == batch)
            ]
    except ConfigError as error:
        raise _fail(str(error)) from None
    if as_json:
        _print_json({"redriven": redrive, "messages": [letter.as_dict() for letter in letters]})
        return
    if redrive:
        err.print(f"Moved {len(letters)} job(s) back to the queue; {left} other message(s) left.")
        return
    table = Table(title=f"dead-letter queue on {settings.target}")
    for column in ("batch", "file", "deliveries", "note"):
        table.add_column(column)
    for letter in letters:
        job = letter.job
        table.add_row(
            job.batch if job else "?",
            job.path if job else "?",
            str(letter.receive_count),
            letter.problem or "",
        )
    out.print(table)
    if letters:
        err.print("`whisperq dlq --redrive` (or `whisperq retry BATCH`) puts them back.")


# --- worker ---------------------------------------------------------------------------


@app.command()
def worker(
    concurrency: int | None = typer.Option(None, "--concurrency", "-c", help="Pool processes."),
    model: str | None = typer.Option(None, "--model", help="Model name or directory."),
    loglevel: str = typer.Option("INFO", "--loglevel", "-l"),
) -> None:
    """Run a Celery worker in the foreground (what a server's service runs).

    SIGTERM stops it gracefully: no new jobs; the running job may finish within
    WHISPERQ_SHUTDOWN_GRACE_SECONDS, else it goes back to the queue for another worker.
    """
    # billiard reads this when celery is first imported (below): SIGTERM then means
    # Celery's soft shutdown (bounded wait, then hand back), and pool processes ignore it.
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    try:
        from whisperq.engine import ModelError
        from whisperq.worker import run_worker
    except ImportError as error:
        raise _fail(f"{error}. The worker needs: pip install 'whisperq[worker]'") from None
    overrides: dict[str, Any] = {}
    if concurrency:
        overrides["worker_concurrency"] = concurrency
    if model:
        overrides["model"] = model
    settings = _settings()
    try:
        run_worker(settings.model_copy(update=overrides), loglevel=loglevel.upper())
    except ModelError as error:
        raise _fail(str(error)) from None


# --- config ---------------------------------------------------------------------------


@config_app.command("from-stack")
def config_from_stack(
    stack: str | None = typer.Argument(None, help="Pulumi stack (default: the selected one)."),
    project_dir: Path = typer.Option(
        Path("infra_pulumi"), "--dir", help="The Pulumi project folder."
    ),
    outputs_file: Path | None = typer.Option(
        None, "--outputs", help="Read `pulumi stack output --json` from this file instead."
    ),
) -> None:
    """Write bucket, queues and region from `pulumi up`'s outputs into the config file,
    so `whisperq submit` needs nothing else."""
    from whisperq import stack_config

    settings = Settings()
    try:
        if outputs_file is not None:
            outputs = json.loads(outputs_file.read_text(encoding="utf-8"))
        else:
            outputs = stack_config.read_stack_outputs(stack, project_dir)
        values = stack_config.settings_from_outputs(outputs)
    except (stack_config.StackConfigError, OSError, ValueError) as error:
        raise _fail(str(error)) from None
    stack_config.write_config(settings.config_file, values)
    err.print(f"Wrote {', '.join(values)} to {settings.config_file}", highlight=False)
    if local_stack.read_state(settings) is not None:
        err.print("The local stack is up and takes precedence: `whisperq local down` to use AWS.")


# --- local stack ----------------------------------------------------------------------


@local_app.command("up")
def local_up(
    workers: int | None = typer.Option(
        None, "--workers", "-w", min=1, help="Worker processes (default: one per 4 cores)."
    ),
    model: str | None = typer.Option(None, "--model", help="Model (default: tiny.en, offline)."),
    visibility_timeout: int = typer.Option(
        local_stack.VISIBILITY_TIMEOUT_S, "--visibility-timeout", min=1, help="Queue's, seconds."
    ),
    max_receive_count: int = typer.Option(
        local_stack.MAX_RECEIVE_COUNT,
        "--max-receive-count",
        min=1,
        help="Deliveries before a job goes to the dead-letter queue.",
    ),
) -> None:
    """Start moto server on 127.0.0.1, create bucket and queues, start the workers."""
    settings = Settings()
    try:
        with err.status("Starting the local stack (moto server, workers, model)..."):
            state, started = local_stack.up(
                settings,
                workers=workers,
                model=model,
                visibility_timeout=visibility_timeout,
                max_receive_count=max_receive_count,
            )
    except local_stack.LocalStackError as error:
        raise _fail(str(error)) from None
    connection = state["settings"]
    processes = local_stack.managed_processes(state)
    verb = "Started" if started else "Already running:"
    err.print(
        f"{verb} local stack at {connection['endpoint_url']} "
        f"({len(processes) - 1} worker(s), model {state['model']}).",
        highlight=False,
    )
    err.print(f"bucket {connection['bucket']}, queue {connection['queue_url']}", highlight=False)
    err.print("whisperq commands now use it; `whisperq local down` to stop.")


@local_app.command("down")
def local_down() -> None:
    """Stop every process the local stack started (by PID); its data is discarded."""
    stopped = local_stack.down(Settings())
    if not stopped:
        err.print("The local stack is not running.")
        return
    err.print(f"Stopped {len(stopped)} process(es): " + ", ".join(p.name for p in stopped))


@local_app.command("logs")
def local_logs(
    lines: int = typer.Option(40, "--lines", "-n", help="Lines per log file."),
) -> None:
    """Show the end of each local stack log (moto server and workers)."""
    files = local_stack.log_files(Settings())
    if not files:
        raise _fail("No logs: the local stack has not been started.")
    for path in files:
        out.rule(str(path))
        out.print(local_stack.tail(path, lines), markup=False, highlight=False)


def explain_aws_error(error: Exception, settings: Settings) -> str:
    """One line a person can act on, for the errors S3 and SQS calls end in."""
    if isinstance(error, NoCredentialsError):
        return (
            f"No AWS credentials for {settings.target}: set AWS_PROFILE or run `aws configure`, "
            "or use the embedded stack (`whisperq local up`)."
        )
    if isinstance(error, EndpointConnectionError):
        return f"Cannot reach {settings.target} ({error}). Check the network or the endpoint."
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "?")
        message = error.response.get("Error", {}).get("Message", str(error))
        if code == "NoSuchBucket":
            return f"Bucket {settings.bucket!r} does not exist on {settings.target}."
        if code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            return f"Queue {settings.queue_url!r} does not exist on {settings.target}."
        return f"{code} from {settings.target}: {message}"
    return f"{type(error).__name__}: {error}"


def main() -> None:
    try:
        app()
    except (BotoCoreError, ClientError) as error:
        err.print(f"[bold red]error:[/] {explain_aws_error(error, Settings())}", highlight=False)
        raise SystemExit(1) from None
