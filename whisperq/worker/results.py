"""What a job leaves in the bucket: its renderings (SRT, VTT, TXT ...), the redacted audio
copy, the result JSON -- written last: its presence is what "done" means to everyone
polling the bucket -- or an error record, and the removal of an error record a later
success made stale. And the call's metadata the result carries: the job's own, or the
record of a sidecar that landed after the job was queued (``call_metadata``).

Each method is one write (or one delete) at the keys ``whisperq.keys`` lays out, with no
retrying: the worker's stages (``stages``, ``delivery``) decide what is tried again.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from botocore.exceptions import ClientError
from pydantic import ValidationError

from whisperq import keys, storage
from whisperq.qa_rules import parse_rules
from whisperq.redaction import audio as redacted_audio
from whisperq.schemas import (
    CallMetadata,
    CallMetadataRecord,
    ErrorRecord,
    ModelInfo,
    RedactedSpan,
    Timings,
    TranscriptionJob,
    TranscriptResult,
    utc_now,
)
from whisperq.settings import Settings
from whisperq.speech import engine
from whisperq.transcripts import render
from whisperq.transcripts.categories import categorize_call
from whisperq.transcripts.conversation import conversation_metrics
from whisperq.worker import failures
from whisperq.worker.clients import ProcessClients
from whisperq.worker.heartbeat import MessageHandle

log = logging.getLogger("whisperq.worker")


def worker_id() -> str:
    """Host and pool-process id: which process wrote a result."""
    return f"{socket.gethostname()}:{os.getpid()}"


# The input's S3 user metadata that names the version of the object it was ingested from
# (whisperq.batches.ingest.META_SOURCE_MODIFIED).
SOURCE_MODIFIED = "source-modified"
_ABSENT = ("NoSuchKey", "404", "NotFound", "AccessDenied", "403")


@dataclass(frozen=True)
class CallMetadataFound:
    """The metadata a result carries, and whether it came from a sidecar's record."""

    metadata: CallMetadata | None
    problems: list[str] | None
    from_record: bool = False


class ResultStore:
    """A job's results and error records in the bucket."""

    def __init__(self, settings: Settings, clients: ProcessClients) -> None:
        self.settings = settings
        self.clients = clients

    def upload_redacted_audio(self, job: TranscriptionJob, local: Path, written: set[str]) -> None:
        key = keys.redacted_audio_key(job.batch, job.path)
        if key not in written:
            self.clients.s3.upload_file(
                str(local),
                self.settings.bucket,
                key,
                ExtraArgs={"ContentType": redacted_audio.CONTENT_TYPE},
            )
            written.add(key)

    def upload_renderings(
        self, job: TranscriptionJob, transcript: engine.Transcript, written: set[str]
    ) -> None:
        """SRT, VTT, TXT ... as the job asks; those already in ``written`` are skipped."""
        for fmt in job.options.formats:
            key = keys.result_key(job.batch, job.path, fmt)
            if key in written:
                continue
            text = render.RENDERERS[fmt](transcript.segments)
            s3 = self.clients.s3
            storage.put_text(s3, self.settings.bucket, key, text, render.CONTENT_TYPES[fmt])
            written.add(key)

    def upload_result(self, job: TranscriptionJob, result: TranscriptResult) -> None:
        # JSON last: its presence is what "done" means to everyone polling the bucket.
        key = keys.result_key(job.batch, job.path, "json")
        body = result.model_dump_json(indent=2)
        s3 = self.clients.s3
        storage.put_text(s3, self.settings.bucket, key, body, render.CONTENT_TYPES["json"])

    def result(
        self,
        job: TranscriptionJob,
        transcript: engine.Transcript,
        model: ModelInfo,
        timings: Timings,
        redactions: list[RedactedSpan] | None = None,
        with_redacted_audio: bool = False,
        metadata: CallMetadataFound | None = None,
    ) -> TranscriptResult:
        metadata = metadata or CallMetadataFound(job.metadata, job.metadata_problems)
        metrics = conversation_metrics(
            transcript.segments,
            transcript.duration,
            speakers=[channel.speaker for channel in transcript.channels or []],
        )
        # QA rules see the stored text: redacted already when the batch redacts.
        categories = (
            categorize_call(
                parse_rules({"rule": job.options.rules}),
                transcript.segments,
                transcript.duration,
                metrics,
            )
            if job.options.rules
            else None
        )
        return TranscriptResult(
            batch=job.batch,
            path=job.path,
            input_key=job.input_key,
            sha256=job.sha256,
            duration=transcript.duration,
            language=transcript.language,
            language_probability=transcript.language_probability,
            channel_mode=transcript.channel_mode,
            channels=transcript.channels,
            speaker_labels=transcript.speaker_labels,
            languages=engine.language_shares(transcript.segments)
            if job.options.multilingual
            else None,
            model=model,
            options=transcript.options,
            text=transcript.text,
            segments=transcript.segments,
            metrics=metrics,
            categories=categories,
            redactions=redactions,
            redacted_audio=keys.redacted_audio_key(job.batch, job.path)
            if with_redacted_audio
            else None,
            timings=timings,
            worker_id=worker_id(),
            instance_type=self.clients.instance_type,
            finished_at=utc_now(),
            metadata=metadata.metadata,
            metadata_problems=metadata.problems,
        )

    def call_metadata(
        self, job: TranscriptionJob, input_metadata: Mapping[str, str]
    ) -> CallMetadataFound:
        """The call's metadata: the record a late sidecar left beside the input
        (``keys.metadata_key``: the sidecar over the audio's S3 user metadata) when it is
        for the version of the audio this input was ingested from, else the job's own. A
        record that cannot be read is a problem in the result, never a failed job."""
        own = CallMetadataFound(job.metadata, job.metadata_problems)
        key = keys.metadata_key(job.batch, job.path)
        try:
            body = self.clients.s3.get_object(Bucket=self.settings.bucket, Key=key)["Body"].read()
            record = CallMetadataRecord.model_validate_json(body)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _ABSENT:
                return own
            return self._unread(job, own, f"{key} could not be read ({error})")
        except (ValidationError, OSError, ValueError) as error:
            return self._unread(job, own, f"{key} is not a metadata record ({error})")
        try:
            same = datetime.fromisoformat(input_metadata.get(SOURCE_MODIFIED, "")) == (
                record.source_modified
            )
        except ValueError:
            same = False
        if not same:
            log.info("%s/%s: %s is for another recording, not used", job.batch, job.path, key)
            return own
        return CallMetadataFound(record.metadata or None, record.metadata_problems or None, True)

    @staticmethod
    def _unread(job: TranscriptionJob, own: CallMetadataFound, problem: str) -> CallMetadataFound:
        log.warning("%s/%s: %s", job.batch, job.path, problem)
        return CallMetadataFound(own.metadata, [*(own.problems or []), problem[:500]])

    def delete_error(self, job: TranscriptionJob) -> None:
        """The job's error record gone (there may be none)."""
        key = keys.error_key(job.batch, job.path)
        self.clients.s3.delete_object(Bucket=self.settings.bucket, Key=key)

    def write_error(
        self,
        job: TranscriptionJob,
        failure: failures.Failure,
        error: BaseException,
        attempts: int,
        message: MessageHandle | None,
    ) -> None:
        record = ErrorRecord(
            batch=job.batch,
            path=job.path,
            input_key=job.input_key,
            # no local paths, no errnos; ends with the next step `wait` prints, too
            reason=failures.record_reason(failure, job.batch, job.path),
            kind=failure.kind.value,
            cause=failure.next_cause,
            error_type=type(error).__name__,
            attempts=attempts,
            receive_count=message.receive_count if message else None,
            worker_id=worker_id(),
            failed_at=utc_now(),
        )
        key = keys.error_key(job.batch, job.path)
        storage.put_text(
            self.clients.s3,
            self.settings.bucket,
            key,
            record.model_dump_json(indent=2),
            "application/json",
        )
        log.warning(
            "failed %s/%s after %d tries: %s", job.batch, job.path, attempts, failure.reason
        )
