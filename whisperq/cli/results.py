"""`whisperq wait`, `results`, `retry` and `dlq`: following a batch to its end, fetching
what it wrote, and running again what failed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from whisperq import keys, storage
from whisperq.batches import completion, tracking
from whisperq.cli.app import JsonFlag, app, err, out, print_json, settings_for_storage
from whisperq.cli.batches import RichHooks, no_batch, progress_bar
from whisperq.errors import (
    EXIT_ERROR,
    EXIT_USAGE,
    FailureCause,
    UsageError,
    WhisperqError,
    next_step,
)
from whisperq.schemas import ErrorRecord
from whisperq.settings import Settings

EXIT_FAILED = EXIT_ERROR  # wait: some jobs failed
EXIT_TIMEOUT = EXIT_USAGE  # wait: --timeout passed first

# --- wait / results -------------------------------------------------------------------


# wait's clock, apart so a test can drive it
_clock = time.monotonic
_sleep = time.sleep


@app.command()
def wait(
    batch: Annotated[str, typer.Argument(help="The batch to wait for.")],
    timeout: Annotated[
        float, typer.Option("--timeout", help="Give up after this many seconds (0 = never).")
    ] = 0,
    interval: Annotated[
        float, typer.Option("--interval", min=0.2, help="Seconds between polls.")
    ] = 5.0,
) -> None:
    """Show live progress until the batch is finished.

    Exits 0 when every job succeeded; 1 when any failed or was dead-lettered (naming
    them, each with its next step: `whisperq retry BATCH` where running it again can
    work, submitting a fixed file again where it cannot); 2 on timeout.

    Example: `whisperq wait weekly --timeout 3600 && whisperq results weekly --out transcripts/`
    """
    settings = settings_for_storage()
    s3 = storage.client(settings, "s3")
    deadline = _clock() + timeout if timeout > 0 else None
    dead = _DeadLetterWatch(settings, batch)
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
            # A finished batch's done.json answers in one request, without a listing.
            done = completion.read_done(settings, s3, batch)
            if done is not None:
                current = completion.status_from_done(done)
                progress.update(task, total=current.submitted, completed=current.submitted)
                break
            view = tracking.load_batch(settings, s3, batch)
            if view is None:
                raise no_batch(batch, settings)
            found = tracking.batch_status(settings, s3, batch, dead_lettered=dead.paths, view=view)
            assert found is not None
            current = tracking.confirmed(settings, s3, found, view, dead.paths)
            if current.pending and dead.changed():
                continue  # the dead-letter queue moved: count again with its paths
            unfinished = current.failed + len(current.dead_lettered_paths)
            progress.update(
                task,
                total=current.submitted,
                completed=current.done + unfinished,
                detail=f"{unfinished} failed" if unfinished else "",
            )
            if current.finished:
                completion.mark_finished(settings, s3, current)
                break
            if deadline is not None and _clock() >= deadline:
                progress.stop()
                err.print(
                    f"Timed out after {timeout:g}s: {current.pending} of {current.submitted} "
                    "still pending."
                )
                raise typer.Exit(EXIT_TIMEOUT)
            # never past the deadline: --timeout 3 with polls every 5 s ends after 3 s
            left = interval if deadline is None else deadline - _clock()
            _sleep(max(0.0, min(interval, left)))
    if current.failed or current.dead_lettered_paths:
        bad = current.failed + len(current.dead_lettered_paths)
        err.print(f"[red]{bad} of {current.submitted} failed:[/]")
        for step, lines in _failures_by_step(settings, s3, batch, current).items():
            for line in lines:
                err.print(line, highlight=False, markup=False, soft_wrap=True)
            err.print(f"    next: {step}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED)
    err.print(f"[green]All {current.done} done.[/]")


MAX_RECORDS_READ = 100  # wait reads this many error records for their next steps


def _failures_by_step(
    settings: Settings, s3: Any, batch: str, status: tracking.BatchStatus
) -> dict[str, list[str]]:
    """The failed files, grouped under their one next step (``errors.next_step``, as their
    error records say it): a file that is not audio is to be replaced and submitted again,
    never retried as it is; a throttled one is retried."""
    groups: dict[str, list[str]] = {}
    for number, path in enumerate(status.failed_paths):
        key = keys.error_key(batch, path)
        step = next_step(None, batch, path)  # unread: its reason says it
        if number < MAX_RECORDS_READ:
            try:
                data = storage.get_json(s3, settings.bucket, key)
                step = ErrorRecord.read(data).next_step()
            except ValueError:  # not a record this version reads (ValidationError too)
                pass
        groups.setdefault(step, []).append(f"  {path}  (reason in {key})")
    for path in status.dead_lettered_paths:
        step = next_step(FailureCause.DEAD_LETTERED, batch, path)
        groups.setdefault(step, []).append(
            f"  {path}  (dead-lettered: its job failed every delivery)"
        )
    return groups


class _DeadLetterWatch:
    """The batch's paths on the dead-letter queue, looked up again only when the DLQ's
    message count changes (one GetQueueAttributes per poll; the DLQ is read rarely)."""

    def __init__(self, settings: Settings, batch: str) -> None:
        self.settings = settings
        self.batch = batch
        self.paths: set[str] = set()
        self._count = 0

    def changed(self) -> bool:
        if not self.settings.dlq_url:
            return False
        from whisperq.batches import dead_letters as deadletter

        count = storage.queue_counts(self.settings).dead_lettered or 0
        if count == self._count:
            return False
        self._count = count
        paths = deadletter.batch_paths(self.settings, self.batch) if count else set()
        moved, self.paths = paths != self.paths, paths
        return moved


@app.command()
def results(
    batch: Annotated[str, typer.Argument(help="The batch to download.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where to write.")] = Path(
        "transcripts"
    ),
    formats: Annotated[
        str,
        typer.Option(
            "--formats",
            "--format",
            "-f",
            help="Comma-separated: json,srt,vtt,txt,audio (audio: the redacted audio "
            "copies of a batch submitted with --redact-audio).",
        ),
    ] = ",".join(keys.DOWNLOAD_KINDS),
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Write into a folder holding another batch's results (or files whisperq "
            "did not write), replacing files with the same paths.",
        ),
    ] = False,
) -> None:
    """Download a batch's transcripts, mirroring the submitted relative paths.

    Example: `whisperq results weekly --out transcripts/ --format txt`
    """
    from whisperq.batches.download import check_target, download_results, plan_download

    chosen = [item.strip() for item in formats.split(",") if item.strip()]
    unknown = sorted(set(chosen) - set(keys.DOWNLOAD_KINDS))
    if unknown or not chosen:
        raise UsageError(
            f"Unknown format(s) {unknown}; choose from {', '.join(keys.DOWNLOAD_KINDS)}."
        )
    settings = settings_for_storage()
    if tracking.load_batch(settings, storage.client(settings, "s3"), batch) is None:
        raise no_batch(batch, settings)
    download = plan_download(settings, batch, out_dir, chosen)
    if not download.items:
        if not download.kinds_present:
            err.print(f"Batch {batch!r} has no results yet: `whisperq status {batch}`.")
            return
        has = ", ".join(sorted(download.kinds_present))
        raise WhisperqError(
            f"Batch {batch!r} has no {','.join(chosen)} results; it has: {has} "
            "(a batch writes the formats it was submitted with, --formats)."
        )
    check_target(download, overwrite)
    with progress_bar() as progress:
        report = download_results(settings, download, RichHooks(progress))
    err.print(f"{len(report.files)} file(s) written under {out_dir}/", highlight=False)
    if report.errors:
        err.print(f"[red]{report.errors} failure record(s) among them (*.error.json).[/]")


# --- retry / dlq ----------------------------------------------------------------------


@app.command()
def retry(
    batch: Annotated[str, typer.Argument(help="The batch whose failed jobs to run again.")],
    stale: Annotated[
        bool,
        typer.Option(
            "--stale",
            help="Also queue again the pending files whose jobs are gone from the queues "
            "(dropped after the queue's retention period, or purged): each once, however "
            "often or concurrently this runs.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Re-queue a batch's failed files and its dead-lettered jobs (and with --stale, the
    files whose jobs vanished).

    Example: `whisperq retry weekly --stale`
    """
    from whisperq.batches import dead_letters as deadletter
    from whisperq.batches.submit import requeue_failed

    settings = settings_for_storage()
    failed = requeue_failed(settings, batch)
    moved = deadletter.redrive(settings, batch)[0] if settings.dlq_url else []
    vanished = completion.requeue_stale(settings, batch) if stale else []
    if as_json:
        dead = [letter.as_dict() for letter in moved]
        print_json({"batch": batch, "failed": failed, "dead_lettered": dead, "stale": vanished})
        return
    err.print(
        f"Re-queued {len(failed)} failed file(s) and {len(moved)} dead-lettered job(s) of {batch}"
        + (f", and {len(vanished)} stale file(s)." if stale else ".")
    )


@app.command()
def dlq(
    redrive: Annotated[
        bool, typer.Option("--redrive", help="Move the jobs back to the queue.")
    ] = False,
    batch: Annotated[
        str | None, typer.Option("--batch", "-b", help="Only this batch's jobs.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show the dead-letter queue: jobs SQS gave up on after maxReceiveCount deliveries.

    Example: `whisperq dlq --redrive`
    """
    from whisperq.batches import dead_letters as deadletter

    settings = settings_for_storage()
    left = 0
    if redrive:
        letters, left = deadletter.redrive(settings, batch)
    else:
        letters = [
            letter
            for letter in deadletter.peek(settings)
            if batch is None or (letter.job is not None and letter.job.batch == batch)
        ]
    if as_json:
        print_json({"redriven": redrive, "messages": [letter.as_dict() for letter in letters]})
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
