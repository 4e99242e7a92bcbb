"""``whisperq submit``: find audio files, upload them in parallel, queue jobs, record them.

Order matters for "nothing lost": inputs are uploaded first, then the jobs go on the queue
(ten per SQS request), then each file's entry is written (:mod:`whisperq.batches.records`).
A file with an entry always has a job; a submit cut short anywhere is repaired by running
it again (files without an entry are uploaded and queued again; jobs are idempotent).
Several submits (and the ingest step) may add to one batch at once: nothing is lost.

``--metadata FILE.csv`` (:func:`read_metadata_csv`): a ``path`` column (the file's path in
the batch) and any others, one row per call; a row's cells become the call's metadata
(strings), carried by its job and entry into its result.
"""

from __future__ import annotations

import csv
import errno
import glob
import hashlib
import os
import secrets
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import ClientError
from s3transfer.subscribers import BaseSubscriber

from whisperq import entry_states, keys, storage
from whisperq.batches import records as batch_records
from whisperq.batches import tracking
from whisperq.batches.progress import ProgressHooks
from whisperq.errors import InvalidKeyError, SubmitError
from whisperq.keys import AUDIO_EXTENSIONS
from whisperq.messages import send_jobs
from whisperq.schemas import FileEntry, TranscriptionOptions
from whisperq.settings import Settings

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute
    relative_path: str  # as it appears in keys


@dataclass(frozen=True)
class Unusable:
    """A file found but not taken, and why (a person can act on the reason)."""

    path: Path
    reason: str


@dataclass
class Discovery:
    files: list[SourceFile]
    skipped_non_audio: list[Path] = field(default_factory=list)
    unusable: list[Unusable] = field(default_factory=list)


def discover(arguments: Sequence[str], cwd: Path | None = None) -> Discovery:
    """Expand files, directories (recursively) and globs into the files to submit.

    Files named directly are always taken; inside directories only audio extensions are,
    the rest are counted as skipped. A path that does not exist is an error. A file whose
    name S3 cannot hold, or a link that leads nowhere (broken, or a loop), is set aside
    in ``unusable`` with the reason, before anything is uploaded; the others go ahead.

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
    unusable: list[Unusable] = []

    def add_directory(directory: Path) -> None:
        for candidate in sorted(directory.rglob("*")):
            if candidate.is_file():
                if candidate.suffix.lower() in AUDIO_EXTENSIONS:
                    found[candidate.resolve()] = None
                else:
                    skipped.append(candidate)
            elif candidate.is_symlink() and not candidate.exists():
                unusable.append(Unusable(candidate, _dangling(candidate)))

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
    if not found and not unusable:
        raise SubmitError("No audio files found in " + ", ".join(map(repr, arguments)))

    paths = list(found)
    if all(path.is_relative_to(cwd) for path in paths):
        base = cwd
    else:
        base = Path(os.path.commonpath(anchors or [cwd]))
    files = []
    for path in paths:
        try:
            relative = keys.normalize_relative_path(path.relative_to(base).as_posix())
        except InvalidKeyError as error:
            unusable.append(Unusable(path, str(error)))
            continue
        files.append(SourceFile(path, relative))
    if not files:
        reasons = "; ".join(f"{str(item.path)!r}: {item.reason}" for item in unusable)
        raise SubmitError(f"No file whisperq can take: {reasons}")
    return Discovery(files=files, skipped_non_audio=skipped, unusable=unusable)


def _dangling(link: Path) -> str:
    """Why a symbolic link gives no file: a loop, or a target that does not exist."""
    try:
        link.resolve(strict=True)
    except RuntimeError:
        return "a symbolic link that loops back on itself: nothing to read"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link that loops back on itself: nothing to read"
    return f"a symbolic link to {os.readlink(link)!r}, which does not exist"


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
    duplicates: list[str] = field(default_factory=list)  # same path, same content, queued
    shared_content: list[list[str]] = field(default_factory=list)  # paths with equal bytes
    skipped_non_audio: int = 0
    unusable: list[Unusable] = field(default_factory=list)  # not taken, with the reason
    bytes_uploaded: int = 0
    audio_seconds: float = 0.0
    sqs_requests: int = 0
    metadata_problems: dict[str, list[str]] = field(default_factory=dict)  # path -> why
    metadata_unmatched: list[str] = field(default_factory=list)  # CSV rows no file had

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "queued": len(self.queued),
            "duplicates": self.duplicates,
            "shared_content": self.shared_content,
            "skipped_non_audio": self.skipped_non_audio,
            "unusable": [{"path": str(u.path), "reason": u.reason} for u in self.unusable],
            "bytes_uploaded": self.bytes_uploaded,
            "audio_seconds": round(self.audio_seconds, 3),
            "sqs_requests": self.sqs_requests,
            "metadata_problems": self.metadata_problems,
            "metadata_unmatched": self.metadata_unmatched,
        }


@dataclass(frozen=True)
class MetadataRow:
    """One call's row of a ``--metadata`` CSV file: its fields, and what was left out."""

    fields: dict[str, Any]
    problems: list[str]


def read_metadata_csv(path: Path) -> dict[str, MetadataRow]:
    """The rows of a ``--metadata`` CSV file (UTF-8, a header first) by the path each names
    in its ``path`` column (as the file's path in the batch). The other columns are the
    call's fields, as strings; an empty cell is no field. A file without a ``path`` column,
    with a path twice or one that is no usable path raises SubmitError, before anything
    is uploaded; a row's fields that break the rules (over the size limit, an odd column
    name) are that call's metadata problems."""
    rows: dict[str, MetadataRow] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, skipinitialspace=True)
            header = [name.strip() for name in next(reader, [])]
            if "path" not in header:
                raise SubmitError(f"{path} has no 'path' column (its first line is the header)")
            twice = sorted({name for name in header if header.count(name) > 1})
            if twice:
                raise SubmitError(f"{path}: column(s) {', '.join(twice)} appear twice")
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue  # a blank line
                line = reader.line_num
                row = dict(zip(header, cells, strict=False))
                try:
                    call = keys.normalize_relative_path(row.pop("path", ""))
                except InvalidKeyError as error:
                    raise SubmitError(f"{path} line {line}: {error}") from None
                if call in rows:
                    raise SubmitError(f"{path} line {line}: {call!r} has a row already")
                problems = []
                if len(cells) > len(header):
                    problems.append(f"{path.name} line {line}: more cells than columns: left out")
                given = {name: value for name, value in row.items() if value != ""}
                fields, found = batch_records.clean_metadata(given, f"{path.name} line {line}")
                rows[call] = MetadataRow(fields, problems + found)
    except OSError as error:
        raise SubmitError(f"Cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise SubmitError(f"{path} is not UTF-8 text: save it as CSV UTF-8") from None
    except csv.Error as error:
        raise SubmitError(f"{path} is not a CSV file: {error}") from None
    return rows


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
    prepared: Sequence[Prepared], known: Mapping[str, FileEntry], force: bool
) -> tuple[list[Prepared], list[str]]:
    """Files to send, and the paths skipped because the batch already has them with the
    same content. Each path is its own job: equal bytes under two paths give two results."""
    if force:
        return list(prepared), []
    chosen: list[Prepared] = []
    duplicates: list[str] = []
    for item in prepared:
        entry = known.get(item.source.relative_path)
        if entry is not None and entry.sha256 == item.sha256:
            duplicates.append(item.source.relative_path)
        else:
            chosen.append(item)
    return chosen, duplicates


def shared_content(prepared: Sequence[Prepared]) -> list[list[str]]:
    """Groups of paths (two or more) whose files have the same bytes."""
    by_hash: dict[str, list[str]] = {}
    for item in prepared:
        by_hash.setdefault(item.sha256, []).append(item.source.relative_path)
    return [paths for paths in by_hash.values() if len(paths) > 1]


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
    metadata_csv: Path | None = None,
) -> SubmitReport:
    settings.require_storage()
    hooks = hooks or ProgressHooks()
    batch = keys.validate_batch_name(batch) if batch else new_batch_id()
    discovery = discover(arguments, cwd)  # raises before anything is uploaded
    metadata = read_metadata_csv(metadata_csv) if metadata_csv is not None else {}
    s3 = storage.client(settings, "s3")
    bucket = settings.bucket

    given = (options or TranscriptionOptions()).model_dump(mode="json")
    stored = batch_records.ensure_batch(
        s3, bucket, batch, given, source="submit", strict=options is not None
    )
    # What every job of the batch carries (checked here, before anything is uploaded).
    batch_options = TranscriptionOptions.model_validate(stored).model_dump(mode="json")

    prepared = prepare(discovery.files, hooks, settings.upload_concurrency)
    view = tracking.load_batch(settings, s3, batch)
    listed = view.files if view else {}
    paths = [item.source.relative_path for item in prepared]
    known = {entry.path: entry for entry in view.entries(settings, s3, paths)} if view else {}
    chosen, duplicates = select_new(prepared, known, force)
    report = SubmitReport(
        batch=batch,
        duplicates=duplicates,
        shared_content=shared_content(prepared),
        skipped_non_audio=len(discovery.skipped_non_audio),
        unusable=discovery.unusable,
        metadata_unmatched=sorted(
            metadata.keys() - {item.relative_path for item in discovery.files}
        ),
    )
    if not chosen:
        return report

    upload(s3, settings, batch, chosen, hooks)
    report.bytes_uploaded = sum(item.size for item in chosen)

    none = MetadataRow({}, [])
    entries = [
        batch_records.entry_document(
            batch,
            item.source.relative_path,
            item.sha256,
            item.size,
            item.duration,
            source="submit",
            metadata=metadata.get(item.source.relative_path, none).fields,
            metadata_problems=metadata.get(item.source.relative_path, none).problems,
        )
        for item in chosen
    ]
    report.metadata_problems = {
        entry["path"]: entry["metadata_problems"]
        for entry in entries
        if "metadata_problems" in entry
    }
    hooks.stage("Queueing", len(entries))
    payloads = [batch_records.job_payload(batch, entry, batch_options) for entry in entries]
    report.sqs_requests = send_jobs(
        storage.client(settings, "sqs"), settings.queue_url, payloads, sent=hooks.advance
    )
    # Entries last: a file with an entry has a job (see the module's docstring).
    batch_records.write_entries(
        s3, bucket, batch, entries, replaced=listed, threads=settings.upload_concurrency
    )
    report.queued = [entry["path"] for entry in entries]
    report.audio_seconds = sum(item.duration or 0.0 for item in chosen)
    return report


def requeue_failed(settings: Settings, batch: str) -> list[str]:
    """Queue the batch's failed files again (their inputs are still in S3); returns paths.

    Jobs first, then each error record is cleared, and only if it is still the record
    read here (a conditional delete on its ETag): a crash in between leaves the record,
    so running retry again re-queues it (jobs are idempotent); a retried job that already
    failed again keeps its new record. Never a file with neither a job nor a record.
    """
    s3 = storage.client(settings, "s3")
    view = tracking.load_batch(settings, s3, batch)
    if view is None:
        raise SubmitError(f"No batch named {batch!r} on {settings.target}.")
    listing = storage.list_objects(s3, settings.bucket, keys.results_prefix(batch))
    status = tracking.summarize(batch, view.durations, (item.key for item in listing))
    entries = view.entries(settings, s3, status.failed_paths)
    if not entries:
        return []
    records = {
        entry.path: s3.head_object(Bucket=settings.bucket, Key=keys.error_key(batch, entry.path))
        for entry in entries
    }
    # Pending again before the jobs go, so that no worker's "done" can come before it.
    for entry in entries:
        entry_states.mark(s3, settings.bucket, batch, entry.path, "pending")
    payloads = [entry.job(batch, view.options).model_dump(mode="json") for entry in entries]
    send_jobs(storage.client(settings, "sqs"), settings.queue_url, payloads)
    for path, record in records.items():
        _clear_if_unchanged(s3, settings.bucket, keys.error_key(batch, path), record["ETag"])
    return [entry.path for entry in entries]


def _clear_if_unchanged(s3: Any, bucket: str, key: str, etag: str) -> None:
    try:
        s3.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code not in ("PreconditionFailed", "NoSuchKey", "404"):
            raise
