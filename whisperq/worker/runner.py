"""One job, from its payload to its results in S3: the task ``whisperq.transcribe`` runs
``JobRunner.run`` (``app`` registers it).

``JobRunner`` orchestrates; each concern is its own part, held by composition: the
process's clients (``clients``), the model (``models``), the refusal of an invalid payload
(``refusal``), the retried stages (``stages``), the download and the results' way out
(``delivery``, ``results``), packs of short jobs (``pack_runner``), the dashboard's
metrics (``metrics``) and the batches' "finished" signal (``batch_end``). A job's stages:
choose the model, download the input, transcribe (and redact) it, write the redacted audio
if asked, upload the results, drop a stale error record -- each retried on its own.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from whisperq.schemas import TranscriptionJob
from whisperq.settings import Settings
from whisperq.speech import engine
from whisperq.worker.batch_end import BatchEnds
from whisperq.worker.clients import ProcessClients
from whisperq.worker.delivery import Delivery, StaleJob
from whisperq.worker.heartbeat import MessageHandle, VisibilityHeartbeat
from whisperq.worker.metrics import JobMetrics
from whisperq.worker.models import WorkerModels
from whisperq.worker.pack_runner import PackMember, PackRunner
from whisperq.worker.packs import PackLedger
from whisperq.worker.refusal import refuse
from whisperq.worker.results import ResultStore
from whisperq.worker.stages import StageFailed, Stages

log = logging.getLogger("whisperq.worker")


class JobRunner:
    """Runs jobs in one pool process; holds that process's clients and model."""

    def __init__(
        self,
        settings: Settings,
        may_gather: Callable[[], bool] = lambda: True,
        ledger: PackLedger | None = None,
    ) -> None:
        self.settings = settings
        self.models = WorkerModels(settings)
        self.config = self.models.config
        # False once the worker is stopping: then no job takes others from the queue.
        self.may_gather = may_gather
        self.clients = ProcessClients(settings)
        self.stages = Stages(settings)
        self.results = ResultStore(settings, self.clients)
        self.delivery = Delivery(settings, self.clients, self.stages, self.results)
        self.metrics = JobMetrics(settings, self.clients)
        self.batch_ends = BatchEnds(settings, self.clients)
        self.packs = PackRunner(
            settings,
            self.clients,
            self.stages,
            self.results,
            self.delivery,
            self.metrics,
            may_gather,
            self._process,
            ledger,  # the worker's main process hands back what a killed pack held
            self.batch_ends.job_settled,
        )

    def client(self, service: str) -> Any:
        return self.clients.client(service)

    @property
    def s3(self) -> Any:
        return self.clients.s3

    @property
    def instance_type(self) -> str | None:
        return self.clients.instance_type

    def visibility_timeout(self) -> int:
        return self.clients.visibility_timeout()

    def warm_up(self) -> None:
        self.models.warm_up()

    def run(self, payload: Any, message: MessageHandle | None = None) -> str:
        """Process one payload: "done", "failed" (error record written), "refused", or
        "stale" (the input holds newer content: nothing written, ``delivery``).

        Raises WorkerUnfit when the job should go back to the queue for another worker.
        """
        try:
            job = TranscriptionJob.model_validate(payload)
        except ValidationError as error:
            return refuse(payload, error, self.results)
        heartbeat: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if message is not None:
            heartbeat = VisibilityHeartbeat(self.client("sqs"), message, self.visibility_timeout())
        with heartbeat:
            try:
                audio_seconds = self._run_job(job, message)
            except StaleJob as stale:
                log.warning("%s", stale)
                return "stale"
            # Its result or error record is written: its batch may be finished (inside
            # the heartbeat: a check can list a big batch).
            self.batch_ends.job_settled(job, "failed" if audio_seconds is None else "done")
            self.batch_ends.after_job()
        outcome = "failed" if audio_seconds is None else "done"
        self.metrics.publish(outcome, audio_seconds or 0.0)
        return outcome

    def _run_job(self, job: TranscriptionJob, message: MessageHandle | None) -> float | None:
        """Seconds of audio transcribed, or None when the job ended with an error record."""
        try:
            return self._process(job, message)
        except StageFailed as failed:
            self.results.write_error(job, failed.failure, failed.error, failed.tries, message)
            return None

    def _process(self, job: TranscriptionJob, message: MessageHandle | None = None) -> float:
        """The job's stages, each retried on its own (``stages``): choose the model,
        download the input, transcribe (and redact) it, write the redacted audio if asked,
        upload the results, drop a stale error record. A short file is transcribed with
        other short jobs taken from the queue (``pack_runner``) when it can be."""
        loaded, config = self.stages.run(job, "model", lambda: self.models.for_job(job))
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="whisperq-") as tmp:
            # On disk, not in memory: the engine streams it window by window.
            local = Path(tmp) / PurePosixPath(job.path).name
            self.delivery.download(job, local)
            downloaded = time.perf_counter()
            if message is not None and self.packs.packs(job, loaded):
                audio = self.stages.run(
                    job, "transcription", lambda: engine.short_audio(local, job.options)
                )
                if audio is not None:
                    lead = PackMember(job, None, local, audio, downloaded - started)
                    return self.packs.run(lead, message, loaded, config, Path(tmp))
            transcript = self.stages.run(
                job,
                "transcription",
                lambda: engine.transcribe_file(loaded, local, job.options, config),
            )
            took = time.perf_counter() - downloaded
            return self.delivery.deliver(job, loaded, local, transcript, downloaded - started, took)
