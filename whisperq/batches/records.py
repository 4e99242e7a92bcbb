"""A batch's records in S3: its options, written once, and one entry per file.

Any number of writers add to a batch at once (several ``whisperq submit``, the ingest
step running for many objects at the same time): each file's entry is its own object,
and the batch's options are created with a conditional write (``If-None-Match: *``), so
no writer can overwrite another's and no entry is lost. Readers list the entries by
prefix (:func:`list_entries`): one request per 1,000 files, whatever the writers did.

An entry is written after its job is on the queue, so an entry always has a job: a
submit cut short before it re-sends the job when run again (jobs are idempotent).

Standard library only (with a boto3 client passed in): the ingest Lambda ships this
module as it is. The documents' shapes are :class:`whisperq.schemas.BatchInfo` and
:class:`whisperq.schemas.FileEntry`; tests validate what is written here against them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from whisperq import keys
from whisperq.errors import SubmitError

BATCH_SCHEMA_VERSION = 2
_JSON = "application/json"
# A conditional write that lost: another writer's object is there (or is being written).
_LOST_RACE = ("PreconditionFailed", "412", "ConditionalRequestConflict")


@dataclass(frozen=True)
class ListedEntry:
    """What the listing says of one file of a batch, without reading its entry."""

    path: str
    key: str
    duration: float | None
    last_modified: datetime | None = None


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _get_json(s3: Any, bucket: str, key: str) -> Any | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as error:
        if _error_code(error) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    return json.loads(body)


def _put_json(s3: Any, bucket: str, key: str, document: Any, **conditions: str) -> None:
    body = json.dumps(document, indent=1).encode("utf-8")
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=_JSON, **conditions)


# --- the batch: its options ------------------------------------------------------------


def read_batch_document(s3: Any, bucket: str, batch: str) -> dict[str, Any] | None:
    """``batch.json``, or for a batch from before per-file entries its ``manifest.json``
    (which also lists its files under "files"); None if there is no such batch."""
    document = _get_json(s3, bucket, keys.batch_info_key(batch))
    if document is None:
        document = _get_json(s3, bucket, keys.manifest_key(batch))
    return document


def stored_options(s3: Any, bucket: str, batch: str) -> dict[str, Any] | None:
    """The options the batch was created with; None if there is no such batch."""
    document = read_batch_document(s3, bucket, batch)
    return None if document is None else dict(document.get("options") or {})


def ensure_batch(
    s3: Any, bucket: str, batch: str, options: Mapping[str, Any], source: str, strict: bool
) -> dict[str, Any]:
    """The batch's options, creating the batch with ``options`` if it does not exist.

    Of several writers creating one batch at once exactly one succeeds (conditional
    write); the others read what it wrote. With ``strict``, options that differ from the
    batch's raise :class:`SubmitError`; without, the batch's own options are returned.
    """
    existing = stored_options(s3, bucket, batch)
    if existing is None:
        document = {
            "schema_version": BATCH_SCHEMA_VERSION,
            "batch": batch,
            "created_at": now_iso(),
            "source": source,
            "options": dict(options),
        }
        try:
            _put_json(s3, bucket, keys.batch_info_key(batch), document, IfNoneMatch="*")
            return dict(options)
        except Exception as error:
            if _error_code(error) not in (
                "PreconditionFailed",
                "412",
                "ConditionalRequestConflict",
            ):
                raise
        existing = _options_written_by_another(s3, bucket, batch)
    if strict and existing != dict(options):
        raise SubmitError(
            f"Batch {batch!r} was created with other options ({existing}); use a new batch "
            "name for different options."
        )
    return existing


def _options_written_by_another(s3: Any, bucket: str, batch: str) -> dict[str, Any]:
    # S3 answers 409 while the winning write is still in progress: it shows up shortly.
    for attempt in range(10):
        existing = stored_options(s3, bucket, batch)
        if existing is not None:
            return existing
        time.sleep(0.1 * (attempt + 1))
    raise SubmitError(f"Batch {batch!r} is being created by another writer; try again.")


# --- the files: one entry each ---------------------------------------------------------


def entry_document(
    batch: str,
    path: str,
    sha256: str,
    size: int,
    duration: float | None,
    source: str,
    origin: str | None = None,
) -> dict[str, Any]:
    """A file's entry (the shape of :class:`whisperq.schemas.FileEntry`)."""
    return {
        "schema_version": BATCH_SCHEMA_VERSION,
        "path": path,
        "input_key": keys.input_key(batch, path),
        "sha256": sha256,
        "size": size,
        "duration": duration,
        "submitted_at": now_iso(),
        "source": source,
        "origin": origin,
    }


def job_payload(batch: str, entry: Mapping[str, Any], options: Mapping[str, Any]) -> dict:
    """The task payload for one file (the shape of :class:`whisperq.schemas.TranscriptionJob`)."""
    return {
        "schema_version": 1,
        "batch": batch,
        "path": entry["path"],
        "input_key": entry["input_key"],
        "sha256": entry["sha256"],
        "size": entry["size"],
        "options": dict(options),
    }


def write_entries(
    s3: Any,
    bucket: str,
    batch: str,
    entries: Iterable[Mapping[str, Any]],
    replaced: Mapping[str, ListedEntry] | None = None,
    threads: int = 8,
) -> None:
    """Write each entry (in parallel); an older entry of the same path under another key
    (another duration) is removed after the new one is in place."""
    replaced = replaced or {}

    def write(entry: Mapping[str, Any]) -> None:
        key = keys.entry_key(batch, entry["path"], entry["duration"])
        _put_json(s3, bucket, key, dict(entry))
        old = replaced.get(entry["path"])
        if old is not None and old.key != key:
            s3.delete_object(Bucket=bucket, Key=old.key)

    todo = list(entries)
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(todo)))) as pool:
        list(pool.map(write, todo))


def list_entries(s3: Any, bucket: str, batch: str) -> dict[str, ListedEntry]:
    """Every file of the batch by path, from one listing. If a path has more than one
    entry (a file submitted again with another duration, while the old entry was being
    removed), the newest counts."""
    found: dict[str, ListedEntry] = {}
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=keys.entries_prefix(batch)):
        for item in page.get("Contents", []):
            parsed = keys.parse_entry_key(batch, item["Key"])
            if parsed is None:
                continue
            path, duration = parsed
            listed = ListedEntry(path, item["Key"], duration, item.get("LastModified"))
            current = found.get(path)
            if current is None or _newer(listed, current):
                found[path] = listed
    return found


def _newer(a: ListedEntry, b: ListedEntry) -> bool:
    if a.last_modified and b.last_modified and a.last_modified != b.last_modified:
        return a.last_modified > b.last_modified
    return a.key > b.key


def read_entry(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    return _get_json(s3, bucket, key)


def read_entries(
    s3: Any, bucket: str, listed: Iterable[ListedEntry], threads: int = 16
) -> dict[str, dict[str, Any]]:
    """The entries behind ``listed`` (one GET each, ``threads`` at a time), by path;
    entries that vanished in between are left out."""
    todo = list(listed)
    if not todo:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(todo)))) as pool:
        documents = list(pool.map(lambda item: read_entry(s3, bucket, item.key), todo))
    return {item.path: document for item, document in zip(todo, documents, strict=True) if document}


def legacy_entries(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The files listed in a batch document from before per-file entries, by path (none
    for a ``batch.json``)."""
    return {entry["path"]: entry for entry in document.get("files", [])}
