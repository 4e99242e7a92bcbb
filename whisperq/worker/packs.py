"""More short jobs for a worker that has one: taken straight from the SQS queue, so that
their files can share Whisper's 30-second windows (whisperq.speech.packing).

Celery hands a pool process one job at a time (prefetch 1). When that job's file turns
out short, the worker receives up to ``pack_max_files - 1`` more messages from the same
queue itself, keeps those it can pack with it -- same batch, same options, file small
enough to be short (``pack_max_bytes``: the job's size is known before downloading) --
and hands the others on. It keeps each kept message invisible while it works (a heartbeat each) and
deletes it once that job's result or error record is written. Messages are the same
Celery messages as any other: a worker that dies mid-pack loses nothing, its messages
come back after the visibility timeout.

Handing on is a new copy of the message sent to the queue, then the received one
deleted: a job that is not short enough waits for an ordinary delivery, and its receive
count starts again (handing back with visibility 0 would count a receive each time, and a
long job picked up by packing workers a few times would end in the dead-letter queue
without ever running). A copy that cannot be sent is handed back instead.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from whisperq.celery_app import decode_job_message
from whisperq.schemas import TranscriptionJob
from whisperq.worker.heartbeat import MessageHandle, VisibilityHeartbeat, hand_back

log = logging.getLogger("whisperq.short_jobs")

SQS_MAX_RECEIVE = 10


@dataclass(frozen=True)
class GatheredJob:
    job: TranscriptionJob
    message: MessageHandle
    received: dict[str, Any] = field(default_factory=dict, compare=False)  # SQS's message

    @property
    def first_delivery(self) -> bool:
        return (self.message.receive_count or 1) <= 1


class Holding:
    """Gathered jobs' messages while a worker has them: each kept invisible (a
    heartbeat each) until it is deleted (its job over) or given back."""

    def __init__(self, sqs: Any, jobs: list[GatheredJob], visibility_timeout: int) -> None:
        self.sqs = sqs
        self._beats = {
            job.message: VisibilityHeartbeat(sqs, job.message, visibility_timeout) for job in jobs
        }

    def __enter__(self) -> Holding:
        for beat in self._beats.values():
            beat.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        """Whatever is still held goes back to the queue (the lead job failed, the
        worker is unfit or stopping): nothing is lost, nothing waits for a timeout."""
        for handle in list(self._beats):
            self.give_back(handle)

    def _let_go(self, handle: MessageHandle) -> bool:
        beat = self._beats.pop(handle, None)
        if beat is not None:
            beat.stop()
        return beat is not None

    def done(self, handle: MessageHandle) -> None:
        """The job's results or error record are written: its message goes."""
        if self._let_go(handle):
            delete(self.sqs, handle)

    def give_back(self, handle: MessageHandle) -> None:
        """The job did not run here: visible again at once."""
        if self._let_go(handle):
            hand_back(self.sqs, handle)

    def hand_on(self, job: GatheredJob) -> None:
        """A first delivery that turned out not to fit: a fresh copy queued instead."""
        if self._let_go(job.message):
            hand_on(self.sqs, job.received, job.message)


def can_share_window(lead: TranscriptionJob, other: TranscriptionJob, max_bytes: int) -> bool:
    """Whether ``other`` may be packed with ``lead``: the same batch (a word put in the
    wrong file must not cross from one customer's batch into another's), the very same
    options (they decide how the window is decoded and what each result holds) and a
    file of at most ``max_bytes`` (likely short)."""
    return other.batch == lead.batch and other.size <= max_bytes and other.options == lead.options


def gather(
    sqs: Any,
    queue_url: str,
    lead: TranscriptionJob,
    count: int,
    visibility_timeout: int,
    max_bytes: int,
) -> list[GatheredJob]:
    """Up to ``count`` more jobs that can share windows with ``lead``, received now (no
    waiting: only what the queue holds already), in at most ``ceil(count / 10)`` receives
    (copies handed on are visible again at once: receiving until the queue runs dry could
    go on for as long as other workers leave them there).

    A job received before (``ApproximateReceiveCount`` over 1) is kept whatever it is:
    this is one of its deliveries, and handing it on would wipe the count that sends a
    job that keeps failing to the dead-letter queue. A first-time job that cannot share
    is handed on (``hand_on``); a message that is not a whisperq job is handed back."""
    gathered: list[GatheredJob] = []
    for _ in range(math.ceil(count / SQS_MAX_RECEIVE)):
        wanted = min(SQS_MAX_RECEIVE, count - len(gathered))
        if wanted <= 0:
            break
        try:
            received = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=wanted,
                VisibilityTimeout=visibility_timeout,
                WaitTimeSeconds=0,
                AttributeNames=["ApproximateReceiveCount"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
        except Exception as error:  # packing is an optimisation: the lead job goes on
            log.warning("could not receive more short jobs: %s", error)
            break
        for message in received:
            seen = message.get("Attributes", {}).get("ApproximateReceiveCount")
            handle = MessageHandle(queue_url, message["ReceiptHandle"], int(seen) if seen else None)
            try:
                job = decode_job_message(message["Body"])
            except Exception:
                hand_back(sqs, handle)  # not ours to judge: an ordinary delivery refuses it
                continue
            if (handle.receive_count or 1) > 1 or can_share_window(lead, job, max_bytes):
                gathered.append(GatheredJob(job, handle, message))
            else:
                hand_on(sqs, message, handle)
        if len(received) < wanted:
            break  # the queue has no more right now
    return gathered


def hand_on(sqs: Any, message: dict[str, Any], handle: MessageHandle) -> None:
    """The message back on the queue as a new one (receive count from zero), the received
    copy deleted; if the copy cannot be sent, the message is handed back instead."""
    copy: dict[str, Any] = {"QueueUrl": handle.queue_url, "MessageBody": message["Body"]}
    if message.get("MessageAttributes"):
        copy["MessageAttributes"] = message["MessageAttributes"]
    try:
        sqs.send_message(**copy)
    except Exception as error:
        log.warning("could not hand a job on (%s); handing it back", error)
        hand_back(sqs, handle)
        return
    if not delete(sqs, handle) and not delete(sqs, handle):
        # Both copies are now queued: the job runs twice (the same result, rewritten).
        log.error("a job handed on is queued twice: its received copy could not be deleted")


def delete(sqs: Any, handle: MessageHandle) -> bool:
    """Acknowledge a gathered job (its result or error record is written). A failed
    delete only means the job is delivered again and rewrites the same result."""
    try:
        sqs.delete_message(QueueUrl=handle.queue_url, ReceiptHandle=handle.receipt_handle)
    except Exception as error:
        log.warning("could not delete a job's message: %s", error)
        return False
    return True
