"""More short jobs for a worker that has one: taken straight from the SQS queue, so that
their files can share Whisper's 30-second windows (whisperq.packing).

Celery hands a pool process one job at a time (prefetch 1). When that job's file turns
out short, the worker receives up to ``pack_max_files - 1`` more messages from the same
queue itself, keeps those it can pack with it -- same options, file small enough to be
short (``pack_max_bytes``: the job's size is known before downloading) -- and hands the
others on. It keeps each kept message invisible while it works (a heartbeat each) and
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
from dataclasses import dataclass
from typing import Any

from whisperq.celery_app import decode_job_message
from whisperq.heartbeat import MessageHandle, hand_back
from whisperq.schemas import TranscriptionJob

log = logging.getLogger("whisperq.short_jobs")

SQS_MAX_RECEIVE = 10


@dataclass(frozen=True)
class GatheredJob:
    job: TranscriptionJob
    message: MessageHandle


def can_share_window(lead: TranscriptionJob, other: TranscriptionJob, max_bytes: int) -> bool:
    """Whether ``other`` may be packed with ``lead``: the very same options (they decide
    how the window is decoded and what each result holds) and a file of at most
    ``max_bytes`` (likely short: a file that is not is still transcribed, alone)."""
    return other.size <= max_bytes and other.options == lead.options


def gather(
    sqs: Any,
    queue_url: str,
    lead: TranscriptionJob,
    count: int,
    visibility_timeout: int,
    max_bytes: int,
) -> list[GatheredJob]:
    """Up to ``count`` more jobs that can share windows with ``lead``, received now (no
    waiting: only what the queue holds already). Messages that are not such jobs are
    handed on (``hand_on``), or back when they are not whisperq jobs at all."""
    gathered: list[GatheredJob] = []
    while count > len(gathered):
        wanted = min(SQS_MAX_RECEIVE, count - len(gathered))
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
            count_seen = message.get("Attributes", {}).get("ApproximateReceiveCount")
            handle = MessageHandle(
                queue_url, message["ReceiptHandle"], int(count_seen) if count_seen else None
            )
            try:
                job = decode_job_message(message["Body"])
            except ValueError:
                hand_back(sqs, handle)  # not ours to judge: an ordinary delivery refuses it
                continue
            if can_share_window(lead, job, max_bytes):
                gathered.append(GatheredJob(job, handle))
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
    delete(sqs, handle)


def delete(sqs: Any, handle: MessageHandle) -> None:
    """Acknowledge a gathered job (its result or error record is written). A failed
    delete only means the job is delivered again and rewrites the same result."""
    try:
        sqs.delete_message(QueueUrl=handle.queue_url, ReceiptHandle=handle.receipt_handle)
    except Exception as error:
        log.warning("could not delete a finished job's message: %s", error)
