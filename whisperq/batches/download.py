"""``whisperq results``: download a batch's outputs, mirroring the relative paths."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from boto3.s3.transfer import TransferConfig, create_transfer_manager

from whisperq import keys, storage
from whisperq.batches.progress import ProgressHooks
from whisperq.settings import Settings


@dataclass
class DownloadReport:
    files: list[Path] = field(default_factory=list)
    errors: int = 0  # error records among them


def local_path(out: Path, batch: str, key: str) -> Path:
    """Where a result key lands under ``out``; refuses keys that would escape it."""
    relative = key[len(keys.results_prefix(batch)) :]
    target = (out / relative).resolve()
    if not target.is_relative_to(out.resolve()):
        raise ValueError(f"refusing to write outside {out}: {key!r}")
    return target


def download_results(
    settings: Settings,
    batch: str,
    out: Path,
    formats: Collection[str] = keys.DOWNLOAD_KINDS,
    hooks: ProgressHooks | None = None,
) -> DownloadReport:
    """Fetch the chosen formats (error records come with ``json``) into ``out``."""
    s3 = storage.client(settings, "s3")
    wanted: list[tuple[str, bool]] = []
    for item in storage.list_objects(s3, settings.bucket, keys.results_prefix(batch)):
        parsed = keys.parse_result_key(batch, item.key)
        if parsed is None:
            continue
        kind = parsed[1]
        if kind in formats or (kind == "error" and "json" in formats):
            wanted.append((item.key, kind == "error"))

    hooks = hooks or ProgressHooks()
    hooks.stage("Downloading", len(wanted))
    report = DownloadReport()
    config = TransferConfig(max_concurrency=settings.upload_concurrency)
    with create_transfer_manager(s3, config) as manager:
        futures = []
        for key, is_error in wanted:
            target = local_path(out, batch, key)
            target.parent.mkdir(parents=True, exist_ok=True)
            futures.append((manager.download(settings.bucket, key, str(target)), target, is_error))
        for future, target, is_error in futures:
            future.result()
            report.files.append(target)
            report.errors += is_error
            hooks.advance()
    return report
