"""Keeping a running job's SQS message invisible, and handing it back.

The queue's visibility timeout stays modest (minutes) so a dead worker's job returns
quickly; while the worker lives, a thread extends the message's visibility every third of
the timeout, so a job of an hour is never given to a second worker.

Kombu exposes the message's receipt handle and queue URL only through internals
(``request.properties['delivery_tag']`` and ``['delivery_info']['sqs_queue']``); kombu is
pinned in pyproject.toml and tests/worker/test_reliability_parts.py fails if they move.

Handing back is ChangeMessageVisibility to 0: another worker can receive the message at
once. The worker's main process hands back, with ``hand_back``, every job it has received
but not started when it stops (see ``UnstartedJobs`` in whisperq/worker/shutdown.py).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("whisperq.heartbeat")


@dataclass(frozen=True)
class MessageHandle:
    queue_url: str
    receipt_handle: str
    receive_count: int | None = None  # SQS ApproximateReceiveCount, this delivery included


def message_handle(properties: dict[str, Any] | None) -> MessageHandle | None:
    """The SQS message behind a Celery request, from kombu's message properties."""
    properties = properties or {}
    receipt = properties.get("delivery_tag")
    delivery_info = properties.get("delivery_info") or {}
    queue_url = delivery_info.get("sqs_queue")
    if not (isinstance(receipt, str) and isinstance(queue_url, str)):
        return None
    attributes = (delivery_info.get("sqs_message") or {}).get("Attributes") or {}
    count = attributes.get("ApproximateReceiveCount")
    return MessageHandle(queue_url, receipt, int(count) if count else None)


def change_visibility(sqs: Any, handle: MessageHandle, seconds: int) -> bool:
    """Set the message's visibility timeout from now; False (logged) when SQS refuses."""
    try:
        sqs.change_message_visibility(
            QueueUrl=handle.queue_url,
            ReceiptHandle=handle.receipt_handle,
            VisibilityTimeout=seconds,
        )
    except Exception as error:
        log.warning("could not change message visibility to %ds: %s", seconds, error)
        return False
    return True


def hand_back(sqs: Any, handle: MessageHandle) -> bool:
    """Make the message visible now, so another worker starts it at once. Only the holder
    of the newest receipt handle may do this, and only while nothing else will use the
    handle afterwards (an ack after a hand-back could delete a job another worker runs)."""
    return change_visibility(sqs, handle, 0)


class VisibilityHeartbeat:
    """Extends one message's visibility every ``timeout / 3`` seconds until stopped."""

    def __init__(self, sqs: Any, handle: MessageHandle, timeout: int) -> None:
        self.sqs = sqs
        self.handle = handle
        self.timeout = max(1, int(timeout))
        self.interval = self.timeout / 3
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="visibility-heartbeat", daemon=True)

    def __enter__(self) -> VisibilityHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.extend(self.timeout)

    def extend(self, seconds: int) -> bool:
        if not change_visibility(self.sqs, self.handle, seconds):
            return False
        self.beats += 1
        return True

    def hand_back(self) -> bool:
        """Stop extending and make the message visible now (see ``hand_back``)."""
        self.stop()
        return hand_back(self.sqs, self.handle)
