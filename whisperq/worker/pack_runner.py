"""Running a pack: a short job, and the short jobs it took along from the queue
(``packs``), transcribed sharing Whisper's windows (``engine.transcribe_packed``).

Each job of a pack gets its own results, or its own error record, as if it had run alone,
and is settled on its own: its message deleted once that is written, given back if
something nobody expected went wrong with it. A gathered job whose file is not short after
all is queued again as a new message (or, on a redelivery, run here alone after the
others). Only the lead job -- the one Celery delivered, which Celery acknowledges --
raises as a single job would; a worker found unfit gives the whole pack back.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from whisperq.errors import WorkerUnfit
from whisperq.keys import EntryState
from whisperq.schemas import TranscriptionJob
from whisperq.settings import Settings
from whisperq.speech import engine
from whisperq.speech.batch_language import BatchLanguages
from whisperq.worker import packs as short_jobs
from whisperq.worker.clients import ProcessClients
from whisperq.worker.delivery import Delivery, StaleJob
from whisperq.worker.heartbeat import MessageHandle
from whisperq.worker.metrics import JobMetrics
from whisperq.worker.results import ResultStore
from whisperq.worker.stages import StageFailed, Stages

log = logging.getLogger("whisperq.worker")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class PackMember:
    """A short job ready to share windows: its file downloaded and decoded."""

    job: TranscriptionJob
    gathered: short_jobs.GatheredJob | None  # None for the job Celery delivered (it acks)
    local: Path
    audio: Any  # mono 16 kHz float32 samples; None: the file is not short after all
    download_seconds: float

    @property
    def seconds(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / engine.SAMPLE_RATE


class PackRunner:
    """Runs packs of short jobs in one pool process, with the single-job runner's parts."""

    def __init__(
        self,
        settings: Settings,
        clients: ProcessClients,
        stages: Stages,
        results: ResultStore,
        delivery: Delivery,
        metrics: JobMetrics,
        may_gather: Callable[[], bool],
        run_alone: Callable[[TranscriptionJob], float],
        ledger: short_jobs.PackLedger | None = None,
        settled: Callable[[TranscriptionJob, EntryState], None] = lambda job, state: None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.stages = stages
        self.results = results
        self.delivery = delivery
        self.metrics = metrics
        # False once the worker is stopping: then no job takes others from the queue.
        self.may_gather = may_gather
        # A job run on its own, as ``JobRunner`` runs one (its stages; raises StageFailed).
        self.run_alone = run_alone
        # Where the gathered jobs are noted for the worker's main process (``packs``).
        self.ledger = ledger
        # A gathered job and its state, once its result or error record is written
        # (``batch_end``: its entry renamed, its batch checked).
        self.settled = settled
        # Batches' languages as this process learns them, for batches given none
        # (whisperq.speech.batch_language): what packs them, or stops packing them.
        self.languages = BatchLanguages()

    def packs(self, job: TranscriptionJob, loaded: engine.LoadedModel) -> bool:
        """Whether this job may take other short jobs along (whisperq.worker.packs)."""
        return (
            self.settings.pack_max_files > 1
            and self.may_gather()
            and engine.packable(job.options, loaded, self.languages.for_batch(job.batch))
        )

    def run(
        self,
        lead: PackMember,
        message: MessageHandle,
        loaded: engine.LoadedModel,
        config: engine.EngineConfig,
        tmp: Path,
    ) -> float:
        """The lead job's short file and up to ``pack_max_files - 1`` more short jobs
        from the queue, transcribed sharing windows (``engine.transcribe_packed``); each
        gets its own results, or its own error record, as if it had run alone. A
        gathered job whose file is not short after all is queued again as a new message
        (or, on a redelivery, run here alone after the others). Raises like a single job
        for the lead job only; every gathered job not finished then goes back."""
        sqs, timeout = self.clients.client("sqs"), self.clients.visibility_timeout()
        gathered = short_jobs.gather(
            sqs,
            message.queue_url,
            lead.job,
            self.settings.pack_max_files - 1,
            timeout,
            self.settings.pack_max_bytes,
        )
        with short_jobs.Holding(sqs, gathered, timeout, self.ledger, message) as held:
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
            stale: StaleJob | None = None
            try:
                lead_seconds = self._deliver_member(lead, loaded, config, own[0], share)
            except StaleJob as error:  # the lead's results are not written; the rest go on
                stale, lead_seconds = error, 0.0
            for job in alone:
                seconds = self._member(job, held, functools.partial(self.run_alone, job.job))
                if seconds is not None:
                    self._finish(job, held, seconds)
            if stale is not None:
                raise stale
            return lead_seconds

    def _member(
        self, gathered: short_jobs.GatheredJob, held: short_jobs.Holding, action: Callable[[], T]
    ) -> T | None:
        """``action`` for one gathered job, or None when the job is settled already:
        failed for good (its error record written, its message deleted), stale (nothing
        written, its message deleted: ``delivery.StaleJob``), or failed in a way nobody
        expected (its message given back; the pack goes on). WorkerUnfit goes
        up: then the whole pack goes back."""
        job = gathered.job
        try:
            return action()
        except WorkerUnfit:
            raise
        except StaleJob as stale:  # the newer job writes the results: this one is over
            log.warning("%s", stale)
            held.done(gathered.message)
            return None
        except StageFailed as failed:
            try:
                self.results.write_error(
                    job, failed.failure, failed.error, failed.tries, gathered.message
                )
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
        self.settled(gathered.job, "failed" if seconds is None else "done")
        self.metrics.publish("failed" if seconds is None else "done", seconds or 0.0)

    def _prepare(self, gathered: short_jobs.GatheredJob, folder: Path) -> PackMember:
        """A gathered job downloaded and decoded (``audio`` None: not short after all)."""
        job = gathered.job
        started = time.perf_counter()
        local = folder / PurePosixPath(job.path).name
        self.delivery.download(job, local)
        took = time.perf_counter() - started
        audio = self.stages.run(
            job, "transcription", lambda: engine.short_audio(local, job.options)
        )
        return PackMember(job, gathered, local, audio, took)

    def _packed_transcripts(
        self,
        members: list[PackMember],
        loaded: engine.LoadedModel,
        config: engine.EngineConfig,
    ) -> list[engine.Transcript] | None:
        """The members' transcripts, decoded sharing windows; None if that failed (then
        each file is transcribed alone, and one that fails fails with its own reason)."""
        lead = members[0].job
        audios = [member.audio for member in members]
        batch_language = self.languages.for_batch(lead.batch)
        packing = batch_language.packs
        try:
            return self.stages.run(
                lead,
                "transcription",
                lambda: engine.transcribe_packed(
                    loaded, audios, lead.options, config, batch_language
                ),
            )
        except StageFailed as failed:
            log.warning("packed transcription failed (%s); each file alone", failed)
            return None
        finally:
            if packing and not batch_language.packs:
                log.info("batch %s: no more packing here: %s", lead.batch, batch_language.stopped)

    def _deliver_member(
        self,
        member: PackMember,
        loaded: engine.LoadedModel,
        config: engine.EngineConfig,
        transcript: engine.Transcript | None,
        transcribe_seconds: float,
    ) -> float:
        """A pack member's results: its share of the packed transcript, or (None) its
        file transcribed alone."""
        if transcript is None:
            started = time.perf_counter()
            transcript = self.stages.run(
                member.job,
                "transcription",
                functools.partial(
                    engine.transcribe_file, loaded, member.local, member.job.options, config
                ),
            )
            transcribe_seconds = time.perf_counter() - started
        return self.delivery.deliver(
            member.job,
            loaded,
            member.local,
            transcript,
            member.download_seconds,
            transcribe_seconds,
        )
