"""A job's file in and its transcript out, stage by stage: the input downloaded (the
download stage), then the transcript's way out -- redacted as the batch asks (inside the
transcription stage, so nothing unredacted ever leaves it), the redacted audio copy if
asked (audio redaction), renderings and the result JSON last (upload), a stale error
record dropped (cleanup).

Each stage is retried on its own (``stages``); what is written where is the
``ResultStore``'s. Single jobs and packed ones (``pack_runner``) deliver alike.

A job is for one content of its path: the sha256 it was queued with. The same path
submitted again with other content overwrites the input and queues a newer job; the older
job then finds bytes that are not its own (checked after the download), or an input whose
sha256 changed while it ran (checked before the upload). It is stale (``StaleJob``): it
writes neither results nor an error record -- the newer job writes those -- and its
message is acknowledged. So a result's ``sha256`` is always that of the content it
transcribed.

The result carries the call's metadata: the job's own, or the record a sidecar that landed
after the job was queued left beside the input (``ResultStore.call_metadata``), read just
before the result JSON is written and once more just after; a record that appeared in
between has the result written again with it. So a sidecar that lands before the result
is in it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from whisperq import keys
from whisperq.redaction import audio as redacted_audio
from whisperq.redaction.rewriting import redact
from whisperq.redaction.vocabulary_filter import filter_segments
from whisperq.schemas import (
    RedactedSpan,
    Timings,
    TranscriptionJob,
    TranscriptionOptions,
    TranscriptResult,
)
from whisperq.settings import Settings
from whisperq.speech import engine
from whisperq.worker.clients import ProcessClients
from whisperq.worker.results import CallMetadataFound, ResultStore
from whisperq.worker.stages import StageFailed, Stages

log = logging.getLogger("whisperq.worker")


def stored_transcript(
    transcript: engine.Transcript, options: TranscriptionOptions
) -> tuple[engine.Transcript, list[RedactedSpan] | None]:
    """The transcript as it may be stored: redacted when the batch asks (tags in the
    text and words; the redactions list), else unchanged with no list. Runs inside the
    transcription stage, so nothing unredacted ever leaves it. The words the engine
    produced only for redaction or diarization are dropped when the batch did not ask
    for them."""
    segments, spans = transcript.segments, None
    if options.redacting:
        segments, found = redact(segments, options.redact, options.redact_patterns)
        spans = [RedactedSpan.model_validate(item) for item in found]
    if options.vocabulary_filter:
        segments, _ = filter_segments(segments, options.vocabulary_filter, options.filter_mode)
    if not options.word_timestamps:  # words made for redaction or diarization only
        segments = [segment.model_copy(update={"words": None}) for segment in segments]
    return dataclasses.replace(transcript, segments=segments), spans


class StaleJob(Exception):
    """The job's input holds other content than the job was queued for (the path was
    submitted again): nothing of it may be written. Control flow inside the worker."""

    def __init__(self, job: TranscriptionJob, found: str) -> None:
        super().__init__(
            f"stale job {job.batch}/{job.path}: its input now holds {found[:12]}..., not "
            f"{job.sha256[:12]}... it was queued for (the path was submitted again); "
            "skipped, writing nothing: the newer job writes its results"
        )
        self.job = job
        self.found = found


class DownloadMismatch(Exception):
    """The bytes downloaded differ from the input's own sha256: damaged on the way."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Delivery:
    """Downloads a job's input and delivers its transcript, each step a retried stage."""

    def __init__(
        self, settings: Settings, clients: ProcessClients, stages: Stages, results: ResultStore
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.stages = stages
        self.results = results

    def download(self, job: TranscriptionJob, local: Path) -> None:
        """The job's input file to ``local`` (the download stage). Raises StaleJob when
        the input holds other content than the job's (the path was submitted again)."""
        found = self.stages.run(job, "download", lambda: self._download(job, local))
        if found != job.sha256:
            raise StaleJob(job, found)

    def _download(self, job: TranscriptionJob, local: Path) -> str:
        """Downloads; the sha256 of what came. Bytes that differ from the job's and from
        the input's own sha256 (metadata) were damaged on the way: tried again."""
        self.clients.s3.download_file(self.settings.bucket, job.input_key, str(local))
        found = sha256_of(local)
        if found != job.sha256 and self.input_sha256(job) == job.sha256:
            raise DownloadMismatch(
                f"the download of {job.path} does not match its sha256 ({found[:12]}..., "
                f"not {job.sha256[:12]}...)"
            )
        return found

    def input_metadata(self, job: TranscriptionJob) -> Mapping[str, str]:
        """The input's S3 user metadata: the sha256 submit and ingest record, and for an
        ingested one the Last-Modified of the object it came from."""
        head = self.clients.s3.head_object(Bucket=self.settings.bucket, Key=job.input_key)
        return head.get("Metadata") or {}

    def input_sha256(self, job: TranscriptionJob) -> str | None:
        """The sha256 submit and ingest record on the input (its metadata), or None."""
        return self.input_metadata(job).get("sha256")

    def check_current(self, job: TranscriptionJob) -> Mapping[str, str]:
        """Before the results go out: raises StaleJob when the input was replaced with
        other content since the download (a newer job writes the results then). A check
        that cannot be made lets the job go on: its download matched. Returns the input's
        metadata ({} when it could not be read)."""
        try:
            metadata = self.input_metadata(job)
        except Exception as error:
            log.info("%s/%s: could not re-check its input (%s)", job.batch, job.path, error)
            return {}
        found = metadata.get("sha256")
        if found is not None and found != job.sha256:
            raise StaleJob(job, found)
        return metadata

    def deliver(
        self,
        job: TranscriptionJob,
        loaded: engine.LoadedModel,
        local: Path,
        transcript: engine.Transcript,
        download_seconds: float,
        transcribe_seconds: float,
    ) -> float:
        """A transcript's way out: redacted (inside the transcription stage), the redacted
        audio if asked, renderings and the result JSON last, a stale error record dropped.
        Returns the seconds of audio."""
        started = time.perf_counter()
        transcript, redactions = self.stages.run(
            job, "transcription", lambda: stored_transcript(transcript, job.options)
        )
        audio_copy: Path | None = None
        if job.options.redact_audio and redactions is not None:
            audio_copy = Path(tempfile.mkdtemp(dir=local.parent)) / "redacted.wav"
            spans = redacted_audio.silence_spans(redactions)
            self.stages.run(
                job,
                "audio redaction",
                lambda: redacted_audio.write_redacted_wav(local, audio_copy, spans),
            )
        transcribed = time.perf_counter()
        input_metadata = self.check_current(job)
        written: set[str] = set()  # kept across the upload's tries: nothing is put twice
        uploaded: list[tuple[TranscriptResult, CallMetadataFound]] = []

        def upload() -> None:
            if audio_copy is not None:
                self.results.upload_redacted_audio(job, audio_copy, written)
            self.results.upload_renderings(job, transcript, written)
            timings = Timings(
                download=round(download_seconds, 4),
                transcribe=round(transcribe_seconds + transcribed - started, 4),
                upload=round(time.perf_counter() - transcribed, 4),
            )
            metadata = self.results.call_metadata(job, input_metadata)
            result = self.results.result(
                job, transcript, loaded.info, timings, redactions, audio_copy is not None, metadata
            )
            self.results.upload_result(job, result)
            uploaded[:] = [(result, metadata)]

        self.stages.run(job, "upload", upload)
        result, metadata = uploaded[0]
        if not metadata.from_record:
            metadata = self._late_sidecar(job, input_metadata, result) or metadata
        if metadata.problems:
            log.warning(
                "%s/%s: metadata problems: %s", job.batch, job.path, "; ".join(metadata.problems)
            )
        self._drop_stale_error(job)
        log.info(
            "done %s/%s: %.1fs of audio in %.2fs",
            job.batch,
            job.path,
            transcript.duration,
            download_seconds + transcribe_seconds + time.perf_counter() - started,
        )
        return transcript.duration

    def _late_sidecar(
        self, job: TranscriptionJob, input_metadata: Mapping[str, str], result: TranscriptResult
    ) -> CallMetadataFound | None:
        """After the result is written: a sidecar's record that appeared while it was being
        written has the result written again with it (the ingest step never writes
        results, so this look closes the gap). A failure is only logged: the job is done."""
        try:
            found = self.results.call_metadata(job, input_metadata)
            if not found.from_record:
                return None
            update = {"metadata": found.metadata, "metadata_problems": found.problems}
            again = result.model_copy(update=update)
            self.stages.run(job, "upload", lambda: self.results.upload_result(job, again))
        except Exception as error:
            log.warning("%s/%s: a late sidecar was not taken in (%s)", job.batch, job.path, error)
            return None
        log.info("%s/%s: result written again with its sidecar's metadata", job.batch, job.path)
        return found

    def _drop_stale_error(self, job: TranscriptionJob) -> None:
        """A success after an earlier failure: the stale failure record goes. The job is
        done either way (its JSON is written, and a result wins over an error record), so
        a delete that keeps failing is only logged."""
        key = keys.error_key(job.batch, job.path)
        try:
            self.stages.run(job, "cleanup", lambda: self.results.delete_error(job))
        except StageFailed as failed:
            log.warning("%s/%s is done but %s stays: %s", job.batch, job.path, key, failed)
