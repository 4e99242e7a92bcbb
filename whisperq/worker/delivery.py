"""A job's file in and its transcript out, stage by stage: the input downloaded (the
download stage), then the transcript's way out -- redacted as the batch asks (inside the
transcription stage, so nothing unredacted ever leaves it), the redacted audio copy if
asked (audio redaction), renderings and the result JSON last (upload), a stale error
record dropped (cleanup).

Each stage is retried on its own (``stages``); what is written where is the
``ResultStore``'s. Single jobs and packed ones (``pack_runner``) deliver alike.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path

from whisperq import keys
from whisperq.redaction import audio as redacted_audio
from whisperq.redaction.rewriting import redact
from whisperq.schemas import RedactedSpan, Timings, TranscriptionJob, TranscriptionOptions
from whisperq.settings import Settings
from whisperq.speech import engine
from whisperq.worker.clients import ProcessClients
from whisperq.worker.results import ResultStore
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
    if not options.word_timestamps:  # words made for redaction or diarization only
        segments = [segment.model_copy(update={"words": None}) for segment in segments]
    return dataclasses.replace(transcript, segments=segments), spans


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
        """The job's input file to ``local`` (the download stage)."""
        self.stages.run(job, "download", lambda: self._download(job, local))

    def _download(self, job: TranscriptionJob, local: Path) -> None:
        self.clients.s3.download_file(self.settings.bucket, job.input_key, str(local))

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
        written: set[str] = set()  # kept across the upload's tries: nothing is put twice

        def upload() -> None:
            if audio_copy is not None:
                self.results.upload_redacted_audio(job, audio_copy, written)
            self.results.upload_renderings(job, transcript, written)
            timings = Timings(
                download=round(download_seconds, 4),
                transcribe=round(transcribe_seconds + transcribed - started, 4),
                upload=round(time.perf_counter() - transcribed, 4),
            )
            result = self.results.result(
                job, transcript, loaded.info, timings, redactions, audio_copy is not None
            )
            self.results.upload_result(job, result)

        self.stages.run(job, "upload", upload)
        self._drop_stale_error(job)
        log.info(
            "done %s/%s: %.1fs of audio in %.2fs",
            job.batch,
            job.path,
            transcript.duration,
            download_seconds + transcribe_seconds + time.perf_counter() - started,
        )
        return transcript.duration

    def _drop_stale_error(self, job: TranscriptionJob) -> None:
        """A success after an earlier failure: the stale failure record goes. The job is
        done either way (its JSON is written, and a result wins over an error record), so
        a delete that keeps failing is only logged."""
        key = keys.error_key(job.batch, job.path)
        try:
            self.stages.run(job, "cleanup", lambda: self.results.delete_error(job))
        except StageFailed as failed:
            log.warning("%s/%s is done but %s stays: %s", job.batch, job.path, key, failed)
