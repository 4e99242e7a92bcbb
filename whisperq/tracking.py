"""Where batches stand, from S3 listings alone (no GET per result, so 10,000 files stay fast)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from whisperq import keys, storage
from whisperq.schemas import BatchManifest, ErrorRecord
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

    @property
    def finished(self) -> bool:
        return self.pending == 0

    @property
    def audio_hours_done(self) -> float:
        return self.audio_seconds_done / 3600

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["audio_hours_done"] = round(self.audio_hours_done, 4)
        data["finished"] = self.finished
        return data


def summarize(manifest: BatchManifest, result_keys: Iterable[str]) -> BatchStatus:
    """Count a batch's files by state. A file is done when its JSON exists; failed when
    only its error record does (a later success wins over an earlier failure)."""
    done: set[str] = set()
    errored: set[str] = set()
    for key in result_keys:
        parsed = keys.parse_result_key(manifest.batch, key)
        if parsed is None:
            continue
        path, kind = parsed
        if kind == "json":
            done.add(path)
        elif kind == "error":
            errored.add(path)
    durations = {entry.path: entry.duration or 0.0 for entry in manifest.files}
    done &= durations.keys()
    failed = sorted((errored & durations.keys()) - done)
    return BatchStatus(
        batch=manifest.batch,
        submitted=len(durations),
        done=len(done),
        failed=len(failed),
        pending=len(durations) - len(done) - len(failed),
        audio_seconds_submitted=round(sum(durations.values()), 3),
        audio_seconds_done=round(sum(durations[path] for path in done), 3),
        failed_paths=failed,
    )


def list_batches(settings: Settings, s3: Any) -> list[str]:
    prefixes = storage.list_common_prefixes(s3, settings.bucket, keys.batches_prefix())
    return sorted(keys.batch_from_prefix(prefix) for prefix in prefixes)


def load_manifest(settings: Settings, s3: Any, batch: str) -> BatchManifest | None:
    data = storage.get_json(s3, settings.bucket, keys.manifest_key(batch))
    return BatchManifest.model_validate(data) if data else None


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

    @property
    def keys(self) -> list[str]:
        """Newest first."""
        return [key for _, key in sorted(self._heap, reverse=True)]


def batch_status(
    settings: Settings, s3: Any, batch: str, newest: NewestResults | None = None
) -> BatchStatus | None:
    """The batch's status, or None if no such batch was submitted. With ``newest``, the
    same listing also collects the batch's newest result keys."""
    manifest = load_manifest(settings, s3, batch)
    if manifest is None:
        return None
    listing: Iterable[storage.ObjectInfo] = storage.list_objects(
        s3, settings.bucket, keys.results_prefix(batch)
    )
    if newest is not None:
        listing = newest.watch(batch, listing)
    return summarize(manifest, (item.key for item in listing))


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


def _read_record(settings: Settings, s3: Any, key: str) -> JobRecord | None:
    data = storage.get_json(s3, settings.bucket, key)
    if data is None:
        return None
    try:
        return JobRecord.model_validate(data)
    except ValidationError:
        return None


def read_job_records(
    settings: Settings, s3: Any, result_keys: Iterable[str], threads: int = 8
) -> tuple[list[JobRecord], int]:
    """GET result JSONs ``threads`` at a time (boto3 clients are thread-safe); returns
    the records and how many could not be read (gone, or not a whisperq result)."""
    wanted = list(result_keys)
    if not wanted:
        return [], 0
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(wanted)))) as pool:
        found = list(pool.map(lambda key: _read_record(settings, s3, key), wanted))
    records = [record for record in found if record is not None]
    return records, len(found) - len(records)


def failure_records(settings: Settings, s3: Any, status: BatchStatus) -> list[ErrorRecord]:
    """The error records of a batch's failed files (one GET each: failures only)."""
    records = []
    for path in status.failed_paths:
        data = storage.get_json(s3, settings.bucket, keys.error_key(status.batch, path))
        if data is not None:
            records.append(ErrorRecord.model_validate(data))
    return records
