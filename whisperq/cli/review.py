"""`whisperq report BATCH --html DIR`: the batch's review site
(:mod:`whisperq.transcripts.review_site`) from what the batch left in S3.

One listing of ``results/<batch>/`` says which calls are done, which failed and which
have a redacted audio copy; the result JSONs are then read ``threads`` at a time and each
call's page written as its JSON arrives (a bounded window of reads in flight: memory stays
flat on a 10,000-call batch). Each page plays:

- the redacted audio (``results/<batch>/<path>.redacted.wav``) when the batch wrote one;
- else, for a batch that did not redact, the input (``inputs/<batch>/<path>``);
- never the input of a call that was redacted (it holds what redaction removed) unless
  ``include_original_audio``: without it the input is not even read.

The audio is copied beside the page, or linked with a presigned URL (``presign_hours``:
the site then holds no audio, and the links stop working when the URLs expire).
"""

from __future__ import annotations

import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal, TypeVar

from botocore.exceptions import ClientError
from pydantic import ValidationError

from whisperq import keys, storage
from whisperq.batches import tracking
from whisperq.cli.app import err, out, settings_for_storage
from whisperq.errors import UsageError, WhisperqError
from whisperq.fleet import batch_cost, pricing
from whisperq.settings import Settings
from whisperq.transcripts.review_call import AudioSource
from whisperq.transcripts.review_html import href
from whisperq.transcripts.review_site import BatchFigures, ReviewSite

MAX_PRESIGN_HOURS: Final = 168  # SigV4 presigned URLs last at most 7 days

AudioKind = Literal["redacted", "original"]

NO_REDACTED_AUDIO: Final = (
    "No audio: the batch redacted the transcript but wrote no redacted audio copy "
    "(submit with --redact-audio), and the original recording, which holds what was "
    "removed, is left out (--include-original-audio links it)."
)
ORIGINAL_TOO: Final = "The original recording holds what redaction removed."


def redacted(result: Mapping[str, Any], batch_redacts: bool) -> bool:
    """Whether the call was redacted: the batch's options, or the result's own."""
    options = result.get("options") or {}
    return bool(
        batch_redacts
        or (isinstance(options, dict) and (options.get("redact") or options.get("redact_patterns")))
        or result.get("redactions") is not None
        or result.get("redacted_audio")
    )


def audio_plan(
    was_redacted: bool, has_redacted_audio: bool, has_input: bool, include_original: bool
) -> tuple[list[tuple[AudioKind, str]], str | None]:
    """What a call's page plays, first the default, as (kind, label), and a note for the
    reviewer: the redacted copy when there is one; the input only for a call that was not
    redacted, or with ``include_original``."""
    plan: list[tuple[AudioKind, str]] = []
    if has_redacted_audio:
        plan.append(("redacted", "redacted audio"))
    if has_input and (include_original or not was_redacted):
        plan.append(("original", "original audio (unredacted)" if was_redacted else "audio"))
    if was_redacted and not has_redacted_audio and not include_original:
        return plan, NO_REDACTED_AUDIO
    if was_redacted and any(kind == "original" for kind, _ in plan):
        return plan, ORIGINAL_TOO
    if not plan:
        return plan, "No audio: the recording is no longer in the bucket."
    return plan, None


@dataclass(frozen=True)
class _Listing:
    done: list[str]  # paths with a result JSON, in listing order
    redacted_audio: set[str]
    every_key: list[str]


def _list_results(settings: Settings, s3: Any, batch: str) -> _Listing:
    done: list[str] = []
    audio: set[str] = set()
    every: list[str] = []
    for item in storage.list_objects(s3, settings.bucket, keys.results_prefix(batch)):
        every.append(item.key)
        parsed = keys.parse_result_key(batch, item.key)
        if parsed is None:
            continue
        path, kind = parsed
        if kind == "json":
            done.append(path)
        elif kind == "audio":
            audio.add(path)
    return _Listing(done, audio, every)


def _list_inputs(settings: Settings, s3: Any, batch: str) -> set[str]:
    prefix = keys.inputs_prefix(batch)
    return {item.key[len(prefix) :] for item in storage.list_objects(s3, settings.bucket, prefix)}


Item = TypeVar("Item")
Out = TypeVar("Out")


def in_order(items: Iterable[Item], work: Callable[[Item], Out], threads: int) -> Iterator[Out]:
    """``work(item)`` for each item, ``threads`` at a time, yielded in order, with at most
    2 x ``threads`` results waiting (so memory does not grow with the batch)."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        window: deque[Future[Out]] = deque()
        for item in items:
            window.append(pool.submit(work, item))
            if len(window) >= 2 * threads:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


@dataclass(frozen=True)
class _Fetched:
    path: str
    result: dict[str, Any] | None  # None: unreadable
    audio: list[AudioSource]
    note: str | None
    record: tracking.JobRecord | None


@dataclass(frozen=True)
class ReviewWritten:
    index: Path
    calls: int
    failed: int
    unreadable: int


def write_review(
    settings: Settings,
    s3: Any,
    batch: str,
    out: Path,
    *,
    presign_hours: int | None = None,
    include_original_audio: bool = False,
    top: int = 10,
    threads: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> ReviewWritten:
    """Write the review site of ``batch`` into ``out`` (see the module's docstring)."""
    view = tracking.load_batch(settings, s3, batch)
    if view is None:
        raise WhisperqError(f"No batch named {batch!r} on {settings.target}.")
    listing = _list_results(settings, s3, batch)
    status = tracking.summarize(batch, view.durations, listing.every_key)
    batch_redacts = view.options.redacting
    inputs = (
        _list_inputs(settings, s3, batch) if include_original_audio or not batch_redacts else set()
    )
    site = ReviewSite(out, batch, top=top)

    def audio(path: str, plan: list[tuple[AudioKind, str]]) -> list[AudioSource]:
        name = PurePosixPath(path).name
        sources = []
        for kind, label in plan:
            key = (
                keys.redacted_audio_key(batch, path)
                if kind == "redacted"
                else keys.input_key(batch, path)
            )
            file_name = f"{name}{keys.REDACTED_AUDIO_SUFFIX}" if kind == "redacted" else name
            if presign_hours:
                url = s3.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": settings.bucket, "Key": key},
                    ExpiresIn=presign_hours * 3600,
                )
                sources.append(AudioSource(label, url))
            elif _download(s3, settings.bucket, key, site.audio_file(path, file_name)):
                sources.append(AudioSource(label, href(file_name)))
        return sources

    def fetch(path: str) -> _Fetched:
        data = storage.get_json(s3, settings.bucket, keys.result_key(batch, path, "json"))
        if not isinstance(data, dict):
            return _Fetched(path, None, [], None, None)
        data["path"] = path  # the key is the contract, not what the document says
        try:
            record: tracking.JobRecord | None = tracking.JobRecord.model_validate(data)
        except ValidationError:
            record = None
        plan, note = audio_plan(
            redacted(data, batch_redacts),
            path in listing.redacted_audio,
            path in inputs,
            include_original_audio,
        )
        return _Fetched(path, data, audio(path, plan), note, record)

    unreadable = 0
    records: list[tracking.JobRecord] = []
    total = len(listing.done)
    for n, fetched in enumerate(in_order(listing.done, fetch, threads), 1):
        if progress is not None:
            progress(n, total)
        if fetched.result is None:
            unreadable += 1
            continue
        try:
            site.add_call(fetched.result, fetched.audio, fetched.note)
        except (ValidationError, WhisperqError):
            unreadable += 1  # not a whisperq result, or a path no page can have
            continue
        if fetched.record is not None:
            records.append(fetched.record)
    for record in tracking.failure_records(settings, s3, status):
        site.add_failure(record.path, record.reason, view.durations.get(record.path))
    dollars, cost_note = _cost(settings, batch, records)
    index = site.finish(
        BatchFigures(
            submitted=status.submitted,
            pending=status.pending,
            unreadable=unreadable,
            cost_dollars=dollars,
            cost_note=cost_note,
        )
    )
    return ReviewWritten(index, site.done, site.failed, unreadable)


def _download(s3: Any, bucket: str, key: str, target: Path) -> bool:
    """Copy an object to ``target``; False if it is not there."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return False
        raise
    with target.open("wb") as handle:
        shutil.copyfileobj(body, handle, 1 << 20)
    return True


def _cost(
    settings: Settings, batch: str, records: list[tracking.JobRecord]
) -> tuple[float | None, str]:
    """The batch's cost as `whisperq cost` estimates it (spot prices), if it can be."""
    if not records:
        return None, ""
    try:
        prices = pricing.configured_prices(settings)
        cost = batch_cost.cost_of_records(
            batch, records, "spot", prices, settings.fleet_instance_type
        )
    except WhisperqError:
        return None, ""
    return cost.estimate.dollars, (
        "Cost: an estimate at spot prices, job time only (`whisperq cost` for the detail)."
    )


def check_options(
    html: Path | None, presign_hours: int | None, include_original: bool, *others: bool
) -> None:
    """UsageError for options that do not go together; ``others``: whether --csv,
    --json, --rules were given (the site is instead of them)."""
    if html is None and (presign_hours is not None or include_original):
        raise UsageError("--presign and --include-original-audio go with --html DIR.")
    if html is not None and any(others):
        raise UsageError("--html writes the review site: --csv, --json and --rules go without it.")
    if presign_hours is not None and not 1 <= presign_hours <= MAX_PRESIGN_HOURS:
        raise UsageError(f"--presign takes 1 to {MAX_PRESIGN_HOURS} hours (S3's limit).")


def run(
    batch: str,
    html: Path,
    *,
    presign_hours: int | None,
    include_original_audio: bool,
    top: int,
    threads: int,
) -> None:
    """The command: write the site, say where it is."""
    settings = settings_for_storage()
    s3 = storage.client(settings, "s3")
    with err.status(f"Writing the review site of {batch}...") as spinner:

        def progress(done: int, total: int) -> None:
            if done % 25 == 0 or done == total:
                spinner.update(f"Writing the review site of {batch}: {done:,} of {total:,} call(s)")

        written = write_review(
            settings,
            s3,
            batch,
            html,
            presign_hours=presign_hours,
            include_original_audio=include_original_audio,
            top=top,
            threads=threads,
            progress=progress,
        )
    if written.unreadable:
        err.print(f"[yellow]{written.unreadable} result JSON(s) could not be read; left out.")
    err.print(
        f"{written.calls:,} call page(s), {written.failed:,} failed call(s) listed.",
        highlight=False,
    )
    if presign_hours:
        err.print(f"The audio links expire in {presign_hours} h.", highlight=False)
    out.print(str(written.index.resolve()), highlight=False, soft_wrap=True)
