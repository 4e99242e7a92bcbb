"""The Celery worker: one task, ``whisperq.transcribe``, from S3 input to S3 results.

The model is loaded when each pool process starts (``worker_process_init``), so the first
job does not pay for it and no job ever loads it again.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from pydantic import ValidationError

from whisperq import engine, keys, render, storage
from whisperq.celery_app import TRANSCRIBE_TASK, make_celery
from whisperq.schemas import (
    ErrorRecord,
    Timings,
    TranscriptionJob,
    TranscriptResult,
    utc_now,
)
from whisperq.settings import Settings

log = logging.getLogger("whisperq.worker")


def worker_id() -> str:
    """Host and pool-process id: which process wrote a result."""
    return f"{socket.gethostname()}:{os.getpid()}"


def engine_config(settings: Settings) -> engine.EngineConfig:
    return engine.EngineConfig(
        model=settings.model,
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        concurrency=settings.worker_concurrency,
        beam_size=settings.beam_size,
        vad=settings.vad,
    )


class JobRunner:
    """Runs jobs in one pool process; holds that process's S3 client and model."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = engine_config(settings)
        self._s3: Any = None
        self._s3_pid = 0

    @property
    def s3(self) -> Any:
        # boto3 clients must not cross a fork: make one per pool process.
        if self._s3 is None or self._s3_pid != os.getpid():
            self._s3 = storage.client(self.settings, "s3")
            self._s3_pid = os.getpid()
        return self._s3

    def warm_up(self) -> None:
        started = time.perf_counter()
        loaded = engine.load_model(self.config)
        log.info(
            "model %s loaded on %s/%s in %.2fs; whisperq worker ready",
            loaded.info.name,
            loaded.info.device,
            loaded.info.compute_type,
            time.perf_counter() - started,
        )

    def run(self, payload: Any) -> str:
        """Process one payload; returns "done" or "failed" (a failure record was written)."""
        try:
            job = TranscriptionJob.model_validate(payload)
        except ValidationError as error:
            return self._invalid_payload(payload, error)
        try:
            return self._transcribe(job)
        except engine.AudioDecodeError as error:
            reason = (
                f"{job.path} could not be read as audio ({error}). Check that the file is a "
                "complete recording in a common format (wav, mp3, m4a, flac, ogg, opus), "
                "then submit it again with --force."
            )
            self._write_error(job, reason, error)
            return "failed"
        except engine.ModelError as error:
            self._write_error(job, str(error), error)
            return "failed"

    def _transcribe(self, job: TranscriptionJob) -> str:
        bucket = self.settings.bucket
        with tempfile.TemporaryDirectory(prefix="whisperq-") as tmp:
            local = Path(tmp) / PurePosixPath(job.path).name
            started = time.perf_counter()
            self.s3.download_file(bucket, job.input_key, str(local))
            downloaded = time.perf_counter()
            audio = engine.decode(local)
        decoded = time.perf_counter()
        loaded = engine.load_model(self.config)
        transcript = engine.transcribe(loaded, audio, job.options, self.config)
        transcribed = time.perf_counter()

        for fmt in keys.RENDERING_FORMATS:
            text = render.RENDERERS[fmt](transcript.segments)
            key = keys.result_key(job.batch, job.path, fmt)
            storage.put_text(self.s3, bucket, key, text, render.CONTENT_TYPES[fmt])
        uploaded = time.perf_counter()

        result = TranscriptResult(
            batch=job.batch,
            path=job.path,
            input_key=job.input_key,
            sha256=job.sha256,
            duration=transcript.duration,
            language=transcript.language,
            language_probability=transcript.language_probability,
            model=loaded.info,
            options=transcript.options,
            text=transcript.text,
            segments=transcript.segments,
            timings=Timings(
                download=round(downloaded - started, 4),
                decode=round(decoded - downloaded, 4),
                transcribe=round(transcribed - decoded, 4),
                upload=round(uploaded - transcribed, 4),
            ),
            worker_id=worker_id(),
            finished_at=utc_now(),
        )
        # JSON last: its presence is what "done" means to everyone polling the bucket.
        json_key = keys.result_key(job.batch, job.path, "json")
        body = result.model_dump_json(indent=2)
        storage.put_text(self.s3, bucket, json_key, body, render.CONTENT_TYPES["json"])
        # A success after an earlier failure: the stale failure record goes.
        self.s3.delete_object(Bucket=bucket, Key=keys.error_key(job.batch, job.path))
        log.info(
            "done %s/%s: %.1fs of audio in %.2fs",
            job.batch,
            job.path,
            transcript.duration,
            uploaded - started,
        )
        return "done"

    def _write_error(self, job: TranscriptionJob, reason: str, error: BaseException) -> None:
        record = ErrorRecord(
            batch=job.batch,
            path=job.path,
            input_key=job.input_key,
            reason=reason,
            error_type=type(error).__name__,
            attempts=1,
            worker_id=worker_id(),
            failed_at=utc_now(),
        )
        key = keys.error_key(job.batch, job.path)
        storage.put_text(
            self.s3, self.settings.bucket, key, record.model_dump_json(indent=2), "application/json"
        )
        log.warning("failed %s/%s: %s", job.batch, job.path, reason)

    def _invalid_payload(self, payload: Any, error: ValidationError) -> str:
        log.error("rejected an invalid job payload %r: %s", payload, error)
        return "failed"


def create_worker_app(settings: Settings) -> Celery:
    """The Celery app with the transcription task registered."""
    app = make_celery(settings)
    runner = JobRunner(settings)

    @app.task(name=TRANSCRIBE_TASK, ignore_result=True)
    def transcribe(payload: dict[str, Any]) -> str:
        return runner.run(payload)

    @worker_process_init.connect(weak=False)
    def load_model_in_pool_process(**_: Any) -> None:
        runner.warm_up()

    return app


def run_worker(settings: Settings, loglevel: str = "INFO") -> None:
    """``whisperq worker``: a Celery worker in the foreground.

    The model is resolved first, so a wrong name stops the worker with a message instead
    of pool processes that fail to start over and over.
    """
    engine.resolve_model(settings.model)
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
