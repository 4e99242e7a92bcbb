"""Batch commands: submit, status, wait, results, retry, dlq."""

from __future__ import annotations

import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from whisperq import keys, qa_rules, storage
from whisperq.batches import completion, tracking
from whisperq.batches.progress import ProgressHooks
from whisperq.cli.app import (
    JsonFlag,
    app,
    duration_text,
    err,
    explain_aws_error,
    out,
    print_error,
    print_json,
    settings_for_storage,
)
from whisperq.errors import EXIT_ERROR, InvalidKeyError, UsageError, WhisperqError
from whisperq.fleet import group_status as fleet
from whisperq.schemas import TranscriptionOptions
from whisperq.settings import Settings
from whisperq.stacks import local as local_stack


def progress_bar() -> Progress:
    """Progress bars on stderr, so stdout stays clean for --json and batch ids."""
    return Progress(
        TextColumn("{task.description:<11}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


class RichHooks(ProgressHooks):
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


def no_batch(batch: str, settings: Settings) -> WhisperqError:
    return WhisperqError(f"No batch named {batch!r} on {settings.target}.")


# --- submit ---------------------------------------------------------------------------

_BATCH_OPTIONS_PANEL = "Transcription options (stored with the batch)"


def _batch_option(flag: str, help: str) -> Any:
    """A submit option that belongs to the batch: unset (None) means the default."""
    return typer.Option(flag, help=help, rich_help_panel=_BATCH_OPTIONS_PANEL)


@app.command()
def submit(
    paths: Annotated[
        list[str],
        typer.Argument(help="Audio files, directories (searched recursively) or quoted globs."),
    ],
    batch: Annotated[
        str | None,
        typer.Option("--batch", "-b", help="Batch name (default: a new timestamped id)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Upload and queue files whose content is already in the batch."
        ),
    ] = False,
    channels: Annotated[
        str | None,
        _batch_option(
            "--channels",
            "Stereo files: mix | split (one speaker per channel) | auto (split when the "
            "channels carry different speech; the default).",
        ),
    ] = None,
    speakers: Annotated[
        str | None,
        _batch_option(
            "--speakers", "Labels for the left and right channel when split, e.g. agent,customer."
        ),
    ] = None,
    language: Annotated[
        str | None,
        _batch_option("--language", "Language code (en, de, ...); default: detected per file."),
    ] = None,
    task: Annotated[
        str | None,
        _batch_option("--task", "transcribe (default) | translate (to English)."),
    ] = None,
    word_timestamps: Annotated[
        bool | None,
        _batch_option(
            "--word-timestamps",
            "Words with start, end and probability in the JSON; word timing in the VTT.",
        ),
    ] = None,
    hotwords: Annotated[
        str | None,
        _batch_option("--hotwords", "Names and terms to favour, e.g. 'Acme Fibre, RouterMax'."),
    ] = None,
    initial_prompt: Annotated[
        str | None,
        _batch_option(
            "--initial-prompt", "Text the model reads before the audio (style, vocabulary)."
        ),
    ] = None,
    formats: Annotated[
        str | None,
        typer.Option(
            "--formats",
            "--format",
            help="Renderings to write: any of srt,vtt,txt (default all); the JSON always is.",
            rich_help_panel=_BATCH_OPTIONS_PANEL,
        ),
    ] = None,
    model: Annotated[
        str | None,
        _batch_option(
            "--model",
            "Model for this batch; workers serve their own, others only if allowed "
            "(WHISPERQ_ALLOWED_MODELS), else the file fails with the reason.",
        ),
    ] = None,
    beam_size: Annotated[
        int | None, _batch_option("--beam-size", "Beam width (default: the worker's, 5).")
    ] = None,
    vad: Annotated[
        bool | None,
        _batch_option(
            "--vad/--no-vad", "Skip silence with Silero VAD (default: the worker's, on)."
        ),
    ] = None,
    diarize: Annotated[
        bool | None,
        _batch_option(
            "--diarize",
            "Who said what on mono recordings (or stereo mixed, --channels mix): a speaker "
            "per segment and word, named by --speakers in order of first appearance, else "
            "speaker_1, speaker_2, ...",
        ),
    ] = None,
    num_speakers: Annotated[
        int | None,
        _batch_option("--num-speakers", "With --diarize: how many speakers (default: estimated)."),
    ] = None,
    multilingual: Annotated[
        bool | None,
        _batch_option(
            "--multilingual",
            "Calls that switch language: find the language of every segment and transcribe "
            "each in its own (JSON: segments' language, the languages' shares). Needs a "
            "multilingual model, not *.en.",
        ),
    ] = None,
    redact: Annotated[
        str | None,
        _batch_option(
            "--redact",
            "Remove personal data from every output: pci (card number, expiry, security "
            "code), pii (pci + SSN/national ID, phone, email, date of birth, IBAN, account, "
            "sort code) and/or type names, e.g. pci,PHONE. Your own patterns "
            "(redact_patterns in the config) are added.",
        ),
    ] = None,
    redact_audio: Annotated[
        bool | None,
        _batch_option(
            "--redact-audio",
            "With --redact: also write the audio with the redacted spans silenced "
            "(<file>.redacted.wav next to the results).",
        ),
    ] = None,
    vocabulary_filter: Annotated[
        Path | None,
        _batch_option(
            "--vocabulary-filter",
            "Words that must not appear in stored transcripts (a file, one word or phrase "
            "a line: profanity, competitor names), in every rendering and in the words.",
        ),
    ] = None,
    filter_mode: Annotated[
        str | None,
        _batch_option(
            "--filter-mode",
            "With --vocabulary-filter: mask (***, the default), remove, or tag ([FILTERED:word]).",
        ),
    ] = None,
    rules: Annotated[
        Path | None,
        _batch_option(
            "--rules",
            "QA rules (a TOML file of [[rule]] tables): every result gets the categories it "
            "matches, with evidence. `whisperq report --rules` applies rules afterwards.",
        ),
    ] = None,
    metadata: Annotated[
        Path | None,
        typer.Option(
            "--metadata",
            help="A CSV file of call metadata: a 'path' column (the file's path in the "
            "batch) and any others, one row per call; they appear in each result JSON "
            "('metadata') and as meta_<column> in `report --csv`.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Upload audio and queue one transcription job per file; prints the batch id.

    Relative paths are kept (calls/a/x.wav and calls/b/x.wav stay apart). Files whose
    content is already in the batch are skipped unless --force. Inside directories,
    files without an audio extension are skipped and counted. Transcription options
    belong to the batch: adding files to it later keeps them.

    Example: `whisperq submit examples/calls/ --batch weekly --speakers agent,customer`
    Example: `whisperq submit calls/ --batch weekly --metadata calls.csv`
    """
    from whisperq.batches.submit import submit as run_submit

    given: dict[str, Any] = {
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
        "diarize": diarize,
        "num_speakers": num_speakers,
        "multilingual": multilingual,
        "redact": _split_list(redact),
        "redact_audio": redact_audio,
        "rules": _rule_tables(rules),
        "vocabulary_filter": _filter_entries(vocabulary_filter),
        "filter_mode": filter_mode,
    }
    if batch is not None:
        _usable_batch_name(batch)
    settings = settings_for_storage()
    if redact is not None and settings.redact_patterns:
        given["redact_patterns"] = settings.redact_patterns
    options = _transcription_options({k: v for k, v in given.items() if v is not None})
    with progress_bar() as progress:
        report = run_submit(
            settings,
            paths,
            batch=batch,
            options=options,
            force=force,
            hooks=RichHooks(progress),
            metadata_csv=metadata,
        )
    if as_json:
        print_json(report.as_dict())
        if report.unusable:
            raise typer.Exit(EXIT_ERROR)
        return
    err.print(
        f"Queued {len(report.queued)} file(s), {report.bytes_uploaded / 1e6:.1f} MB, "
        f"{report.audio_seconds / 60:.1f} min of audio on {settings.target}."
    )
    if report.duplicates:
        err.print(f"Skipped {len(report.duplicates)} already in the batch (--force to redo).")
    if report.skipped_non_audio:
        err.print(f"Skipped {report.skipped_non_audio} non-audio file(s) found in directories.")
    for item in report.unusable:
        print_error(escape(f"not submitted: {str(item.path)!r}: {item.reason}"))
    for path, problems in report.metadata_problems.items():
        err.print(escape(f"metadata of {path}: {'; '.join(problems)}"), highlight=False)
    if report.metadata_unmatched:
        shown = ", ".join(report.metadata_unmatched[:5])
        more = len(report.metadata_unmatched) - 5
        err.print(
            escape(
                f"{len(report.metadata_unmatched)} metadata row(s) name no submitted file: "
                f"{shown}" + (f" and {more} more" if more > 0 else "")
            ),
            highlight=False,
        )
    out.print(report.batch)
    if report.unusable:  # the others are queued; the exit code says not all were
        raise typer.Exit(EXIT_ERROR)


def _filter_entries(path: Path | None) -> list[str] | None:
    """A vocabulary filter file: one word or phrase a line; blank lines and ``#`` comments
    skipped (whisperq.redaction.vocabulary_filter applies them)."""
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        entries = [entry for line in lines if (entry := line.split("#", 1)[0].strip())]
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--vocabulary-filter {path}: cannot read it ({error})") from None
    if not entries:
        raise UsageError(f"--vocabulary-filter {path}: no words in it (one a line)")
    return entries


def _rule_tables(path: Path | None) -> list[dict[str, Any]] | None:
    """The [[rule]] tables of a rules file, checked (a wrong rule: exit 2, nothing sent)."""
    if path is None:
        return None
    qa_rules.load_rules(path)
    with path.open("rb") as handle:
        tables: list[dict[str, Any]] = tomllib.load(handle)["rule"]
    return tables


def _usable_batch_name(batch: str) -> None:
    """A batch name given on the command line that breaks the rules is bad usage (2)."""
    try:
        keys.validate_batch_name(batch)
    except InvalidKeyError as error:
        raise UsageError(str(error)) from None


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
            f"--{str(item['loc'][0]).replace('_', '-')}: {item['msg']}"
            if item["loc"]
            else item["msg"].removeprefix("Value error, ")  # about several flags together
            for item in error.errors()
        )
        raise UsageError(f"Invalid transcription options: {problems}") from None


# --- status ---------------------------------------------------------------------------


RECENT_DAYS = 7  # plain `status` leaves out batches finished before this


@app.command()
def status(
    batch: Annotated[
        str | None, typer.Argument(help="One batch (default: the recent ones, see --all).")
    ] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="List failed files with reasons.")
    ] = False,
    show_all: Annotated[
        bool,
        typer.Option(
            "--all",
            help=f"Every batch, also those finished more than {RECENT_DAYS} days ago.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Per batch: submitted, done, failed, pending, audio hours done; and the queue.

    A finished batch is read from its done.json (one request); without --all, batches
    finished more than a week ago are left out, so status stays quick after a year of
    daily batches. One batch named: also the paths whose jobs vanished from the queues
    (stale; `whisperq retry BATCH --stale` queues them again).

    With an Auto Scaling group configured (WHISPERQ_AUTOSCALING_GROUP; `config
    from-stack` and the local stack set it): the fleet's instances, recent throughput
    from the newest 50 results of the batches shown, and when the backlog should be done
    (an estimate, by the scaler's own formula).

    Example: `whisperq status weekly`
    """
    settings = settings_for_storage()
    s3 = storage.client(settings, "s3")
    names = [batch] if batch else tracking.list_batches(settings, s3)
    # Only with a fleet to show: collect the newest result keys from the same listing.
    newest = tracking.NewestResults(fleet.RECENT_RESULTS) if settings.autoscaling_group else None
    statuses = []
    now = datetime.now(UTC)
    old = now - timedelta(days=RECENT_DAYS)
    # With a fleet to show, batches finished within the last day are still listed: their
    # newest results are the fleet's recent throughput.
    listed_since = now - (timedelta(days=1) if newest is not None else timedelta(0))
    hidden = 0
    for name in names:
        done = completion.read_done(settings, s3, name)
        ended = completion.finished_at(done) if done is not None else None
        if done is not None and ended is not None:
            if batch is None and not show_all and ended < old:
                hidden += 1
                continue
            if ended <= listed_since:
                statuses.append(completion.status_from_done(done))
                continue
        found = tracking.batch_status(settings, s3, name, newest)
        if found is None:
            raise no_batch(name, settings)
        completion.mark_finished(settings, s3, found)
        statuses.append(found)
    queue = storage.queue_counts(settings)
    ingest, ingest_error = _ingest_counts(settings)
    stale: list[str] = []
    if batch is not None and statuses[0].pending:
        view = tracking.load_batch(settings, s3, batch)
        if view is not None:
            queues = completion.queue_state(settings)
            parked = set(statuses[0].dead_lettered_paths)
            stale = completion.stale_paths(view, statuses[0], queues, datetime.now(UTC), parked)
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
        if batch is not None:
            batches[0]["stale"] = len(stale)
        if failed:
            for data in batches:
                data["failures"] = [
                    record.model_dump(mode="json") | {"next_step": record.next_step()}
                    for record in failures[data["batch"]]
                ]
        # None without an ingest queue configured (ingest_queue_url)
        ingest_data: dict[str, Any] | None = None
        if ingest_error is not None:
            ingest_data = {"error": ingest_error}
        if ingest is not None:
            ingest_data = dict(ingest.__dict__)
        fleet_data: dict[str, Any] | None = None
        if fleet_now is not None:
            fleet_data = fleet_now.as_dict()
        elif fleet_error is not None:
            fleet_data = {"group": settings.autoscaling_group, "error": fleet_error}
        print_json(
            {
                "target": settings.target,
                "batches": batches,
                "queue": queue.__dict__,
                "ingest_queue": ingest_data,
                "fleet": fleet_data,
                "finished_batches_not_shown": hidden,
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
    for item in statuses:
        if item.redaction is not None:
            what = ", ".join(item.redaction["groups"] + item.redaction["patterns"])
            audio = "; audio copies silenced" if item.redaction["audio"] else ""
            out.print(f"{item.batch}: redacts {what}{audio}", highlight=False)
    if hidden:
        out.print(f"{hidden} batch(es) finished more than {RECENT_DAYS} days ago: --all shows them")
    if stale:
        out.print(
            f"[yellow]{batch}: {len(stale)} pending file(s) whose jobs are gone from the queues "
            f"(stale)[/]: `whisperq retry {batch} --stale` queues them again",
            soft_wrap=True,
        )
    dead = "n/a" if queue.dead_lettered is None else str(queue.dead_lettered)
    out.print(f"queue: {queue.visible} waiting, {queue.in_flight} in flight, {dead} dead-lettered")
    if ingest is not None:
        dead = "n/a" if ingest.dead_lettered is None else str(ingest.dead_lettered)
        out.print(
            f"ingest queue (S3 events): {ingest.visible} waiting, {ingest.in_flight} in flight, "
            f"{dead} dead-lettered"
        )
    elif ingest_error is not None:
        err.print(f"[yellow]ingest queue: cannot read it:[/] {ingest_error}", highlight=False)
    if fleet_error is not None:
        err.print(f"[yellow]fleet: cannot read it:[/] {fleet_error}", highlight=False)
    if fleet_now is not None:
        for line in _fleet_lines(fleet_now, settings):
            out.print(line, highlight=False, soft_wrap=True)
    for name, records in failures.items():
        if records:
            failed_table = Table(title=f"failed in {name}", show_lines=True)
            failed_table.add_column("file")
            failed_table.add_column("reason")
            for record in records:
                reason = record.reason
                if record.cause is None:  # an older record: the step is not in its reason
                    reason += f" Next: {record.next_step()}."
                failed_table.add_row(escape(record.path), escape(reason))
            out.print(failed_table)
    if queue.dead_lettered:
        out.print(
            "Dead-lettered jobs: `whisperq dlq` lists them; `whisperq retry BATCH` re-queues."
        )
    if ingest is not None and ingest.dead_lettered:
        out.print(
            "Dead-lettered S3 events: their ingest failed again and again (the ingest log, on "
            "AWS the ingest Lambda's log group, says why); SQS's dead-letter queue redrive "
            "moves them back to the ingest queue once the cause is fixed."
        )


def _ingest_counts(settings: Settings) -> tuple[storage.QueueCounts | None, str | None]:
    """The ingest queue's counts and its dead-letter queue's (ingest_queue_url,
    ingest_dlq_url: the local stack's, or the stack's via `config from-stack`): (counts,
    None), (None, why they cannot be read), or (None, None) without an ingest queue."""
    if not settings.ingest_queue_url:
        return None, None
    queues = settings.model_copy(
        update={"queue_url": settings.ingest_queue_url, "dlq_url": settings.ingest_dlq_url}
    )
    try:
        return storage.queue_counts(queues), None
    except (BotoCoreError, ClientError) as error:
        # The jobs are still worth showing (e.g. a CLI policy from before the ingest queues).
        return None, explain_aws_error(error, settings)


def _fleet_lines(now: fleet.FleetStatus, settings: Settings, at: float | None = None) -> list[str]:
    """The fleet (and why it is short of its desired capacity), its recent throughput and
    the backlog's ETA, in words."""
    group = now.group
    if group is None:
        lines = [
            f"fleet: [yellow]no Auto Scaling group named {now.group_name!r}[/] on "
            f"{settings.target} (WHISPERQ_AUTOSCALING_GROUP)"
        ]
    else:
        lines = [_group_line(group)]
        if now.launch_problem is not None:
            lines.append(_launch_problem_line(group, now.launch_problem, at or time.time()))
    state = local_stack.read_state(settings)
    dead = [p.name for p in local_stack.dead_processes(state)] if state else []
    if dead:
        lines.append(
            f"[yellow]local stack: {', '.join(dead)} not running[/] (a dead worker's instance "
            "still counts as in service): `whisperq local up` starts it again, keeping the "
            "batches"
        )
    speed = now.throughput
    window = duration_text(now.window_seconds)
    if now.results_read:
        mean = "-" if now.mean_job_seconds is None else f"{now.mean_job_seconds:.1f} s"
        if speed.jobs:
            lines.append(
                f"throughput: {speed.jobs_per_minute:.3g} jobs/min, "
                f"{speed.audio_seconds_per_second:.3g} audio s per wall s ({speed.jobs} "
                f"job(s) in {duration_text(speed.span_seconds)}, of the newest "
                f"{now.results_read} results, last {window}); mean job {mean}"
            )
        else:
            lines.append(
                f"throughput: no job finished in the last {window} (newest "
                f"{now.results_read} results read); mean job {mean}"
            )
    else:
        lines.append("throughput: no finished jobs yet")
    if now.backlog == 0:
        lines.append("backlog: none")
    elif now.eta_seconds is not None:
        lines.append(
            f"backlog {now.backlog} job(s): done in about {duration_text(now.eta_seconds)} "
            "(estimate, by the scaler's formula)"
        )
        per = "unit" if group is not None and group.weighted else "instance"
        lines.append(
            f"  assumes {now.jobs_per_instance} jobs per {per}, max {now.max_instances} "
            f"{per}(s), {now.boot_seconds:g} s boot, {now.slots_per_instance:g} job(s) at "
            f"once per {per}" + (" (a unit: an instance of weight 1)" if per == "unit" else "")
        )
    else:
        why = "no finished job yet to time" if now.mean_job_seconds is None else "no instances"
        lines.append(f"backlog {now.backlog} job(s): no estimate yet ({why})")
    return lines


def _group_line(group: fleet.GroupState) -> str:
    """The group's counts. A weighted group's desired, maximum and running capacity are
    units (an instance counts as its type's weight), so the instances come with theirs:
    "fleet G: 8 units desired (max 10), 2 instances in service (8 units), 0 pending;
    c6a.2xlarge x2 (weight 4)"."""
    if not group.weighted:
        types = ", ".join(f"{name} x{count}" for name, count in group.instance_types.items())
        return (
            f"fleet {group.name}: {group.desired} desired, {group.in_service} in service, "
            f"{group.pending} pending (max {group.max_size})" + (f"; {types}" if types else "")
        )
    types = ", ".join(
        f"{name} x{count} (weight {group.weights.get(name, 1)})"
        for name, count in group.instance_types.items()
    )
    pending = f"{group.pending} pending"
    if group.pending:
        pending += f" ({group.pending_capacity} units)"
    return (
        f"fleet {group.name}: {group.desired} units desired (max {group.max_size}), "
        f"{group.in_service} instance(s) in service ({group.in_service_capacity} units), "
        f"{pending}" + (f"; {types}" if types else "")
    )


def _launch_problem_line(group: fleet.GroupState, problem: fleet.LaunchProblem, at: float) -> str:
    """The group short of its desired capacity, and why: "fleet: 0 of 2 desired running
    (a launch failed 3 min ago): <the group's words> (<what to do>)"."""
    when = ""
    if problem.started_at:
        age = max(0.0, at - datetime.fromisoformat(problem.started_at).timestamp())
        when = f" (a launch failed {duration_text(age)} ago)"
    hint = f" ({problem.hint})" if problem.hint else ""
    units = " units" if group.weighted else ""
    return (
        f"fleet: [yellow]{group.running} of {group.desired} desired{units} running[/]{when}: "
        f"{escape(problem.message)}{escape(hint)}"
    )
