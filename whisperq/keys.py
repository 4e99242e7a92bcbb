"""The S3 key layout: the public contract, built here and nowhere else.

::

    inputs/<batch>/<relative path>                 the audio as submitted (or ingested)
    incoming/<batch>/<relative path>               drop audio here: it is ingested as a job
    batches/<batch>/batch.json                     the batch's options (written once)
    batches/<batch>/files/<relative path>/<ms>.json  one entry per file; <ms> = its duration
                                                   in milliseconds, or "unknown"
    batches/<batch>/manifest.json                  batches written before entries (read only)
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
listing, with no GET per file. Standard library only: the ingest Lambda ships this module.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from whisperq.errors import InvalidKeyError

INPUTS = "inputs"
INCOMING = "incoming"
RESULTS = "results"
BATCHES = "batches"
ARTIFACTS = "artifacts"
MANIFEST = "manifest.json"
BATCH_INFO = "batch.json"
FILES = "files"
UNKNOWN_DURATION = "unknown"
ERROR_SUFFIX = ".error.json"
REDACTED_AUDIO_SUFFIX = ".redacted.wav"
# Where dropped recordings are ingested from by default: <prefix><batch>/<path>.
DEFAULT_INGEST_PREFIX = f"{INCOMING}/"

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
    if len(joined.encode("utf-8")) > MAX_RELATIVE_PATH_BYTES:
        raise InvalidKeyError(
            f"{path[:60]!r}... is {len(joined.encode('utf-8'))} bytes long; S3 keys hold "
            f"1,024, and whisperq's prefixes leave {MAX_RELATIVE_PATH_BYTES}: shorten it"
        )
    return joined


def input_key(batch: str, relative_path: str) -> str:
    return f"{INPUTS}/{batch}/{relative_path}"


def inputs_prefix(batch: str) -> str:
    return f"{INPUTS}/{batch}/"


def manifest_key(batch: str) -> str:
    """The single manifest of batches written before per-file entries (read only now)."""
    return f"{BATCHES}/{batch}/{MANIFEST}"


def batch_info_key(batch: str) -> str:
    return f"{BATCHES}/{batch}/{BATCH_INFO}"


def entries_prefix(batch: str) -> str:
    return f"{BATCHES}/{batch}/{FILES}/"


def entry_prefix(batch: str, relative_path: str) -> str:
    """Every entry ever written for one path of the batch (normally one)."""
    return f"{entries_prefix(batch)}{relative_path}/"


def entry_key(batch: str, relative_path: str, duration: float | None) -> str:
    leaf = UNKNOWN_DURATION if duration is None else str(round(duration * 1000))
    return f"{entry_prefix(batch, relative_path)}{leaf}.json"


def parse_entry_key(batch: str, key: str) -> tuple[str, float | None] | None:
    """``batches/<batch>/files/<path>/<ms>.json`` -> (path, seconds or None); None if the
    key is not an entry of ``batch``."""
    prefix = entries_prefix(batch)
    if not key.startswith(prefix) or not key.endswith(".json"):
        return None
    path, slash, leaf = key[len(prefix) : -len(".json")].rpartition("/")
    if not slash or not path:
        return None
    if leaf == UNKNOWN_DURATION:
        return path, None
    if not leaf.isdigit():
        return None
    return path, int(leaf) / 1000


def incoming_prefix(batch: str | None = None) -> str:
    return f"{INCOMING}/" if batch is None else f"{INCOMING}/{batch}/"


def parse_incoming_key(key: str, prefix: str = f"{INCOMING}/") -> tuple[str, str]:
    """``<prefix><batch>/<relative path>`` -> (batch, normalised path); raises
    InvalidKeyError when the key does not name a batch and a file under ``prefix``."""
    if not key.startswith(prefix):
        raise InvalidKeyError(f"{key!r} is not under {prefix!r}")
    batch, slash, path = key[len(prefix) :].partition("/")
    if not slash:
        raise InvalidKeyError(
            f"{key!r} has no batch folder: put files under {prefix}<batch>/<path>"
        )
    return validate_batch_name(batch), normalize_relative_path(path)


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
