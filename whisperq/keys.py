"""The S3 key layout: the public contract, built here and nowhere else.

::

    inputs/<batch>/<relative path>                 the audio as submitted (or ingested)
    inputs/<batch>/<relative path>.metadata.json   the call's metadata from a sidecar that
                                                   landed after its audio (read by the worker)
    incoming/<folder>/<relative path>              drop audio here: it is ingested as a job of
                                                   a batch named from <folder> (and its day);
                                                   <relative path>.json beside it: its metadata
    batches/<batch>/batch.json                     the batch's options (written once)
    batches/<batch>/files/<relative path>/<ms>.json  one entry per file; <ms> = its duration
                                                   in milliseconds, or "unknown"; renamed
                                                   <ms>.done.json / <ms>.failed.json by
                                                   whoever writes its result / error record
    batches/<batch>/manifest.json                  batches written before entries (read only)
    batches/<batch>/done.json                      written once the batch is finished:
                                                   counts, failed paths, finished_at
    batches/<batch>/requeued/<path>/<day>.json     `retry --stale`'s claim: one requeue a day
    open/<YYYYMMDDTHHMMSSZ>/<batch>.json           a daily batch not finished yet, and when
                                                   it closes (whisperq.finished)
    results/<batch>/<relative path>.{srt,vtt,txt}  renderings, written first
    results/<batch>/<relative path>.json           the transcript; written last = done
    results/<batch>/<relative path>.error.json     permanent failure, with the reason
    results/<batch>/<relative path>.redacted.wav   the audio, redacted spans silenced
                                                   (--redact-audio; written before json)
    artifacts/<file>                               the deployment's own files (worker wheel)

Anyone can poll ``results/<batch>/`` with any S3 tool: a ``.json`` that is not
``.error.json`` means that file is done.

A batch's files are one object each, never one shared document, so any number of
submitters and ingest steps can add to a batch at once without losing an entry. The
duration rides in the entry's key so ``status`` counts files and audio hours from one
listing, with no GET per file; so does the file's state (``EntryState``), so that one
listing -- a request per 1,000 files -- also says which are done, without listing the
four renderings of every result (whisperq.entry_states). Standard library only: the
ingest Lambda ships this module.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from whisperq import defaults
from whisperq.errors import InvalidKeyError

INPUTS = "inputs"
INCOMING = "incoming"
RESULTS = "results"
BATCHES = "batches"
ARTIFACTS = "artifacts"
MANIFEST = "manifest.json"
BATCH_INFO = "batch.json"
FILES = "files"
DONE = "done.json"
OPEN = "open"
REQUEUED = "requeued"
UNKNOWN_DURATION = "unknown"
ERROR_SUFFIX = ".error.json"
REDACTED_AUDIO_SUFFIX = ".redacted.wav"
METADATA_SUFFIX = ".metadata.json"
# Where dropped recordings are ingested from by default: <prefix><folder>/<path>.
DEFAULT_INGEST_PREFIX = f"{INCOMING}/"
# The batch an ingested object joins: {folder} (the first folder under the prefix) and
# {date} (the UTC day the object was created, YYYY-MM-DD). "{folder}-{date}": one per day.
DEFAULT_INGEST_BATCH = "{folder}"
INGEST_BATCH_FIELDS = ("folder", "date")
# A call's metadata (result JSON "metadata"; job payloads carry it): flat values, at most
# this many bytes as compact JSON (UTF-8), so a job message stays far below SQS's 256 KB.
METADATA_MAX_BYTES = 2048

# What `submit` takes from a directory and the ingest step takes from incoming/ (suffixes,
# compared lowercased).
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

ResultFormat = Literal["json", "srt", "vtt", "txt"]
# A file's state, in its entry's key: "pending" (<ms>.json) until its result or error
# record is written, then "done" (<ms>.done.json) or "failed" (<ms>.failed.json).
EntryState = Literal["pending", "done", "failed"]
ENTRY_STATES: tuple[EntryState, ...] = ("pending", "done", "failed")
RESULT_FORMATS: tuple[ResultFormat, ...] = ("json", "srt", "vtt", "txt")
RENDERING_FORMATS: tuple[ResultFormat, ...] = ("srt", "vtt", "txt")  # written before json

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An S3 key is at most 1,024 bytes: the longest prefix whisperq puts before a path
# (batches/<128-char batch>/files/ ... /<ms>.json) leaves this much for the path itself.
MAX_RELATIVE_PATH_BYTES = 850

_BATCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def normalize_prefix(prefix: str) -> str:
    """``incoming`` or ``/incoming/`` -> ``incoming/``; empty stays empty (the bucket's root)."""
    prefix = prefix.strip().lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def validate_batch_name(batch: str) -> str:
    """Return ``batch`` if it is a usable batch name, else raise with the rule."""
    if not _BATCH_NAME.fullmatch(batch) or ".." in batch:
        raise InvalidKeyError(
            f"Invalid batch name {batch!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return batch


def normalize_relative_path(path: str) -> str:
    """A relative path as it appears in keys: '/'-separated, NFC, no '.' or '..' parts.

    NFC so a name typed on macOS (NFD) and on Linux (NFC) maps to the same key.
    """
    text = unicodedata.normalize("NFC", path.replace("\\", "/"))
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise InvalidKeyError(f"Not a usable relative path: {path!r}")
    if _CONTROL.search(text):
        # S3 stores such keys, but its XML listings cannot return them as they are: the
        # file would have an entry no listing shows, so no status, no result, no retry.
        raise InvalidKeyError(
            f"{path!r} has a control character (a newline or tab) in its name, which S3 "
            "listings cannot return: rename the file"
        )
    joined = "/".join(parts)
    if joined.endswith(METADATA_SUFFIX):
        raise InvalidKeyError(
            f"{path!r} ends in {METADATA_SUFFIX!r}, the name whisperq gives a call's metadata "
            "beside its input: rename the file"
        )
    if len(joined.encode("utf-8")) > MAX_RELATIVE_PATH_BYTES:
        raise InvalidKeyError(
            f"{path[:60]!r}... is {len(joined.encode('utf-8'))} bytes long; S3 keys hold "
            f"1,024, and whisperq's prefixes leave {MAX_RELATIVE_PATH_BYTES}: shorten it"
        )
    return joined


def input_key(batch: str, relative_path: str) -> str:
    return f"{INPUTS}/{batch}/{relative_path}"


def metadata_key(batch: str, relative_path: str) -> str:
    """A call's metadata from a sidecar that landed after its audio: beside its input (the
    worker may read inputs/; it expires with the input)."""
    return f"{INPUTS}/{batch}/{relative_path}{METADATA_SUFFIX}"


def inputs_prefix(batch: str) -> str:
    return f"{INPUTS}/{batch}/"


def manifest_key(batch: str) -> str:
    """The single manifest of batches written before per-file entries (read only now)."""
    return f"{BATCHES}/{batch}/{MANIFEST}"


def batch_info_key(batch: str) -> str:
    return f"{BATCHES}/{batch}/{BATCH_INFO}"


def done_key(batch: str) -> str:
    """Written once, when every file of the batch has a result or an error record."""
    return f"{BATCHES}/{batch}/{DONE}"


def open_batch_key(batch: str, closes: datetime) -> str:
    """A daily batch not finished yet, and when it stops taking files: written when ingest
    creates it, removed once its ``done.json`` is there. What closes daily batches lists
    these (the time is in the key: no GET for a batch whose day is not over)."""
    return f"{OPEN}/{closes.astimezone(UTC):%Y%m%dT%H%M%SZ}/{batch}.json"


def open_batches_prefix() -> str:
    return f"{OPEN}/"


def parse_open_batch_key(key: str) -> tuple[str, datetime] | None:
    """``open/<YYYYMMDDTHHMMSSZ>/<batch>.json`` -> (batch, when it closes); None for any
    other key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != OPEN or not parts[2].endswith(".json"):
        return None
    try:
        closes = datetime.strptime(parts[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return validate_batch_name(parts[2][: -len(".json")]), closes
    except (ValueError, InvalidKeyError):
        return None


def requeue_claim_key(batch: str, relative_path: str, day: str) -> str:
    """`retry --stale`'s claim on one path for one day: the run that writes it queues."""
    return f"{BATCHES}/{batch}/{REQUEUED}/{relative_path}/{day}.json"


def entries_prefix(batch: str) -> str:
    return f"{BATCHES}/{batch}/{FILES}/"


def entry_prefix(batch: str, relative_path: str) -> str:
    """Every entry ever written for one path of the batch (normally one)."""
    return f"{entries_prefix(batch)}{relative_path}/"


def entry_key(
    batch: str, relative_path: str, duration: float | None, state: EntryState = "pending"
) -> str:
    leaf = UNKNOWN_DURATION if duration is None else str(round(duration * 1000))
    suffix = ".json" if state == "pending" else f".{state}.json"
    return f"{entry_prefix(batch, relative_path)}{leaf}{suffix}"


@dataclass(frozen=True)
class EntryParts:
    """What an entry's key says: the file's path, duration (seconds, None if unknown) and
    state."""

    path: str
    duration: float | None
    state: EntryState


def parse_entry(batch: str, key: str) -> EntryParts | None:
    """``batches/<batch>/files/<path>/<ms>[.done|.failed].json`` -> its parts; None if the
    key is not an entry of ``batch``."""
    prefix = entries_prefix(batch)
    if not key.startswith(prefix) or not key.endswith(".json"):
        return None
    path, slash, leaf = key[len(prefix) : -len(".json")].rpartition("/")
    if not slash or not path:
        return None
    state: EntryState = "pending"
    stem, dot, tail = leaf.rpartition(".")
    if dot and tail in ("done", "failed"):
        leaf, state = stem, "done" if tail == "done" else "failed"
    if leaf == UNKNOWN_DURATION:
        return EntryParts(path, None, state)
    if not leaf.isdigit():
        return None
    return EntryParts(path, int(leaf) / 1000, state)


def parse_entry_key(batch: str, key: str) -> tuple[str, float | None] | None:
    """``batches/<batch>/files/<path>/<ms>.json`` (in any state) -> (path, seconds or
    None); None if the key is not an entry of ``batch``."""
    parts = parse_entry(batch, key)
    return None if parts is None else (parts.path, parts.duration)


def incoming_prefix(batch: str | None = None) -> str:
    return f"{INCOMING}/" if batch is None else f"{INCOMING}/{batch}/"


def parse_incoming_key(key: str, prefix: str = f"{INCOMING}/") -> tuple[str, str]:
    """``<prefix><folder>/<relative path>`` -> (folder, normalised path); the folder is a
    valid batch name (the batch itself with the default ``{folder}`` template). Raises
    InvalidKeyError when the key does not name a folder and a file under ``prefix``."""
    if not key.startswith(prefix):
        raise InvalidKeyError(f"{key!r} is not under {prefix!r}")
    batch, slash, path = key[len(prefix) :].partition("/")
    if not slash:
        raise InvalidKeyError(
            f"{key!r} has no batch folder: put files under {prefix}<batch>/<path>"
        )
    return validate_batch_name(batch), normalize_relative_path(path)


def check_batch_template(template: str) -> str:
    """Return ``template`` if it makes valid batch names from {folder} and {date}, else
    raise InvalidKeyError saying why."""
    try:
        fields = [item for item in string.Formatter().parse(template) if item[1] is not None]
    except ValueError as error:
        raise InvalidKeyError(f"Invalid batch template {template!r}: {error}") from None
    for _literal, name, spec, conversion in fields:
        if name not in INGEST_BATCH_FIELDS or spec or conversion:
            raise InvalidKeyError(
                f"Invalid batch template {template!r}: {{{name}}} is not a field; use "
                "{folder} and {date}, e.g. '{folder}-{date}'"
            )
    try:
        ingest_batch_name(template, "support", date(2026, 12, 4))
    except InvalidKeyError as error:
        raise InvalidKeyError(
            f"Invalid batch template {template!r}: it does not make a batch name ({error})"
        ) from None
    return template


def ingest_batch_name(template: str, folder: str, day: date) -> str:
    """The batch of an object under ``<prefix><folder>/``, created on ``day`` (UTC)."""
    return validate_batch_name(template.format(folder=folder, date=day.isoformat()))


def ingest_batch_open_until(template: str, day: date) -> datetime | None:
    """When a batch named with ``{date}`` for ``day`` stops taking files: the end of that
    UTC day plus ``defaults.DAILY_BATCH_GRACE_SECONDS`` (``open_until`` in its batch.json);
    None for a template without ``{date}`` (its batch is never closed by a day)."""
    fields = string.Formatter().parse(template)
    if not any(name == "date" for _, name, _, _ in fields):
        return None
    midnight = datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)
    return midnight + timedelta(seconds=defaults.DAILY_BATCH_GRACE_SECONDS)


def artifact_key(name: str) -> str:
    return f"{ARTIFACTS}/{name}"


def batches_prefix() -> str:
    return f"{BATCHES}/"


def results_prefix(batch: str) -> str:
    return f"{RESULTS}/{batch}/"


def result_key(batch: str, relative_path: str, fmt: ResultFormat) -> str:
    return f"{RESULTS}/{batch}/{relative_path}.{fmt}"


def error_key(batch: str, relative_path: str) -> str:
    return f"{RESULTS}/{batch}/{relative_path}{ERROR_SUFFIX}"


def redacted_audio_key(batch: str, relative_path: str) -> str:
    return f"{RESULTS}/{batch}/{relative_path}{REDACTED_AUDIO_SUFFIX}"


ResultKind = Literal["json", "srt", "vtt", "txt", "error", "audio"]
DOWNLOAD_KINDS: tuple[str, ...] = (*RESULT_FORMATS, "audio")  # `whisperq results --format`


def parse_result_key(batch: str, key: str) -> tuple[str, ResultKind] | None:
    """Split ``results/<batch>/<path>.<kind>`` into (path, kind); None if it is not one."""
    prefix = results_prefix(batch)
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    if rest.endswith(ERROR_SUFFIX):
        return rest[: -len(ERROR_SUFFIX)], "error"
    if rest.endswith(REDACTED_AUDIO_SUFFIX):
        return rest[: -len(REDACTED_AUDIO_SUFFIX)], "audio"
    stem, dot, ext = rest.rpartition(".")
    if dot and stem and ext in RESULT_FORMATS:
        return stem, ext
    return None


def batch_from_prefix(prefix: str) -> str:
    """``batches/<batch>/`` (a listing's common prefix) -> ``<batch>``."""
    return prefix.removeprefix(f"{BATCHES}/").rstrip("/")
