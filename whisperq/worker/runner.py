"""The Celery worker: one task, ``whisperq.transcribe``, from S3 input to S3 results.

The model is loaded when each pool process starts (``worker_process_init``), so the first
job does not pay for it and no job ever loads it again.

Stopping (SIGTERM, a spot notice, the group terminating the instance through its lifecycle
hook): a job still running gets the soft-shutdown grace, then is cancelled and goes back to
the queue (Celery). A job received but not started -- in Celery's hands or in a pool
process's pipe -- goes back at once (visibility 0) and never starts here
(``UnstartedJobs``, ``StartGate``): Celery alone would run it to its end. Once the worker
has stopped, a lifecycle hook is completed (``InstanceGuard.finish``).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from celery import Celery
from celery.exceptions import Reject
from celery.signals import task_received, worker_process_init, worker_ready, worker_shutting_down
from pydantic import ValidationError

from whisperq import keys, storage
from whisperq.celery_app import TRANSCRIBE_TASK, make_celery
from whisperq.errors import WorkerUnfit
from whisperq.redaction import audio as redacted_audio
from whisperq.redaction import detection as redaction
from whisperq.schemas import (
    ErrorRecord,
    ModelInfo,
    RedactedSpan,
    Timings,
    TranscriptionJob,
    TranscriptionOptions,
    TranscriptResult,
    utc_now,
)
from whisperq.settings import Settings
from whisperq.speech import engine
from whisperq.transcripts import render
from whisperq.transcripts.conversation import conversation_metrics
from whisperq.worker import failures
from whisperq.worker import packs as short_jobs
from whisperq.worker.heartbeat import MessageHandle, VisibilityHeartbeat, hand_back, message_handle
from whisperq.worker.instance import (
    TERMINATED,
    Imds,
    LifecycleWatcher,
    Poller,
    ScaleInProtection,
    SpotWatcher,
    complete_lifecycle_action,
)

log = logging.getLogger("whisperq.worker")

T = TypeVar("T")


def worker_id() -> str:
    """Host and pool-process id: which process wrote a result."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
        segments, found = redaction.redact(segments, options.redact, options.redact_patterns)
        spans = [RedactedSpan.model_validate(item) for item in found]
    if not options.word_timestamps:  # words made for redaction or diarization only
        segments = [segment.model_copy(update={"words": None}) for segment in segments]
    return dataclasses.replace(transcript, segments=segments), spans


def engine_config(settings: Settings) -> engine.EngineConfig:
    return engine.EngineConfig(
        model=settings.model,
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        concurrency=settings.worker_concurrency,
        beam_size=settings.beam_size,
        vad=settings.vad,
        batch_size=settings.batch_size,
    )


class _StageFailed(Exception):
    """A stage of a job failed for good (permanent, or out of tries): the job ends with
    an error record. Control flow inside the worker only; never leaves ``JobRunner``."""

    def __init__(
        self, stage: str, failure: failures.Failure, error: BaseException, tries: int
    ) -> None:
        super().__init__(f"{stage} failed after {tries} tries: {failure.reason}")
        self.stage = stage
        self.failure = failure
        self.error = error
        self.tries = tries


@dataclasses.dataclass(frozen=True)
class _PackMember:
    """A short job ready to share windows: its file downloaded and decoded."""

    job: TranscriptionJob
    gathered: short_jobs.GatheredJob | None  # None for the job Celery delivered (it acks)
    local: Path
    audio: Any  # mono 16 kHz float32 samples; None: the file is not short after all
    download_seconds: float

    @property
    def seconds(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / engine.SAMPLE_RATE


class JobRunner:
    """Runs jobs in one pool process; holds that process's clients and model."""

    def __init__(self, settings: Settings, may_gather: Callable[[], bool] = lambda: True) -> None:
        self.settings = settings
        self.config = engine_config(settings)
        # False once the worker is stopping: then no job takes others from the queue.
        self.may_gather = may_gather
        self._clients: dict[str, Any] = {}
        self._clients_pid = 0

    def client(self, service: str) -> Any:
        # boto3 clients must not cross a fork: make them per pool process.
        if self._clients_pid != os.getpid():
            self._clients, self._clients_pid = {}, os.getpid()
        if service not in self._clients:
            self._clients[service] = storage.client(self.settings, service)
        return self._clients[service]

    @functools.cached_property
    def instance_type(self) -> str | None:
        """The EC2 type this worker runs on (for cost per batch): configured, else asked of
        IMDS once, and only off the local stack."""
        if self.settings.instance_type or self.settings.endpoint_url is not None:
            return self.settings.instance_type
        try:
            return Imds(self.settings.imds_endpoint).get("instance-type") or None
        except OSError:
            return None

    @property
    def s3(self) -> Any:
        return self.client("s3")

    def visibility_timeout(self) -> int:
        """The visibility timeout to keep extending: configured, else the queue's own,
        read per job (one cheap call) so a change to the queue applies at once."""
        if self.settings.visibility_timeout:
            return self.settings.visibility_timeout
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=self.settings.queue_url, AttributeNames=["VisibilityTimeout"]
        )["Attributes"]
        return int(attributes["VisibilityTimeout"])

    def warm_up(self) -> None:
        started = time.perf_counter()
        try:
            loaded = engine.load_model(self.config)
        except engine.ModelError as error:
            log.error("%s; this worker will hand every job back", error)
            return
        log.info(
            "model %s loaded on %s/%s in %.2fs; whisperq worker ready",
            loaded.info.name,
            loaded.info.device,
            loaded.info.compute_type,
            time.perf_counter() - started,
        )

    def run(self, payload: Any, message: MessageHandle | None = None) -> str:
        """Process one payload: "done", "failed" (error record written) or "refused".

        Raises WorkerUnfit when the job should go back to the queue for another worker.
        """
        try:
            job = TranscriptionJob.model_validate(payload)
        except ValidationError as error:
            return self._refuse(payload, error)
        heartbeat: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if message is not None:
            heartbeat = VisibilityHeartbeat(self.client("sqs"), message, self.visibility_timeout())
        with heartbeat:
            audio_seconds = self._run_job(job, message)
        outcome = "failed" if audio_seconds is None else "done"
        self._publish_metrics(outcome, audio_seconds or 0.0)
        return outcome

    def _publish_metrics(self, outcome: str, audio_seconds: float) -> None:
        """Jobs and audio seconds per minute for the dashboard; never fails a job."""
        if not self.settings.metrics_namespace:
            return
        name = "JobsCompleted" if outcome == "done" else "JobsFailed"
        data = [{"MetricName": name, "Value": 1, "Unit": "Count"}]
        if outcome == "done":
            data.append({"MetricName": "AudioSeconds", "Value": audio_seconds, "Unit": "Seconds"})
        try:
            self.client("cloudwatch").put_metric_data(
                Namespace=self.settings.metrics_namespace, MetricData=data
            )
        except Exception as error:
            log.warning("could not publish metrics: %s", error)

    def _run_job(self, job: TranscriptionJob, message: MessageHandle | None) -> float | None:
        """Seconds of audio transcribed, or None when the job ended with an error record."""
        try:
            return self._process(job, message)
        except _StageFailed as failed:
            self._write_error(job, failed.failure, failed.error, failed.tries, message)
            return None

    def _stage(self, job: TranscriptionJob, stage: str, action: Callable[[], T]) -> T:
        """Run one stage of ``job``; on a transient failure, run that stage again (after
        a backoff), never the stages before it: a failing upload keeps its transcript.

        Tries are counted per stage, not per job: each stage gets up to ``max_attempts``
        tries (fewer where ``failures.allowed_tries`` says more would not help). The
        stages fail independently -- a download that needed a retry says nothing about
        the upload after it -- and a per-job budget would let early hiccups use up the
        retries that protect the upload of an expensive transcript. The price, a job that
        can take longer in a long outage, is safe: the visibility heartbeat keeps the
        message ours meanwhile. The error record's ``attempts`` are the failed stage's.

        Raises _StageFailed when the stage failed for good, WorkerUnfit when the worker
        cannot run jobs at all.
        """
        tries = 0
        while True:
            tries += 1
            try:
                return action()
            except Exception as error:
                failure = failures.classify(error, job.path)
                if failure.kind is failures.Kind.WORKER:
                    raise WorkerUnfit(failure.reason) from error
                if not failures.should_retry(failure, tries, self.settings.max_attempts):
                    raise _StageFailed(stage, failure, error, tries) from error
                self._back_off(job, stage, failure, tries)

    def _back_off(
        self, job: TranscriptionJob, stage: str, failure: failures.Failure, tries: int
    ) -> None:
        delay = failures.backoff_delay(
            tries, self.settings.retry_base_seconds, self.settings.retry_max_seconds
        )
        log.warning(
            "%s of %s/%s failed on try %d of %d (%s); trying the %s again in %.1fs",
            stage,
            job.batch,
            job.path,
            tries,
            failures.allowed_tries(failure, self.settings.max_attempts),
            failure.reason,
            stage,
            delay,
        )
        time.sleep(delay)

    def _engine_for(self, job: TranscriptionJob) -> tuple[engine.LoadedModel, engine.EngineConfig]:
        """The model the batch asks for: the worker's own, or another one its settings
        allow (loaded on first use, then kept); anything else fails the job with a reason."""
        wanted = job.options.model
        if not wanted or wanted == self.settings.model:
            return engine.load_model(self.config), self.config
        allowed = self.settings.allowed_models
        if "*" not in allowed and wanted not in allowed:
            raise engine.OptionNotServed(
                f"the batch asks for model {wanted!r}, but these workers serve "
                f"{self.settings.model!r} only. Submit without --model, or allow it on the "
                f"workers: WHISPERQ_ALLOWED_MODELS='[\"{wanted}\"]'."
            )
        config = dataclasses.replace(self.config, model=wanted)
        try:
            return engine.load_model(config), config
        except engine.ModelError as error:
            raise engine.OptionNotServed(
                f"the batch asks for model {wanted!r}, which this worker cannot load: {error}"
            ) from error

    def _process(self, job: TranscriptionJob, message: MessageHandle | None = None) -> float:
        """The job's stages, each retried on its own (``_stage``): choose the model,
        download the input, transcribe (and redact) it, write the redacted audio if asked,
        upload the results, drop a stale error record. A short file is transcribed with
        other short jobs taken from the queue (``_process_pack``) when it can be."""
        loaded, config = self._stage(job, "model", lambda: self._engine_for(job))
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="whisperq-") as tmp:
            # On disk, not in memory: the engine streams it window by window.
            local = Path(tmp) / PurePosixPath(job.path).name
            self._stage(job, "download", lambda: self._download(job, local))
            downloaded = time.perf_counter()
            if message is not None and self._packs(job, loaded):
                audio = self._stage(
                    job, "transcription", lambda: engine.short_audio(local, job.options)
                )
                if audio is not None:
                    lead = _PackMember(job, None, local, audio, downloaded - started)
                    return self._process_pack(lead, message, loaded, config, Path(tmp))
            transcript = self._stage(
                job,
                "transcription",
                lambda: engine.transcribe_file(loaded, local, job.options, config),
            )
            took = time.perf_counter() - downloaded
            return self._deliver(job, loaded, local, transcript, downloaded - started, took)

    def _packs(self, job: TranscriptionJob, loaded: engine.LoadedModel) -> bool:
        """Whether this job may take other short jobs along (whisperq.worker.packs)."""
        return (
            self.settings.pack_max_files > 1
            and self.may_gather()
            and engine.packable(job.options, loaded)
        )

    def _process_pack(
        self,
        lead: _PackMember,
        message: MessageHandle,
        loaded: engine.LoadedModel,
        config: engine.EngineConfig,
        tmp: Path,
    ) -> float:
        """The lead job's short file and up to ``pack_max_files - 1`` more short jobs
        from the queue, transcribed sharing windows (``engine.transcribe_packed``); each
        gets its own results, or its own error record, as if it had run alone. A
        gathered job whose file is not short after all is queued again as a new message
        (or, on a redelivery, run here alone after the others). Raises like ``_process``
        for the lead job only; every gathered job not finished then goes back."""
        sqs, timeout = self.client("sqs"), self.visibility_timeout()
        gathered = short_jobs.gather(
            sqs,
            message.queue_url,
            lead.job,
            self.settings.pack_max_files - 1,
            timeout,
            self.settings.pack_max_bytes,
        )
        with short_jobs.Holding(sqs, gathered, timeout) as held:
            members, alone = [lead], []
            for number, job in enumerate(gathered):
                if not self.may_gather():
                    break  # stopping: what has not started goes back (Holding)
                folder = Path(tempfile.mkdtemp(prefix=f"{number}-", dir=tmp))
                prepared = self._member(job, held, functools.partial(self._prepare, job, folder))
                if prepared is None:
                    continue
                if prepared.audio is not None:
                    members.append(prepared)
                elif job.first_delivery:
                    held.hand_on(job)
                else:
                    alone.append(job)
            started = time.perf_counter()
            transcripts = self._packed_transcripts(members, loaded, config)
            took = time.perf_counter() - started
            total = sum(member.seconds for member in members) or 1.0
            own: list[engine.Transcript | None] = [None] * len(members)
            if transcripts is not None:
                own = list(transcripts)
            for packed, transcript in zip(members[1:], own[1:], strict=True):
                share = took * packed.seconds / total
                assert packed.gathered is not None
                deliver = functools.partial(
                    self._deliver_member, packed, loaded, config, transcript, share
                )
                seconds = self._member(packed.gathered, held, deliver)
                if seconds is not None:
                    self._finish(packed.gathered, held, seconds)
            share = took * lead.seconds / total
            lead_seconds = self._deliver_member(lead, loaded, config, own[0], share)
            for job in alone:
                seconds = self._member(job, held, functools.partial(self._process, job.job))
                if seconds is not None:
                    self._finish(job, held, seconds)
            return lead_seconds

    def _member(
        self, gathered: short_jobs.GatheredJob, held: short_jobs.Holding, action: Callable[[], T]
    ) -> T | None:
        """``action`` for one gathered job, or None when the job is settled already:
        failed for good (its error record written, its message deleted), or failed in a
        way nobody expected (its message given back; the pack goes on). WorkerUnfit goes
        up: then the whole pack goes back."""
        job = gathered.job
        try:
            return action()
        except WorkerUnfit:
            raise
        except _StageFailed as failed:
            try:
                self._write_error(job, failed.failure, failed.error, failed.tries, gathered.message)
            except Exception as error:
                log.error("%s/%s: no error record (%s); handed back", job.batch, job.path, error)
                held.give_back(gathered.message)
                return None
            self._finish(gathered, held, None)
            return None
        except Exception as error:
            log.exception("%s/%s failed in a pack (%s); handed back", job.batch, job.path, error)
            held.give_back(gathered.message)
            return None

    def _finish(
        self, gathered: short_jobs.GatheredJob, held: short_jobs.Holding, seconds: float | None
    ) -> None:
        """A gathered job is over (``seconds`` of audio done, or None: its error record
        written): its message goes, its outcome is counted as any job's."""
        held.done(gathered.message)
        self._publish_metrics("failed" if seconds is None else "done", seconds or 0.0)

    def _prepare(self, gathered: short_jobs.GatheredJob, folder: Path) -> _PackMember:
        """A gathered job downloaded and decoded (``audio`` None: not short after all)."""
        job = gathered.job
        started = time.perf_counter()
        local = folder / PurePosixPath(job.path).name
        self._stage(job, "download", lambda: self._download(job, local))
        took = time.perf_counter() - started
        audio = self._stage(job, "transcription", lambda: engine.short_audio(local, job.options))
        return _PackMember(job, gathered, local, audio, took)

    def _packed_transcripts(
        self,
        members: list[_PackMember],
        loaded: engine.LoadedModel,
        config: engine.EngineConfig,
    ) -> list[engine.Transcript] | None:
        """The members' transcripts, decoded sharing windows; None if that failed (then
        each file is transcribed alone, and one that fails fails with its own reason)."""
        options = members[0].job.options
        audios = [member.audio for member in members]
        try:
            return self._stage(
                members[0].job,
                "transcription",
                lambda: engine.transcribe_packed(loaded, audios, options, config),
            )
        except _StageFailed as failed:
            log.warning("packed transcription failed (%s); each file alone", failed)
            return None

    def _deliver_member(
        self,
        member: _PackMember,
        loaded: engine.LoadedModel,
        config: engine.EngineConfig,
        transcript: engine.Transcript | None,
        transcribe_seconds: float,
    ) -> float:
        """A pack member's results: its share of the packed transcript, or (None) its
        file transcribed alone."""
        if transcript is None:
            started = time.perf_counter()
            transcript = self._stage(
                member.job,
                "transcription",
                functools.partial(
                    engine.transcribe_file, loaded, member.local, member.job.options, config
                ),
            )
            transcribe_seconds = time.perf_counter() - started
        return self._deliver(
            member.job,
            loaded,
            member.local,
            transcript,
            member.download_seconds,
            transcribe_seconds,
        )

    def _deliver(
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
        transcript, redactions = self._stage(
            job, "transcription", lambda: stored_transcript(transcript, job.options)
        )
        audio_copy: Path | None = None
        if job.options.redact_audio and redactions is not None:
            audio_copy = Path(tempfile.mkdtemp(dir=local.parent)) / "redacted.wav"
            spans = redacted_audio.silence_spans(redactions)
            self._stage(
                job,
                "audio redaction",
                lambda: redacted_audio.write_redacted_wav(local, audio_copy, spans),
            )
        transcribed = time.perf_counter()
        written: set[str] = set()  # kept across the upload's tries: nothing is put twice

        def upload() -> None:
            if audio_copy is not None:
                self._upload_redacted_audio(job, audio_copy, written)
            self._upload_renderings(job, transcript, written)
            timings = Timings(
                download=round(download_seconds, 4),
                transcribe=round(transcribe_seconds + transcribed - started, 4),
                upload=round(time.perf_counter() - transcribed, 4),
            )
            result = self._result(
                job, transcript, loaded.info, timings, redactions, audio_copy is not None
            )
            self._upload_result(job, result)

        self._stage(job, "upload", upload)
        self._drop_stale_error(job)
        log.info(
            "done %s/%s: %.1fs of audio in %.2fs",
            job.batch,
            job.path,
            transcript.duration,
            download_seconds + transcribe_seconds + time.perf_counter() - started,
        )
        return transcript.duration

    def _download(self, job: TranscriptionJob, local: Path) -> None:
        self.s3.download_file(self.settings.bucket, job.input_key, str(local))

    def _upload_redacted_audio(self, job: TranscriptionJob, local: Path, written: set[str]) -> None:
        key = keys.redacted_audio_key(job.batch, job.path)
        if key not in written:
            self.s3.upload_file(
                str(local),
                self.settings.bucket,
                key,
                ExtraArgs={"ContentType": redacted_audio.CONTENT_TYPE},
            )
            written.add(key)

    def _upload_renderings(
        self, job: TranscriptionJob, transcript: engine.Transcript, written: set[str]
    ) -> None:
        """SRT, VTT, TXT ... as the job asks; those already in ``written`` are skipped."""
        for fmt in job.options.formats:
            key = keys.result_key(job.batch, job.path, fmt)
            if key in written:
                continue
            text = render.RENDERERS[fmt](transcript.segments)
            storage.put_text(self.s3, self.settings.bucket, key, text, render.CONTENT_TYPES[fmt])
            written.add(key)

    def _upload_result(self, job: TranscriptionJob, result: TranscriptResult) -> None:
        # JSON last: its presence is what "done" means to everyone polling the bucket.
        key = keys.result_key(job.batch, job.path, "json")
        body = result.model_dump_json(indent=2)
        storage.put_text(self.s3, self.settings.bucket, key, body, render.CONTENT_TYPES["json"])

    def _result(
        self,
        job: TranscriptionJob,
        transcript: engine.Transcript,
        model: ModelInfo,
        timings: Timings,
        redactions: list[RedactedSpan] | None = None,
        with_redacted_audio: bool = False,
    ) -> TranscriptResult:
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
            languages=engine.language_shares(transcript.segments)
            if job.options.multilingual
            else None,
            model=model,
            options=transcript.options,
            text=transcript.text,
            segments=transcript.segments,
            metrics=conversation_metrics(
                transcript.segments,
                transcript.duration,
                speakers=[channel.speaker for channel in transcript.channels or []],
            ),
            redactions=redactions,
            redacted_audio=keys.redacted_audio_key(job.batch, job.path)
            if with_redacted_audio
            else None,
            timings=timings,
            worker_id=worker_id(),
            instance_type=self.instance_type,
            finished_at=utc_now(),
        )

    def _drop_stale_error(self, job: TranscriptionJob) -> None:
        """A success after an earlier failure: the stale failure record goes. The job is
        done either way (its JSON is written, and a result wins over an error record), so
        a delete that keeps failing is only logged."""
        key = keys.error_key(job.batch, job.path)
        try:
            self._stage(
                job,
                "cleanup",
                lambda: self.s3.delete_object(Bucket=self.settings.bucket, Key=key),
            )
        except _StageFailed as failed:
            log.warning("%s/%s is done but %s stays: %s", job.batch, job.path, key, failed)

    def _write_error(
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
            reason=failure.reason,
            kind=failure.kind.value,
            error_type=type(error).__name__,
            attempts=attempts,
            receive_count=message.receive_count if message else None,
            worker_id=worker_id(),
            failed_at=utc_now(),
        )
        key = keys.error_key(job.batch, job.path)
        storage.put_text(
            self.s3, self.settings.bucket, key, record.model_dump_json(indent=2), "application/json"
        )
        log.warning(
            "failed %s/%s after %d tries: %s", job.batch, job.path, attempts, failure.reason
        )

    def _refuse(self, payload: Any, error: ValidationError) -> str:
        """An invalid payload is never executed. If its batch and path are themselves
        safe, the refusal is recorded where the user will look; otherwise only logged."""
        log.error("refused an invalid job payload %.500r: %s", payload, error)
        if isinstance(payload, dict):
            try:
                batch = keys.validate_batch_name(str(payload.get("batch")))
                path = keys.normalize_relative_path(str(payload.get("path")))
            except keys.InvalidKeyError:
                return "refused"
            if path == payload.get("path"):
                # Only batch, path and input_key go into the record; the rest is unknown.
                fake = TranscriptionJob.model_construct(
                    batch=batch, path=path, input_key=keys.input_key(batch, path), sha256="", size=0
                )
                failure = failures.classify(error, path)
                self._write_error(fake, failure, error, 1, None)
        return "refused"


def create_worker_app(settings: Settings) -> Celery:
    """The Celery app with the transcription task and the instance guards registered."""
    app = make_celery(settings)
    app.conf.worker_soft_shutdown_timeout = settings.shutdown_grace_seconds
    gate = StartGate()  # before the pool forks: its processes share it
    runner = JobRunner(settings, may_gather=lambda: not gate.stopping)
    unstarted = UnstartedJobs(settings, gate)

    @app.task(name=TRANSCRIBE_TASK, bind=True, ignore_result=True)
    def transcribe(self: Any, payload: Any) -> str:
        message = message_handle(self.request.properties)
        if not gate.start(start_key(self.request.id, message)):
            # The worker is stopping and its main process hands this job back (or, if it
            # came too late for that, Celery requeues it): it must not run here as well.
            log.warning(
                "the worker is stopping: %s[%s] not started", TRANSCRIBE_TASK, self.request.id
            )
            raise Reject("the worker is stopping", requeue=True)
        if message is None:
            log.warning("no SQS receipt handle on the request: visibility heartbeat is off")
        try:
            return runner.run(payload, message)
        except Exception as error:
            # Not acknowledged: SQS delivers it again after the visibility timeout (to
            # another worker), and moves it to the dead-letter queue after maxReceiveCount.
            log.error("handing %s back to the queue: %s", TRANSCRIBE_TASK, error)
            raise Reject(str(error), requeue=False) from error

    @worker_process_init.connect(weak=False)
    def load_model_in_pool_process(**_: Any) -> None:
        runner.warm_up()

    guard = InstanceGuard(app, settings)

    class Worker(app.Worker):  # type: ignore[name-defined]
        def start(self) -> None:
            # Returns when the worker has stopped: its jobs done, cancelled and handed
            # back, the pool gone (every shutdown, warm or cold, ends inside it).
            try:
                super().start()
            finally:
                guard.finish()

        def wait_for_soft_shutdown(self) -> None:
            # Celery's cold shutdown (SIGQUIT; SIGTERM with REMAP_SIGTERM=SIGQUIT, as
            # whisperq runs; a spot notice) calls this first, in the main process: before
            # it waits for running jobs and stops the pool, which would run every job
            # already in a pool process's pipe to its end. worker_shutting_down comes too
            # late there (after the pool has stopped); it is first on a warm shutdown.
            unstarted.hand_back()
            super().wait_for_soft_shutdown()

    app.Worker = Worker
    worker_ready.connect(guard.start, weak=False)
    worker_ready.connect(unstarted.prepare, weak=False)
    worker_shutting_down.connect(unstarted.hand_back, weak=False)
    worker_shutting_down.connect(guard.stop, weak=False)
    task_received.connect(guard.job_received, weak=False)
    return app


def start_key(task_id: str | None, message: MessageHandle | None) -> bytes:
    """One delivery of one job (a redelivered job is a new start): 16 bytes."""
    receipt = message.receipt_handle if message else ""
    return hashlib.blake2b(f"{task_id}\0{receipt}".encode(), digest_size=16).digest()


class StartGate:
    """Shared by the worker's main process and its pool processes: which deliveries the
    pool has started, and whether the worker is stopping.

    When the worker stops, a job a pool process has started is left to the soft shutdown
    (grace, then cancel); one it has not started goes back to the queue at once. Which is
    which must be decided once, with no gap between "started?" and "hand back" (the main
    process learns that a job started only when it reads the pool's note, later): a pool
    process records each delivery it starts, under a lock, unless the worker is stopping
    (then it declines the job); the main process sets "stopping" under the same lock and
    reads the record. So every job is either recorded as started or never starts here.

    Shared memory made before the pool forks (Celery's prefork pool forks on Linux). The
    record is a ring of the latest starts, far more than a worker holds unacknowledged
    (prefetch 1 per pool process). A lock left held by a process killed inside it (taken
    for microseconds) is waited for ``LOCK_TIMEOUT`` seconds; then the main process hands
    back nothing and the pool process runs the job unless the worker is stopping: no job
    runs twice, some wait for Celery's requeue as before.
    """

    SLOTS = 256
    KEY_BYTES = 16
    LOCK_TIMEOUT = 2.0

    def __init__(self) -> None:
        self._lock = multiprocessing.Lock()
        self._stopping = multiprocessing.RawValue(ctypes.c_bool, False)
        self._next = multiprocessing.RawValue(ctypes.c_uint64, 0)
        self._started = multiprocessing.RawArray(ctypes.c_char, self.SLOTS * self.KEY_BYTES)

    @property
    def stopping(self) -> bool:
        return bool(self._stopping.value)

    def start(self, key: bytes) -> bool:
        """In a pool process, as a job starts: True to run it, False when the worker is
        stopping (the job must not run here)."""
        if not self._lock.acquire(timeout=self.LOCK_TIMEOUT):
            log.warning("start gate lock not free; starting unless the worker is stopping")
            return not self._stopping.value
        try:
            if self._stopping.value:
                return False
            slot = (self._next.value % self.SLOTS) * self.KEY_BYTES
            memoryview(self._started).cast("B")[slot : slot + self.KEY_BYTES] = key
            self._next.value += 1
            return True
        finally:
            self._lock.release()

    def stop(self) -> set[bytes] | None:
        """In the main process: no job starts from now on. The keys of the deliveries
        already started, or None when that cannot be known (lock not free)."""
        if not self._lock.acquire(timeout=self.LOCK_TIMEOUT):
            self._stopping.value = True
            return None
        try:
            self._stopping.value = True
            recorded = min(self._next.value, self.SLOTS)
            raw = bytes(memoryview(self._started).cast("B")[: recorded * self.KEY_BYTES])
        finally:
            self._lock.release()
        return {raw[i : i + self.KEY_BYTES] for i in range(0, len(raw), self.KEY_BYTES)}


class UnstartedJobs:
    """In the worker's main process, as it stops: every job received but not started goes
    back to the queue at once (visibility 0), and Celery is kept from ever acknowledging,
    rejecting or restoring it afterwards (its receipt handle may by then be stale: another
    worker may hold the message)."""

    def __init__(self, settings: Settings, gate: StartGate) -> None:
        self.settings = settings
        self.gate = gate
        self._sqs: Any = None

    def prepare(self, **_: Any) -> None:
        """At worker_ready: the SQS client, so shutdown does not have to build one."""
        self.sqs()

    def sqs(self) -> Any:
        if self._sqs is None:
            self._sqs = storage.client(self.settings, "sqs")
        return self._sqs

    def hand_back(self, **_: Any) -> int:
        """Hand back what has not started; returns how many. Safe to call again."""
        from celery.worker import state

        started = self.gate.stop()
        if started is None:
            log.warning("cannot tell which jobs have started: Celery requeues the rest")
            return 0
        handed = 0
        for request in list(state.reserved_requests):
            if request.acknowledged or request.time_start:
                continue  # done, or running: the soft shutdown's to finish or cancel
            message = message_handle(request.message.properties)
            if message is None or start_key(request.id, message) in started:
                continue  # not SQS; or started in a pool process that has not said so yet
            if not hand_back(self.sqs(), message):
                continue  # Celery requeues it (visible after the SQS wait time)
            # Celery must not touch the message again: no ack or reject when the pool
            # process declines the job, no restore when the connection closes.
            request.acknowledged = True
            with contextlib.suppress(AttributeError, KeyError):
                request.message.channel.qos.ack(request.message.delivery_tag)
            state.task_ready(request)
            handed += 1
            log.warning(
                "the worker is stopping: %s[%s] handed back unstarted", request.name, request.id
            )
        return handed


class InstanceGuard:
    """In the worker's main process: watches for spot interruption notices and for the
    Auto Scaling group terminating the instance (its termination lifecycle hook), keeps
    scale-in protection on while the worker holds a job, and completes the lifecycle hook
    once the worker has stopped."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.imds = Imds(settings.imds_endpoint)
        self.watcher: SpotWatcher | None = None
        self.lifecycle: LifecycleWatcher | None = None
        self.protection: ScaleInProtection | None = None
        self.poller: Poller | None = None
        self.autoscaling: Any = None
        self.instance_id: str | None = None
        self.stopping = False  # a shutdown has begun (ours, or SIGTERM's)
        self.lifecycle_completed = False
        # Reentrant: stop() runs in Celery's signal handler, which a second signal can
        # interrupt with stop() again.
        self._lock = threading.RLock()

    def spot_watch_enabled(self) -> bool:
        if self.settings.spot_watch == "auto":
            # The local stack is never on EC2; elsewhere, ask whether IMDS answers.
            return self.settings.endpoint_url is None and self.imds.available()
        return self.settings.spot_watch == "on"

    def start(self, **_: Any) -> None:
        if self.spot_watch_enabled():
            self.watcher = SpotWatcher(
                self.imds, self.settings.spot_poll_seconds, self.on_spot_notice
            )
            self.watcher.start()
            log.info("watching for spot interruption notices at %s", self.imds.endpoint)
        group = self.settings.autoscaling_group
        if not group:
            if self.settings.lifecycle_hook:
                log.warning("a lifecycle hook but no Auto Scaling group: the hook is not watched")
            return
        instance_id = self.settings.instance_id
        if instance_id is None:
            try:
                instance_id = self.imds.instance_id()
            except OSError as error:  # off EC2 with a group configured: say so, go on
                log.warning("cannot ask IMDS for the instance id: %s", error)
        if not instance_id:
            log.warning("no instance id: scale-in protection and the lifecycle hook are off")
            return
        self.instance_id = instance_id
        self.autoscaling = storage.client(self.settings, "autoscaling")
        self.protection = ScaleInProtection(self.autoscaling, group, instance_id)
        self.poller = Poller("scale-in-protection", 2.0, self.drop_protection_when_idle).start()
        if self.settings.lifecycle_hook:
            self.lifecycle = LifecycleWatcher(
                self.imds, self.settings.spot_poll_seconds, self.on_terminating
            )
            self.lifecycle.start()
            log.info(
                "watching %s for the group terminating this instance (lifecycle hook %s)",
                self.imds.endpoint,
                self.settings.lifecycle_hook,
            )

    def stop(self, **_: Any) -> None:
        """At worker_shutting_down (in Celery's signal handler): the worker stops; no
        watcher may start another shutdown, which would cut the running job's grace."""
        with self._lock:
            self.stopping = True
        for thread in (self.watcher, self.poller, self.lifecycle):
            if thread is not None:
                thread.stop()

    def job_received(self, **_: Any) -> None:
        if self.protection is not None:
            self.protection.set(True)

    def drop_protection_when_idle(self) -> None:
        from celery.worker import state

        if self.protection is not None and not state.reserved_requests:
            self.protection.set(False)

    def on_spot_notice(self, notice: dict[str, Any]) -> None:
        """Two minutes' notice: finish what fits in the spot grace, hand back the rest."""
        self.shut_down(f"spot interruption ({notice.get('action')})")

    def on_terminating(self) -> None:
        """The group is terminating the instance (scale-in, capacity rebalancing): as on
        a spot notice; the hook is completed once the worker has stopped (``finish``)."""
        self.shut_down("the Auto Scaling group is terminating this instance")

    def shut_down(self, why: str) -> None:
        """Stop taking work; the running job gets the spot grace, then goes back."""
        with self._lock:
            if self.stopping:
                log.warning("%s: the worker is stopping already", why)
                return
            self.stopping = True
        grace = min(self.settings.shutdown_grace_seconds, self.settings.spot_grace_seconds)
        self.app.conf.worker_soft_shutdown_timeout = grace
        log.warning("%s: stopping, grace %.0fs", why, grace)
        os.kill(os.getpid(), signal.SIGQUIT)  # Celery: soft shutdown, then cold

    def finish(self) -> bool:
        """After the worker has stopped (its jobs done or handed back): if the group is
        terminating the instance, complete its lifecycle hook (CONTINUE) so that it goes
        on at once. True when completed. Whatever stopped the worker -- the watcher, a
        spot notice, SIGTERM -- IMDS is asked once more, so a termination that began
        during the shutdown is completed too. Once per worker."""
        hook, group = self.settings.lifecycle_hook, self.settings.autoscaling_group
        if self.lifecycle is None or not (hook and group and self.instance_id):
            return False
        self.lifecycle.stop()
        if self.lifecycle_completed:
            return True
        if not self.lifecycle.terminated:
            try:
                if self.imds.target_lifecycle_state() != TERMINATED:
                    return False
            except OSError as error:
                log.warning("cannot read the target lifecycle state: %s", error)
                return False
        try:
            complete_lifecycle_action(self.autoscaling, group, hook, self.instance_id)
        except Exception as error:  # the hook's heartbeat runs out; the group goes on then
            log.warning("could not complete lifecycle hook %s: %s", hook, error)
            return False
        self.lifecycle_completed = True
        log.warning(
            "lifecycle hook %s completed (CONTINUE): the group terminates %s now",
            hook,
            self.instance_id,
        )
        return True


def run_worker(settings: Settings, loglevel: str = "INFO") -> None:
    """``whisperq worker``: a Celery worker in the foreground.

    The model is resolved first, so a wrong name stops the worker with a message instead
    of pool processes that fail to start over and over.
    """
    from billiard.common import REMAP_SIGTERM

    engine.resolve_model(settings.model)
    concurrency = engine.choose_concurrency(
        settings.worker_concurrency, engine.choose_device(settings.device)
    )
    settings = settings.model_copy(update={"worker_concurrency": concurrency})
    if REMAP_SIGTERM != "SIGQUIT":
        log.warning(
            "REMAP_SIGTERM=SIGQUIT is not set: SIGTERM waits for running jobs without limit"
        )
    app = create_worker_app(settings)
    app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            f"--concurrency={settings.worker_concurrency}",
            "--pool=prefork",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--hostname=whisperq@{socket.gethostname()}-{os.getpid()}",
        ]
    )
