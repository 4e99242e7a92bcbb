"""Where batches stand, from S3 listings alone (no GET per result, so 10,000 files stay fast)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

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


def batch_status(settings: Settings, s3: Any, batch: str) -> BatchStatus | None:
    """The batch's status, or None if no such batch was submitted."""
    manifest = load_manifest(settings, s3, batch)
    if manifest is None:
        return None
    listing = storage.list_objects(s3, settings.bucket, keys.results_prefix(batch))
    return summarize(manifest, (item.key for item in listing))


def failure_records(settings: Settings, s3: Any, status: BatchStatus) -> list[ErrorRecord]:
    """The error records of a batch's failed files (one GET each: failures only)."""
    records = []
    for path in status.failed_paths:
        data = storage.get_json(s3, settings.bucket, keys.error_key(status.batch, path))
        if data is not None:
            records.append(ErrorRecord.model_validate(data))
    return records
