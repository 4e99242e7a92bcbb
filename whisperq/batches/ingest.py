"""S3-event ingestion: an object created under ``incoming/<folder>/<path>`` becomes a job.

The object becomes exactly what ``whisperq submit`` would have made of the same file: its
input at ``inputs/<batch>/<path>``, a job on the queue, the file's entry in the batch
(so ``status`` counts it), results at ``results/<batch>/<path>.*``. The same code runs in
the ingest Lambda on AWS (``infra_pulumi/ingest/handler.py``) and in ``whisperq ingest``
(the local stack's ingest process, or a server's). Its batch is named by the template
(``IngestConfig.batch_template``: ``{folder}``, or ``{folder}-{date}`` for one a day) and
created with ``<folder>``'s options; the path is the rest of the key.

S3 (and EventBridge) deliver events at least once and out of order, several at a time.
For one object, :func:`ingest_object`:

1. maps the key to (folder, path); a key outside the layout or a file that is not audio
   (a ``.txt``) is **ignored** with the reason, nothing is written; a sidecar
   (``<audio name>.json``) is one call's metadata: :func:`ingest_sidecar`;
2. downloads the object to a temporary file, hashing it (bounded memory), and names its
   batch from the object's Last-Modified (its UTC day). An object that
   is gone (deleted before it was processed) **fails** with a reason: an error record at
   ``results/<batch>/<path>.error.json`` and the file's entry, no job -- unless the path
   already has a job (an earlier delivery ingested it before the delete): **duplicate**;
3. **claims** the path by writing the input with ``If-None-Match: *`` (metadata: sha256,
   the source's Last-Modified). Of any number of concurrent deliveries, one writer wins.
   A loser reads the input: same content and the path has an entry with that content ->
   **duplicate** (no job); same content but no entry yet -> the winner is still at work:
   :class:`TryLater` (the event stays on its queue) until the claim is ``claim_seconds``
   old, then the winner is taken to be dead and the claim is taken over (a conditional
   write on the input's ETag, so only one taker wins). Different content -> a new
   recording under the same key: the input is replaced (conditionally, and never by
   content from an older version of the object than the one already there);
4. reads the call's metadata (its sidecar over its S3 user metadata, ``batch_records``),
   sends the job (``SendMessageBatch``), then writes the entry: an entry always has a job.

Standard library only, with boto3 clients passed in: the Lambda ships this module with
keys, errors, messages and batch_records (which also reads WAV durations and call
metadata). Nothing of an object's content is logged or returned besides its key, size,
sha256 and metadata problems.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from whisperq import defaults, finished, keys
from whisperq.batches import records as batch_records
from whisperq.batches.s3_events import ObjectRef, objects_in_event
from whisperq.entry_states import error_code
from whisperq.errors import ConfigError, InvalidKeyError, WhisperqError
from whisperq.messages import send_jobs

DEFAULT_PREFIX = keys.DEFAULT_INGEST_PREFIX
DEFAULT_CLAIM_SECONDS = defaults.INGEST_CLAIM_SECONDS
_CHUNK = 1 << 20  # download and hash in 1 MiB pieces
_GONE = ("NoSuchKey", "404", "NotFound")
_LOST_RACE = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
# whisperq's own prefixes in its bucket: never ingested, even with an empty source prefix
# (an input written by the ingest step must not be ingested again).
_OWN_PREFIXES = tuple(
    f"{name}/" for name in (keys.INPUTS, keys.BATCHES, keys.RESULTS, keys.ARTIFACTS)
)
# Metadata on an input (S3 user metadata: ASCII). sha256 is what submit writes too.
META_SHA256 = "sha256"
META_SOURCE_MODIFIED = "source-modified"  # the ingested object's Last-Modified, ISO 8601
UNKNOWN_SHA256 = "0" * 64  # the entry of an object that was gone before it was read

Status = Literal["queued", "duplicate", "ignored", "failed", "metadata"]


# --- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class IngestConfig:
    """Where ingested objects come from and where their jobs go."""

    bucket: str  # whisperq's bucket (inputs/, batches/, results/)
    queue_url: str  # the job queue
    source_bucket: str  # where recordings land (== bucket for incoming/)
    source_prefix: str = DEFAULT_PREFIX  # <source_prefix><folder>/<path>
    # folder -> FULL options dict (TranscriptionOptions().model_dump(mode="json") shape)
    options_by_batch: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    default_options: Mapping[str, Any] = field(default_factory=dict)  # for other folders
    claim_seconds: float = DEFAULT_CLAIM_SECONDS  # see TryLater
    batch_template: str = keys.DEFAULT_INGEST_BATCH  # the batch's name from {folder}, {date}
    event_bus: str | None = None  # where "whisperq batch finished" goes (ingest finishes some)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IngestConfig:
        """From ``WHISPERQ_*`` variables, as the ingest Lambda is configured:
        WHISPERQ_BUCKET, WHISPERQ_QUEUE_URL (required), WHISPERQ_INGEST_SOURCE_BUCKET
        (default: the bucket), WHISPERQ_INGEST_PREFIX (default ``incoming/``),
        WHISPERQ_INGEST_OPTIONS (JSON: {"batch": {options}}), WHISPERQ_INGEST_DEFAULT_OPTIONS
        (JSON: {options}), WHISPERQ_INGEST_CLAIM_SECONDS, WHISPERQ_INGEST_BATCH (the
        batch name's template, with {folder} and {date}; default ``{folder}``),
        WHISPERQ_EVENT_BUS (the finished batches' event; none when empty)."""
        missing = [name for name in ("WHISPERQ_BUCKET", "WHISPERQ_QUEUE_URL") if not env.get(name)]
        if missing:
            raise ConfigError(f"The ingest step needs {' and '.join(missing)}.")
        bucket = env["WHISPERQ_BUCKET"]
        by_batch = _json_env(env, "WHISPERQ_INGEST_OPTIONS")
        if not all(isinstance(value, dict) for value in by_batch.values()):
            raise ConfigError(
                'WHISPERQ_INGEST_OPTIONS must map batch names to options: {"batch": {...}}.'
            )
        try:
            claim = float(env.get("WHISPERQ_INGEST_CLAIM_SECONDS") or DEFAULT_CLAIM_SECONDS)
        except ValueError:
            raise ConfigError(
                "WHISPERQ_INGEST_CLAIM_SECONDS must be a number of seconds."
            ) from None
        template = env.get("WHISPERQ_INGEST_BATCH") or keys.DEFAULT_INGEST_BATCH
        try:
            keys.check_batch_template(template)
        except InvalidKeyError as error:
            raise ConfigError(f"WHISPERQ_INGEST_BATCH: {error}") from None
        return cls(
            bucket=bucket,
            queue_url=env["WHISPERQ_QUEUE_URL"],
            source_bucket=env.get("WHISPERQ_INGEST_SOURCE_BUCKET") or bucket,
            source_prefix=keys.normalize_prefix(env.get("WHISPERQ_INGEST_PREFIX", DEFAULT_PREFIX)),
            options_by_batch=by_batch,
            default_options=_json_env(env, "WHISPERQ_INGEST_DEFAULT_OPTIONS"),
            claim_seconds=claim,
            batch_template=template,
            event_bus=env.get("WHISPERQ_EVENT_BUS") or None,
        )

    def options_for(self, folder: str) -> dict[str, Any]:
        """The options a new batch of this folder is created with."""
        return dict(self.options_by_batch.get(folder, self.default_options))

    def batch_for(self, folder: str, created: datetime | None) -> str:
        """The batch of an object of ``folder`` created at ``created`` (None: now); raises
        InvalidKeyError when the template makes no batch name of this folder."""
        day = (created or datetime.now(UTC)).astimezone(UTC).date()
        return keys.ingest_batch_name(self.batch_template, folder, day)

    def open_until(self, created: datetime | None) -> str | None:
        """When the batch of an object created then stops taking files (ISO; None: never)."""
        day = (created or datetime.now(UTC)).astimezone(UTC).date()
        closes = keys.ingest_batch_open_until(self.batch_template, day)
        return None if closes is None else closes.isoformat()


def _json_env(env: Mapping[str, str], name: str) -> dict[str, Any]:
    text = (env.get(name) or "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"{name} is not valid JSON: {error}.") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object.")
    return value


# --- outcomes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one object ended. ``reason`` says why for every status but queued (there: the
    call's metadata problems, if any); "metadata": a sidecar stored for its call."""

    ref: ObjectRef
    status: Status
    batch: str | None
    path: str | None
    reason: str | None = None
    sha256: str | None = None  # of the content, when it was read

    def describe(self) -> str:
        """One log line: status, batch/path (or the object), size, sha prefix, reason."""
        where = f"{self.batch}/{self.path}" if self.batch and self.path else self.ref.url
        facts = []
        if self.ref.size is not None:
            facts.append(f"{self.ref.size} bytes")
        if self.sha256 and self.sha256 != UNKNOWN_SHA256:
            facts.append(f"sha256 {self.sha256[:12]}")
        text = f"{self.status} {where}"
        if facts:
            text += f" ({', '.join(facts)})"
        return text + (f": {self.reason}" if self.reason else "")


class TryLater(WhisperqError):
    """Another ingest of the same object is in flight: leave the event for redelivery.

    ``retry_after``: seconds after which the claim in the way will have expired (a
    consumer can make the event visible again then rather than sooner)."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- pure parts --------------------------------------------------------------------------


def place(config: IngestConfig, ref: ObjectRef) -> tuple[str, str] | str:
    """(folder, path) for an audio object to ingest, or the reason it is not one (a
    sidecar's reason included). The folder is the batch with the default template."""
    located = locate(config, ref)
    if isinstance(located, tuple) and not is_audio(located[1]):
        suffix = PurePosixPath(located[1]).suffix or "no extension"
        return f"not audio ({suffix}); audio files end in " + " ".join(
            sorted(keys.AUDIO_EXTENSIONS)
        )
    return located


def locate(config: IngestConfig, ref: ObjectRef) -> tuple[str, str] | str:
    """(folder, path) of any file under the source prefix, or why the object is none."""
    if ref.bucket != config.source_bucket:
        return f"not in the source bucket {config.source_bucket!r}"
    if ref.bucket == config.bucket and ref.key.startswith(_OWN_PREFIXES):
        return "one of whisperq's own objects"
    try:
        return keys.parse_incoming_key(ref.key, config.source_prefix)
    except InvalidKeyError as error:
        return str(error)


def is_audio(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in keys.AUDIO_EXTENSIONS


def is_sidecar(path: str) -> bool:
    """``<audio name>.json``: a call's metadata."""
    suffix = batch_records.SIDECAR_SUFFIX
    return path.lower().endswith(suffix) and is_audio(path[: -len(suffix)])


def error_record(batch: str, path: str, reason: str, error_type: str) -> dict[str, Any]:
    """A permanent failure record, the shape workers write (schemas.ErrorRecord)."""
    return {
        "schema_version": 1,
        "batch": batch,
        "path": path,
        "input_key": keys.input_key(batch, path),
        "reason": reason,
        "kind": "permanent",
        "error_type": error_type,
        "attempts": 1,
        "receive_count": None,
        "worker_id": f"ingest@{socket.gethostname()}:{os.getpid()}",
        "failed_at": batch_records.now_iso(),
    }


# --- S3 helpers --------------------------------------------------------------------------


def _status_code(error: Exception) -> int | None:
    response = getattr(error, "response", None) or {}
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _is_gone(error: Exception) -> bool:
    return error_code(error) in _GONE


def _lost_race(error: Exception) -> bool:
    return error_code(error) in _LOST_RACE or _status_code(error) in (409, 412)


@dataclass(frozen=True)
class Fetched:
    """An object downloaded to a local file."""

    local: Path
    sha256: str
    size: int
    last_modified: datetime | None
    metadata: Mapping[str, str] = field(default_factory=dict)  # its S3 user metadata


def fetch(s3: Any, ref: ObjectRef, local: Path) -> Fetched | None:
    """Download ``ref`` to ``local`` hashing it on the way; None if the object is gone."""
    try:
        answer = s3.get_object(Bucket=ref.bucket, Key=ref.key)
    except Exception as error:
        if _is_gone(error):
            return None
        raise
    digest = hashlib.sha256()
    size = 0
    body = answer["Body"]
    try:
        with local.open("wb") as handle:
            while chunk := body.read(_CHUNK):
                digest.update(chunk)
                handle.write(chunk)
                size += len(chunk)
    finally:
        body.close()
    return Fetched(
        local, digest.hexdigest(), size, answer.get("LastModified"), answer.get("Metadata") or {}
    )


def _put_input(
    s3: Any, bucket: str, key: str, fetched: Fetched, **condition: str
) -> dict[str, Any] | None:
    """Write the input under ``condition``; None when the condition did not hold."""
    metadata = {META_SHA256: fetched.sha256}
    if fetched.last_modified is not None:
        metadata[META_SOURCE_MODIFIED] = fetched.last_modified.astimezone(UTC).isoformat()
    try:
        with fetched.local.open("rb") as body:
            return s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata, **condition)
    except Exception as error:
        if _lost_race(error):
            return None
        raise


def _head(s3: Any, bucket: str, key: str, absent: tuple[str, ...] = ()) -> dict[str, Any] | None:
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except Exception as error:
        if _is_gone(error) or error_code(error) in absent:
            return None
        raise


def _age_seconds(head: Mapping[str, Any]) -> float:
    """How long ago the object was written, by S3's own clock (its Date header) when it
    gives one, so a skewed local clock does not matter."""
    modified: datetime = head["LastModified"]
    date = head.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        now = parsedate_to_datetime(date) if date else datetime.now(UTC)
    except (TypeError, ValueError):
        now = datetime.now(UTC)
    return (now - modified).total_seconds()


# --- the steps ---------------------------------------------------------------------------


def ingest_object(
    s3: Any,
    sqs: Any,
    config: IngestConfig,
    ref: ObjectRef,
    probe: Callable[[Path], float | None] | None = None,
    events: Any = None,
) -> Outcome:
    """Make ``ref`` a job of its batch, once (see the module's docstring).

    ``probe`` reads a file's duration (the CLI passes PyAV's); without it, WAV headers are
    read (``batch_records.file_duration``) and other formats' durations are unknown.
    ``events``: the EventBridge client for a batch that ingest finishes (else boto3's).
    Raises :class:`TryLater` while another ingest of the same content holds a fresh claim;
    other errors (throttling, network, access) escape, and the event is to be delivered
    again.
    """
    located = locate(config, ref)
    if isinstance(located, tuple) and is_sidecar(located[1]):
        return ingest_sidecar(s3, config, ref, *located)
    placed = place(config, ref)
    if isinstance(placed, str):
        return Outcome(ref, "ignored", None, None, placed)
    folder, path = placed
    with tempfile.TemporaryDirectory(prefix="whisperq-ingest-") as directory:
        fetched = fetch(s3, ref, Path(directory) / "object")
        if fetched is None:
            return _gone(s3, config, ref, folder, path, events)
        try:
            batch = config.batch_for(folder, fetched.last_modified)
        except InvalidKeyError as error:
            return Outcome(ref, "ignored", None, None, str(error), fetched.sha256)
        duration = (probe or batch_records.file_duration)(fetched.local)
        options = _ensure_batch(s3, config, batch, folder, fetched.last_modified)
        refused, new_path = claim(s3, config, batch, path, fetched)
        if refused is not None:
            return Outcome(ref, "duplicate", batch, path, refused, fetched.sha256)
        metadata, problems = batch_records.call_metadata(
            s3, ref.bucket, ref.key + batch_records.SIDECAR_SUFFIX, fetched.metadata
        )
        entry = batch_records.entry_document(
            batch,
            path,
            fetched.sha256,
            fetched.size,
            duration,
            source="ingest",
            origin=ref.url,
            metadata=metadata,
            metadata_problems=problems,
        )
        _queue(s3, sqs, config, batch, entry, options, new_path)
    return Outcome(ref, "queued", batch, path, _problems(problems), fetched.sha256)


def _problems(problems: list[str]) -> str | None:
    return f"metadata problems: {'; '.join(batch_records.capped(problems))}" if problems else None


def ingest_sidecar(
    s3: Any, config: IngestConfig, ref: ObjectRef, folder: str, path: str
) -> Outcome:
    """A sidecar (``<audio name>.json``) whose audio is there: the call's metadata (the
    sidecar over the audio's S3 user metadata) is stored beside its input
    (``keys.metadata_key``), where the worker reads it just before and just after it writes
    the result. So a sidecar that lands after its audio was ingested, before the result,
    is in the result; one that lands before the audio is read by the audio's own ingest;
    one whose audio is not there is ignored. One that lands after the result was written
    is kept but not in the result JSON (the ingest step never rewrites results): the
    outcome says so."""
    audio_key = ref.key[: -len(batch_records.SIDECAR_SUFFIX)]
    audio_path = path[: -len(batch_records.SIDECAR_SUFFIX)]
    head = _head(s3, ref.bucket, audio_key, absent=("AccessDenied", "403"))
    if head is None:
        return Outcome(
            ref,
            "ignored",
            None,
            None,
            "a sidecar whose audio is not there (yet): the audio's own ingest reads it",
        )
    try:
        batch = config.batch_for(folder, head["LastModified"])
    except InvalidKeyError as error:
        return Outcome(ref, "ignored", None, None, str(error))
    metadata, problems = batch_records.call_metadata(
        s3, ref.bucket, ref.key, head.get("Metadata") or {}
    )
    key = batch_records.write_metadata(
        s3, config.bucket, batch, audio_path, ref.url, head["LastModified"], metadata, problems
    )
    reasons = [f"{len(metadata)} field(s) kept at {key} for the worker"]
    reasons += batch_records.capped(problems)
    written = _result_written(s3, config.bucket, batch, audio_path)
    if written is not None:
        reasons.append(
            f"the call's result was written already ({written.isoformat()}): its JSON carries "
            "this sidecar only if it landed before the worker wrote it"
        )
    return Outcome(ref, "metadata", batch, audio_path, "; ".join(reasons))


def _result_written(s3: Any, bucket: str, batch: str, path: str) -> datetime | None:
    """When the path's result JSON was written (one listing); None: not yet, or unknown."""
    key = keys.result_key(batch, path, "json")
    try:
        answer = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except Exception:
        return None
    found = [item for item in answer.get("Contents", []) if item["Key"] == key]
    return found[0].get("LastModified") if found else None


def claim(
    s3: Any, config: IngestConfig, batch: str, path: str, fetched: Fetched
) -> tuple[str | None, bool]:
    """Make this ingest the one that queues ``path``'s job: (None, new path) when it is,
    else (why not: the reason of a duplicate, False). Raises TryLater while another holds
    a fresh claim.

    A new path is one the batch had no input at: the conditional write of the input makes
    it this ingest's, and no older entry is looked for (an entry is written after its
    input; the one exception, the failed entry of an object deleted before it was read,
    is older, and a path's newest entry counts)."""
    key = keys.input_key(batch, path)
    if _put_input(s3, config.bucket, key, fetched, IfNoneMatch="*") is not None:
        return None, True
    return _claim_taken(s3, config, batch, path, fetched), False


def _claim_taken(
    s3: Any, config: IngestConfig, batch: str, path: str, fetched: Fetched
) -> str | None:
    """:func:`claim` for a path whose input is there already."""
    key = keys.input_key(batch, path)
    head = _head(s3, config.bucket, key)
    if head is None:  # being written (409), or removed, just now: look again later
        raise TryLater(f"{key} is being written by another writer", retry_after=5.0)
    metadata = head.get("Metadata") or {}
    if metadata.get(META_SHA256) != fetched.sha256:
        # A new recording under the same key (or another producer's file at this path).
        if _is_older(fetched, metadata):
            return "a newer version of the object was ingested already"
        if _put_input(s3, config.bucket, key, fetched, IfMatch=head["ETag"]) is None:
            raise TryLater(f"{key} changed while it was being replaced", retry_after=5.0)
        return None
    if batch_records.has_entry_with(s3, config.bucket, batch, path, fetched.sha256):
        return "already queued with the same content"
    age = _age_seconds(head)
    if age < config.claim_seconds:
        raise TryLater(
            f"{batch}/{path} is being ingested by another delivery (claimed {age:.0f} s ago)",
            retry_after=config.claim_seconds - age + 1.0,
        )
    # The claimer stopped before queueing (its claim expired): take it over; of several
    # takers the one whose write matches the input's ETag wins.
    if _put_input(s3, config.bucket, key, fetched, IfMatch=head["ETag"]) is None:
        raise TryLater(f"{batch}/{path} was just claimed again by another", retry_after=5.0)
    return None


def _is_older(fetched: Fetched, metadata: Mapping[str, str]) -> bool:
    """True when the input was ingested from a later version of the object than ours
    (events arrive out of order: an old version's event must not replace a newer input)."""
    stored = metadata.get(META_SOURCE_MODIFIED)
    if not stored or fetched.last_modified is None:
        return False
    try:
        return datetime.fromisoformat(stored) > fetched.last_modified
    except (TypeError, ValueError):
        return False


def _queue(
    s3: Any,
    sqs: Any,
    config: IngestConfig,
    batch: str,
    entry: dict[str, Any],
    options: Mapping[str, Any],
    new_path: bool = False,
) -> None:
    """Job first, then the entry (an entry always has a job); an older entry of the path
    under another key (another duration) is replaced. ``new_path``: the batch had no
    input at the path, so no older entry is looked for (one listing fewer a file)."""
    send_jobs(sqs, config.queue_url, [batch_records.job_payload(batch, entry, options)])
    older = [] if new_path else batch_records.path_entries(s3, config.bucket, batch, entry["path"])
    replaced = {entry["path"]: older[0]} if older else None
    batch_records.write_entries(s3, config.bucket, batch, [entry], replaced=replaced, threads=1)


def _gone(
    s3: Any, config: IngestConfig, ref: ObjectRef, folder: str, path: str, events: Any = None
) -> Outcome:
    """The object was deleted before it could be read (its batch's day: the event's)."""
    try:
        batch = config.batch_for(folder, ref.event_time)
    except InvalidKeyError as error:
        return Outcome(ref, "ignored", None, None, str(error))
    if batch_records.path_entries(s3, config.bucket, batch, path):
        # An earlier delivery ingested it (or the path was submitted): it has its job.
        return Outcome(
            ref, "duplicate", batch, path, "the object is gone, but the path already has a job"
        )
    reason = (
        f"{ref.url} was deleted before it could be ingested; put it there again to transcribe it"
    )
    _ensure_batch(s3, config, batch, folder, ref.event_time)
    record = error_record(batch, path, reason, "NoSuchKey")
    s3.put_object(
        Bucket=config.bucket,
        Key=keys.error_key(batch, path),
        Body=json.dumps(record, indent=2).encode("utf-8"),
        ContentType="application/json",
    )
    # The record first, then the entry (failed already): status never counts the file as
    # pending forever.
    entry = batch_records.entry_document(
        batch, path, UNKNOWN_SHA256, ref.size or 0, None, source="ingest", origin=ref.url
    )
    batch_records.write_entries(s3, config.bucket, batch, [entry], threads=1, state="failed")
    # No job, so no worker checks whether this was the batch's last file: ingest does (a
    # daily batch is closed by the schedule once its day is over).
    if config.open_until(ref.event_time) is None:
        try:
            finished.finish_if_done(config, s3, batch, events=events)
        except Exception as error:  # status and wait write done.json when they look
            reason += f" (whether the batch is finished was not checked: {type(error).__name__})"
    return Outcome(ref, "failed", batch, path, reason)


# --- one queued event --------------------------------------------------------------------


@dataclass
class Handled:
    """What became of one event (one queue message): its objects' outcomes, and whether
    it is done (every object came to an end) or must be delivered again."""

    outcomes: list[Outcome] = field(default_factory=list)
    retry: list[tuple[ObjectRef | None, str]] = field(default_factory=list)  # (object, why)
    retry_after: float = 0.0  # the longest TryLater wait among them

    @property
    def done(self) -> bool:
        return not self.retry


def handle_event(
    s3: Any,
    sqs: Any,
    config: IngestConfig,
    body: str,
    probe: Callable[[Path], float | None] | None = None,
    events: Any = None,
) -> Handled:
    """Ingest every object of one queued event (an SQS message body). One object's
    failure never stops the others; the event is done when all of them came to an end."""
    handled = Handled()
    try:
        refs = objects_in_event(json.loads(body))
    except Exception as error:  # not an event of this route: retried, then dead-lettered
        handled.retry.append((None, f"unreadable event: {type(error).__name__}: {error}"))
        return handled
    for ref in refs:
        try:
            handled.outcomes.append(ingest_object(s3, sqs, config, ref, probe, events))
        except TryLater as error:
            handled.retry.append((ref, str(error)))
            handled.retry_after = max(handled.retry_after, error.retry_after)
        except Exception as error:
            handled.retry.append((ref, f"{type(error).__name__}: {error}"))
    return handled


def _ensure_batch(
    s3: Any, config: IngestConfig, batch: str, folder: str, created: datetime | None
) -> dict[str, Any]:
    """The batch's options; a new batch gets its folder's (an existing one keeps its own),
    and a daily one the time it closes (``IngestConfig.open_until``)."""
    return batch_records.ensure_batch(
        s3,
        config.bucket,
        batch,
        config.options_for(folder),
        source=f"ingest:{config.source_prefix}",
        strict=False,
        open_until=config.open_until(created),
    )
