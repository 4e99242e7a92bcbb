"""A batch's end, the contract between what finishes batches and what waits for them:
``batches/<batch>/done.json`` and the EventBridge event "whisperq batch finished".

Finished: every file of the batch has a result JSON or an error record (a job on the
dead-letter queue has neither: its file is still pending, ``retry`` may finish it), and
the batch takes no more files: a daily ingest batch is open until its day is over plus a
grace for late object events (``open_until`` in its ``batch.json``,
``keys.daily_batch_open_until``).

Whoever sees it first writes ``done.json`` with a conditional write (``If-None-Match:
*``): of any number of writers at once exactly one creates it, and only that one puts the
event, so downstream gets one marker and one event per batch. The writers: a worker whose
queue has run dry, after its job's results (``whisperq.worker.batch_end``), and the
CLI's ``status`` and ``wait`` (``whisperq.batches.completion``, from a status they have
already counted). Here because both use it and the worker may not import
``whisperq.batches``: this reads the batch's records by their keys (``whisperq.keys``)
with two listings and no GET per file.

A daily batch can close hours after its last job, when no worker is left to look: ingest
marks each daily batch it creates open (``keys.open_batch_key``), and the ingest Lambda,
run by a schedule (or ``whisperq ingest`` locally), closes the marked batches whose day is
over (:func:`close_open_batches`). Standard library and boto3 only: that Lambda ships
this module.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import boto3
from botocore.exceptions import ClientError

from whisperq import entry_states, keys, storage

EVENT_SOURCE = "whisperq"
EVENT_DETAIL_TYPE = "whisperq batch finished"
# A conditional write that lost: the object is there (or another write of it is under way).
_EXISTS = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")

log = logging.getLogger("whisperq")

Outcome = Literal["written", "finished", "pending", "open", "unknown"]
# EventBridge takes 256 KB an event: the event names this many failed paths at most (and
# says how many more); done.json has them all.
EVENT_FAILED_PATHS = 100


class Destination(Protocol):
    """Where batches live and where their event goes (whisperq's ``Settings`` is one; the
    ingest Lambda's ``IngestConfig`` another)."""

    @property
    def bucket(self) -> str: ...

    @property
    def event_bus(self) -> str | None: ...


def open_until(document: Mapping[str, Any] | None) -> datetime | None:
    """When a batch that takes new files until a time (a daily batch) closes, from its
    ``batch.json``; None: it never is open that way."""
    text = (document or {}).get("open_until")
    try:
        closes = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    if closes is not None and closes.tzinfo is None:
        closes = closes.replace(tzinfo=UTC)
    return closes


def is_finished(
    submitted: int, pending: int, closes: datetime | None, now: datetime | None = None
) -> bool:
    """Files, none of them pending, and the batch no longer open for new files."""
    now = now or datetime.now(UTC)
    return submitted > 0 and pending == 0 and (closes is None or now >= closes)


def result_states(batch: str, result_keys: Iterable[str]) -> tuple[set[str], set[str]]:
    """(paths with a result JSON, paths with an error record) among a batch's result keys."""
    done: set[str] = set()
    errored: set[str] = set()
    for key in result_keys:
        parsed = keys.parse_result_key(batch, key)
        if parsed is None:
            continue
        path, kind = parsed
        if kind == "json":
            done.add(path)
        elif kind == "error":
            errored.add(path)
    return done, errored


def done_document(
    batch: str,
    *,
    submitted: int,
    done: int,
    failed_paths: Iterable[str],
    audio_seconds: float,
    audio_seconds_submitted: float,
    now: datetime,
) -> dict[str, Any]:
    """What ``done.json`` (and the event's detail) say of a finished batch."""
    failed = sorted(failed_paths)
    return {
        "batch": batch,
        "finished_at": now.isoformat(),
        "submitted": submitted,
        "done": done,
        "failed": len(failed),
        "failed_paths": failed,
        "audio_seconds": audio_seconds,
        "audio_seconds_submitted": audio_seconds_submitted,
        "results_prefix": keys.results_prefix(batch),
    }


def write_done(settings: Destination, s3: Any, done: Mapping[str, Any], events: Any = None) -> bool:
    """Create ``done.json`` unless it exists; True when this call created it, and then (only
    then) the event is put -- once: an event EventBridge refuses is logged, and the marker
    stays the record."""
    try:
        s3.put_object(
            Bucket=settings.bucket,
            Key=keys.done_key(str(done["batch"])),
            Body=json.dumps(done, indent=2).encode(),
            ContentType="application/json",
            IfNoneMatch="*",
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in _EXISTS:
            return False  # another writer created it first
        raise
    try:
        emit_finished(settings, done, events)
    except Exception as error:
        log.error(
            "batch %s: done.json written, but its event was not put: %s", done["batch"], error
        )
    return True


def emit_finished(settings: Destination, done: Mapping[str, Any], events: Any = None) -> None:
    """The EventBridge event for a finished batch, when an event bus is configured
    (``events``: the EventBridge client to use; else the default one)."""
    if not settings.event_bus:
        return
    detail = dict(done)
    failed = list(detail.get("failed_paths", []))
    if len(failed) > EVENT_FAILED_PATHS:
        detail["failed_paths"] = failed[:EVENT_FAILED_PATHS]
        detail["failed_paths_not_shown"] = len(failed) - EVENT_FAILED_PATHS
    events = events or boto3.client("events")
    answer = events.put_events(
        Entries=[
            {
                "Source": EVENT_SOURCE,
                "DetailType": EVENT_DETAIL_TYPE,
                "Detail": json.dumps(detail),
                "EventBusName": settings.event_bus,
                "Resources": [f"arn:aws:s3:::{settings.bucket}/{keys.done_key(done['batch'])}"],
            }
        ]
    )
    if answer.get("FailedEntryCount"):
        raise RuntimeError(f"EventBridge did not take the event: {answer.get('Entries')}")


# --- the check a worker makes ---------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """A batch's files and which have a result or an error record, from two listings."""

    batch: str
    durations: dict[str, float | None]
    done: set[str]
    errored: set[str]

    @property
    def pending(self) -> int:
        return len(self.durations.keys() - self.done - self.errored)

    def document(self, now: datetime) -> dict[str, Any]:
        """``done.json`` of the batch (a result wins over an earlier error record)."""
        seconds = {path: duration or 0.0 for path, duration in self.durations.items()}
        done = self.done & seconds.keys()
        return done_document(
            self.batch,
            submitted=len(seconds),
            done=len(done),
            failed_paths=(self.errored & seconds.keys()) - done,
            audio_seconds=round(sum(seconds[path] for path in done), 3),
            audio_seconds_submitted=round(sum(seconds.values()), 3),
            now=now,
        )


def read_batch_document(settings: Destination, s3: Any, batch: str) -> dict[str, Any] | None:
    """``batch.json``, or a batch's ``manifest.json`` from before per-file entries."""
    document = storage.get_json(s3, settings.bucket, keys.batch_info_key(batch))
    if document is None:
        document = storage.get_json(s3, settings.bucket, keys.manifest_key(batch))
    return document


def tally(settings: Destination, s3: Any, batch: str, document: Mapping[str, Any]) -> Tally:
    """The batch's files (its entries, or a legacy manifest's list) and their states: from
    the entries' keys alone when they carry them, else from the results listing. A missed
    rename says "pending", never "done" (whisperq.entry_states), so a worker never marks a
    batch finished early; the rare batch whose rename was missed for good (a worker that
    could not rename and stopped before trying again; a redelivered job renames it) is
    marked by `status` or `wait`, which count from the results once the queues are empty.
    Listing every result at the tail of a big batch, as each worker settles a job there,
    cost thousands of requests (benchmarks/day_run.py)."""
    durations: dict[str, float | None] = {
        str(entry["path"]): entry.get("duration") for entry in document.get("files", [])
    }
    newest: dict[str, entry_states.ListedEntry] = {}
    for item in storage.list_objects(s3, settings.bucket, keys.entries_prefix(batch)):
        listed = entry_states.listed_entry(
            batch, {"Key": item.key, "LastModified": item.last_modified}
        )
        if listed is None:
            continue
        current = newest.get(listed.path)
        if current is None or entry_states.newer(listed, current):  # entered again: the newest
            newest[listed.path] = listed
    durations.update((path, listed.duration) for path, listed in newest.items())
    if document.get("entry_states") and not document.get("files"):
        done = {path for path, listed in newest.items() if listed.state == "done"}
        errored = {path for path, listed in newest.items() if listed.state == "failed"}
        return Tally(batch, durations, done, errored)
    listing = storage.list_objects(s3, settings.bucket, keys.results_prefix(batch))
    done, errored = result_states(batch, (item.key for item in listing))
    return Tally(batch, durations, done, errored)


def finish_if_done(
    settings: Destination,
    s3: Any,
    batch: str,
    now: datetime | None = None,
    events: Any = None,
) -> Outcome:
    """Write ``done.json`` (and put the event) if ``batch`` is finished and nobody has yet.

    "written": this call did; "finished": it was there already (or another writer won);
    "pending": files without a result or an error record; "open": a daily batch before it
    closes; "unknown": no such batch. One GET when the batch is finished already; else two
    GETs and the listing of its entries (and of its results, unless the entries' states
    settle it: ``tally``)."""
    now = now or datetime.now(UTC)
    if storage.get_json(s3, settings.bucket, keys.done_key(batch)) is not None:
        return "finished"
    document = read_batch_document(settings, s3, batch)
    if document is None:
        return "unknown"
    closes = open_until(document)
    if closes is not None and now < closes:
        return "open"
    found = tally(settings, s3, batch, document)
    if not is_finished(len(found.durations), found.pending, closes, now):
        return "pending"
    return "written" if write_done(settings, s3, found.document(now), events) else "finished"


# --- daily batches whose day is over ---------------------------------------------------------


def mark_open(s3: Any, bucket: str, batch: str, closes: datetime) -> None:
    """Note a daily batch as open until ``closes``, so that it is closed after."""
    s3.put_object(
        Bucket=bucket,
        Key=keys.open_batch_key(batch, closes),
        Body=json.dumps({"batch": batch, "open_until": closes.isoformat()}).encode(),
        ContentType="application/json",
    )


def close_open_batches(
    settings: Destination, s3: Any, now: datetime | None = None, events: Any = None
) -> dict[str, Outcome]:
    """Each batch marked open whose time is over: ``done.json`` written (and its event
    put) when nothing is pending, its mark removed once the batch is finished (or gone).
    One listing of the marks, and nothing more for a batch whose day is not over yet;
    what became of each batch looked at. Run every few minutes (the ingest Lambda's
    schedule), it closes a day's batch after the fleet has scaled in."""
    now = now or datetime.now(UTC)
    outcomes: dict[str, Outcome] = {}
    for item in storage.list_objects(s3, settings.bucket, keys.open_batches_prefix()):
        parsed = keys.parse_open_batch_key(item.key)
        if parsed is None:
            continue
        batch, closes = parsed
        if now < closes:
            continue
        outcome = finish_if_done(settings, s3, batch, now, events)
        outcomes[batch] = outcome
        if outcome in ("written", "finished", "unknown"):
            s3.delete_object(Bucket=settings.bucket, Key=item.key)
    return outcomes
