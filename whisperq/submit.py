"""``whisperq submit``: find audio files, upload them in parallel, write the manifest, queue jobs.

Order matters for "nothing lost": inputs are uploaded first, then the manifest lists the new
files as not yet queued, then one task per file goes on the queue, then the manifest marks
them queued. A submit cut short anywhere is repaired by running it again: files that are not
marked queued are uploaded and queued again.
"""

from __future__ import annotations

import glob
import hashlib
import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from s3transfer.subscribers import BaseSubscriber

from whisperq import keys, storage, tracking
from whisperq.celery_app import enqueue, make_celery
from whisperq.errors import SubmitError
from whisperq.progress import ProgressHooks
from whisperq.schemas import (
    BatchManifest,
    ManifestEntry,
    TranscriptionOptions,
    utc_now,
)
from whisperq.settings import Settings

AUDIO_EXTENSIONS = frozenset(
    [
        ".wav",
        ".mp3",
        ".m4a",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".aac",
        ".wma",
        ".webm",
        ".mp4",
        ".amr",
        ".aif",
        ".aiff",
        ".mka",
        ".gsm",
    ]
)
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute
    relative_path: str  # as it appears in keys


@dataclass
class Discovery:
    files: list[SourceFile]
    skipped_non_audio: list[Path] = field(default_factory=list)


def discover(arguments: Sequence[str], cwd: Path | None = None) -> Discovery:
    """Expand files, directories (recursively) and globs into the files to submit.

    Files named directly are always taken; inside directories only audio extensions are,
    the rest are counted as skipped. A path that does not exist is an error.

    Relative paths (the keys) are taken from the current directory when every file lies
    under it; otherwise from the deepest directory holding all the named paths, so
    ``/data/calls`` gives ``calls/a/x.wav`` as ``cp -r`` would, and ``/d/a/x.wav`` and
    ``/d/b/x.wav`` stay distinct as ``a/x.wav`` and ``b/x.wav``.
    """
    cwd = (cwd or Path.cwd()).resolve()
    found: dict[Path, None] = {}  # ordered set
    anchors: list[Path] = []  # the directory each named path sits in
    skipped: list[Path] = []
    missing: list[str] = []

    def add_directory(directory: Path) -> None:
        for candidate in sorted(directory.rglob("*")):
            if candidate.is_file():
                if candidate.suffix.lower() in AUDIO_EXTENSIONS:
                    found[candidate.resolve()] = None
                else:
                    skipped.append(candidate)

    for argument in arguments:
        path = cwd / Path(argument).expanduser()  # an absolute argument replaces cwd
        if path.is_file():
            found[path.resolve()] = None
            anchors.append(path.resolve().parent)
        elif path.is_dir():
            add_directory(path)
            anchors.append(path.resolve().parent)
        elif _GLOB_CHARS & set(argument) and (
            matches := sorted(glob.glob(str(path), recursive=True))
        ):
            for match in map(Path, matches):
                anchors.append(match.resolve().parent)
                if match.is_dir():
                    add_directory(match)
                elif match.suffix.lower() in AUDIO_EXTENSIONS:
                    found[match.resolve()] = None
                else:
                    skipped.append(match)
        else:
            missing.append(argument)
    if missing:
        raise SubmitError("No such file or directory: " + ", ".join(map(repr, missing)))
    if not found:
        raise SubmitError("No audio files found in " + ", ".join(map(repr, arguments)))

    paths = list(found)
    if all(path.is_relative_to(cwd) for path in paths):
        base = cwd
    else:
        base = Path(os.path.commonpath(anchors))
    files = [
        SourceFile(path, keys.normalize_relative_path(path.relative_to(base).as_posix()))
        for path in paths
    ]
    return Discovery(files=files, skipped_non_audio=skipped)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def probe_duration(path: Path) -> float | None:
    """Audio duration in seconds from the container header; None if it cannot be read."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if container.duration is not None:
                return round(container.duration / av.time_base, 3)
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return round(float(stream.duration * stream.time_base), 3)
    except Exception:
        return None
    return None


def new_batch_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Prepared:
    source: SourceFile
    sha256: str
    size: int
    duration: float | None


@dataclass
class SubmitReport:
    batch: str
    queued: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # same content already in the batch
    skipped_non_audio: int = 0
    bytes_uploaded: int = 0
    audio_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "queued": len(self.queued),
            "duplicates": self.duplicates,
            "skipped_non_audio": self.skipped_non_audio,
            "bytes_uploaded": self.bytes_uploaded,
            "audio_seconds": round(self.audio_seconds, 3),
        }


class _ByteProgress(BaseSubscriber):
    def __init__(self, hooks: ProgressHooks) -> None:
        self.hooks = hooks

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self.hooks.advance(bytes_transferred)


def prepare(files: Sequence[SourceFile], hooks: ProgressHooks, threads: int) -> list[Prepared]:
    """Hash and probe every file (threads: both are I/O bound)."""

    def one(source: SourceFile) -> Prepared:
        result = Prepared(
            source, sha256_of(source.path), source.path.stat().st_size, probe_duration(source.path)
        )
        hooks.advance()
        return result

    hooks.stage("Reading", len(files))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, files))


def select_new(
    prepared: Sequence[Prepared], manifest: BatchManifest, force: bool
) -> tuple[list[Prepared], list[str]]:
    """Files to send, and the paths skipped because their content is already queued."""
    seen = set() if force else manifest.queued_hashes()
    chosen: list[Prepared] = []
    duplicates: list[str] = []
    for item in prepared:
        if item.sha256 in seen:
            duplicates.append(item.source.relative_path)
            continue
        seen.add(item.sha256)
        chosen.append(item)
    return chosen, duplicates


def merge_entries(manifest: BatchManifest, entries: Sequence[ManifestEntry]) -> None:
    """Add entries to the manifest; a path submitted again replaces its old entry."""
    replaced = {entry.path for entry in entries}
    manifest.files = [e for e in manifest.files if e.path not in replaced] + list(entries)
    manifest.updated_at = utc_now()


def upload(
    s3: Any, settings: Settings, batch: str, items: Sequence[Prepared], hooks: ProgressHooks
) -> None:
    """Upload in parallel with boto3's transfer manager (multipart for large files)."""
    hooks.stage("Uploading", sum(item.size for item in items))
    config = TransferConfig(max_concurrency=settings.upload_concurrency)
    subscriber = _ByteProgress(hooks)
    with create_transfer_manager(s3, config) as manager:
        futures = [
            manager.upload(
                str(item.source.path),
                settings.bucket,
                keys.input_key(batch, item.source.relative_path),
                extra_args={"Metadata": {"sha256": item.sha256}},
                subscribers=[subscriber],
            )
            for item in items
        ]
        for future in futures:
            future.result()


def submit(
    settings: Settings,
    arguments: Sequence[str],
    batch: str | None = None,
    options: TranscriptionOptions | None = None,
    force: bool = False,
    hooks: ProgressHooks | None = None,
    cwd: Path | None = None,
) -> SubmitReport:
    settings.require_storage()
    hooks = hooks or ProgressHooks()
    batch = keys.validate_batch_name(batch) if batch else new_batch_id()
    discovery = discover(arguments, cwd)  # raises before anything is uploaded
    s3 = storage.client(settings, "s3")
    app = make_celery(settings)

    existing = storage.get_json(s3, settings.bucket, keys.manifest_key(batch))
    now = utc_now()
    manifest = (
        BatchManifest.model_validate(existing)
        if existing
        else BatchManifest(
            batch=batch, created_at=now, updated_at=now, options=options or TranscriptionOptions()
        )
    )
    if options is not None and existing and options != manifest.options:
        raise SubmitError(
            f"Batch {batch!r} was submitted with other options ({manifest.options.model_dump()}); "
            "use a new batch name for different options."
        )

    prepared = prepare(discovery.files, hooks, settings.upload_concurrency)
    chosen, duplicates = select_new(prepared, manifest, force)
    report = SubmitReport(
        batch=batch, duplicates=duplicates, skipped_non_audio=len(discovery.skipped_non_audio)
    )
    if not chosen:
        return report

    upload(s3, settings, batch, chosen, hooks)
    report.bytes_uploaded = sum(item.size for item in chosen)

    entries = [
        ManifestEntry(
            path=item.source.relative_path,
            input_key=keys.input_key(batch, item.source.relative_path),
            sha256=item.sha256,
            size=item.size,
            duration=item.duration,
            submitted_at=now,
        )
        for item in chosen
    ]
    merge_entries(manifest, entries)
    _write_manifest(s3, settings, manifest)

    hooks.stage("Queueing", len(entries))
    for entry in entries:
        enqueue(app, manifest.job_for(entry))
        entry.queued = True
        report.queued.append(entry.path)
        report.audio_seconds += entry.duration or 0.0
        hooks.advance()
    _write_manifest(s3, settings, manifest)
    return report


def _write_manifest(s3: Any, settings: Settings, manifest: BatchManifest) -> None:
    storage.put_text(
        s3,
        settings.bucket,
        keys.manifest_key(manifest.batch),
        manifest.model_dump_json(indent=1),
        "application/json",
    )


def requeue_failed(settings: Settings, batch: str) -> list[str]:
    """Queue the batch's failed files again (their inputs are still in S3); returns paths.

    The error record goes first and comes back if queueing fails, so a file is never
    left without either a job or a record.
    """
    s3 = storage.client(settings, "s3")
    manifest = tracking.load_manifest(settings, s3, batch)
    if manifest is None:
        raise SubmitError(f"No batch named {batch!r} on {settings.target}.")
    listing = storage.list_objects(s3, settings.bucket, keys.results_prefix(batch))
    status = tracking.summarize(manifest, (item.key for item in listing))
    entries = {entry.path: entry for entry in manifest.files}
    app = make_celery(settings)
    requeued = []
    for path in status.failed_paths:
        entry = entries[path]
        key = keys.error_key(batch, path)
        record = s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read()
        s3.delete_object(Bucket=settings.bucket, Key=key)
        try:
            enqueue(app, manifest.job_for(entry))
        except BaseException:
            s3.put_object(Bucket=settings.bucket, Key=key, Body=record)
            raise
        requeued.append(path)
    return requeued
