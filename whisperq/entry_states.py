"""Each file's state in its batch's entry key, so one listing of ``batches/<batch>/files/``
says which files are done: ``status`` of a 50,000-file batch is ~50 list requests, not
the ~250 of listing every rendering under ``results/`` (BENCHMARKS.md, status_scale).

An entry is written ``<ms>.json`` (pending) after its job is queued. Whoever writes the
file's result JSON or error record renames the entry afterwards (:func:`mark`: a server-
side copy to ``<ms>.done.json`` / ``<ms>.failed.json``, then the old key deleted), so a
state in a key always follows what it says. ``retry`` renames a failed entry back to
pending before it queues the job again; a file submitted again gets a new pending entry.
Of a path's entries the newest counts (:func:`newer`).

The results stay the truth: a rename can be missed (a worker stopped between its result
and the rename; a job finished before submit had written its entry; a worker from before
entries had states). So a state says at most "pending" wrongly, never "done": readers
that find files pending while nothing is left on the queues count from the results
instead (``tracking.batch_status(exact=True)``, ``finished.finish_if_done``). Batches
created before entries had states (no ``entry_states`` in their batch.json) are always
counted from the results.

Standard library only (a boto3 client passed in): the ingest Lambda ships this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from whisperq import keys


@dataclass(frozen=True)
class ListedEntry:
    """What the listing says of one file of a batch, without reading its entry."""

    path: str
    key: str
    duration: float | None
    last_modified: datetime | None = None
    state: keys.EntryState = "pending"


def listed_entry(batch: str, item: Mapping[str, Any]) -> ListedEntry | None:
    """One item of a ``list_objects_v2`` page as an entry of ``batch`` (None if it is not)."""
    parts = keys.parse_entry(batch, item["Key"])
    if parts is None:
        return None
    return ListedEntry(
        parts.path, item["Key"], parts.duration, item.get("LastModified"), parts.state
    )


# Of two entries of one path with the same LastModified (S3 keeps whole seconds), one
# renamed to "done" or "failed" was renamed from the other, so it is the newer.
_STATE_ORDER: dict[str, int] = {"pending": 0, "failed": 1, "done": 2}
_OLDEST = datetime.min.replace(tzinfo=UTC)


def recency(item: ListedEntry) -> tuple[datetime, int, str]:
    """Sort key: newest last."""
    return (item.last_modified or _OLDEST, _STATE_ORDER[item.state], item.key)


def newer(a: ListedEntry, b: ListedEntry) -> bool:
    if a.last_modified and b.last_modified and a.last_modified != b.last_modified:
        return a.last_modified > b.last_modified
    return recency(a)[1:] > recency(b)[1:]


def path_entries(s3: Any, bucket: str, batch: str, path: str) -> list[ListedEntry]:
    """The entries of one path of a batch (normally one), newest first; one listing."""
    answer = s3.list_objects_v2(Bucket=bucket, Prefix=keys.entry_prefix(batch, path), Delimiter="/")
    found = [listed_entry(batch, item) for item in answer.get("Contents", [])]
    return sorted(
        (item for item in found if item is not None and item.path == path),
        key=recency,
        reverse=True,
    )


def mark(
    s3: Any,
    bucket: str,
    batch: str,
    path: str,
    state: keys.EntryState,
    pending_key: str | None = None,
) -> bool:
    """Rename the path's newest entry to ``state`` (after its result or error record is
    written, or before ``retry`` queues it again). False when the path has no entry (yet:
    submit writes entries after it queues the jobs) or another writer renamed it first;
    the caller may try again later.

    ``pending_key``: the entry the job was queued with (a worker knows it from its job).
    It is renamed straight away, a copy and a delete; only when it is not there (renamed
    or replaced meanwhile, or not written yet) is the path listed. Otherwise one listing,
    and a copy and a delete when the state changes."""
    if pending_key is not None and state != "pending":
        parts = keys.parse_entry(batch, pending_key)
        if parts is not None and parts.path == path and parts.state == "pending":
            target = keys.entry_key(batch, path, parts.duration, state)
            if _rename(s3, bucket, pending_key, target):
                return True
    entries = path_entries(s3, bucket, batch, path)
    if not entries:
        return False
    newest = entries[0]
    if newest.state == state:
        return True
    return _rename(s3, bucket, newest.key, keys.entry_key(batch, path, newest.duration, state))


def _rename(s3: Any, bucket: str, source: str, target: str) -> bool:
    """A server-side copy, then the source deleted; False when the source is not there."""
    try:
        s3.copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": source})
    except Exception as error:  # renamed away meanwhile (NoSuchKey): that writer's state holds
        if error_code(error) in ("NoSuchKey", "404"):
            return False
        raise
    s3.delete_object(Bucket=bucket, Key=source)
    return True


def error_code(error: Exception) -> str:
    """A botocore error's code ("NoSuchKey", "PreconditionFailed", ...), or ""."""
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
