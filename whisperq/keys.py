"""The S3 key layout: the public contract, built here and nowhere else.

::

    inputs/<batch>/<relative path>                 the audio as submitted
    batches/<batch>/manifest.json                  what was submitted, with options
    results/<batch>/<relative path>.{srt,vtt,txt}  renderings, written first
    results/<batch>/<relative path>.json           the transcript; written last = done
    results/<batch>/<relative path>.error.json     permanent failure, with the reason
    artifacts/<file>                               the deployment's own files (worker wheel)

Anyone can poll ``results/<batch>/`` with any S3 tool: a ``.json`` that is not
``.error.json`` means that file is done.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from whisperq.errors import InvalidKeyError

INPUTS = "inputs"
RESULTS = "results"
BATCHES = "batches"
ARTIFACTS = "artifacts"
MANIFEST = "manifest.json"
ERROR_SUFFIX = ".error.json"

ResultFormat = Literal["json", "srt", "vtt", "txt"]
RESULT_FORMATS: tuple[ResultFormat, ...] = ("json", "srt", "vtt", "txt")
RENDERING_FORMATS: tuple[ResultFormat, ...] = ("srt", "vtt", "txt")  # written before json

_BATCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


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
    return "/".join(parts)


def input_key(batch: str, relative_path: str) -> str:
    return f"{INPUTS}/{batch}/{relative_path}"


def inputs_prefix(batch: str) -> str:
    return f"{INPUTS}/{batch}/"


def manifest_key(batch: str) -> str:
    return f"{BATCHES}/{batch}/{MANIFEST}"


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


ResultKind = Literal["json", "srt", "vtt", "txt", "error"]


def parse_result_key(batch: str, key: str) -> tuple[str, ResultKind] | None:
    """Split ``results/<batch>/<path>.<kind>`` into (path, kind); None if it is not one."""
    prefix = results_prefix(batch)
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    if rest.endswith(ERROR_SUFFIX):
        return rest[: -len(ERROR_SUFFIX)], "error"
    stem, dot, ext = rest.rpartition(".")
    if dot and stem and ext in RESULT_FORMATS:
        return stem, ext  # type: ignore[return-value]
    return None


def batch_from_prefix(prefix: str) -> str:
    """``batches/<batch>/`` (a listing's common prefix) -> ``<batch>``."""
    return prefix.removeprefix(f"{BATCHES}/").rstrip("/")
