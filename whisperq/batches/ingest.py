"""S3-event ingestion: an object created under ``incoming/<batch>/<path>`` becomes a job.

The object becomes exactly what ``whisperq submit`` would have made of the same file: its
input at ``inputs/<batch>/<path>``, a job on the queue, the file's entry in the batch
(so ``status`` counts it), results at ``results/<batch>/<path>.*``. The same code runs in
the ingest Lambda on AWS (``infra_pulumi/ingest/handler.py``) and in ``whisperq ingest``
(the local stack's ingest process, or a server's).

S3 (and EventBridge) deliver events at least once and out of order, several at a time.
For one object, :func:`ingest_object`:

1. maps the key to (batch, path); a key outside the layout or a file that is not audio
   (a ``.json`` sidecar, a ``.txt``) is **ignored** with the reason, nothing is written;
2. downloads the object to a temporary file, hashing it (bounded memory). An object that
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
4. sends the job (``SendMessageBatch``), then writes the entry: an entry always has a job.

Standard library only, with boto3 clients passed in: the Lambda ships this module with
keys, errors, messages and batch_records. Nothing of an object's content is logged or
returned besides its key, size and sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote_plus

from whisperq import defaults, keys
from whisperq.batches import records as batch_records
from whisperq.errors import ConfigError, InvalidKeyError, WhisperqError
from whisperq.messages import send_jobs

DEFAULT_PREFIX = keys.DEFAULT_INGEST_PREFIX
DEFAULT_CLAIM_SECONDS = defaults.INGEST_CLAIM_SECONDS
HEADER_BYTES = 64 * 1024  # enough of a WAV file to find its fmt and data chunks
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

Status = Literal["queued", "duplicate", "ignored", "failed"]


# --- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class IngestConfig:
    """Where ingested objects come from and where their jobs go."""

    bucket: str  # whisperq's bucket (inputs/, batches/, results/)
    queue_url: str  # the job queue
    source_bucket: str  # where recordings land (== bucket for incoming/)
    source_prefix: str = DEFAULT_PREFIX  # <source_prefix><batch>/<path>
    # batch name -> FULL options dict (TranscriptionOptions().model_dump(mode="json") shape)
    options_by_batch: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    default_options: Mapping[str, Any] = field(default_factory=dict)  # for other batches
    claim_seconds: float = DEFAULT_CLAIM_SECONDS  # see TryLater

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IngestConfig:
        """From ``WHISPERQ_*`` variables, as the ingest Lambda is configured:
        WHISPERQ_BUCKET, WHISPERQ_QUEUE_URL (required), WHISPERQ_INGEST_SOURCE_BUCKET
        (default: the bucket), WHISPERQ_INGEST_PREFIX (default ``incoming/``),
        WHISPERQ_INGEST_OPTIONS (JSON: {"batch": {options}}), WHISPERQ_INGEST_DEFAULT_OPTIONS
        (JSON: {options}), WHISPERQ_INGEST_CLAIM_SECONDS."""
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
        return cls(
            bucket=bucket,
            queue_url=env["WHISPERQ_QUEUE_URL"],
            source_bucket=env.get("WHISPERQ_INGEST_SOURCE_BUCKET") or bucket,
            source_prefix=keys.normalize_prefix(env.get("WHISPERQ_INGEST_PREFIX", DEFAULT_PREFIX)),
            options_by_batch=by_batch,
            default_options=_json_env(env, "WHISPERQ_INGEST_DEFAULT_OPTIONS"),
            claim_seconds=claim,
        )

    def options_for(self, batch: str) -> dict[str, Any]:
        """The options a new batch of this name is created with."""
        return dict(self.options_by_batch.get(batch, self.default_options))


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


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectRef:
    """An object an event names (the key decoded)."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def objects_in_event(event: Mapping[str, Any]) -> list[ObjectRef]:
    """The created objects an event names, in order.

    - S3 notifications (``{"Records": [...]}``): the ``ObjectCreated:*`` records; other
      records (removals, ...) are skipped;
    - EventBridge (``"detail-type": "Object Created"``); other S3 detail types give none;
    - in both, the key arrives URL-encoded (``+`` for a space, ``%XX`` for the rest, a
      literal ``+`` as ``%2B``) and is decoded here, once, as AWS's own event parsers do
      (``unquote_plus``): the object's real key;
    - S3's ``s3:TestEvent`` (sent when a notification is configured) gives none;
    - an SNS envelope around any of these is opened.

    Anything else raises ValueError: it is not an event this route knows.
    """
    if not isinstance(event, Mapping):
        raise ValueError(f"an event is a JSON object, not {type(event).__name__}")
    if event.get("Event") == "s3:TestEvent":
        return []
    if event.get("Type") == "Notification" and isinstance(event.get("Message"), str):
        return objects_in_event(json.loads(event["Message"]))
    if "Records" in event:
        return [ref for record in event["Records"] if (ref := _notification_object(record))]
    if "detail-type" in event:
        if event.get("source") not in (None, "aws.s3"):
            raise ValueError(f"not an S3 event: source {event.get('source')!r}")
        if event["detail-type"] != "Object Created":
            return []
        detail = event.get("detail") or {}
        item = detail.get("object") or {}
        return [
            ObjectRef(
                bucket=str(detail["bucket"]["name"]),
                key=unquote_plus(str(item["key"])),
                size=_int_or_none(item.get("size")),
                etag=item.get("etag"),
            )
        ]
    raise ValueError("not an S3 notification or EventBridge S3 event")


def _notification_object(record: Mapping[str, Any]) -> ObjectRef | None:
    if not str(record.get("eventName", "")).startswith("ObjectCreated"):
        return None
    s3 = record["s3"]
    item = s3["object"]
    return ObjectRef(
        bucket=str(s3["bucket"]["name"]),
        key=unquote_plus(str(item["key"])),
        size=_int_or_none(item.get("size")),
        etag=item.get("eTag"),
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


# --- outcomes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one object ended. ``reason`` says why for every status but queued."""

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
    """(batch, path) for an object to ingest, or the reason it is not one."""
    if ref.bucket != config.source_bucket:
        return f"not in the source bucket {config.source_bucket!r}"
    if ref.bucket == config.bucket and ref.key.startswith(_OWN_PREFIXES):
        return "one of whisperq's own objects"
    try:
        batch, path = keys.parse_incoming_key(ref.key, config.source_prefix)
    except InvalidKeyError as error:
        return str(error)
    if not is_audio(path):
        suffix = PurePosixPath(path).suffix or "no extension"
        return f"not audio ({suffix}); audio files end in " + " ".join(
            sorted(keys.AUDIO_EXTENSIONS)
        )
    return batch, path


def is_audio(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in keys.AUDIO_EXTENSIONS


_WAVE_PCM, _WAVE_FLOAT, _WAVE_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_UNSET_SIZES = (0, 0xFFFFFFFF)  # what recorders write while they stream a WAV


def wav_duration(header: bytes, total_size: int | None = None) -> float | None:
    """Seconds of audio in a RIFF/WAVE file from its first bytes; None when unknown.

    Walks the chunks to ``fmt `` and ``data``: PCM, float, mu-law, A-law (data bytes /
    byte rate) and compressed formats such as GSM 6.10 or IMA ADPCM (the ``fact`` chunk's
    sample count / sample rate, else data bytes / byte rate). A data size left unset or
    past the end (a recording written as it streamed) is taken from ``total_size``, the
    file's length, when given.
    """
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    position = 12
    fmt: tuple[int, int, int, int] | None = None  # tag, channels, rate, byte rate
    samples: int | None = None  # from the fact chunk
    while position + 8 <= len(header):
        chunk_id = header[position : position + 4]
        (size,) = struct.unpack_from("<I", header, position + 4)
        body = position + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(header):
                return None
            tag, channels, rate, byte_rate = struct.unpack_from("<HHII", header, body)
            fmt = (tag, channels, rate, byte_rate)
        elif chunk_id == b"fact" and size >= 4 and body + 4 <= len(header):
            (samples,) = struct.unpack_from("<I", header, body)
        elif chunk_id == b"data":
            return _data_seconds(fmt, samples, size, body, total_size)
        position = body + size + (size & 1)  # chunks are word aligned
    return None


def _data_seconds(
    fmt: tuple[int, int, int, int] | None,
    samples: int | None,
    size: int,
    offset: int,
    total_size: int | None,
) -> float | None:
    if fmt is None:
        return None
    tag, _channels, rate, byte_rate = fmt
    available = None if total_size is None else max(0, total_size - offset)
    streamed = size in _UNSET_SIZES or (available is not None and size > available)
    if streamed:
        if available is None:
            return None
        size = available
    elif tag not in (_WAVE_PCM, _WAVE_FLOAT, _WAVE_EXTENSIBLE) and samples and rate:
        return round(samples / rate, 3)
    if byte_rate <= 0:
        return None
    return round(size / byte_rate, 3)


def file_duration(path: Path) -> float | None:
    """A WAV file's duration from its header (standard library); None for other files."""
    with path.open("rb") as handle:
        header = handle.read(HEADER_BYTES)
    return wav_duration(header, path.stat().st_size)


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


def _error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _status_code(error: Exception) -> int | None:
    response = getattr(error, "response", None) or {}
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _is_gone(error: Exception) -> bool:
    return _error_code(error) in _GONE


def _lost_race(error: Exception) -> bool:
    return _error_code(error) in _LOST_RACE or _status_code(error) in (409, 412)


@dataclass(frozen=True)
class Fetched:
    """An object downloaded to a local file."""

    local: Path
    sha256: str
    size: int
    last_modified: datetime | None


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
    return Fetched(local, digest.hexdigest(), size, answer.get("LastModified"))


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


def _head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except Exception as error:
        if _is_gone(error):
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


def path_entries(s3: Any, bucket: str, batch: str, path: str) -> list[batch_records.ListedEntry]:
    """The entries of one path of a batch (normally one), newest first; one listing."""
    found = []
    answer = s3.list_objects_v2(Bucket=bucket, Prefix=keys.entry_prefix(batch, path), Delimiter="/")
    for item in answer.get("Contents", []):
        parsed = keys.parse_entry_key(batch, item["Key"])
        if parsed is not None and parsed[0] == path:
            found.append(
                batch_records.ListedEntry(path, item["Key"], parsed[1], item.get("LastModified"))
            )
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda item: (item.last_modified or oldest, item.key), reverse=True)


def _has_entry_with(s3: Any, bucket: str, batch: str, path: str, sha256: str) -> bool:
    for listed in path_entries(s3, bucket, batch, path):
        entry = batch_records.read_entry(s3, bucket, listed.key)
        if entry is not None and entry.get("sha256") == sha256:
            return True
    return False


# --- the steps ---------------------------------------------------------------------------


def ingest_object(
    s3: Any,
    sqs: Any,
    config: IngestConfig,
    ref: ObjectRef,
    probe: Callable[[Path], float | None] | None = None,
) -> Outcome:
    """Make ``ref`` a job of its batch, once (see the module's docstring).

    ``probe`` reads a file's duration (the CLI passes PyAV's); without it, WAV headers are
    read and other formats' durations are unknown. Raises :class:`TryLater` while another
    ingest of the same content holds a fresh claim; other errors (throttling, network,
    access) escape, and the event is to be delivered again.
    """
    placed = place(config, ref)
    if isinstance(placed, str):
        return Outcome(ref, "ignored", None, None, placed)
    batch, path = placed
    with tempfile.TemporaryDirectory(prefix="whisperq-ingest-") as directory:
        fetched = fetch(s3, ref, Path(directory) / "object")
        if fetched is None:
            return _gone(s3, config, ref, batch, path)
        duration = (probe or file_duration)(fetched.local)
        options = _ensure_batch(s3, config, batch)
        refused = claim(s3, config, batch, path, fetched)
        if refused is not None:
            return Outcome(ref, "duplicate", batch, path, refused, fetched.sha256)
        entry = batch_records.entry_document(
            batch,
            path,
            fetched.sha256,
            fetched.size,
            duration,
            source="ingest",
            origin=ref.url,
        )
        _queue(s3, sqs, config, batch, entry, options)
    return Outcome(ref, "queued", batch, path, None, fetched.sha256)


def claim(s3: Any, config: IngestConfig, batch: str, path: str, fetched: Fetched) -> str | None:
    """Make this ingest the one that queues ``path``'s job: None when it is, else why
    not (the reason of a duplicate). Raises TryLater while another holds a fresh claim."""
    key = keys.input_key(batch, path)
    if _put_input(s3, config.bucket, key, fetched, IfNoneMatch="*") is not None:
        return None
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
    if _has_entry_with(s3, config.bucket, batch, path, fetched.sha256):
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
) -> None:
    """Job first, then the entry (an entry always has a job); an older entry of the path
    under another key (another duration) is replaced."""
    send_jobs(sqs, config.queue_url, [batch_records.job_payload(batch, entry, options)])
    older = path_entries(s3, config.bucket, batch, entry["path"])
    replaced = {entry["path"]: older[0]} if older else None
    batch_records.write_entries(s3, config.bucket, batch, [entry], replaced=replaced, threads=1)


def _gone(s3: Any, config: IngestConfig, ref: ObjectRef, batch: str, path: str) -> Outcome:
    """The object was deleted before it could be read."""
    if path_entries(s3, config.bucket, batch, path):
        # An earlier delivery ingested it (or the path was submitted): it has its job.
        return Outcome(
            ref, "duplicate", batch, path, "the object is gone, but the path already has a job"
        )
    reason = (
        f"{ref.url} was deleted before it could be ingested; put it there again to transcribe it"
    )
    _ensure_batch(s3, config, batch)
    record = error_record(batch, path, reason, "NoSuchKey")
    s3.put_object(
        Bucket=config.bucket,
        Key=keys.error_key(batch, path),
        Body=json.dumps(record, indent=2).encode("utf-8"),
        ContentType="application/json",
    )
    # The record first, then the entry: status never counts the file as pending forever.
    entry = batch_records.entry_document(
        batch, path, UNKNOWN_SHA256, ref.size or 0, None, source="ingest", origin=ref.url
    )
    batch_records.write_entries(s3, config.bucket, batch, [entry], threads=1)
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
            handled.outcomes.append(ingest_object(s3, sqs, config, ref, probe))
        except TryLater as error:
            handled.retry.append((ref, str(error)))
            handled.retry_after = max(handled.retry_after, error.retry_after)
        except Exception as error:
            handled.retry.append((ref, f"{type(error).__name__}: {error}"))
    return handled


def _ensure_batch(s3: Any, config: IngestConfig, batch: str) -> dict[str, Any]:
    """The batch's options; a new batch gets its folder's (an existing one keeps its own)."""
    return batch_records.ensure_batch(
        s3,
        config.bucket,
        batch,
        config.options_for(batch),
        source=f"ingest:{config.source_prefix}",
        strict=False,
    )
