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
from pydantic import ValidationError
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

from whisperq import __version__, fleet, keys, local_stack, storage, tracking
from whisperq.capacity import InstancePrice, Market
from whisperq.progress import ProgressHooks
from whisperq.schemas import TranscriptionOptions
from whisperq.settings import ConfigError, Settings
from whisperq.simulation_report import ASSUMPTIONS, DayOptions, run_day

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


_BATCH_OPTIONS_PANEL = "Transcription options (stored with the batch)"


def _batch_option(flag: str, help: str) -> Any:
    """A submit option that belongs to the batch: unset (None) means the default."""
    return typer.Option(None, flag, help=help, rich_help_panel=_BATCH_OPTIONS_PANEL)


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
    channels: str | None = _batch_option(
        "--channels",
        "Stereo files: mix | split (one speaker per channel) | auto (split when the "
        "channels carry different speech; the default).",
    ),
    speakers: str | None = _batch_option(
        "--speakers", "Labels for the left and right channel when split, e.g. agent,customer."
    ),
    language: str | None = _batch_option(
        "--language", "Language code (en, de, ...); default: detected per file."
    ),
    task: str | None = _batch_option("--task", "transcribe (default) | translate (to English)."),
    word_timestamps: bool | None = _batch_option(
        "--word-timestamps",
        "Words with start, end and probability in the JSON; word timing in the VTT.",
    ),
    hotwords: str | None = _batch_option(
        "--hotwords", "Names and terms to favour, e.g. 'Acme Fibre, RouterMax'."
    ),
    initial_prompt: str | None = _batch_option(
        "--initial-prompt", "Text the model reads before the audio (style, vocabulary)."
    ),
    formats: str | None = _batch_option(
        "--formats", "Renderings to write: any of srt,vtt,txt (default all); the JSON always is."
    ),
    model: str | None = _batch_option(
        "--model",
        "Model for this batch; workers serve their own, others only if allowed "
        "(WHISPERQ_ALLOWED_MODELS), else the file fails with the reason.",
    ),
    beam_size: int | None = _batch_option("--beam-size", "Beam width (default: the worker's, 5)."),
    vad: bool | None = _batch_option(
        "--vad/--no-vad", "Skip silence with Silero VAD (default: the worker's, on)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Upload audio and queue one transcription job per file; prints the batch id.

    Relative paths are kept (calls/a/x.wav and calls/b/x.wav stay apart). Files whose
    content is already in the batch are skipped unless --force. Inside directories,
    files without an audio extension are skipped and counted. Transcription options
    belong to the batch: adding files to it later keeps them.
    """
    from whisperq.submit import SubmitError
    from whisperq.submit import submit as run_submit

    given = {
        "channels": channels,
        "speakers": _split_list(speakers),
        "language": language,
        "task": task,
        "word_timestamps": word_timestamps,
        "hotwords": hotwords,
        "initial_prompt": initial_prompt,
        "formats": _split_list(formats),
        "model": model,
        "beam_size": beam_size,
        "vad": vad,
    }
    options = _transcription_options({k: v for k, v in given.items() if v is not None})
    settings = _settings()
    try:
        with _progress() as progress:
            report = run_submit(
                settings,
                paths,
                batch=batch,
                options=options,
                force=force,
                hooks=_RichHooks(progress),
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


def _split_list(value: str | None) -> list[str] | None:
    return None if value is None else [part.strip() for part in value.split(",") if part.strip()]


def _transcription_options(given: dict[str, Any]) -> TranscriptionOptions | None:
    """The batch's options from the flags given (None: none given, keep the batch's)."""
    if not given:
        return None
    try:
        return TranscriptionOptions.model_validate(given)
    except ValidationError as error:
        problems = "; ".join(
            f"--{str(item['loc'][0]).replace('_', '-')}: {item['msg']}" for item in error.errors()
        )
        raise _fail(f"Invalid transcription options: {problems}", code=2) from None


# --- status / wait / results ----------------------------------------------------------


@app.command()
def status(
    batch: str | None = typer.Argument(None, help="One batch (default: every batch)."),
    failed: bool = typer.Option(False, "--failed", help="List failed files with reasons."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Per batch: submitted, done, failed, pending, audio hours done; and the queue.

    With an Auto Scaling group configured (WHISPERQ_AUTOSCALING_GROUP; `config
    from-stack` and the local stack set it): the fleet's instances, recent throughput
    from the newest 50 results of the batches shown, and when the backlog should be done
    (an estimate, by the scaler's own formula).
    """
    settings = _settings()
    s3 = storage.client(settings, "s3")
    names = [batch] if batch else tracking.list_batches(settings, s3)
    # Only with a fleet to show: collect the newest result keys from the same listing.
    newest = tracking.NewestResults(fleet.RECENT_RESULTS) if settings.autoscaling_group else None
    statuses = []
    for name in names:
        found = tracking.batch_status(settings, s3, name, newest)
        if found is None:
            raise _fail(f"No batch named {name!r} on {settings.target}.")
        statuses.append(found)
    queue = storage.queue_counts(settings)
    fleet_now: fleet.FleetStatus | None = None
    fleet_error: str | None = None
    if newest is not None:
        try:
            fleet_now = fleet.read_fleet_status(settings, s3, queue, newest)
        except (BotoCoreError, ClientError) as error:
            # The batches are still worth showing (e.g. a CLI role without Describe rights).
            fleet_error = explain_aws_error(error, settings)
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
        fleet_data: dict[str, Any] | None = None
        if fleet_now is not None:
            fleet_data = fleet_now.as_dict()
        elif fleet_error is not None:
            fleet_data = {"group": settings.autoscaling_group, "error": fleet_error}
        _print_json(
            {
                "target": settings.target,
                "batches": batches,
                "queue": queue.__dict__,
                "fleet": fleet_data,
            }
        )
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
    if fleet_error is not None:
        err.print(f"[yellow]fleet: cannot read it:[/] {fleet_error}", highlight=False)
    if fleet_now is not None:
        for line in _fleet_lines(fleet_now, settings):
            out.print(line, highlight=False)
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


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def _fleet_lines(now: fleet.FleetStatus, settings: Settings) -> list[str]:
    """The fleet, its recent throughput and the backlog's ETA, in words."""
    group = now.group
    if group is None:
        lines = [
            f"fleet: [yellow]no Auto Scaling group named {now.group_name!r}[/] on "
            f"{settings.target} (WHISPERQ_AUTOSCALING_GROUP)"
        ]
    else:
        types = ", ".join(f"{name} x{count}" for name, count in group.instance_types.items())
        lines = [
            f"fleet {group.name}: {group.desired} desired, {group.in_service} in service, "
            f"{group.pending} pending (max {group.max_size})" + (f"; {types}" if types else "")
        ]
    speed = now.throughput
    if now.results_read:
        mean = "-" if now.mean_job_seconds is None else f"{now.mean_job_seconds:.1f} s"
        lines.append(
            f"throughput, last {_duration(now.window_seconds)} (newest {now.results_read} "
            f"results): {speed.jobs_per_minute:.3g} jobs/min, "
            f"{speed.audio_seconds_per_second:.3g} audio s per wall s; mean job {mean}"
        )
    else:
        lines.append("throughput: no finished jobs yet")
    if now.backlog == 0:
        lines.append("backlog: none")
    elif now.eta_seconds is not None:
        lines.append(
            f"backlog {now.backlog} job(s): done in about {_duration(now.eta_seconds)} "
            "(estimate, by the scaler's formula)"
        )
        lines.append(
            f"  assumes {now.jobs_per_instance} jobs per instance, max {now.max_instances} "
            f"instance(s), {now.boot_seconds:g} s boot, {now.slots_per_instance} job(s) at "
            "once per instance"
        )
    else:
        why = "no finished job yet to time" if now.mean_job_seconds is None else "no instances"
        lines.append(f"backlog {now.backlog} job(s): no estimate yet ({why})")
    return lines


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


# --- cost / simulate -------------------------------------------------------------------

_MARKETS: dict[str, Market] = {"spot": "spot", "on_demand": "on_demand", "on-demand": "on_demand"}


def _market(value: str) -> Market:
    market = _MARKETS.get(value.lower())
    if market is None:
        raise _fail(f"--market must be spot or on_demand (got {value!r}).", 2)
    return market


def _price_table(settings: Settings) -> dict[str, InstancePrice]:
    try:
        return fleet.prices(settings)
    except ValueError as error:
        raise _fail(
            f"instance_prices (config file or WHISPERQ_INSTANCE_PRICES): {error}."
        ) from None


def _unpriced(error: ValueError, settings: Settings) -> typer.Exit:
    return _fail(
        f"{error}. Set its $ per instance-hour in {settings.config_file} "
        '(instance_prices = { "TYPE" = { on_demand = 0.17, spot = 0.07 } }) or in '
        'WHISPERQ_INSTANCE_PRICES=\'{"TYPE": {"on_demand": 0.17, "spot": 0.07}}\'.'
    )


@app.command()
def cost(
    batch: str = typer.Argument(..., help="The batch to price."),
    market: str = typer.Option("spot", "--market", help="spot | on_demand prices."),
    threads: int = typer.Option(16, "--threads", min=1, max=64, help="Result JSONs read at once."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Estimate what a batch cost: audio hours, instance time, dollars, $ per audio hour,
    next to AWS Transcribe's list price ($0.024/min) for the same audio.

    Reads every result JSON of the batch (the one command that does; --threads at a time).
    Counts job time only (download, decode, transcribe, upload; jobs that overlap on one
    machine once): instances' idle and boot time, jobs redone after spot notices and
    failed jobs are not in it; `whisperq simulate` estimates a whole day's bill. Prices:
    built-in us-east-1 estimates per instance type, overridable with instance_prices in
    the config file or WHISPERQ_INSTANCE_PRICES; results without an instance type (the
    local stack) are priced as WHISPERQ_FLEET_INSTANCE_TYPE.
    """
    chosen = _market(market)
    settings = _settings()
    price_table = _price_table(settings)
    s3 = storage.client(settings, "s3")
    manifest = tracking.load_manifest(settings, s3, batch)
    if manifest is None:
        raise _fail(f"No batch named {batch!r} on {settings.target}.")
    with err.status(f"Reading the results of {batch}..."):
        records, unreadable = fleet.read_batch_records(settings, s3, batch, threads)
    if not records:
        raise _fail(
            f"Batch {batch!r} has no finished results yet ({len(manifest.files)} file(s) "
            f"submitted): `whisperq wait {batch}`, then ask again."
        )
    try:
        report = fleet.cost_of_records(
            batch, records, chosen, price_table, settings.fleet_instance_type, unreadable
        )
    except ValueError as error:
        raise _unpriced(error, settings) from None
    if as_json:
        _print_json(report.as_dict())
        return
    _print_cost(report, settings, len(manifest.files))


def _dollars(value: float) -> str:
    """Cents for real money; significant digits for the fractions of a cent small
    batches cost."""
    return f"{value:,.2f}" if value >= 10 else f"{value:.3g}"


def _print_cost(report: fleet.BatchCost, settings: Settings, submitted: int) -> None:
    estimate = report.estimate
    market = report.market.replace("_", "-")
    table = Table(title=f"cost of {report.batch} (estimates, {market} prices)")
    for column in ("instance type", "jobs", "job time", "instance time", "$/hour", "$"):
        table.add_column(column, justify="left" if column == "instance type" else "right")
    for item in report.by_type:
        table.add_row(
            item.instance_type + (" *" if item.assumed else ""),
            str(item.jobs),
            _duration(item.job_seconds),
            _duration(item.instance_seconds),
            f"{item.price_per_hour:.4f}",
            _dollars(item.dollars),
        )
    table.add_row(
        "total",
        str(report.results),
        _duration(report.job_seconds),
        _duration(estimate.worker_seconds),
        "",
        f"[bold]{_dollars(estimate.dollars)}[/]",
    )
    out.print(table)
    per_hour = estimate.dollars_per_audio_hour
    out.print(
        f"audio: {estimate.audio_hours:.3g} h in {report.results} of {submitted} file(s); "
        f"${_dollars(per_hour)} per audio hour"
        if per_hour is not None
        else "audio: none",
        highlight=False,
    )
    ratio = f", {estimate.ratio:,.0f}x this" if estimate.ratio else ""
    out.print(
        f"AWS Transcribe for the same audio (${fleet.MANAGED_PRICE_PER_MINUTE}/min): "
        f"${_dollars(estimate.managed_dollars)}{ratio}",
        highlight=False,
    )
    out.print(
        "Job time only: no idle or boot time, spot redos or failed jobs "
        "(`whisperq simulate` has them).",
        highlight=False,
    )
    if any(item.assumed for item in report.by_type):
        out.print(
            f"* no instance type recorded: priced as {settings.fleet_instance_type} "
            "(WHISPERQ_FLEET_INSTANCE_TYPE).",
            highlight=False,
        )
    if report.unreadable:
        err.print(f"[yellow]{report.unreadable} result JSON(s) could not be read; not counted.")


_DAY = DayOptions()


@app.command(epilog=ASSUMPTIONS)
def simulate(
    scale: float = typer.Option(_DAY.scale, "--scale", min=0, help="Multiply the built-in day."),
    calls: int = typer.Option(_DAY.calls, "--calls", min=1, help="Calls in the built-in day."),
    seed: int = typer.Option(_DAY.seed, "--seed", help="Random seed (the day and spot)."),
    trace: Path | None = typer.Option(
        None, "--trace", help="Your day: a CSV with a header and arrival_s,audio_s."
    ),
    max_instances: int = typer.Option(_DAY.max_instances, "--max-instances", min=1),
    jobs_per_instance: int = typer.Option(_DAY.jobs_per_instance, "--jobs-per-instance", min=1),
    idle_minutes: float = typer.Option(_DAY.idle_minutes, "--idle-minutes", min=0),
    slots: int = typer.Option(_DAY.slots, "--slots", min=1, help="Jobs an instance runs at once."),
    speed_x: float | None = typer.Option(
        None, "--speed-x", help="Audio s per wall s of one instance (default 7x per 2 vCPUs)."
    ),
    instance_type: str = typer.Option(_DAY.instance_type, "--instance-type"),
    market: str = typer.Option(_DAY.market, "--market", help="spot | on_demand prices."),
    price: float | None = typer.Option(
        None, "--price", min=0, help="$ per instance-hour (overrides the price table)."
    ),
    interruptions: float = typer.Option(
        _DAY.interruptions, "--interruptions", min=0, help="Spot notices per instance-hour."
    ),
    boot_s: float = typer.Option(_DAY.boot_s, "--boot-s", min=0, help="Launch to worker running."),
    plot: Path | None = typer.Option(None, "--plot", help="Write backlog and instances to a PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Simulate a day of calls on the fleet, autoscaled from zero and always-on, side by
    side: turnaround, instance-hours, cost (estimates; no AWS, no model, seconds to run).

    The same as benchmarks/simulate.py. Prices: the built-in table with instance_prices
    from the configuration applied.
    """
    options = DayOptions(
        scale=scale,
        calls=calls,
        seed=seed,
        trace=trace,
        max_instances=max_instances,
        jobs_per_instance=jobs_per_instance,
        idle_minutes=idle_minutes,
        slots=slots,
        speed_x=speed_x,
        instance_type=instance_type,
        market=_market(market),
        price=price,
        interruptions=interruptions,
        boot_s=boot_s,
    )
    price_table = _price_table(Settings())
    try:
        with err.status("Simulating the day..."):
            report = run_day(options, price_table, plot)
    except (OSError, ValueError) as error:
        raise _fail(str(error)) from None
    if as_json:
        _print_json(report.as_dict())
        return
    out.print(report.text(), markup=False, highlight=False, soft_wrap=True)


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
    if connection.get("autoscaling_group"):
        err.print(
            f"fleet: group {connection['autoscaling_group']} in moto, one instance per worker",
            highlight=False,
        )
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
