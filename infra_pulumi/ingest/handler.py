"""The ingest Lambda: S3 object events, read from the ingest queue, become whisperq jobs.

The ingest queue carries S3 notifications for the stack's own bucket (objects created under
``incoming/``) and EventBridge "Object Created" events for the external bucket, if the
stack has one. Each SQS record is one event; whisperq's own ingest step
(``whisperq/batches/ingest.py``, shipped beside this file in the zip with the modules it imports)
makes each of its objects exactly the job ``whisperq submit`` would have queued.

Partial batch responses (``ReportBatchItemFailures``): a record whose objects all came to
an end (queued, duplicate, ignored, failed with a reason) is done; a record to try again
(another ingest of the same object in flight, an unreadable body, an unexpected error) is
reported alone, so it never fails the others, and after the ingest queue's
``maxReceiveCount`` receives SQS parks it in the ingest dead-letter queue. A record that
waits for another ingest's claim comes back when the claim expires, not a whole
visibility timeout later.

Every few minutes an EventBridge schedule invokes it too ("Scheduled Event"): it then
closes the daily batches whose day is over (``whisperq.finished.close_open_batches``:
``done.json`` and the "whisperq batch finished" event), also after the fleet has scaled
in and no worker is left to do it.

One JSON line per object in the log: status, batch, path, reason, source (never content).
This is a Lambda entry point: the one place outside whisperq that reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import boto3
from botocore.config import Config

from whisperq import finished, keys
from whisperq.batches import ingest

# Stop taking records this long before the function's timeout: the rest are reported for a
# retry, instead of the timeout failing the whole batch with an object half copied.
TIME_MARGIN_MS = 30_000
INGEST_QUEUE_URL = "WHISPERQ_INGEST_QUEUE_URL"  # for bringing a waiting record back early
_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})

Log = Callable[[dict[str, Any]], None]


def log_line(fields: dict[str, Any]) -> None:
    """One JSON line on stdout: Lambda sends it to the function's log group."""
    print(json.dumps(fields, default=str), flush=True)


def source_configs(config: ingest.IngestConfig) -> dict[str, ingest.IngestConfig]:
    """Source bucket -> its config: the stack's own bucket ingests ``incoming/``; the
    external bucket (``WHISPERQ_INGEST_SOURCE_BUCKET``), if any, its own prefix."""
    own = dataclasses.replace(
        config, source_bucket=config.bucket, source_prefix=keys.incoming_prefix()
    )
    return {config.source_bucket: config, config.bucket: own}


def config_for(
    body: str, configs: Mapping[str, ingest.IngestConfig], default: ingest.IngestConfig
) -> ingest.IngestConfig:
    """The config of the bucket a record's objects are in (one bucket per event)."""
    try:
        buckets = {ref.bucket for ref in ingest.objects_in_event(json.loads(body))}
    except Exception:  # unreadable: handle_event says why
        return default
    return configs.get(buckets.pop(), default) if len(buckets) == 1 else default


def handle(
    event: Mapping[str, Any],
    s3: Any,
    sqs: Any,
    config: ingest.IngestConfig,
    log: Log = log_line,
    remaining_ms: Callable[[], int] | None = None,
    ingest_queue_url: str | None = None,
    events: Any = None,
) -> dict[str, list[dict[str, str]]]:
    """An SQS event (``{"Records": [...]}``) -> the partial batch response (``events``:
    the EventBridge client for a batch ingest finishes)."""
    configs = source_configs(config)
    failures: list[dict[str, str]] = []
    for record in event.get("Records", []):
        message_id = record["messageId"]
        if remaining_ms is not None and remaining_ms() < TIME_MARGIN_MS:
            log({"status": "retry", "reason": "too close to the function's timeout"})
            failures.append({"itemIdentifier": message_id})
            continue
        body = record.get("body", "")
        handled = ingest.handle_event(
            s3, sqs, config_for(body, configs, config), body, events=events
        )
        for outcome in handled.outcomes:
            log(
                {
                    "status": outcome.status,
                    "batch": outcome.batch,
                    "path": outcome.path,
                    "reason": outcome.reason,
                    "source": outcome.ref.url,
                }
            )
        for ref, why in handled.retry:
            log({"status": "retry", "reason": why[:500], "source": ref.url if ref else None})
        if handled.done:
            continue
        failures.append({"itemIdentifier": message_id})
        if handled.retry_after > 0 and ingest_queue_url and record.get("receiptHandle"):
            _visible_again_in(sqs, ingest_queue_url, record["receiptHandle"], handled, log)
    return {"batchItemFailures": failures}


def _visible_again_in(
    sqs: Any, queue_url: str, receipt_handle: str, handled: ingest.Handled, log: Log
) -> None:
    """A record waiting for another ingest's claim: back when the claim expires."""
    seconds = max(1, min(math.ceil(handled.retry_after), 43200))
    try:
        sqs.change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )
    except Exception as error:  # it then comes back after the queue's visibility timeout
        log({"status": "retry", "reason": f"visibility unchanged: {type(error).__name__}"})


def is_schedule(event: Mapping[str, Any]) -> bool:
    """An EventBridge schedule's invocation (not an SQS batch of object events)."""
    return event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"


def close_days(
    s3: Any, config: ingest.IngestConfig, log: Log = log_line, events: Any = None
) -> dict[str, Any]:
    """The scheduled run: daily batches whose day is over, closed (one log line each)."""
    outcomes = finished.close_open_batches(config, s3, events=events)
    for batch, outcome in sorted(outcomes.items()):
        log({"status": f"batch {outcome}", "batch": batch})
    return {"closed": outcomes}


_state: tuple[Any, Any, ingest.IngestConfig] | None = None


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    global _state
    if _state is None:  # once per cold start
        _state = (
            boto3.client("s3", config=_RETRIES),
            boto3.client("sqs", config=_RETRIES),
            ingest.IngestConfig.from_env(os.environ),
        )
    s3, sqs, config = _state
    if is_schedule(event):
        return close_days(s3, config)
    return handle(
        event,
        s3,
        sqs,
        config,
        remaining_ms=getattr(context, "get_remaining_time_in_millis", None),
        ingest_queue_url=os.environ.get(INGEST_QUEUE_URL),
    )
