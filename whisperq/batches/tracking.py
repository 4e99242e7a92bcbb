"""Where batches stand, from S3 listings alone (no GET per result, so 10,000 files stay fast).

A batch whose entries carry their states (whisperq.entry_states) is counted from the
listing of its entries alone: a request per 1,000 files. Others, and any batch when asked
for the exact count (``exact``: files still pending while the queues are empty), from the
listing of its results as well.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from whisperq import finished, keys, storage
from whisperq.batches import records as batch_records
from whisperq.schemas import ErrorRecord, FileEntry, TranscriptionOptions
from whisperq.settings import Settings


@dataclass
class BatchStatus:
    batch: str
    submitted: int
    done: int
    failed: int
    pending: int
    audio_seconds_submitted: float
    audio_seconds_done: float
    failed_paths: list[str] = field(default_factory=list)
    dead_lettered_paths: list[str] = field(default_factory=list)  # only when asked (wait)
    unknown_durations: int = 0  # files whose duration was not known when they were added
    redaction: dict[str, Any] | None = None  # the batch's setting (redaction_setting)
    # neither done nor failed nor dead-lettered (not in as_dict: a big batch has many)
    pending_paths: list[str] = field(default_factory=list, repr=False)

    @property
    def finished(self) -> bool:
        return self.pending == 0

    @property
    def audio_hours_done(self) -> float:
        return self.audio_seconds_done / 3600

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["pending_paths"]
        data["audio_hours_done"] = round(self.audio_hours_done, 4)
        data["finished"] = self.finished
        return data


@dataclass
class BatchView:
    """A batch as readers see it: its options and its files (path -> listing of the
    entry), from one GET and one listing; entries themselves are read only on demand."""

    batch: str
    options: TranscriptionOptions
    files: dict[str, batch_records.ListedEntry]
    legacy: dict[str, dict[str, Any]] = field(default_factory=dict)  # pre-entries manifest
    stated: bool = False  # its entries' keys carry their states (batch.json entry_states)

    @property
    def durations(self) -> dict[str, float | None]:
        return {path: listed.duration for path, listed in self.files.items()}

    def entries(self, settings: Settings, s3: Any, paths: Iterable[str]) -> list[FileEntry]:
        """The entries of ``paths`` (GET per entry; legacy ones from the manifest)."""
        wanted = [path for path in paths if path in self.files]
        manifest_key = keys.manifest_key(self.batch)
        stored = [self.files[path] for path in wanted if self.files[path].key != manifest_key]
        documents = batch_records.read_entries(s3, settings.bucket, stored)
        for path in wanted:
            if path not in documents and path in self.legacy:
                documents[path] = _from_legacy(self.legacy[path])
        return [FileEntry.model_validate(documents[p]) for p in wanted if p in documents]


def _from_legacy(entry: dict[str, Any]) -> dict[str, Any]:
    fields = ("path", "input_key", "sha256", "size", "duration", "submitted_at")
    return {name: entry.get(name) for name in fields}


def load_batch(settings: Settings, s3: Any, batch: str) -> BatchView | None:
    """The batch's options and files; None if no such batch was submitted."""
    document = batch_records.read_batch_document(s3, settings.bucket, batch)
    if document is None:
        return None
    legacy = batch_records.legacy_entries(document)
    manifest_key = keys.manifest_key(batch)
    files = {
        path: batch_records.ListedEntry(path, manifest_key, entry.get("duration"))
        for path, entry in legacy.items()
    }
    files.update(batch_records.list_entries(s3, settings.bucket, batch))
    options = TranscriptionOptions.model_validate(document.get("options") or {})
    stated = bool(document.get("entry_states")) and not legacy
    return BatchView(batch=batch, options=options, files=files, legacy=legacy, stated=stated)


def summarize(
    batch: str,
    durations: Mapping[str, float | None],
    result_keys: Iterable[str],
    dead_lettered: Collection[str] = (),
) -> BatchStatus:
    """Count a batch's files by state. A file is done when its JSON exists; failed when
    only its error record does (a later success wins over an earlier failure); dead-
    lettered when it has neither and its job is on the dead-letter queue (no worker will
    take it until `whisperq retry`); pending otherwise."""
    done, errored = finished.result_states(batch, result_keys)
    seconds = {path: duration or 0.0 for path, duration in durations.items()}
    done &= seconds.keys()
    failed = sorted((errored & seconds.keys()) - done)
    dead = sorted((set(dead_lettered) & seconds.keys()) - done - set(failed))
    return BatchStatus(
        batch=batch,
        submitted=len(seconds),
        done=len(done),
        failed=len(failed),
        pending=len(seconds) - len(done) - len(failed) - len(dead),
        audio_seconds_submitted=round(sum(seconds.values()), 3),
        audio_seconds_done=round(sum(seconds[path] for path in done), 3),
        failed_paths=failed,
        dead_lettered_paths=dead,
        pending_paths=sorted(seconds.keys() - done - set(failed) - set(dead)),
        unknown_durations=sum(1 for duration in durations.values() if duration is None),
    )


def result_keys_from_states(
    batch: str, files: Mapping[str, batch_records.ListedEntry]
) -> list[str]:
    """The result and error-record keys the entries' states stand for (what the results
    listing would give ``summarize``, renderings aside)."""
    found = []
    for path, listed in files.items():
        if listed.state == "done":
            found.append(keys.result_key(batch, path, "json"))
        elif listed.state == "failed":
            found.append(keys.error_key(batch, path))
    return found


def list_batches(settings: Settings, s3: Any) -> list[str]:
    prefixes = storage.list_common_prefixes(s3, settings.bucket, keys.batches_prefix())
    return sorted(keys.batch_from_prefix(prefix) for prefix in prefixes)


class NewestResults:
    """Keeps the ``limit`` newest result JSON keys (by LastModified) seen in listings that
    pass through ``watch``: status samples recent jobs without a GET per file."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._heap: list[tuple[datetime, str]] = []  # min-heap: the oldest kept is first

    def watch(
        self, batch: str, listing: Iterable[storage.ObjectInfo]
    ) -> Iterator[storage.ObjectInfo]:
        for item in listing:
            if _is_result_json(batch, item.key) and item.last_modified is not None:
                entry = (item.last_modified, item.key)
                if len(self._heap) < self.limit:
                    heapq.heappush(self._heap, entry)
                elif entry > self._heap[0]:
                    heapq.heapreplace(self._heap, entry)
            yield item

    def watch_entries(self, batch: str, files: Iterable[batch_records.ListedEntry]) -> None:
        """The same from a batch's entries: a done entry was renamed just after its result
        JSON was written, so its time stands for the result's."""
        results = (
            storage.ObjectInfo(keys.result_key(batch, item.path, "json"), 0, item.last_modified)
            for item in files
            if item.state == "done"
        )
        for _ in self.watch(batch, results):
            pass

    @property
    def keys(self) -> list[str]:
        """Newest first."""
        return [key for _, key in sorted(self._heap, reverse=True)]


def batch_status(
    settings: Settings,
    s3: Any,
    batch: str,
    newest: NewestResults | None = None,
    dead_lettered: Collection[str] = (),
    view: BatchView | None = None,
    exact: bool = False,
) -> BatchStatus | None:
    """The batch's status, or None if no such batch was submitted. With ``newest``, the
    same listing also collects the batch's newest result keys; ``dead_lettered``: paths
    of the batch whose jobs are on the dead-letter queue; ``view``: the batch already
    loaded (``load_batch``), not listed again. From the entries' states alone when they
    have them, unless ``exact``: then from the results listing (a missed rename shows a
    file pending that is done: whisperq.entry_states)."""
    view = view or load_batch(settings, s3, batch)
    if view is None:
        return None
    if view.stated and not exact:
        if newest is not None:
            newest.watch_entries(batch, view.files.values())
        stated = result_keys_from_states(batch, view.files)
        found = summarize(batch, view.durations, stated, dead_lettered)
    else:
        listing: Iterable[storage.ObjectInfo] = storage.list_objects(
            s3, settings.bucket, keys.results_prefix(batch)
        )
        if newest is not None:
            listing = newest.watch(batch, listing)
        found = summarize(batch, view.durations, (item.key for item in listing), dead_lettered)
    found.redaction = redaction_setting(view.options)
    return found


def confirmed(
    settings: Settings,
    s3: Any,
    status: BatchStatus,
    view: BatchView,
    dead_lettered: Collection[str] = (),
    counts: storage.QueueCounts | None = None,
) -> BatchStatus:
    """``status`` as counted from ``view``'s entry states, or counted again from the
    results when it shows files pending while the job queue and its dead-letter queue
    hold nothing: then a rename was missed (whisperq.entry_states), and nothing else will
    change the count. ``counts``: the queues' counts when the caller has read them."""
    if not view.stated or not status.pending:
        return status
    counts = counts or storage.queue_counts(settings)
    if counts.visible or counts.in_flight or counts.dead_lettered:
        return status
    again = batch_status(
        settings, s3, status.batch, dead_lettered=dead_lettered, view=view, exact=True
    )
    return again or status


def redaction_setting(options: TranscriptionOptions) -> dict[str, Any] | None:
    """What a batch redacts, for status: groups/types, pattern names (not the regexes:
    they may describe the values), and whether audio copies are written. None: off."""
    if not options.redacting:
        return None
    return {
        "groups": list(options.redact),
        "patterns": sorted(options.redact_patterns),
        "audio": options.redact_audio,
    }


def result_keys(settings: Settings, s3: Any, batch: str) -> list[str]:
    """The keys of a batch's result JSONs (one per finished file), from the listing."""
    listing = storage.list_objects(s3, settings.bucket, keys.results_prefix(batch))
    return [item.key for item in listing if _is_result_json(batch, item.key)]


def _is_result_json(batch: str, key: str) -> bool:
    parsed = keys.parse_result_key(batch, key)
    return parsed is not None and parsed[1] == "json"


class _Timings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    download: float
    decode: float = 0.0
    transcribe: float
    upload: float


class JobRecord(BaseModel):
    """What capacity and cost need from one result JSON: a lenient view of
    TranscriptResult (other fields are ignored, so it reads results of any worker version
    that has these)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    duration: float  # audio seconds
    timings: _Timings
    finished_at: datetime
    worker_id: str
    instance_type: str | None = None

    @property
    def job_seconds(self) -> float:
        """Wall seconds the job took: download + decode + transcribe + upload."""
        t = self.timings
        return t.download + t.decode + t.transcribe + t.upload

    @property
    def host(self) -> str:
        """The machine that ran it (worker_id is ``host:pid``)."""
        return self.worker_id.rpartition(":")[0] or self.worker_id


View = TypeVar("View", bound=BaseModel)


def _read_view(settings: Settings, s3: Any, key: str, view: type[View]) -> View | None:
    data = storage.get_json(s3, settings.bucket, key)
    if data is None:
        return None
    try:
        return view.model_validate(data)
    except ValidationError:
        return None


def read_results(
    settings: Settings, s3: Any, result_keys: Iterable[str], view: type[View], threads: int = 8
) -> tuple[list[View], int]:
    """GET result JSONs ``threads`` at a time (boto3 clients are thread-safe), each read
    as ``view`` (a lenient model of the fields the caller needs); returns those read and
    how many could not be (gone, or not a whisperq result)."""
    wanted = list(result_keys)
    if not wanted:
        return [], 0
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(wanted)))) as pool:
        found = list(pool.map(lambda key: _read_view(settings, s3, key, view), wanted))
    read = [item for item in found if item is not None]
    return read, len(found) - len(read)


def read_job_records(
    settings: Settings, s3: Any, result_keys: Iterable[str], threads: int = 8
) -> tuple[list[JobRecord], int]:
    """The results' :class:`JobRecord` s (see :func:`read_results`)."""
    return read_results(settings, s3, result_keys, JobRecord, threads)


def failure_records(settings: Settings, s3: Any, status: BatchStatus) -> list[ErrorRecord]:
    """The error records of a batch's failed files (one GET each: failures only)."""
    records = []
    for path in status.failed_paths:
        data = storage.get_json(s3, settings.bucket, keys.error_key(status.batch, path))
        if data is not None:
            records.append(ErrorRecord.read(data))
    return records
