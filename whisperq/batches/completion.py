"""A batch's end: the "finished" marker downstream systems wait for, and the paths whose
jobs vanished from the queues (recovered by ``whisperq retry BATCH --stale``).

Finished: every path of the batch has a result or an error record. The first that
sees it (``status``, ``wait``, a worker whose queue has run dry) writes
``batches/<batch>/done.json`` with an S3 conditional write (If-None-Match), so it is
written once however many see it at once; the one that wrote it also emits an
EventBridge event ("whisperq batch finished") when an event bus is configured, so a rule
can start what comes next. A batch that is still open for new files (a daily ingest
batch before its day is over: ``open_until`` in its ``batch.json``) is not finished.
The document, the rule and the write are ``whisperq.finished``'s (the worker uses them
too); this module applies them to a status the CLI has counted already.

Stale: a path with no result and no error record whose job is no longer on the job queue
or the dead-letter queue, so nothing will ever finish it -- because SQS dropped the job
after its retention period (a backlog older than that: a fleet capped too low, a quota at
0) or the queue was purged. Without reading every message, a path is known to be stale
when its entry is older than the queue's retention period, or when both queues are empty
while it is still pending. ``requeue_stale`` queues such a path once: a claim object per
path and day (conditional write) makes a second run, or two at once, queue nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from whisperq import finished, keys, storage
from whisperq.batches import records as batch_records
from whisperq.batches import tracking
from whisperq.errors import SubmitError
from whisperq.messages import send_jobs
from whisperq.settings import Settings

EVENT_SOURCE = finished.EVENT_SOURCE
EVENT_DETAIL_TYPE = finished.EVENT_DETAIL_TYPE
_EXISTS = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
open_until = finished.open_until
emit_finished = finished.emit_finished


def done_document(status: tracking.BatchStatus, now: datetime) -> dict[str, Any]:
    """What ``done.json`` (and the event) say of a finished batch (``whisperq.finished``)."""
    return finished.done_document(
        status.batch,
        submitted=status.submitted,
        done=status.done,
        failed_paths=status.failed_paths,
        audio_seconds=status.audio_seconds_done,
        audio_seconds_submitted=status.audio_seconds_submitted,
        now=now,
    )


def status_from_done(done: dict[str, Any]) -> tracking.BatchStatus:
    """A finished batch's status from its ``done.json`` (one GET, no listing)."""
    return tracking.BatchStatus(
        batch=str(done["batch"]),
        submitted=int(done["submitted"]),
        done=int(done["done"]),
        failed=int(done["failed"]),
        pending=0,
        audio_seconds_submitted=float(done.get("audio_seconds_submitted", 0.0)),
        audio_seconds_done=float(done.get("audio_seconds", 0.0)),
        failed_paths=list(done.get("failed_paths", [])),
    )


def finished_at(done: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(done["finished_at"]))
    except (KeyError, ValueError):
        return None


def is_finished(
    status: tracking.BatchStatus, closes: datetime | None = None, now: datetime | None = None
) -> bool:
    """Nothing pending (dead-lettered jobs count as pending here: `retry` may still finish
    them), and the batch no longer open for new files."""
    pending = status.pending + len(status.dead_lettered_paths)
    return finished.is_finished(status.submitted, pending, closes, now)


def read_done(settings: Settings, s3: Any, batch: str) -> dict[str, Any] | None:
    return storage.get_json(s3, settings.bucket, keys.done_key(batch))


def mark_finished(
    settings: Settings, s3: Any, status: tracking.BatchStatus, now: datetime | None = None
) -> bool:
    """Write ``done.json`` if the batch is finished and nobody has yet; True when this call
    wrote it (and so emitted the event). See ``whisperq.finished``."""
    now = now or datetime.now(UTC)
    document = batch_records.read_batch_document(s3, settings.bucket, status.batch)
    if not is_finished(status, open_until(document), now):
        return False
    return finished.write_done(
        settings, s3, done_document(status, now), storage.events_client(settings)
    )


# --- stale paths ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueState:
    """What the queues tell about jobs without reading them."""

    empty: bool  # job queue and dead-letter queue hold nothing, in flight included
    retention_seconds: float  # how long SQS keeps a job before dropping it


def queue_state(settings: Settings, counts: storage.QueueCounts | None = None) -> QueueState:
    """From ``counts`` when the caller has read them already."""
    counts = counts or storage.queue_counts(settings)
    empty = counts.visible == 0 and counts.in_flight == 0 and not counts.dead_lettered
    return QueueState(empty, counts.retention_seconds)


def stale_paths(
    view: tracking.BatchView,
    status: tracking.BatchStatus,
    queues: QueueState,
    now: datetime,
    dead_lettered: Collection[str] = (),
) -> list[str]:
    """Pending paths whose jobs are gone: all of them when the queues are empty, else
    those whose entry is older than the queue's retention period. Paths on the
    dead-letter queue are not stale (`retry` redrives them)."""
    pending = [p for p in status.pending_paths if p not in dead_lettered]
    if queues.empty:
        return sorted(pending)
    cutoff = now - timedelta(seconds=queues.retention_seconds)
    return sorted(
        path
        for path in pending
        if (stamp := view.files[path].last_modified) is not None and stamp < cutoff
    )


def requeue_stale(settings: Settings, batch: str, now: datetime | None = None) -> list[str]:
    """Queue every stale path of ``batch`` again, each once (see the module docstring);
    returns the paths this call queued."""
    from whisperq.batches import dead_letters

    now = now or datetime.now(UTC)
    s3 = storage.client(settings, "s3")
    view = tracking.load_batch(settings, s3, batch)
    if view is None:
        raise SubmitError(f"No batch named {batch!r} on {settings.target}.")
    status = tracking.batch_status(settings, s3, batch, view=view, exact=True)
    assert status is not None
    queues = queue_state(settings)
    parked = dead_letters.batch_paths(settings, batch) if settings.dlq_url else set()
    stale = stale_paths(view, status, queues, now, parked)
    claimed = [path for path in stale if _claim(settings, s3, batch, path, now)]
    if not claimed:
        return []
    entries = view.entries(settings, s3, claimed)
    payloads = [entry.job(batch, view.options).model_dump(mode="json") for entry in entries]
    send_jobs(storage.client(settings, "sqs"), settings.queue_url, payloads)
    return [entry.path for entry in entries]


def _claim(settings: Settings, s3: Any, batch: str, path: str, now: datetime) -> bool:
    """One requeue of ``path`` per day, however many runs: the first to write the claim."""
    try:
        s3.put_object(
            Bucket=settings.bucket,
            Key=keys.requeue_claim_key(batch, path, now.date().isoformat()),
            Body=json.dumps({"path": path, "requeued_at": now.isoformat()}).encode(),
            IfNoneMatch="*",
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in _EXISTS:
            return False
        raise
    return True
