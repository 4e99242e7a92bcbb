"""A batch's "finished" signal from the workers, so that nobody has to run ``whisperq
wait``: ``done.json`` and its EventBridge event (``whisperq.finished``).

A pool process notes the batch of every job it settles (its result or its error record
written), and renames the file's entry to its state (``whisperq.entry_states``: what lets
``status`` count a big batch from one listing); an entry not there yet -- submit writes
entries after it queues the jobs -- is renamed at the next check instead. After a job,
while the job's message is still in flight, it asks the queue how many jobs wait (one
GetQueueAttributes); when none does -- the queue has run dry -- it checks each batch it
noted: finished (every file has a result or an error record, a
daily batch's day is over) -> ``done.json`` is written with a conditional write and the
event put by the one writer that created it. So the worker that settles a batch's last
file, or the last of several settling its last files at once, writes it once; the others
find it there (one GET) or lose the conditional write.

A checked batch is forgotten unless it is open (a daily batch before its day is over:
kept, two GETs a check, until it closes). One still pending is safe to forget: each
worker writes its result before it checks, so the one that settles the last pending file
sees every other result; a file whose job is gone or dead-lettered gets a new job from
``retry``, and the worker that settles that one notes the batch again.

While the queue has jobs waiting nothing is checked: a batch listing per job would cost
far more than the jobs. What stays noted -- a batch settled while other batches kept the
queue busy, a daily batch before its day is over, a check that failed -- is looked at
again every ``RECHECK_SECONDS`` from a timer thread of the pool process (one
GetQueueAttributes, and the checks once the queue is dry), also when no job comes any
more; SQS's counts lag a little, and a last job that saw one still waiting is covered
so. A worker that stops forgets; ``status`` and ``wait`` write the same marker. A failed
check is logged, never the job's failure.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from whisperq import entry_states, finished, keys
from whisperq.schemas import TranscriptionJob
from whisperq.settings import Settings
from whisperq.worker.clients import ProcessClients

log = logging.getLogger("whisperq.worker")

RECHECK_SECONDS = 30.0  # while batches stay noted: the queue asked again, then them
# A queue seen holding this many waiting jobs is not asked again after every job for a
# while: it runs dry that fast only for a fleet doing 100 jobs a second, and then the
# timer asks within RECHECK_SECONDS. A 50,000-job backlog was a GetQueueAttributes a job.
BUSY_WAITING = 1000
BUSY_QUIET_SECONDS = 10.0
# Entries not found when their file was settled, tried again at each check; a worker this
# far behind forgets the oldest (status counts them from the results once the queue is dry).
MAX_UNMARKED = 10_000


class BatchEnds:
    """The batches a pool process settled jobs of, checked for their end when the queue
    has run dry."""

    def __init__(
        self,
        settings: Settings,
        clients: ProcessClients,
        recheck_seconds: float | None = None,  # RECHECK_SECONDS; 0: no timer
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.recheck_seconds = RECHECK_SECONDS if recheck_seconds is None else recheck_seconds
        self._noted: set[str] = set()
        self._unmarked: dict[tuple[str, str], keys.EntryState] = {}  # (batch, path) -> state
        self._marked_again_at = time.monotonic()
        self._quiet_until = 0.0  # monotonic: the queue is not asked before then
        self._lock = threading.Lock()  # jobs settle in the task; the timer checks beside it
        self._timer: threading.Timer | None = None

    def settled(
        self,
        batch: str,
        path: str | None = None,
        state: keys.EntryState | None = None,
        pending_key: str | None = None,
    ) -> None:
        """A job of ``batch`` is over: its result or its error record is written; with
        ``path`` and ``state`` ("done", "failed"), its entry is renamed to say so (from
        ``pending_key``, the entry the job was queued with, when the job names it)."""
        with self._lock:
            self._noted.add(batch)
        if path is not None and state is not None:
            self._mark(batch, path, state, pending_key)

    def job_settled(self, job: TranscriptionJob, state: keys.EntryState) -> None:
        """:meth:`settled` for one job."""
        self.settled(job.batch, job.path, state, job.entry_key)

    def _mark(
        self, batch: str, path: str, state: keys.EntryState, pending_key: str | None = None
    ) -> None:
        try:
            marked = entry_states.mark(
                self.clients.s3, self.settings.bucket, batch, path, state, pending_key
            )
        except Exception as error:  # the job is done all the same: status counts it later
            log.warning("%s/%s: entry not marked %s: %s", batch, path, state, error)
            marked = False
        with self._lock:
            if marked:
                if self._unmarked.pop((batch, path), None) is not None:
                    self._noted.add(batch)  # renamed late: its batch is checked again
            elif len(self._unmarked) < MAX_UNMARKED:
                self._unmarked[(batch, path)] = state

    def _mark_again(self) -> None:
        """Entries that were not there when their files were settled: tried again at most
        once per ``recheck_seconds`` (not after every job), kept until found."""
        if time.monotonic() - self._marked_again_at < self.recheck_seconds:
            return
        self._marked_again_at = time.monotonic()
        with self._lock:
            todo = list(self._unmarked.items())
        for (batch, path), state in todo:
            self._mark(batch, path, state)

    @property
    def noted(self) -> set[str]:
        with self._lock:
            return set(self._noted)

    def quiet_seconds(self) -> float:
        """How long the queue is not asked yet (after a long queue was seen)."""
        return max(0.0, self._quiet_until - time.monotonic())

    def queue_dry(self) -> bool:
        """No job waits on the queue (those in flight, this one's included, are not
        counted: whoever holds them checks after them). After an answer of BUSY_WAITING
        jobs or more, False without asking for BUSY_QUIET_SECONDS."""
        if time.monotonic() < self._quiet_until:
            return False
        attributes = self.clients.client("sqs").get_queue_attributes(
            QueueUrl=self.settings.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        waiting = int(attributes.get("ApproximateNumberOfMessages", 0))
        if waiting >= BUSY_WAITING:
            self._quiet_until = time.monotonic() + BUSY_QUIET_SECONDS
        return waiting == 0

    def after_job(self, now: datetime | None = None) -> dict[str, finished.Outcome]:
        """When the queue has run dry: each noted batch checked, ``done.json`` written for
        the finished ones nobody has marked yet; what stays noted is looked at again
        later (the timer). What became of each checked batch; never raises."""
        outcomes = self._check(now)
        self._recheck_later()
        return outcomes

    def _check(self, now: datetime | None) -> dict[str, finished.Outcome]:
        if self._unmarked:
            self._mark_again()
        if not self.noted:
            return {}
        try:
            if not self.queue_dry():
                return {}
        except Exception as error:
            log.warning("could not ask the queue whether it has run dry: %s", error)
            return {}
        outcomes: dict[str, finished.Outcome] = {}
        for batch in sorted(self.noted):
            try:
                outcome = finished.finish_if_done(
                    self.settings,
                    self.clients.s3,
                    batch,
                    now or datetime.now(UTC),
                    self.clients.client("events") if self.settings.event_bus else None,
                )
            except Exception as error:
                log.warning("batch %s: could not check whether it is finished: %s", batch, error)
                continue
            outcomes[batch] = outcome
            if outcome == "written":
                log.info("batch %s is finished: done.json written", batch)
            if outcome != "open":
                with self._lock:
                    self._noted.discard(batch)
        return outcomes

    def _recheck_later(self) -> None:
        """One timer at a time, while anything stays noted (a daemon thread: a stopping
        pool process does not wait for it)."""
        if self.recheck_seconds <= 0 or not (self.noted or self._unmarked):
            return
        with self._lock:
            if self._timer is not None and self._timer.is_alive():
                return
            self._timer = threading.Timer(self.recheck_seconds, self._recheck)
            self._timer.daemon = True
            self._timer.start()

    def _recheck(self) -> None:
        with self._lock:
            self._timer = None
        self.after_job()
