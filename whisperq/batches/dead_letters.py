"""The dead-letter queue: jobs SQS gave up on after ``maxReceiveCount`` deliveries
(workers that crashed on them, or could not run them). Listed, and moved back on request."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from whisperq import storage
from whisperq.celery_app import decode_job_message
from whisperq.schemas import TranscriptionJob
from whisperq.settings import ConfigError, Settings

PEEK_VISIBILITY_S = 30  # long enough to look at a page of messages, short if we die


@dataclass
class DeadLetter:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at: float | None
    job: TranscriptionJob | None
    problem: str | None = None  # why the body is not a whisperq job

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "batch": self.job.batch if self.job else None,
            "path": self.job.path if self.job else None,
            "receive_count": self.receive_count,
            "sent_at": self.sent_at,
            "problem": self.problem,
        }


def _require_dlq(settings: Settings) -> None:
    if not settings.dlq_url:
        raise ConfigError("No dead-letter queue configured (WHISPERQ_DLQ_URL).")


def receive_all(
    settings: Settings, limit: int = 10_000, max_seconds: float = 120
) -> list[DeadLetter]:
    """Receive (and hide for a while) every message on the DLQ, bounded in count and time."""
    _require_dlq(settings)
    sqs = storage.client(settings, "sqs")
    found: dict[str, DeadLetter] = {}
    deadline = time.monotonic() + max_seconds
    empty_replies = 0
    while len(found) < limit and empty_replies < 2 and time.monotonic() < deadline:
        reply = sqs.receive_message(
            QueueUrl=settings.dlq_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=PEEK_VISIBILITY_S,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        )
        messages = reply.get("Messages", [])
        empty_replies = 0 if messages else empty_replies + 1
        for message in messages:
            found[message["MessageId"]] = _parse(message)
    return list(found.values())


def _parse(message: dict[str, Any]) -> DeadLetter:
    attributes = message.get("Attributes", {})
    sent = attributes.get("SentTimestamp")
    letter = DeadLetter(
        message_id=message["MessageId"],
        receipt_handle=message["ReceiptHandle"],
        body=message["Body"],
        receive_count=int(attributes.get("ApproximateReceiveCount", 0)),
        sent_at=int(sent) / 1000 if sent else None,
        job=None,
    )
    try:
        letter.job = decode_job_message(message["Body"])
    except ValueError as error:
        letter.problem = str(error)
    return letter


def release(settings: Settings, letters: list[DeadLetter]) -> None:
    """Make received messages visible again on the DLQ, untouched."""
    sqs = storage.client(settings, "sqs")
    for letter in letters:
        sqs.change_message_visibility(
            QueueUrl=settings.dlq_url, ReceiptHandle=letter.receipt_handle, VisibilityTimeout=0
        )


def peek(settings: Settings) -> list[DeadLetter]:
    """What is on the DLQ, leaving it there."""
    letters = receive_all(settings)
    release(settings, letters)
    return letters


def batch_paths(settings: Settings, batch: str) -> set[str]:
    """Paths of ``batch`` whose jobs are on the dead-letter queue (left there)."""
    return {
        letter.job.path
        for letter in peek(settings)
        if letter.job is not None and letter.job.batch == batch
    }


def redrive(settings: Settings, batch: str | None = None) -> tuple[list[DeadLetter], int]:
    """Move whisperq jobs (of ``batch``, or all) back to the job queue, unchanged.

    Send first, then delete: a crash in between duplicates a job (harmless: results are
    idempotent) and never loses one. Returns (moved, left on the DLQ)."""
    letters = receive_all(settings)
    chosen = [
        letter
        for letter in letters
        if letter.job is not None and (batch is None or letter.job.batch == batch)
    ]
    sqs = storage.client(settings, "sqs")
    for letter in chosen:
        sqs.send_message(QueueUrl=settings.queue_url, MessageBody=letter.body)
        sqs.delete_message(QueueUrl=settings.dlq_url, ReceiptHandle=letter.receipt_handle)
    left = [letter for letter in letters if letter not in chosen]
    release(settings, left)
    return chosen, len(left)
