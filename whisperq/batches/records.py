"""A batch's records in S3: its options, written once, one entry per file (its duration
read from a WAV header when nothing better is at hand: :func:`file_duration`), and the
call metadata that travels with each file.

Any number of writers add to a batch at once (several ``whisperq submit``, the ingest
step running for many objects at the same time): each file's entry is its own object,
and the batch's options are created with a conditional write (``If-None-Match: *``), so
no writer can overwrite another's and no entry is lost. Readers list the entries by
prefix (:func:`list_entries`): one request per 1,000 files, whatever the writers did.

An entry is written after its job is on the queue, so an entry always has a job: a
submit cut short before it re-sends the job when run again (jobs are idempotent).

A call's metadata (:func:`clean_metadata`, :func:`merge_metadata`, :func:`call_metadata`)
is flat -- strings, numbers, true/false, null -- and at most ``keys.METADATA_MAX_BYTES``
as compact JSON; what breaks the rules is left out with a problem (a line that names the
source), and the call is transcribed all the same.

Standard library only (with a boto3 client passed in): the ingest Lambda ships this
module as it is. The documents' shapes are :class:`whisperq.schemas.BatchInfo` and
:class:`whisperq.schemas.FileEntry`; tests validate what is written here against them.
"""

from __future__ import annotations

import json
import math
import struct
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

from whisperq import finished, keys
from whisperq.entry_states import ListedEntry, error_code, listed_entry, newer, path_entries
from whisperq.errors import SubmitError

BATCH_SCHEMA_VERSION = 2
_JSON = "application/json"
# A conditional write that lost: another writer's object is there (or is being written).
_LOST_RACE = ("PreconditionFailed", "412", "ConditionalRequestConflict")


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _get_json(s3: Any, bucket: str, key: str) -> Any | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as error:
        if error_code(error) in ("NoSuchKey", "404", "NotFound"):
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
    s3: Any,
    bucket: str,
    batch: str,
    options: Mapping[str, Any],
    source: str,
    strict: bool,
    open_until: str | None = None,
) -> dict[str, Any]:
    """The batch's options, creating the batch with ``options`` if it does not exist (and,
    for a daily ingest batch, ``open_until``: when it stops taking files, ISO UTC).

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
            # status counts its files from their entries alone (whisperq.entry_states)
            "entry_states": True,
        }
        if open_until is not None:
            document["open_until"] = open_until
        try:
            _put_json(s3, bucket, keys.batch_info_key(batch), document, IfNoneMatch="*")
        except Exception as error:
            if error_code(error) not in (
                "PreconditionFailed",
                "412",
                "ConditionalRequestConflict",
            ):
                raise
        else:
            if open_until is not None:  # closed after its day, when no worker may be left
                finished.mark_open(s3, bucket, batch, datetime.fromisoformat(open_until))
            return dict(options)
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
    metadata: Mapping[str, Any] | None = None,
    metadata_problems: Iterable[str] = (),
) -> dict[str, Any]:
    """A file's entry (the shape of :class:`whisperq.schemas.FileEntry`); the call's
    metadata and its problems only when there are some (so ``retry`` sends them again)."""
    entry: dict[str, Any] = {
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
    if metadata:
        entry["metadata"] = dict(metadata)
    if problems := capped(metadata_problems):
        entry["metadata_problems"] = problems
    return entry


def job_payload(batch: str, entry: Mapping[str, Any], options: Mapping[str, Any]) -> dict:
    """The task payload for one file (the shape of :class:`whisperq.schemas.TranscriptionJob`):
    the call's metadata only when it has some (a payload without stays as it always was)."""
    payload = {
        "schema_version": 1,
        "batch": batch,
        "path": entry["path"],
        "input_key": entry["input_key"],
        "sha256": entry["sha256"],
        "size": entry["size"],
        "options": dict(options),
        # its own entry, so that the worker renames it without a listing
        "entry_key": keys.entry_key(batch, entry["path"], entry["duration"]),
    }
    for name in ("metadata", "metadata_problems"):
        if entry.get(name):
            payload[name] = entry[name]
    return payload


def write_entries(
    s3: Any,
    bucket: str,
    batch: str,
    entries: Iterable[Mapping[str, Any]],
    replaced: Mapping[str, ListedEntry] | None = None,
    threads: int = 8,
    state: keys.EntryState = "pending",
) -> None:
    """Write each entry (in parallel); an older entry of the same path under another key
    (another duration or state) is removed after the new one is in place. ``state``:
    "failed" for a file whose error record the writer has just written itself."""
    replaced = replaced or {}

    def write(entry: Mapping[str, Any]) -> None:
        key = keys.entry_key(batch, entry["path"], entry["duration"], state)
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
            listed = listed_entry(batch, item)
            if listed is None:
                continue
            current = found.get(listed.path)
            if current is None or newer(listed, current):
                found[listed.path] = listed
    return found


def has_entry_with(s3: Any, bucket: str, batch: str, path: str, sha256: str) -> bool:
    """Whether one of the path's entries is for this content."""
    for listed in path_entries(s3, bucket, batch, path):
        entry = read_entry(s3, bucket, listed.key)
        if entry is not None and entry.get("sha256") == sha256:
            return True
    return False


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


# --- a call's metadata -----------------------------------------------------------------

SIDECAR_SUFFIX = ".json"  # a call's sidecar: <audio name>.json beside the audio
SIDECAR_MAX_BYTES = 64 * 1024  # no more of a sidecar is read
MAX_FIELD_NAME = 64
MAX_PROBLEMS = 10  # metadata problems a call records (schemas takes a few more)
METADATA_SCHEMA_VERSION = 1
# A missing object -- or, from a bucket that grants GetObject but not ListBucket (an
# external bucket), one that cannot be told from a missing one: S3 answers 403 then.
_ABSENT = ("NoSuchKey", "404", "NotFound", "AccessDenied", "403")


def metadata_size(metadata: Mapping[str, Any]) -> int:
    """Bytes of ``metadata`` as compact JSON (UTF-8): what the limit counts."""
    return len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def capped(problems: Iterable[str]) -> list[str]:
    """At most MAX_PROBLEMS problems, the last one saying how many more there were."""
    found = [problem[:500] for problem in problems]
    if len(found) <= MAX_PROBLEMS:
        return found
    more = len(found) - MAX_PROBLEMS + 1
    return [*found[: MAX_PROBLEMS - 1], f"... and {more} more metadata problem(s)"]


def _bad_name(name: Any) -> bool:
    return (
        not isinstance(name, str)
        or not 1 <= len(name) <= MAX_FIELD_NAME
        or name != name.strip()
        or any(ord(char) < 32 or ord(char) == 127 for char in name)
    )


def clean_metadata(raw: Any, source: str) -> tuple[dict[str, Any], list[str]]:
    """The flat fields of ``raw`` (a sidecar's JSON, S3 user metadata, a CSV row) and the
    problems found, each naming ``source``. Objects, lists, numbers JSON cannot hold and
    names that are not 1-64 printable characters are left out; fields over the limit
    (``keys.METADATA_MAX_BYTES``) are left out all together."""
    if not isinstance(raw, Mapping):
        kind = "a list" if isinstance(raw, list) else type(raw).__name__
        return {}, [f"{source}: not a JSON object of fields but {kind}: left out"]
    kept: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in raw.items():
        if _bad_name(name):
            problems.append(
                f"{source}: field name {str(name)[:80]!r} is not 1-{MAX_FIELD_NAME} printable "
                "characters: left out"
            )
        elif isinstance(value, dict | list):
            kind = "an object" if isinstance(value, dict) else "a list"
            problems.append(
                f"{source}: field {name!r} is {kind}; metadata is flat (strings, numbers, "
                "true/false, null): left out"
            )
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{source}: field {name!r} is {value}, not a JSON number: left out")
        else:
            kept[name] = value
    size = metadata_size(kept)
    if size > keys.METADATA_MAX_BYTES:
        problems.append(
            f"{source}: {size} bytes of metadata, over the {keys.METADATA_MAX_BYTES} a call "
            "may carry: left out"
        )
        kept = {}
    return kept, problems


def merge_metadata(*layers: tuple[str, Mapping[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """(source, fields) layers, the one that wins first: a field several give takes the
    first one's value; a later layer's fields that would take the whole over the limit are
    left out, with a problem."""
    merged: dict[str, Any] = {}
    problems: list[str] = []
    for source, fields in layers:
        left_out = 0
        for name, value in fields.items():
            if name in merged:
                continue
            merged[name] = value
            if metadata_size(merged) > keys.METADATA_MAX_BYTES:
                del merged[name]
                left_out += 1
        if left_out:
            problems.append(
                f"{source}: {left_out} field(s) left out: with the others the call's metadata "
                f"would be over {keys.METADATA_MAX_BYTES} bytes"
            )
    return merged, problems


def user_metadata(raw: Mapping[str, str]) -> dict[str, str]:
    """An object's S3 user metadata (``x-amz-meta-*``, as boto3 gives it), values that S3
    carried RFC 2047-encoded (non-ASCII) decoded."""
    return {name: _rfc2047(value) for name, value in raw.items()}


def _rfc2047(value: str) -> str:
    if not (value.startswith("=?") and value.endswith("?=")):
        return value
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, ValueError, UnicodeDecodeError):
        return value


def parse_sidecar(body: bytes, source: str) -> tuple[dict[str, Any], list[str]]:
    """A sidecar's fields and problems (not JSON, not an object, nested, too big)."""
    if len(body) > SIDECAR_MAX_BYTES:
        return {}, [f"{source}: over {SIDECAR_MAX_BYTES} bytes, too big for call metadata"]
    try:
        raw = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as error:
        return {}, [f"{source}: not JSON ({error}): left out"]
    return clean_metadata(raw, source)


def read_sidecar(s3: Any, bucket: str, key: str) -> tuple[dict[str, Any], list[str]] | None:
    """The fields and problems of the sidecar at ``key``; None when there is none."""
    try:
        answer = s3.get_object(Bucket=bucket, Key=key)
    except Exception as error:
        if error_code(error) in _ABSENT:
            return None
        raise
    body = answer["Body"]
    try:
        data = body.read(SIDECAR_MAX_BYTES + 1)
    finally:
        body.close()
    return parse_sidecar(data, f"sidecar {key.rsplit('/', 1)[-1]}")


def call_metadata(
    s3: Any, bucket: str, sidecar_key: str, s3_metadata: Mapping[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """An ingested call's metadata and problems: its sidecar's fields (read from
    ``sidecar_key``) over its audio's S3 user metadata (``s3_metadata``)."""
    from_s3, problems = clean_metadata(user_metadata(s3_metadata), "S3 user metadata")
    sidecar, sidecar_problems = read_sidecar(s3, bucket, sidecar_key) or ({}, [])
    merged, merge_problems = merge_metadata(("sidecar", sidecar), ("S3 user metadata", from_s3))
    return merged, problems + sidecar_problems + merge_problems


def write_metadata(
    s3: Any,
    bucket: str,
    batch: str,
    path: str,
    source: str,
    source_modified: datetime,
    metadata: Mapping[str, Any],
    problems: Iterable[str],
) -> str:
    """A call's metadata for its worker (``keys.metadata_key``; the shape of
    :class:`whisperq.schemas.CallMetadataRecord`): it applies to the input ingested from
    the version of the audio last modified at ``source_modified``. Returns the key."""
    key = keys.metadata_key(batch, path)
    document = {
        "schema_version": METADATA_SCHEMA_VERSION,
        "batch": batch,
        "path": path,
        "source": source,
        "source_modified": source_modified.astimezone(UTC).isoformat(),
        "metadata": dict(metadata),
        "metadata_problems": capped(problems),
        "written_at": now_iso(),
    }
    _put_json(s3, bucket, key, document)
    return key


# --- a file's duration, for its entry's key: from a WAV header -------------------------

HEADER_BYTES = 64 * 1024  # enough of a WAV file to find its fmt and data chunks
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
