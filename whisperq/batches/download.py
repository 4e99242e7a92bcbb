"""``whisperq results``: download a batch's outputs, mirroring the relative paths.

The folder a batch is downloaded into is marked with the batch's name
(``.whisperq-batch``): downloading the same batch again refreshes its files, but another
batch, whose paths may be the same (``call-0001.wav.json``), is refused there unless the
caller says to overwrite, so two batches never silently mix.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from s3transfer.subscribers import BaseSubscriber

from whisperq import keys, storage
from whisperq.batches.progress import ProgressHooks
from whisperq.errors import UsageError, WhisperqError
from whisperq.settings import Settings

MARKER = ".whisperq-batch"


@dataclass
class DownloadReport:
    files: list[Path] = field(default_factory=list)
    errors: int = 0  # error records among them


@dataclass(frozen=True)
class Download:
    """What a download of a batch will write: (the object as listed, target, is an error
    record). The listing's size and ETag go to the transfer manager, which otherwise asks
    S3 for them (a HEAD per file before its GET)."""

    batch: str
    out: Path
    items: list[tuple[storage.ObjectInfo, Path, bool]]
    kinds_present: frozenset[str]  # every kind the batch has results of


def local_path(out: Path, batch: str, key: str) -> Path:
    """Where a result key lands under ``out``; refuses keys that would escape it."""
    relative = key[len(keys.results_prefix(batch)) :]
    target = (out / relative).resolve()
    if not target.is_relative_to(out.resolve()):
        raise ValueError(f"refusing to write outside {out}: {key!r}")
    return target


def plan_download(
    settings: Settings, batch: str, out: Path, formats: Collection[str] = keys.DOWNLOAD_KINDS
) -> Download:
    """The chosen formats' keys (error records come with ``json``) and where they go."""
    s3 = storage.client(settings, "s3")
    items: list[tuple[storage.ObjectInfo, Path, bool]] = []
    present: set[str] = set()
    for item in storage.list_objects(s3, settings.bucket, keys.results_prefix(batch)):
        parsed = keys.parse_result_key(batch, item.key)
        if parsed is None:
            continue
        kind = parsed[1]
        present.add(kind)
        if kind in formats or (kind == "error" and "json" in formats):
            items.append((item, local_path(out, batch, item.key), kind == "error"))
    return Download(batch, out, items, frozenset(present))


def check_target(download: Download, overwrite: bool) -> None:
    """Refuse to mix batches in one folder, or to replace files whisperq did not write
    there, unless ``overwrite``."""
    if overwrite:
        return
    marker = download.out / MARKER
    owner = _marked_batch(marker)
    if owner == download.batch:
        return
    if owner is not None:
        raise UsageError(
            f"{download.out}/ holds the results of batch {owner!r} ({marker}); batch "
            f"{download.batch!r} has paths of its own that could replace them. Choose "
            f"another --out (e.g. {download.out / download.batch}) or add --overwrite."
        )
    clashes = [target for _, target, _ in download.items if target.exists()]
    if clashes:
        raise UsageError(
            f"{len(clashes)} file(s) under {download.out}/ would be replaced (e.g. "
            f"{clashes[0]}), and the folder is not marked as batch {download.batch!r}'s. "
            "Choose another --out or add --overwrite."
        )


def _marked_batch(marker: Path) -> str | None:
    try:
        batch = json.loads(marker.read_text(encoding="utf-8"))["batch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return batch if isinstance(batch, str) else None


class _AsListed(BaseSubscriber):
    """Tells the transfer manager an object's size and ETag from the listing, so that it
    GETs the object at once (and still checks the ETag) instead of HEADing it first."""

    def __init__(self, listed: storage.ObjectInfo) -> None:
        super().__init__()
        self.listed = listed

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self.listed.size)
        if self.listed.etag:
            future.meta.provide_object_etag(self.listed.etag)


def download_results(
    settings: Settings,
    download: Download,
    hooks: ProgressHooks | None = None,
) -> DownloadReport:
    """Fetch what ``download`` planned, and mark the folder as the batch's."""
    if not download.items:
        raise WhisperqError("Nothing to download.")
    s3 = storage.client(settings, "s3")
    hooks = hooks or ProgressHooks()
    hooks.stage("Downloading", len(download.items))
    report = DownloadReport()
    download.out.mkdir(parents=True, exist_ok=True)
    (download.out / MARKER).write_text(json.dumps({"batch": download.batch}), encoding="utf-8")
    config = TransferConfig(max_concurrency=settings.upload_concurrency)
    with create_transfer_manager(s3, config) as manager:
        futures = []
        for listed, target, is_error in download.items:
            target.parent.mkdir(parents=True, exist_ok=True)
            given = [_AsListed(listed)]
            future = manager.download(settings.bucket, listed.key, str(target), subscribers=given)
            futures.append((future, target, is_error))
        for future, target, is_error in futures:
            future.result()
            report.files.append(target)
            report.errors += is_error
            hooks.advance()
    return report
