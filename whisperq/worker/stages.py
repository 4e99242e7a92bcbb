"""The retry policy: a job runs as stages (model, download, transcription, audio redaction,
upload, cleanup), and a stage that fails for a transient reason runs again after a backoff
-- that stage only, never the ones before it: a failing upload keeps its transcript.

Which errors are transient, permanent or the worker's own, how many tries each gets and
how long to wait between them is ``failures``'s to say; this runs the loop. A stage that
fails for good raises ``StageFailed`` (the job then ends with an error record); one that
shows the worker cannot run jobs at all raises ``WorkerUnfit`` (the job goes back).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from whisperq.errors import WorkerUnfit
from whisperq.schemas import TranscriptionJob
from whisperq.settings import Settings
from whisperq.worker import failures

log = logging.getLogger("whisperq.worker")

T = TypeVar("T")


class StageFailed(Exception):
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


class Stages:
    """Runs a job's stages, each with its own tries (``max_attempts``) and backoff."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def run(self, job: TranscriptionJob, stage: str, action: Callable[[], T]) -> T:
        """Run one stage of ``job``; on a transient failure, run that stage again (after
        a backoff), never the stages before it: a failing upload keeps its transcript.

        Tries are counted per stage, not per job: each stage gets up to ``max_attempts``
        tries (fewer where ``failures.allowed_tries`` says more would not help). The
        stages fail independently -- a download that needed a retry says nothing about
        the upload after it -- and a per-job budget would let early hiccups use up the
        retries that protect the upload of an expensive transcript. The price, a job that
        can take longer in a long outage, is safe: the visibility heartbeat keeps the
        message ours meanwhile. The error record's ``attempts`` are the failed stage's.

        Raises StageFailed when the stage failed for good, WorkerUnfit when the worker
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
                    raise StageFailed(stage, failure, error, tries) from error
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
