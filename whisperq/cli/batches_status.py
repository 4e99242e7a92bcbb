"""`whisperq status`: where batches stand, the queues, the fleet and when the backlog will
be done."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.markup import escape
from rich.table import Table

from whisperq import storage
from whisperq.batches import completion, tracking
from whisperq.cli.app import (
    JsonFlag,
    app,
    duration_text,
    err,
    explain_aws_error,
    out,
    print_json,
    settings_for_storage,
)
from whisperq.cli.batches import no_batch
from whisperq.fleet import group_status as fleet
from whisperq.settings import Settings
from whisperq.stacks import local as local_stack

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
    views: dict[str, tracking.BatchView] = {}  # listed once: the stale check reuses it
    queue = storage.queue_counts(settings)  # read once, for every batch and the fleet
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
        view = tracking.load_batch(settings, s3, name)
        if view is None:
            raise no_batch(name, settings)
        views[name] = view
        found = tracking.batch_status(settings, s3, name, newest, view=view)
        if found is None:
            raise no_batch(name, settings)
        found = tracking.confirmed(settings, s3, found, view, counts=queue)
        completion.mark_finished(settings, s3, found)
        statuses.append(found)
    ingest, ingest_error = _ingest_counts(settings)
    stale: list[str] = []
    if batch is not None and statuses[0].pending:
        view = views.get(batch)
        if view is not None:
            queues = completion.queue_state(settings, queue)
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
            ingest_data = dict(ingest.as_dict())
        fleet_data: dict[str, Any] | None = None
        if fleet_now is not None:
            fleet_data = fleet_now.as_dict()
        elif fleet_error is not None:
            fleet_data = {"group": settings.autoscaling_group, "error": fleet_error}
        print_json(
            {
                "target": settings.target,
                "batches": batches,
                "queue": queue.as_dict(),
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
